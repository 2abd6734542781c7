/* SPDX-License-Identifier: MIT */
/* One-sided transport: inboxes in MPI windows; the writer puts, the reader polls its own memory. */
#include <limits.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../src/inbox.h"
#include "../src/mpiguard.h"
#include "../src/transport.h"

/*
 * Protocol (docs/design.md, "RMA transport"): the inbox is this rank's part
 * of an MPI_Win_allocate window, under one passive-target MPI_Win_lock_all
 * epoch for the channel's life. A writer MPI_Puts payload and records,
 * flushes them (MPI_Win_flush: complete at the target), and only then puts
 * the words that publish them (stamps, counters), completed locally; the
 * next flush completes those at the target. The reader never calls a
 * matching receive: it polls its own memory after MPI_Win_sync.
 */

/*
 * Every MPI call runs under the library-wide guard (src/mpiguard.h), and
 * every wait for the guard has a deadline: the call's own where it has one
 * (open, connect, close), else the liveness period (the data path: put,
 * publish, store64, get, local_sync), which bounds how long a stream thread can sit
 * here because another thread is stuck in MPI or holds sluice_mpi_lock.
 */
#define sl_rma_leave sl_mpi_leave

/* Tag of heartbeat messages on the pair communicator, and how many may be in flight. */
#define SL_RMA_TAG_BEAT 17
#define SL_RMA_BEATS 4

struct sl_link {
    MPI_Comm pair;            /* borrowed from the channel */
    MPI_Win win;
    char *local;
    size_t local_bytes;
    int me, peer_rank;        /* in `pair`: the controller is rank 0 */
    struct sl_link *next_left; /* links whose window was left to MPI_Finalize */
    bool request_left;        /* an RMA request never completed: the link is never freed */
    bool ticket_issued;       /* the close agreement's operation was issued (guard entered) */
    uint64_t peer_magic;      /* connect's read of the peer's magic (a request may outlive it) */
    size_t chunk;             /* largest single MPI_Put/MPI_Get, in bytes */
    /* Puts issued, and how many of them a completed flush covers: at
     * MPI_THREAD_MULTIPLE there is no guard, so stream threads put and
     * flush at once, and a thread may skip its flush only when one that
     * began after its own put has returned (sl_rma_flush_counted). */
    _Atomic uint64_t puts_issued;
    _Atomic uint64_t puts_flushed;
    uint32_t liveness_ms;     /* a read not answered within this: the peer is dead */
    char path[32];            /* "rma/<osc component>" when Open MPI says which, else "rma" */
    _Atomic bool *dead;       /* the channel's: once set, every call that needs the peer fails at once */
    /* The heartbeat, two-sided (see sl_rma_watch64): */
    atomic_flag watch_busy;   /* one drainer of the peer's beats at a time: a watcher or the
                                 heartbeat thread (no guard at MPI_THREAD_MULTIPLE) */
    bool watch_active;        /* a receive of the peer's beat is posted */
    MPI_Request watch_req;
    uint64_t watch_buf;
    _Atomic uint64_t beat_latest; /* the peer's newest beat the heartbeat thread drained */
    _Atomic bool beat_fresh;      /* ... and not yet handed to a watcher */
    MPI_Request beat_req[SL_RMA_BEATS]; /* our beats in flight (heartbeat thread only) */
    uint64_t beat_buf[SL_RMA_BEATS];
};

/*
 * Which one-sided component serves the window (under the guard, right
 * after it was made). MPI has no call for it, but Open MPI names each
 * window after its component ("pt2pt window 3", "rdma window 3", "ucx
 * window 3"), except osc/sm, which names none and is the one that sets the
 * "alloc_shared_noncontig" info key. Other MPI libraries: "rma", nothing
 * claimed (MPICH, for one, sets that key on every window).
 */
