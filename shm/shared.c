/* SPDX-License-Identifier: MIT */
/* sluice_shared: one copy per node in POSIX shared memory, replicated by one-sided puts under
 * a sluice_lock. */
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sluice/lock.h>
#include <sluice/shared.h>

#include "../src/backoff.h"
#include "../src/internal.h"
#include "../src/liveness.h"
#include "../src/mpiguard.h"
#include "shared.h"

/*
 * Layout of a node's segment (docs/locks.md, "Node-shared data"): a header
 * of one cache line, then the data. Offsets only; the header is checked by
 * every rank that maps a segment it did not make.
 */
typedef struct sl_shared_header {
    uint64_t magic;
    _Atomic uint64_t version;   /* even: stable; odd: a set is writing */
    uint64_t bytes;             /* size of the data after the header */
    uint32_t layout;
    uint32_t reserved;
} sl_shared_header_t;

#define SL_SHARED_MAGIC 0x6465726168534c53ull /* "SLShared" */
enum { SL_SHARED_LAYOUT = 1, SL_SHARED_HDR = 64, SL_SHARED_VERSION_DISP = 8, NAME_LEN = 64 };
_Static_assert(sizeof(sl_shared_header_t) <= SL_SHARED_HDR, "header fits its cache line");
_Static_assert(offsetof(sl_shared_header_t, version) == SL_SHARED_VERSION_DISP, "version disp");

struct sluice_shared {
    MPI_Comm comm;              /* private duplicate */
    MPI_Comm node;              /* the ranks of this node */
    MPI_Win win;                /* every node leader's segment; empty elsewhere */
    sluice_lock_t *lock;        /* serialises writers */
    sl_shared_header_t *hdr;    /* this node's copy, mapped */
    size_t bytes, map_bytes;
    int rank, size;
    int *leaders;               /* the rank that holds each node's segment */
    int n_leaders;
    sluice_shared_options_t opt;
    uint64_t dummy;             /* the window memory of ranks that hold no segment */
    int may_poke;               /* the thread level lets any thread make a progress call */
    /* Buffers of create's non-blocking collectives: in the handle, never on
     * the stack, and the handle is left behind if one of them times out
     * (`pending`), since MPI may still write them. */
    char name[NAME_LEN];
    uint64_t node_mine;
    int verdict_mine, verdict_all;
    bool pending;
};

static _Atomic unsigned sl_shared_serial;

void sluice_shared_options_init(sluice_shared_options_t *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->timeout_ms = 30000;
}

static int sl_shared_options_check(const sluice_shared_options_t *user,
                                   sluice_shared_options_t *out)
{
    sluice_shared_options_init(out);
    if (!user)
        return SLUICE_OK;
    if (user->size < offsetof(sluice_shared_options_t, timeout_ms) + sizeof(uint32_t) ||
        user->size > 4096)
        return sl_fail(SLUICE_EINVAL, "shared options: size %zu is not a sluice_shared_options_t "
                                      "(call sluice_shared_options_init)", user->size);
    memcpy(out, user, user->size < sizeof *out ? user->size : sizeof *out);
    out->size = sizeof *out;
    if (out->timeout_ms < 1 || out->timeout_ms > 3600000)
        return sl_fail(SLUICE_ERANGE, "shared options: timeout_ms %u outside 1 .. 3600000",
                       out->timeout_ms);
    return SLUICE_OK;
}

/* ------------------------------------------------------------ the node's segment */

