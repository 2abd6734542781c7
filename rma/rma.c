/* SPDX-License-Identifier: MIT */
/* One-sided transport: inboxes in MPI windows; the writer puts, the reader polls its own memory. */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../src/pairwait.h"
#include "../src/transport.h"

/*
 * Protocol (docs/design.md, "RMA transport"): the inbox is this rank's part
 * of an MPI_Win_allocate window, under one passive-target MPI_Win_lock_all
 * epoch for the channel's life. A writer MPI_Puts payload and records, then
 * store64() flushes them (MPI_Win_flush: complete at the target) and only
 * then puts the counter and flushes again. The reader never calls a matching
 * receive: it polls its own memory after MPI_Win_sync.
 */

/*
 * Below MPI_THREAD_MULTIPLE (osc/pt2pt in Open MPI 4.1 refuses MULTIPLE),
 * stream threads must not call MPI at the same time: every MPI call of this
 * transport then runs under one process-wide lock. At MULTIPLE the lock is
 * skipped. Either way the application must not call MPI from other threads
 * while a sluice call is in flight unless it initialised MPI_THREAD_MULTIPLE.
 */
static pthread_mutex_t sl_rma_mpi_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int sl_rma_serialise = -1; /* unknown until the first open */

static inline void sl_rma_enter(void)
{
    if (atomic_load_explicit(&sl_rma_serialise, memory_order_relaxed))
        pthread_mutex_lock(&sl_rma_mpi_lock);
}

static inline void sl_rma_leave(void)
{
    if (atomic_load_explicit(&sl_rma_serialise, memory_order_relaxed))
        pthread_mutex_unlock(&sl_rma_mpi_lock);
}

struct sl_link {
    MPI_Comm pair;            /* borrowed from the channel */
    MPI_Win win;
    char *local;
    size_t local_bytes;
    int peer_rank;
    size_t chunk;             /* largest single MPI_Put/MPI_Get, in bytes */
};

static int sl_rma_mpi_fail(int mrc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(mrc, msg, &n);
    return sl_fail(SLUICE_EMPI, "rma: %s failed: %s", what, msg);
}

static size_t sl_rma_chunk(void)
{
    /* SLUICE_RMA_CHUNK lets tests force the split of large transfers. */
    const char *s = getenv("SLUICE_RMA_CHUNK");
    long v = s ? atol(s) : 0;
    return v >= 64 && v <= INT_MAX ? (size_t)v : (size_t)INT_MAX & ~(size_t)63;
}

static int sl_rma_open(MPI_Comm pair, size_t bytes, int numa, sl_link_t **link_p,
                       void **local_base_p)
{
    (void)numa; /* MPI allocates; first touch below places the pages */
    int level;
    MPI_Query_thread(&level);
    atomic_store(&sl_rma_serialise, level < MPI_THREAD_MULTIPLE);
    sl_link_t *l = calloc(1, sizeof *l);
    if (!l)
        return sl_fail(SLUICE_ENOMEM, "rma: cannot allocate a link");
    l->pair = pair;
    int me;
    MPI_Comm_rank(pair, &me);
    l->peer_rank = 1 - me;
    l->chunk = sl_rma_chunk();

    MPI_Info info;
    MPI_Info_create(&info);
    /* Counters are updated only by put and read only by get or local loads:
     * no accumulate ordering is needed, which lets providers go faster. */
    MPI_Info_set(info, "accumulate_ordering", "none");
    MPI_Info_set(info, "same_disp_unit", "true");
    int mrc = MPI_Win_allocate((MPI_Aint)bytes, 1, info, pair, &l->local, &l->win);
    MPI_Info_free(&info);
    if (mrc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int n = 0;
        MPI_Error_string(mrc, msg, &n);
        free(l);
        const char *osc = getenv("OMPI_MCA_osc");
        return sl_fail(SLUICE_EMPI, "rma: MPI_Win_allocate of %zu bytes failed with osc "
                                    "components '%s': %s. Open MPI's osc/rdma cannot create "
                                    "windows over TCP-only networks: set OMPI_MCA_osc=pt2pt there "
                                    "(osc/ucx or osc/rdma on InfiniBand/RoCE); osc/pt2pt refuses "
                                    "MPI_THREAD_MULTIPLE: initialise MPI_THREAD_SERIALIZED with it",
                       bytes, osc ? osc : "(default)", msg);
    }
    MPI_Win_set_errhandler(l->win, MPI_ERRORS_RETURN);
    memset(l->local, 0, bytes); /* first touch by the reader: pages land on its node */
    l->local_bytes = bytes;
    if ((mrc = MPI_Win_lock_all(MPI_MODE_NOCHECK, l->win)) != MPI_SUCCESS) {
        MPI_Win_free(&l->win);
        free(l);
        return sl_rma_mpi_fail(mrc, "MPI_Win_lock_all");
    }
    *link_p = l;
    *local_base_p = l->local;
    return SLUICE_OK;
}

static int sl_rma_connect(sl_link_t *l, const sl_deadline_t *deadline, size_t *peer_bytes_p)
{
    /* Our inbox header was written with plain stores: the peer's gets may
     * read it once this returns. */
    sl_rma_enter();
    int rc = sl_window_barrier(l->win, l->pair, deadline, "rma connect");
    sl_rma_leave();
    if (rc)
        return rc;
    /* Both inboxes have the same geometry (checked in the handshake); the
     * header check after this get confirms it. */
    *peer_bytes_p = l->local_bytes;
    return SLUICE_OK;
}