static void sl_rma_find_path(sl_link_t *l)
{
    snprintf(l->path, sizeof l->path, "rma");
#ifdef OMPI_MAJOR_VERSION
    char name[MPI_MAX_OBJECT_NAME] = "", comp[16] = "";
    int len = 0;
    if (MPI_Win_get_name(l->win, name, &len) != MPI_SUCCESS)
        return;
    char word[16], rest[16];
    int n;
    if (sscanf(name, "%15[a-z0-9_] %15s %d", word, rest, &n) == 3 && !strcmp(rest, "window")) {
        snprintf(comp, sizeof comp, "%s", word);
    } else if (len == 0) {
        MPI_Info info;
        int found = 0;
        if (MPI_Win_get_info(l->win, &info) == MPI_SUCCESS) {
            char v[8];
#if MPI_VERSION >= 4
            int vlen = (int)sizeof v;
            MPI_Info_get_string(info, "alloc_shared_noncontig", &vlen, v, &found);
#else
            MPI_Info_get(info, "alloc_shared_noncontig", sizeof v - 1, v, &found);
#endif
            MPI_Info_free(&info);
        }
        if (found)
            snprintf(comp, sizeof comp, "sm");
    }
    if (comp[0])
        snprintf(l->path, sizeof l->path, "rma/%s", comp);
#endif
}

static const char *sl_rma_path(const sl_link_t *l) { return l->path; }

static int sl_rma_mpi_fail(int mrc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(mrc, msg, &n);
    return sl_fail(SLUICE_EMPI, "rma: %s failed: %s", what, msg);
}

static int sl_rma_dead(sl_link_t *l, const char *what)
{
    atomic_store_explicit(l->dead, true, memory_order_relaxed);
    return sl_fail(SLUICE_EPEERDEAD, "rma: %s: the peer did not answer within the liveness "
                                     "period (%u ms): it is dead",
                   what, l->liveness_ms);
}

static bool sl_rma_is_dead(sl_link_t *l)
{
    return atomic_load_explicit(l->dead, memory_order_relaxed);
}

static size_t sl_rma_chunk(void)
{
    /* SLUICE_RMA_CHUNK lets tests force the split of large transfers. */
    const char *s = getenv("SLUICE_RMA_CHUNK");
    long v = s ? atol(s) : 0;
    return v >= 64 && v <= INT_MAX ? (size_t)v : (size_t)INT_MAX & ~(size_t)63;
}

static int sl_rma_open(const sl_link_params_t *p, sl_link_t **link_p, void **local_base_p)
{
    sl_link_t *l = calloc(1, sizeof *l);
    if (!l)
        return sl_fail(SLUICE_ENOMEM, "rma: cannot allocate a link");
    l->pair = p->pair;
    l->chunk = sl_rma_chunk();
    l->liveness_ms = p->liveness_ms;
    l->dead = p->peer_dead;
    for (int i = 0; i < SL_RMA_BEATS; i++)
        l->beat_req[i] = MPI_REQUEST_NULL;

    /* Not entering means not entering the collective: the peer then waits
     * in it alone (docs/design.md, "MPI threading contract"). */
    int rc = sl_mpi_enter_until(p->deadline, "rma: MPI_Win_allocate of the inbox");
    if (rc != SLUICE_OK) {
        free(l);
        return rc;
    }
    MPI_Comm_rank(p->pair, &l->me);
    l->peer_rank = 1 - l->me;
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "same_disp_unit", "true");
    /* Accumulate ordering stays at its default: the close agreement relies
     * on two fetch-adds from one origin landing in order. */
    int mrc = MPI_Win_allocate((MPI_Aint)p->bytes, 1, info, p->pair, &l->local, &l->win);
    MPI_Info_free(&info);
    if (mrc == MPI_SUCCESS) {
        sl_rma_find_path(l);
        MPI_Win_set_errhandler(l->win, MPI_ERRORS_RETURN);
        memset(l->local, 0, p->bytes); /* first touch by the reader: pages land on its node */
        l->local_bytes = p->bytes;
        mrc = MPI_Win_lock_all(MPI_MODE_NOCHECK, l->win);
        /* A failure here cannot be undone without the peer (freeing is
         * collective): the window is left for MPI_Finalize. */
    }
    sl_rma_leave();
    if (mrc != MPI_SUCCESS && !l->local_bytes) {
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
                       p->bytes, osc ? osc : "(default)", msg);
    }
    if (mrc != MPI_SUCCESS) {
        free(l);
        return sl_rma_mpi_fail(mrc, "MPI_Win_lock_all");
    }
    *link_p = l;
    *local_base_p = l->local;
    return SLUICE_OK;
}

static void sl_rma_progress(sl_link_t *l);
static void sl_rma_quiet(sl_link_t *l, const sl_deadline_t *deadline);