/* The leader makes the segment: created exclusively, mode 0600, zero-filled. */
static int sl_shared_make(sluice_shared_t *sh, char *name)
{
    snprintf(name, NAME_LEN, "/sluice-shared-%ld-%u", (long)getpid(),
             atomic_fetch_add_explicit(&sl_shared_serial, 1, memory_order_relaxed));
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return sl_fail(SLUICE_ESYS, "shared: shm_open(%s): %s", name, strerror(errno));
    int rc = SLUICE_OK;
    if (ftruncate(fd, (off_t)sh->map_bytes) != 0) {
        rc = sl_fail(SLUICE_ESYS, "shared: ftruncate(%s, %zu): %s", name, sh->map_bytes,
                     strerror(errno));
    } else {
        void *p = mmap(NULL, sh->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            rc = sl_fail(SLUICE_ESYS, "shared: mmap of %zu bytes: %s", sh->map_bytes,
                         strerror(errno));
        } else {
            sh->hdr = p;
            sh->hdr->bytes = sh->bytes;
            sh->hdr->layout = SL_SHARED_LAYOUT;
            atomic_store_explicit(&sh->hdr->version, 0, memory_order_relaxed);
            /* release: the other ranks check the magic only after the
             * broadcast of the name, which orders it anyway; this store is
             * last so a half-made header never reads as valid. */
            __atomic_store_n(&sh->hdr->magic, SL_SHARED_MAGIC, __ATOMIC_RELEASE);
        }
    }
    close(fd);
    if (rc != SLUICE_OK)
        shm_unlink(name);
    return rc;
}

/* The other ranks of the node map it by name and check its header. */
static int sl_shared_attach(sluice_shared_t *sh, const char *name)
{
    if (name[0] != '/')
        return sl_fail(SLUICE_ESYS, "shared: this node's segment could not be made");
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return sl_fail(SLUICE_ESYS, "shared: shm_open(%s): %s", name, strerror(errno));
    void *p = mmap(NULL, sh->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return sl_fail(SLUICE_ESYS, "shared: mmap of %s: %s", name, strerror(errno));
    sl_shared_header_t *h = p;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SL_SHARED_MAGIC ||
        h->bytes != sh->bytes) {
        munmap(p, sh->map_bytes);
        return sl_fail(SLUICE_ECORRUPT, "shared: segment %s has no valid header for %zu bytes",
                       name, sh->bytes);
    }
    if (h->layout != SL_SHARED_LAYOUT) {
        munmap(p, sh->map_bytes);
        return sl_fail(SLUICE_EVERSION, "shared: segment %s has layout %u, this build %u", name,
                       h->layout, SL_SHARED_LAYOUT);
    }
    sh->hdr = h;
    return SLUICE_OK;
}

/* ------------------------------------------------------------ create and destroy */

/* Node of every rank (hash of host name and boot id), agreed without blocking. */
static int sl_shared_nodes(sluice_shared_t *sh, uint64_t *nodes, const sl_deadline_t *dl)
{
    char ident[256];
    sl_node_identity(ident, sizeof ident);
    sh->node_mine = sl_fnv1a(SL_FNV_OFFSET, ident, strlen(ident));
    MPI_Request req;
    int rc = sl_mpi_enter_until(dl, "shared: MPI_Iallgather of node identities");
    if (rc != SLUICE_OK)
        return rc;
    int mrc = MPI_Iallgather(&sh->node_mine, 1, MPI_UINT64_T, nodes, 1, MPI_UINT64_T, sh->comm,
                             &req);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "shared: MPI_Iallgather of node identities failed");
    sh->pending = true;
    rc = sl_mpi_wait(&req, dl, 64, "shared: MPI_Iallgather of node identities");
    sh->pending = rc != SLUICE_OK;
    return rc;
}

/* Every rank's verdict: SLUICE_OK only if every rank succeeded. */
static int sl_shared_agree(sluice_shared_t *sh, int rc, const sl_deadline_t *dl)
{
    sh->verdict_mine = rc == SLUICE_OK;
    sh->verdict_all = 0;
    MPI_Request req;
    int erc = sl_mpi_enter_until(dl, "shared: MPI_Iallreduce of the verdict");
    if (erc != SLUICE_OK)
        return erc;
    int mrc = MPI_Iallreduce(&sh->verdict_mine, &sh->verdict_all, 1, MPI_INT, MPI_LAND, sh->comm,
                             &req);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "shared: MPI_Iallreduce of the verdict failed");
    sh->pending = true;
    int wrc = sl_mpi_wait(&req, dl, 64, "shared: MPI_Iallreduce of the verdict");
    if (wrc != SLUICE_OK)
        return wrc;
    sh->pending = false;
    if (rc != SLUICE_OK)
        return rc;
    if (!sh->verdict_all)
        return sl_fail(SLUICE_ESYS, "shared: another rank could not map its node's segment");
    return SLUICE_OK;
}