static int sl_rma_close(sl_link_t *l, const sl_deadline_t *deadline)
{
    if (!l)
        return SLUICE_OK;
    /* Every MPI call of this transport runs under the serialisation lock,
     * these too: other channels' stream threads may be in MPI meanwhile. */
    sl_rma_enter();
    MPI_Win_flush_all(l->win);
    int rc = sl_pair_barrier(l->pair, deadline, "rma close");
    if (rc == SLUICE_OK) {
        MPI_Win_unlock_all(l->win);
        MPI_Win_free(&l->win);
    }
    sl_rma_leave();
    if (rc)
        return rc; /* the window stays: freeing it would block on the absent peer */
    free(l);
    return SLUICE_OK;
}

/*
 * MPI counts are ints: transfers larger than `chunk` go in several calls.
 * Called with the serialisation lock held.
 */
static int sl_rma_chunks(sl_link_t *l, size_t off, char *buf, size_t len, bool put)
{
    int mrc = MPI_SUCCESS;
    while (len && mrc == MPI_SUCCESS) {
        size_t n = len < l->chunk ? len : l->chunk;
        mrc = put ? MPI_Put(buf, (int)n, MPI_BYTE, l->peer_rank, (MPI_Aint)off, (int)n, MPI_BYTE,
                            l->win)
                  : MPI_Get(buf, (int)n, MPI_BYTE, l->peer_rank, (MPI_Aint)off, (int)n, MPI_BYTE,
                            l->win);
        buf += n, off += n, len -= n;
    }
    return mrc;
}

static int sl_rma_put(sl_link_t *l, size_t off, const void *src, size_t len)
{
    sl_rma_enter();
    /* MPI_Put takes a const origin since MPI-3; the cast only shares the loop. */
    int mrc = sl_rma_chunks(l, off, (char *)(uintptr_t)src, len, true);
    sl_rma_leave();
    return mrc == MPI_SUCCESS ? SLUICE_OK : sl_rma_mpi_fail(mrc, "MPI_Put");
}

static int sl_rma_store64(sl_link_t *l, size_t off, uint64_t value)
{
    /* First flush: every earlier put is complete at the target before the
     * counter that publishes it can land (the release half). */
    sl_rma_enter();
    int mrc = MPI_Win_flush(l->peer_rank, l->win);
    /* The origin buffer must live until the second flush; a put of one
     * aligned 8-byte word lands whole on every provider we know of. */
    uint64_t buf = value;
    if (mrc == MPI_SUCCESS)
        mrc = MPI_Put(&buf, 1, MPI_UINT64_T, l->peer_rank, (MPI_Aint)off, 1, MPI_UINT64_T, l->win);
    if (mrc == MPI_SUCCESS)
        mrc = MPI_Win_flush(l->peer_rank, l->win);
    sl_rma_leave();
    return mrc == MPI_SUCCESS ? SLUICE_OK : sl_rma_mpi_fail(mrc, "counter publication");
}

static int sl_rma_get(sl_link_t *l, size_t off, void *dst, size_t len)
{
    sl_rma_enter();
    int mrc = sl_rma_chunks(l, off, dst, len, false);
    /* A get's result may be read only after a flush. */
    if (mrc == MPI_SUCCESS)
        mrc = MPI_Win_flush(l->peer_rank, l->win);
    sl_rma_leave();
    return mrc == MPI_SUCCESS ? SLUICE_OK : sl_rma_mpi_fail(mrc, "MPI_Get");
}

static int sl_rma_load64(sl_link_t *l, size_t off, uint64_t *value_p)
{
    /* Acquire: the flush completes the get before we act on the value. */
    return sl_rma_get(l, off, value_p, sizeof *value_p);
}

static void sl_rma_local_sync(sl_link_t *l)
{
    /* Puts by the peer reach our memory outside the compiler's view:
     * MPI_Win_sync orders them with our following loads. */
    sl_rma_enter();
    MPI_Win_sync(l->win);
    sl_rma_leave();
}

static void sl_rma_progress(sl_link_t *l)
{
    /* Emulated RMA (osc/pt2pt) moves data only when the target enters MPI. */
    int flag;
    sl_rma_enter();
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, l->pair, &flag, MPI_STATUS_IGNORE);
    sl_rma_leave();
}

static void *sl_rma_peer_ptr(sl_link_t *l, size_t off)
{
    (void)l, (void)off;
    return NULL; /* no SL_CAP_PEER_POINTER: the core stages reservations */
}

const sl_transport_ops_t sl_rma_transport = {
    .size = sizeof(sl_transport_ops_t),
    .name = "rma",
    .caps = SL_CAP_NEEDS_PROGRESS,
    .open = sl_rma_open,
    .connect = sl_rma_connect,
    .close = sl_rma_close,
    .put = sl_rma_put,
    .peer_ptr = sl_rma_peer_ptr,
    .store64 = sl_rma_store64,
    .load64 = sl_rma_load64,
    .get = sl_rma_get,
    .local_sync = sl_rma_local_sync,
    .progress = sl_rma_progress,
};