/* The bound of a guard wait on the data path: one liveness period. */
static int sl_rma_enter_live(sl_link_t *l, const char *what)
{
    sl_deadline_t deadline = sl_deadline_in(l->liveness_ms);
    return sl_mpi_enter_until(&deadline, what);
}

/*
 * Wait for a request until `deadline`; the guard is taken per MPI_Test only,
 * and waited for until the same deadline. *guard_p (when not NULL) says
 * whether a timeout came from the guard, not from the request: then the
 * request's fate is unknown, not the peer's.
 */
static int sl_rma_wait(MPI_Request *req, const sl_deadline_t *deadline, const char *what,
                       bool *guard_p)
{
    sl_backoff_t b;
    /* Spin long enough to cover a network round trip before sleeping. */
    sl_backoff_init(&b, 1024, 200);
    if (guard_p)
        *guard_p = false;
    for (;;) {
        int done = 0;
        int rc = sl_mpi_enter_until(deadline, what);
        if (rc != SLUICE_OK) {
            if (guard_p)
                *guard_p = true;
            return rc;
        }
        int mrc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        sl_rma_leave();
        if (mrc != MPI_SUCCESS)
            return sl_rma_mpi_fail(mrc, what);
        if (done)
            return SLUICE_OK;
        if (sl_backoff_pause(&b, deadline) == SLUICE_ETIMEDOUT)
            return sl_fail(SLUICE_ETIMEDOUT, "rma: %s did not complete before the deadline", what);
    }
}

/*
 * One atomic fetch-and-op on the close ticket (in the controller's window),
 * as a request polled against the deadline: with emulated RMA a peer that
 * does not enter MPI never completes it. On timeout the request is left to
 * complete on its own (it is never freed while active).
 */
static int sl_rma_ticket(sl_link_t *l, uint64_t add, MPI_Op op, uint64_t *old_p,
                         const sl_deadline_t *deadline)
{
    /* Origin and result in a buffer of this request's own: one that times
     * out may still read its origin and write its result after a later
     * request of the agreement was issued, so its buffer is left to it
     * (16 bytes, on that path only) and the link is marked. */
    uint64_t *buf = malloc(2 * sizeof *buf);
    if (!buf)
        return sl_fail(SLUICE_ENOMEM, "rma close: no memory for the close agreement");
    buf[0] = add;
    buf[1] = 0;
    MPI_Request req;
    int rc = sl_mpi_enter_until(deadline, "rma close: the close agreement");
    if (rc != SLUICE_OK) {
        free(buf);
        return rc; /* nothing issued: this side did not take part */
    }
    l->ticket_issued = true;
    int mrc = MPI_Rget_accumulate(&buf[0], 1, MPI_UINT64_T, &buf[1], 1, MPI_UINT64_T, 0,
                                  offsetof(sl_inbox_header_t, close_ticket), 1, MPI_UINT64_T, op,
                                  l->win, &req);
    sl_rma_leave();
    if (mrc != MPI_SUCCESS) {
        free(buf);
        return sl_rma_mpi_fail(mrc, "MPI_Rget_accumulate on the close ticket");
    }
    rc = sl_rma_wait(&req, deadline, "the close agreement", NULL);
    if (rc != SLUICE_OK) {
        l->request_left = true; /* `buf` stays the request's */
        return rc;
    }
    *old_p = buf[1];
    free(buf);
    return SLUICE_OK;
}

/*
 * The window stays for MPI_Finalize. The link's memory is freed unless a
 * request may still write into it; such links stay reachable here.
 */
static sl_link_t *sl_rma_left;
static pthread_mutex_t sl_rma_left_lock = PTHREAD_MUTEX_INITIALIZER;

static void sl_rma_leave_window(sl_link_t *l)
{
    if (!l->request_left) {
        free(l);
        return;
    }
    pthread_mutex_lock(&sl_rma_left_lock);
    l->next_left = sl_rma_left;
    sl_rma_left = l;
    pthread_mutex_unlock(&sl_rma_left_lock);
}