/* Steps 2-4 of create: the node communicator and the mapped segment. */
static int sl_shared_map(sluice_shared_t *sh, const uint64_t *nodes, const sl_deadline_t *dl)
{
    int color = sh->rank;
    for (int r = 0; r < sh->size; r++)
        if (nodes[r] == nodes[sh->rank]) {
            color = r;
            break;
        }
    int leader = color == sh->rank;
    /* Not entering means not entering the collective: the other ranks wait
     * in it without this one (docs/design.md, "MPI threading contract"). */
    int rc = sl_mpi_enter_until(dl, "shared: MPI_Comm_split by node");
    if (rc != SLUICE_OK)
        return rc;
    int mrc = MPI_Comm_split(sh->comm, color, sh->rank, &sh->node);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "shared: MPI_Comm_split by node failed");

    char *name = sh->name;
    rc = leader ? sl_shared_make(sh, name) : SLUICE_OK;
    MPI_Request req;
    int wrc = sl_mpi_enter_until(dl, "shared: MPI_Ibcast of the name");
    if (wrc == SLUICE_OK) {
        mrc = MPI_Ibcast(name, NAME_LEN, MPI_CHAR, 0, sh->node, &req);
        sl_mpi_leave();
        sh->pending = mrc == MPI_SUCCESS;
        wrc = mrc == MPI_SUCCESS ? sl_mpi_wait(&req, dl, 64, "shared: MPI_Ibcast of the name")
                                 : sl_fail(SLUICE_EMPI, "shared: MPI_Ibcast of the name failed");
    }
    if (wrc != SLUICE_OK) {
        if (leader && name[0] == '/')
            shm_unlink(name); /* nobody else may come: leave nothing in /dev/shm */
        return wrc;
    }
    sh->pending = false;
    if (!leader)
        rc = sl_shared_attach(sh, name);
    /* Once every rank of the job has mapped (or failed), nothing else may
     * open the name: unlink it, so no kill -9 from now on leaves it behind. */
    rc = sl_shared_agree(sh, rc, dl);
    if (leader && name[0] == '/')
        shm_unlink(name);
    return rc;
}