static int sl_rma_connect(sl_link_t *l, const sl_deadline_t *deadline, size_t *peer_bytes_p)
{
    /* Our header was written with plain stores: make it visible to the
     * peer's gets, then poll the peer's magic, with no collective. */
    int rc = sl_mpi_enter_until(deadline, "rma: connecting");
    if (rc != SLUICE_OK)
        return rc;
    MPI_Win_sync(l->win);
    sl_rma_leave();
    sl_backoff_t b;
    sl_backoff_init(&b, 64, 1000);
    for (;;) {
        /* The result lands in the link, not on this stack: a read that
         * does not complete by the deadline is left to MPI, and so is the
         * link (request_left: never freed). */
        l->peer_magic = 0;
        MPI_Request req;
        if ((rc = sl_mpi_enter_until(deadline, "rma: reading the peer's header")) != SLUICE_OK)
            return rc;
        int mrc = MPI_Rget(&l->peer_magic, 1, MPI_UINT64_T, l->peer_rank, 0, 1, MPI_UINT64_T,
                           l->win, &req);
        sl_rma_leave();
        if (mrc != MPI_SUCCESS)
            return sl_rma_mpi_fail(mrc, "MPI_Rget of the peer's header");
        rc = sl_rma_wait(&req, deadline, "reading the peer's header", NULL);
        if (rc) {
            l->request_left = true;
            return rc;
        }
        if (l->peer_magic == SL_INBOX_MAGIC)
            break;
        if (sl_backoff_pause(&b, deadline) == SLUICE_ETIMEDOUT)
            return sl_fail(SLUICE_ETIMEDOUT, "rma: the peer's inbox was not ready before the "
                                             "deadline");
    }
    /* Both inboxes have the same geometry (agreed in the handshake); the
     * header check after this confirms it. */
    *peer_bytes_p = l->local_bytes;
    return SLUICE_OK;
}

/*
 * The close agreement. Each side adds 1 to the ticket; the first to arrive
 * (old value 0) waits for the second (value 2) and then both free the
 * window collectively. A first side that gives up at its deadline adds 2
 * more: if the value was still 1 the peer has not come, and both leak (the
 * peer, arriving later, reads 3 and leaks too); if it was 2 the peer came
 * just in time and both free. Neither side ever enters the collective free
 * alone (docs/design.md, "Closing").
 */
static int sl_rma_close(sl_link_t *l, const sl_deadline_t *deadline)
{
    if (!l)
        return SLUICE_OK;
    sl_rma_quiet(l, deadline);
    if (sl_rma_is_dead(l) || l->request_left) {
        /* Nobody to agree with: the peer, if it comes after all, finds no
         * second ticket and leaks too. */
        sl_rma_leave_window(l);
        return sl_fail(SLUICE_ETIMEDOUT, "rma close: the peer is dead or does not answer; the "
                                         "window is left to MPI_Finalize");
    }
    uint64_t old = 0;
    bool both = false;
    l->ticket_issued = false;
    int rc = sl_rma_ticket(l, 1, MPI_SUM, &old, deadline);
    /* Never issued (the guard stayed held): this side did not take part,
     * so it must not give up as the first one either (a 2 added on top of
     * the peer's 1 would read to a waiting peer as "both came"). */
    bool joined = l->ticket_issued;

    if (rc == SLUICE_OK && old == 1) {
        both = true; /* the peer is waiting for us */
    } else if (rc == SLUICE_OK && old == 0) {
        sl_backoff_t b;
        sl_backoff_init(&b, 64, 1000);
        uint64_t now = 0;
        while ((rc = sl_rma_ticket(l, 0, MPI_NO_OP, &now, deadline)) == SLUICE_OK && now < 2) {
            /* The controller's reads of its own ticket complete at once,
             * without driving MPI: drive it, or the peer's operations on
             * this window (emulated RMA) never land. */
            sl_rma_progress(l);
            if (sl_backoff_pause(&b, deadline) == SLUICE_ETIMEDOUT)
                break;
        }
        both = rc == SLUICE_OK && now >= 2;
    }
    if (!both && old == 0 && joined) {
        /* Give up, telling the peer. Bounded by one more timeout: if even
         * this does not complete, the peer is gone. */
        sl_deadline_t last = sl_deadline_in(1000);
        uint64_t seen = 0;
        if (sl_rma_ticket(l, 2, MPI_SUM, &seen, &last) == SLUICE_OK && seen == 2)
            both = true;
    }
    if (!both) {
        sl_rma_leave_window(l);
        return sl_fail(SLUICE_ETIMEDOUT, "rma close: %s; the window is left to MPI_Finalize",
                       joined ? "the peer did not close in time"
                              : "the MPI guard stayed held by another thread until the deadline");
    }
    /* Both agreed to free together. The agreement may have spent the
     * deadline: the guard gets one more liveness period. A side that still
     * cannot enter leaves the window, and its peer waits in MPI_Win_free
     * alone (docs/design.md, "MPI threading contract"). */
    sl_deadline_t last = sl_deadline_in(l->liveness_ms);
    if (sl_mpi_enter_until(sl_now_ns() < deadline->at_ns ? deadline : &last,
                           "rma close: MPI_Win_free") != SLUICE_OK) {
        sl_rma_leave_window(l);
        return SLUICE_ETIMEDOUT;
    }
    MPI_Win_flush_all(l->win);
    MPI_Win_unlock_all(l->win);
    MPI_Win_free(&l->win);
    sl_rma_leave();
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
    if (sl_rma_is_dead(l))
        return sl_fail(SLUICE_EPEERDEAD, "rma: the peer is dead");
    int rc = sl_rma_enter_live(l, "rma: MPI_Put");
    if (rc != SLUICE_OK)
        return rc; /* nothing was put */
    /* MPI_Put takes a const origin since MPI-3; the cast only shares the loop. */
    int mrc = sl_rma_chunks(l, off, (char *)(uintptr_t)src, len, true);
    atomic_fetch_add_explicit(&l->puts_issued, 1, memory_order_acq_rel);
    if (mrc != MPI_SUCCESS) /* pieces that went out read `src` until they complete here */
        MPI_Win_flush_local(l->peer_rank, l->win);
    sl_rma_leave();
    return mrc == MPI_SUCCESS ? SLUICE_OK : sl_rma_mpi_fail(mrc, "MPI_Put");
}

/*
 * Under the guard: complete every put counted so far at the target
 * (MPI_Win_flush), unless a flush that began after all of them has already
 * returned, on this thread or another (a flush completes the whole
 * process's puts to the peer). MPI has no request-based flush: a flush
 * towards a peer that died after the caller's check is bounded only by
 * what MPI does (docs/design.md, "Liveness").
 */
static int sl_rma_flush_counted(sl_link_t *l)
{
    uint64_t issued = atomic_load_explicit(&l->puts_issued, memory_order_acquire);
    if (atomic_load_explicit(&l->puts_flushed, memory_order_acquire) >= issued)
        return MPI_SUCCESS;
    int mrc = MPI_Win_flush(l->peer_rank, l->win);
    uint64_t seen = atomic_load_explicit(&l->puts_flushed, memory_order_relaxed);
    while (mrc == MPI_SUCCESS && seen < issued &&
           !atomic_compare_exchange_weak_explicit(&l->puts_flushed, &seen, issued,
                                                  memory_order_acq_rel, memory_order_relaxed))
        ;
    return mrc;
}

/*
 * Put `n` words (`words[i]` to `offs[i]`), after everything counted before
 * them is complete at the target (the release half), and complete them
 * locally only: they are on their way, and the next flush (a later
 * publication's or store's, or close's flush_all) completes them at the
 * target. That saves a round trip per publication (docs/design.md, "RMA
 * transport": what this rests on). They are counted as one more put, so
 * that anything stored after them waits for them first: a stamp and then
 * peer_closed must land in that order. A put of one aligned 8-byte word
 * lands whole on every provider we know of. Under the guard; `words` stays
 * valid until the local completion, in the caller's frame.
 */
static int sl_rma_put_words(sl_link_t *l, const size_t *offs, const uint64_t *words, size_t n)
{
    int mrc = sl_rma_flush_counted(l);
    if (mrc != MPI_SUCCESS)
        return mrc; /* none of the words went out */
    for (size_t i = 0; i < n && mrc == MPI_SUCCESS; i++)
        mrc = MPI_Put(&words[i], 1, MPI_UINT64_T, l->peer_rank, (MPI_Aint)offs[i], 1,
                      MPI_UINT64_T, l->win);
    atomic_fetch_add_explicit(&l->puts_issued, 1, memory_order_acq_rel);
    /* Even after a failed put: those that went out read `words` until then. */
    int lrc = MPI_Win_flush_local(l->peer_rank, l->win);
    return mrc != MPI_SUCCESS ? mrc : lrc;
}