int sluice_shared_create(MPI_Comm comm, size_t bytes, const sluice_shared_options_t *o,
                         sluice_shared_t **sh_p)
{
    if (!sh_p || comm == MPI_COMM_NULL)
        return sl_fail(SLUICE_EINVAL, "shared: NULL communicator or sh_p");
    if (bytes < 1 || bytes > (1ull << 40))
        return sl_fail(SLUICE_ERANGE, "shared: %zu bytes outside 1 .. 2^40", bytes);
    sl_mpi_guard_init();
    sluice_shared_t *sh = calloc(1, sizeof *sh);
    if (!sh)
        return sl_fail(SLUICE_ENOMEM, "shared: cannot allocate a handle");
    sh->comm = sh->node = MPI_COMM_NULL;
    sh->win = MPI_WIN_NULL;
    int rc = sl_shared_options_check(o, &sh->opt);
    if (rc != SLUICE_OK) {
        free(sh);
        return rc;
    }
    sh->bytes = bytes;
    sh->map_bytes = SL_SHARED_HDR + bytes;
    sl_deadline_t dl = sl_deadline_in(sh->opt.timeout_ms);

    MPI_Request req;
    if ((rc = sl_mpi_enter_until(&dl, "shared: MPI_Comm_idup")) != SLUICE_OK) {
        free(sh);
        return rc;
    }
    int mrc = MPI_Comm_idup(comm, &sh->comm, &req);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS) {
        free(sh);
        return sl_fail(SLUICE_EMPI, "shared: MPI_Comm_idup failed");
    }
    if ((rc = sl_mpi_wait(&req, &dl, 64, "shared: MPI_Comm_idup")) != SLUICE_OK) {
        free(sh); /* the duplicate is left to MPI: it may still complete */
        return rc;
    }
    if ((rc = sl_mpi_enter_until(&dl, "shared: setting up the communicator")) != SLUICE_OK) {
        free(sh); /* the duplicate is left to MPI */
        return rc;
    }
    MPI_Comm_set_errhandler(sh->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(sh->comm, &sh->rank);
    MPI_Comm_size(sh->comm, &sh->size);
    sl_mpi_leave();

    uint64_t *nodes = calloc((size_t)sh->size, sizeof *nodes);
    sh->leaders = calloc((size_t)sh->size, sizeof *sh->leaders);
    if (!nodes || !sh->leaders) {
        free(nodes);
        free(sh->leaders);
        sh->leaders = NULL;
        rc = sl_fail(SLUICE_ENOMEM, "shared: cannot allocate the table of %d ranks", sh->size);
        goto free_comm;
    }
    if ((rc = sl_shared_nodes(sh, nodes, &dl)) != SLUICE_OK)
        return rc; /* the request still owns `nodes`, `sh` and the communicator: left to MPI */
    for (int r = 0; r < sh->size; r++) {
        int first = 1;
        for (int q = 0; q < r && first; q++)
            first = nodes[q] != nodes[r];
        if (first)
            sh->leaders[sh->n_leaders++] = r;
    }
    rc = sl_shared_map(sh, nodes, &dl);
    free(nodes);
    if (rc != SLUICE_OK)
        goto unmap;
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    sh->may_poke = level >= MPI_THREAD_SERIALIZED;

    /* Every node's segment becomes one window (empty on the other ranks):
     * a set puts into each. Every rank agreed above, so this collective
     * cannot wait for an absent rank. */
    int leader = 0;
    for (int i = 0; i < sh->n_leaders; i++)
        leader |= sh->leaders[i] == sh->rank;
    /* Not entering means not entering the collective (as above). */
    if ((rc = sl_mpi_enter_until(&dl, "shared: MPI_Win_create")) != SLUICE_OK)
        goto unmap;
    mrc = MPI_Win_create(leader ? (void *)sh->hdr : (void *)&sh->dummy,
                         leader ? (MPI_Aint)sh->map_bytes : 0, 1, MPI_INFO_NULL, sh->comm,
                         &sh->win);
    if (mrc == MPI_SUCCESS) {
        MPI_Win_set_errhandler(sh->win, MPI_ERRORS_RETURN);
        mrc = MPI_Win_lock_all(MPI_MODE_NOCHECK, sh->win);
    }
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "shared: MPI_Win_create over the node segments failed");
        goto unmap;
    }
    sluice_lock_options_t lo;
    sluice_lock_options_init(&lo);
    lo.timeout_ms = sh->opt.timeout_ms;
    if ((rc = sluice_lock_create(sh->comm, &lo, &sh->lock)) != SLUICE_OK)
        goto unmap; /* the window is left to MPI with the communicator */
    *sh_p = sh;
    return SLUICE_OK;

unmap:
    /* A collective still pending may write into the handle: leave it. A
     * window, once made, exposes the mapping to the other ranks: leave
     * that too. Communicators and window are left to MPI (a rank may be
     * missing, so freeing them could wait for ever). */
    if (sh->pending)
        return rc;
    if (sh->hdr && sh->win == MPI_WIN_NULL)
        munmap(sh->hdr, sh->map_bytes);
    free(sh->leaders);
    free(sh);
    return rc;
free_comm:
    /* A guard held past the deadline leaves the communicator to MPI. */
    if (sl_mpi_enter_until(&dl, "shared: freeing the communicator") == SLUICE_OK) {
        MPI_Comm_free(&sh->comm);
        sl_mpi_leave();
    }
    free(sh);
    return rc;
}