static int sl_rma_store64(sl_link_t *l, size_t off, uint64_t value)
{
    if (sl_rma_is_dead(l))
        return sl_fail(SLUICE_EPEERDEAD, "rma: the peer is dead");
    int rc = sl_rma_enter_live(l, "rma: publishing a counter");
    if (rc != SLUICE_OK)
        return rc; /* nothing published */
    int mrc = sl_rma_put_words(l, &off, &value, 1);
    sl_rma_leave();
    return mrc == MPI_SUCCESS ? SLUICE_OK : sl_rma_mpi_fail(mrc, "counter publication");
}

/*
 * Ring records: every payload and body put, then one flush for them and for
 * every earlier put (zero-copy products among them), then the stamps, all under
 * one hold of the guard, so a wait for it fails before anything was put.
 * The bodies are complete locally before return (the stamps' local
 * completion covers them; on an error a local flush of its own), so the
 * caller's copies may go. An MPI error in the middle may have let a stamp
 * out, which no retry could mend: the link is marked dead, whether or not
 * one did.
 */
enum { SL_RMA_PUBLISH_MAX = 64 };
static int sl_rma_publish(sl_link_t *l, const sl_stamped_t *recs, size_t n)
{
    if (n > SL_RMA_PUBLISH_MAX)
        return sl_fail(SLUICE_EINVAL, "rma: %zu records in one publication (at most %d)", n,
                       SL_RMA_PUBLISH_MAX);
    if (sl_rma_is_dead(l))
        return sl_fail(SLUICE_EPEERDEAD, "rma: the peer is dead");
    int rc = sl_rma_enter_live(l, "rma: publishing records");
    if (rc != SLUICE_OK)
        return rc; /* nothing was put */
    int mrc = MPI_SUCCESS;
    for (size_t i = 0; i < n && mrc == MPI_SUCCESS; i++) {
        if (recs[i].payload_len)
            mrc = sl_rma_chunks(l, recs[i].payload_off, (char *)(uintptr_t)recs[i].payload,
                                recs[i].payload_len, true);
        if (mrc == MPI_SUCCESS)
            mrc = sl_rma_chunks(l, recs[i].off + recs[i].body_off,
                                (char *)(uintptr_t)recs[i].body, recs[i].body_len, true);
    }
    atomic_fetch_add_explicit(&l->puts_issued, 1, memory_order_acq_rel);
    size_t offs[SL_RMA_PUBLISH_MAX];
    uint64_t stamps[SL_RMA_PUBLISH_MAX];
    for (size_t i = 0; i < n; i++) {
        offs[i] = recs[i].off;
        stamps[i] = recs[i].stamp;
    }
    bool bodies_ok = mrc == MPI_SUCCESS;
    if (bodies_ok)
        mrc = sl_rma_put_words(l, offs, stamps, n);
    if (mrc != MPI_SUCCESS) /* the bodies' buffers go with the caller */
        MPI_Win_flush_local(l->peer_rank, l->win);
    sl_rma_leave();
    if (mrc == MPI_SUCCESS)
        return SLUICE_OK;
    rc = sl_rma_mpi_fail(mrc, bodies_ok ? "publishing records" : "MPI_Put of a record");
    atomic_store_explicit(l->dead, true, memory_order_relaxed);
    return rc;
}

/*
 * Reads go through requests polled against the liveness period, never a
 * blocking flush: a dead peer (which MPI does not report) costs one period,
 * not a hang. The result lands in a bounce buffer of its own, which is
 * left to the request (and the link kept) if the request never completes.
 */
static int sl_rma_get(sl_link_t *l, size_t off, void *dst, size_t len)
{
    if (sl_rma_is_dead(l))
        return sl_fail(SLUICE_EPEERDEAD, "rma: the peer is dead");
    char *bounce = malloc(len ? len : 1);
    if (!bounce)
        return sl_fail(SLUICE_ENOMEM, "rma: cannot allocate %zu bytes for a read", len);
    sl_deadline_t deadline = sl_deadline_in(l->liveness_ms);
    for (size_t done = 0; done < len;) {
        size_t n = len - done < l->chunk ? len - done : l->chunk;
        MPI_Request req;
        int rc = sl_mpi_enter_until(&deadline, "rma: a read of the peer's inbox");
        if (rc != SLUICE_OK) {
            free(bounce); /* nothing issued: this process's guard, not the peer, timed out */
            return rc;
        }
        int mrc = MPI_Rget(bounce + done, (int)n, MPI_BYTE, l->peer_rank, (MPI_Aint)(off + done),
                           (int)n, MPI_BYTE, l->win, &req);
        sl_rma_leave();
        if (mrc != MPI_SUCCESS) {
            free(bounce);
            return sl_rma_mpi_fail(mrc, "MPI_Rget");
        }
        bool guard;
        rc = sl_rma_wait(&req, &deadline, "a read of the peer's inbox", &guard);
        if (rc == SLUICE_ETIMEDOUT) {
            l->request_left = true; /* `bounce` stays the request's */
            /* Only an unanswered read says the peer is dead; one whose
             * test could not get the guard says nothing of it. */
            return guard ? rc : sl_rma_dead(l, "reading its inbox");
        }
        if (rc) {
            free(bounce);
            return rc;
        }
        done += n;
    }
    memcpy(dst, bounce, len);
    free(bounce);
    return SLUICE_OK;
}

/*
 * Take every beat of the peer that came (under the guard, holding
 * watch_busy), keeping one receive posted; the newest in *value_p.
 * SLUICE_OK if one came, SLUICE_EAGAIN if none, or an MPI failure.
 */
static int sl_rma_drain_beats(sl_link_t *l, uint64_t *value_p)
{
    int mrc = MPI_SUCCESS, done = 0;
    bool got = false;
    for (;;) {
        if (!l->watch_active) {
            mrc = MPI_Irecv(&l->watch_buf, 1, MPI_UINT64_T, l->peer_rank, SL_RMA_TAG_BEAT,
                            l->pair, &l->watch_req);
            if (mrc != MPI_SUCCESS)
                break;
            l->watch_active = true;
        }
        if ((mrc = MPI_Test(&l->watch_req, &done, MPI_STATUS_IGNORE)) != MPI_SUCCESS || !done)
            break;
        l->watch_active = false;
        *value_p = l->watch_buf;
        got = true;
    }
    if (mrc != MPI_SUCCESS)
        return sl_rma_mpi_fail(mrc, "the heartbeat receive");
    return got ? SLUICE_OK : SLUICE_EAGAIN;
}

/*
 * The heartbeat crosses as small two-sided messages, not as a read of the
 * peer's heartbeat word: on osc/pt2pt over TCP, MPI_Rget itself blocks for
 * ever once the target is dead, while posting a receive and testing it never
 * blocks (docs/design.md, "Liveness"). The receive is re-posted after each
 * beat; a backlog is drained so the newest beat counts, here or by the
 * heartbeat thread (sl_rma_beat), whose newest beat a watcher takes first.
 */
static int sl_rma_watch64(sl_link_t *l, size_t off, uint64_t *value_p)
{
    (void)off;
    if (sl_rma_is_dead(l))
        return sl_fail(SLUICE_EPEERDEAD, "rma: the peer is dead");
    /* What the heartbeat thread drained meanwhile counts as heard. */
    bool fresh = atomic_exchange_explicit(&l->beat_fresh, false, memory_order_acquire);
    if (fresh)
        *value_p = atomic_load_explicit(&l->beat_latest, memory_order_relaxed);
    if (atomic_flag_test_and_set_explicit(&l->watch_busy, memory_order_acquire))
        return fresh ? SLUICE_OK : SLUICE_EAGAIN; /* the heartbeat thread drains right now */
    /* Never longer than a tenth of the liveness period (how often the
     * watcher looks): a guard held longer gives no verdict this time. */
    sl_deadline_t deadline = sl_deadline_in(l->liveness_ms / 10);
    int rc = sl_mpi_enter_until(&deadline, "rma: the heartbeat receive");
    if (rc == SLUICE_OK) {
        rc = sl_rma_drain_beats(l, value_p);
        sl_rma_leave();
    } else {
        rc = SLUICE_EBUSY;
    }
    atomic_flag_clear_explicit(&l->watch_busy, memory_order_release);
    return fresh && (rc == SLUICE_EAGAIN || rc == SLUICE_EBUSY) ? SLUICE_OK : rc;
}