int sluice_shared_destroy(sluice_shared_t *sh)
{
    if (!sh)
        return SLUICE_OK;
    sl_deadline_t dl = sl_deadline_in(sh->opt.timeout_ms);
    int rc = sluice_lock_destroy(sh->lock);
    if (rc == SLUICE_EBUSY)
        return rc; /* a set in flight on another thread: the caller's bug, nothing freed */
    if (rc == SLUICE_OK) {
        MPI_Request req;
        if ((rc = sl_mpi_enter_until(&dl, "shared: MPI_Ibarrier of destroy")) == SLUICE_OK) {
            int mrc = MPI_Ibarrier(sh->comm, &req);
            sl_mpi_leave();
            rc = mrc == MPI_SUCCESS ? sl_mpi_wait(&req, &dl, 64, "shared: MPI_Ibarrier of destroy")
                                    : sl_fail(SLUICE_EMPI, "shared: MPI_Ibarrier failed");
        }
    }
    /* The collective free; the barrier may have spent the deadline, so the
     * guard gets a timeout more (a rank that cannot enter leaves the
     * window, and the others wait in MPI_Win_free without it). */
    sl_deadline_t last = sl_deadline_in(sh->opt.timeout_ms);
    if (rc == SLUICE_OK &&
        (rc = sl_mpi_enter_until(&last, "shared: freeing the window")) == SLUICE_OK) {
        int mrc = MPI_Win_unlock_all(sh->win);
        if (mrc == MPI_SUCCESS)
            mrc = MPI_Win_free(&sh->win);
        if (mrc == MPI_SUCCESS)
            mrc = MPI_Comm_free(&sh->node);
        if (mrc == MPI_SUCCESS)
            mrc = MPI_Comm_free(&sh->comm);
        sl_mpi_leave();
        if (mrc != MPI_SUCCESS)
            rc = sl_fail(SLUICE_EMPI, "shared: freeing the window failed");
    }
    /* On a timeout the window and communicators are left to MPI, and so is
     * the mapping: the window still exposes it, and a late rank's set may
     * still write it. */
    if (rc == SLUICE_OK)
        munmap(sh->hdr, sh->map_bytes);
    free(sh->leaders);
    free(sh);
    return rc;
}

/* ------------------------------------------------------------ set */

/* Whether [offset, offset + bytes) lies inside the array (written so it cannot overflow). */
static bool sl_shared_fits(const sluice_shared_t *sh, size_t offset, size_t bytes)
{
    return offset <= sh->bytes && bytes <= sh->bytes - offset;
}

static int sl_shared_out_of_range(const sluice_shared_t *sh, size_t offset, size_t bytes)
{
    return sl_fail(SLUICE_ERANGE, "shared: region [%zu, +%zu) outside the %zu-byte array", offset,
                   bytes, sh->bytes);
}

static int sl_shared_fop(sluice_shared_t *sh, int target, uint64_t value, MPI_Op op,
                         uint64_t *old_p, const sl_deadline_t *dl)
{
    uint64_t old = 0;
    int rc = sl_mpi_enter_until(dl, "shared: a version update");
    if (rc != SLUICE_OK)
        return rc;
    int mrc = MPI_Fetch_and_op(&value, &old, MPI_UINT64_T, target, SL_SHARED_VERSION_DISP, op,
                               sh->win);
    if (mrc == MPI_SUCCESS)
        mrc = MPI_Win_flush(target, sh->win);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "shared: version update on rank %d failed", target);
    if (old_p)
        *old_p = old;
    return SLUICE_OK;
}

/* One node's copy: odd version, data, even version; each step complete (flushed) before the
 * next. */
static int sl_shared_put_node(sluice_shared_t *sh, int target, size_t offset, const void *data,
                              size_t bytes, uint64_t writing, const sl_deadline_t *dl)
{
    int rc;
    if ((rc = sl_shared_fop(sh, target, writing, MPI_REPLACE, NULL, dl)) != SLUICE_OK)
        return rc;
    const char *p = data;
    size_t done = 0;
    while (done < bytes) {
        /* MPI counts are ints: put in pieces of at most 1 GiB. */
        size_t n = bytes - done < (1u << 30) ? bytes - done : (1u << 30);
        /* Given up here, the copy stays odd: a half copy, as after a
         * writer that died, which the next set steps past. */
        if ((rc = sl_mpi_enter_until(dl, "shared: MPI_Put of the data")) != SLUICE_OK)
            return rc;
        int mrc = MPI_Put(p + done, (int)n, MPI_BYTE, target,
                          (MPI_Aint)(SL_SHARED_HDR + offset + done), (int)n, MPI_BYTE, sh->win);
        if (mrc == MPI_SUCCESS)
            mrc = MPI_Win_flush(target, sh->win);
        sl_mpi_leave();
        if (mrc != MPI_SUCCESS)
            return sl_fail(SLUICE_EMPI, "shared: MPI_Put of %zu bytes to rank %d failed", n,
                           target);
        done += n;
    }
    /* The data is complete at the target (flushed) before the version says so. */
    return sl_shared_fop(sh, target, writing + 1, MPI_REPLACE, NULL, dl);
}