static void sl_rma_beat(sl_link_t *l, uint64_t value)
{
    /* The guard is held around single MPI calls only, so waiting for it is
     * short; skipping beats while stream threads keep it busy made healthy
     * peers look dead. But a thread stuck in MPI, or the application in
     * sluice_mpi_lock, may keep it: the wait ends after one beat period
     * (a quarter of liveness_ms), and that beat is skipped. */
    sl_deadline_t deadline = sl_deadline_in(l->liveness_ms / 4);
    if (sl_mpi_enter_until(&deadline, "rma: a heartbeat send") != SLUICE_OK)
        return;
    for (int i = 0; i < SL_RMA_BEATS; i++) {
        int done = 1;
        if (l->beat_req[i] != MPI_REQUEST_NULL)
            MPI_Test(&l->beat_req[i], &done, MPI_STATUS_IGNORE);
        if (!done)
            continue;
        /* A small send completes at once; one to a dead peer may never, and
         * then at most SL_RMA_BEATS stay in flight. */
        l->beat_buf[i] = value;
        MPI_Isend(&l->beat_buf[i], 1, MPI_UINT64_T, l->peer_rank, SL_RMA_TAG_BEAT, l->pair,
                  &l->beat_req[i]);
        break;
    }
    /* Take the peer's beats in too, so that they do not pile up in MPI
     * while this side makes no sluice wait (an idle source, for hours);
     * the newest is kept for the next watcher. */
    uint64_t newest;
    if (!atomic_flag_test_and_set_explicit(&l->watch_busy, memory_order_acquire)) {
        if (sl_rma_drain_beats(l, &newest) == SLUICE_OK) {
            atomic_store_explicit(&l->beat_latest, newest, memory_order_relaxed);
            atomic_store_explicit(&l->beat_fresh, true, memory_order_release);
        }
        atomic_flag_clear_explicit(&l->watch_busy, memory_order_release);
    }
    sl_mpi_leave();
}

/* Before the window goes: no heartbeat request may stay active. */
static void sl_rma_quiet(sl_link_t *l, const sl_deadline_t *deadline)
{
    if (l->watch_active) {
        if (sl_mpi_enter_until(deadline, "rma close: cancelling the heartbeat receive")) {
            l->request_left = true;
            return;
        }
        MPI_Cancel(&l->watch_req);
        sl_rma_leave();
        if (sl_rma_wait(&l->watch_req, deadline, "cancelling the heartbeat receive", NULL))
            l->request_left = true;
        l->watch_active = false;
    }
    for (int i = 0; i < SL_RMA_BEATS; i++)
        if (l->beat_req[i] != MPI_REQUEST_NULL &&
            sl_rma_wait(&l->beat_req[i], deadline, "a heartbeat send", NULL))
            l->request_left = true;
}

static int sl_rma_load64(sl_link_t *l, size_t off, uint64_t *value_p)
{
    /* Acquire: the request completes the get before we act on the value. */
    return sl_rma_get(l, off, value_p, sizeof *value_p);
}

static int sl_rma_local_sync(sl_link_t *l)
{
    /* Puts by the peer reach our memory outside the compiler's view:
     * MPI_Win_sync orders them with our following loads. */
    int rc = sl_rma_enter_live(l, "rma: MPI_Win_sync");
    if (rc != SLUICE_OK)
        return rc;
    MPI_Win_sync(l->win);
    sl_rma_leave();
    return SLUICE_OK;
}

static void sl_rma_progress(sl_link_t *l)
{
    /* Emulated RMA (osc/pt2pt) moves data only when the target enters MPI. */
    /* On a communicator nothing is sent to: a probe that finds a message
     * (a heartbeat not yet received, on `pair`) returns without progress. */
    /* Skipped while the guard is busy: its holder is inside MPI, which
     * drives progress itself (or is the application, which a wait then
     * learns from local_sync's bounded wait). Never waits. */
    (void)l;
    int flag;
    if (!sl_mpi_try_enter())
        return;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_SELF, &flag, MPI_STATUS_IGNORE);
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
    .publish = sl_rma_publish,
    .path = sl_rma_path,
    .load64 = sl_rma_load64,
    .get = sl_rma_get,
    .local_sync = sl_rma_local_sync,
    .progress = sl_rma_progress,
    .watch64 = sl_rma_watch64,
    .beat = sl_rma_beat,
};