int sl_shared_lock(sluice_shared_t *sh)
{
    int rc = sluice_lock_acquire(sh->lock, sh->opt.timeout_ms);
    /* Held already by this thread: an earlier release could not hand it on
     * (a waiter had not linked) and kept it. Nobody else uses this lock. */
    return rc == SLUICE_EALREADY ? SLUICE_OK : rc;
}

int sl_shared_unlock(sluice_shared_t *sh) { return sluice_lock_release(sh->lock); }

int sl_shared_put(sluice_shared_t *sh, size_t offset, const void *data, size_t bytes,
                  uint64_t *version_p)
{
    if (!sl_shared_fits(sh, offset, bytes))
        return sl_shared_out_of_range(sh, offset, bytes);
    /* One version for every copy: the next odd value above the highest of
     * them. Copies differ only after a writer died part-way (the lock then
     * said OWNERDEAD); an odd one is such a half copy, and stepping past it
     * keeps readers from taking it for a version. */
    /* The MPI guard is waited for at most one timeout per set. */
    sl_deadline_t dl = sl_deadline_in(sh->opt.timeout_ms);
    uint64_t top = 0;
    for (int i = 0; i < sh->n_leaders; i++) {
        uint64_t v;
        int rc = sl_shared_fop(sh, sh->leaders[i], 0, MPI_NO_OP, &v, &dl);
        if (rc != SLUICE_OK)
            return rc;
        top = v > top ? v : top;
    }
    uint64_t writing = top % 2 == 0 ? top + 1 : top + 2;
    for (int i = 0; i < sh->n_leaders; i++) {
        int rc = sl_shared_put_node(sh, sh->leaders[i], offset, data, bytes, writing, &dl);
        if (rc != SLUICE_OK)
            return rc;
    }
    if (version_p)
        *version_p = writing + 1;
    return SLUICE_OK;
}

int sl_shared_nodes_n(const sluice_shared_t *sh) { return sh->n_leaders; }

int sl_shared_get(sluice_shared_t *sh, int node, size_t offset, void *buf, size_t bytes)
{
    if (node < 0 || node >= sh->n_leaders || !sl_shared_fits(sh, offset, bytes) ||
        bytes > (1u << 30))
        return sl_fail(SLUICE_ERANGE, "shared: read of [%zu, +%zu) from node %d", offset, bytes,
                       node);
    sl_deadline_t dl = sl_deadline_in(sh->opt.timeout_ms);
    int rc = sl_mpi_enter_until(&dl, "shared: MPI_Get");
    if (rc != SLUICE_OK)
        return rc;
    int mrc = MPI_Get(buf, (int)bytes, MPI_BYTE, sh->leaders[node],
                      (MPI_Aint)(SL_SHARED_HDR + offset), (int)bytes, MPI_BYTE, sh->win);
    if (mrc == MPI_SUCCESS)
        mrc = MPI_Win_flush(sh->leaders[node], sh->win); /* the result is read only after it */
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "shared: MPI_Get from rank %d failed", sh->leaders[node]);
    return SLUICE_OK;
}

int sluice_shared_set(sluice_shared_t *sh, size_t offset, const void *data, size_t bytes,
                      uint64_t *version_p)
{
    if (!sh || (!data && bytes))
        return sl_fail(SLUICE_EINVAL, "shared: NULL handle or data");
    if (!sl_shared_fits(sh, offset, bytes))
        return sl_shared_out_of_range(sh, offset, bytes);
    int lrc = sl_shared_lock(sh);
    if (lrc != SLUICE_OK && lrc != SLUICE_OWNERDEAD)
        return lrc;
    int rc = sl_shared_put(sh, offset, data, bytes, version_p);
    int rrc = sl_shared_unlock(sh);
    if (rc != SLUICE_OK)
        return rc;
    if (rrc != SLUICE_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", sluice_last_error());
        return sl_fail(rrc, "shared: the data is written everywhere, but the writer lock could "
                            "not be handed on (it stays held; the next set goes on): %s", why);
    }
    return lrc; /* SLUICE_OWNERDEAD: written, but an earlier writer died part-way */
}

/* ------------------------------------------------------------ read */

/*
 * Over emulated RMA (osc/pt2pt) a set completes only while the target is
 * inside MPI: a reader that polls lends its process one progress call per
 * look (an MPI_Iprobe that never waits, skipped while another thread is in
 * MPI). Only where the thread level lets any thread call MPI, and never
 * after MPI_Finalize.
 */
void sl_shared_poke(const sluice_shared_t *sh)
{
    int finalized = 1;
    if (!sh->may_poke || MPI_Finalized(&finalized) != MPI_SUCCESS || finalized)
        return;
    sl_mpi_poke();
}

const void *sluice_shared_data(const sluice_shared_t *sh)
{
    return sh ? (const char *)sh->hdr + SL_SHARED_HDR : NULL;
}

size_t sluice_shared_size(const sluice_shared_t *sh) { return sh ? sh->bytes : 0; }

uint64_t sluice_shared_version(const sluice_shared_t *sh)
{
    if (!sh)
        return 0;
    /* The full fence first: the caller's data loads before this call
     * complete before the version is read (the second check of a seqlock
     * reader needs no fence of its own). acquire: pairs with the set's
     * version update (MPI_Fetch_and_op after the data's flush), so data
     * read after this call is at least as new as the version. */
    sl_full_fence();
    return atomic_load_explicit(&sh->hdr->version, memory_order_acquire);
}

int sluice_shared_read(const sluice_shared_t *sh, size_t offset, void *buf, size_t bytes,
                       uint64_t *version_p)
{
    if (!sh || (!buf && bytes))
        return sl_fail(SLUICE_EINVAL, "shared: NULL handle or buffer");
    if (!sl_shared_fits(sh, offset, bytes))
        return sl_shared_out_of_range(sh, offset, bytes);
    sl_deadline_t dl = sl_deadline_in(sh->opt.timeout_ms);
    sl_backoff_t b;
    sl_backoff_init(&b, 64, 100);
    const char *src = (const char *)sh->hdr + SL_SHARED_HDR + offset;
    for (;;) {
        sl_shared_poke(sh);
        uint64_t before = sluice_shared_version(sh);
        if (before % 2 == 0) {
            memcpy(buf, src, bytes);
            /* sluice_shared_version fences: the copy is done before it looks. */
            if (sluice_shared_version(sh) == before) {
                if (version_p)
                    *version_p = before;
                return SLUICE_OK;
            }
        }
        if (sl_backoff_pause(&b, &dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "shared: the copy stayed under update for %u ms "
                                             "(version %llu)", sh->opt.timeout_ms,
                           (unsigned long long)before);
    }
}

int sluice_shared_wait(const sluice_shared_t *sh, uint64_t newer_than, uint32_t timeout_ms,
                       uint64_t *version_p)
{
    if (!sh)
        return sl_fail(SLUICE_EINVAL, "shared: NULL handle");
    sl_deadline_t dl = sl_deadline_in(timeout_ms);
    sl_backoff_t b;
    sl_backoff_init(&b, 64, 1000);
    for (;;) {
        sl_shared_poke(sh);
        uint64_t v = sluice_shared_version(sh);
        if (v % 2 == 0 && v > newer_than) {
            if (version_p)
                *version_p = v;
            return SLUICE_OK;
        }
        if (sl_backoff_pause(&b, &dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "shared: no version newer than %llu within %u ms",
                           (unsigned long long)newer_than, timeout_ms);
    }
}
