/* SPDX-License-Identifier: MIT */
/* sluice_lock: an MCS queue lock over MPI one-sided atomics, with deadlines and dead-holder
 * recovery. */
#include <mpi.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/lock.h>

#include "../src/backoff.h"
#include "../src/heartbeat.h"
#include "../src/internal.h"
#include "../src/liveness.h"
#include "../src/mpiguard.h"

/*
 * The protocol, the layout of the window and the failure behaviour are in
 * docs/locks.md; this file follows it section by section.
 */

/*
 * Word indexes in each rank's page (32-bit words, disp_unit 4): one cache
 * line apart. 32 bits, not 64: Open MPI 4.1's osc/rdma over btl/vader
 * crashes in a 64-bit MPI_Compare_and_swap (upstream issues 7967, 11349).
 */
typedef int32_t sl_word_t;
#define SL_MPI_WORD MPI_INT32_T
enum { W_TAIL = 0, W_HOLDER = 16, W_NEXT = 32, W_STATE = 48, PAGE_BYTES = 4096 };

/* States of a rank's queue node. */
enum { ST_IDLE = 0, ST_WAITING = 1, ST_GRANTED = 2, ST_ABANDONED = 3, ST_PASSED = 4 };

enum { HOME = 0, NOBODY = -1, SPIN_POLLS = 64 };

/* Heartbeats to a successor on another node ("A holder that dies"): the
 * message tag on the lock's own communicator, and how many sends to the
 * current successor may be in flight before a beat is skipped. */
enum { BEAT_TAG = 1, BEATS_OUT = 4 };

/* One send slot. A send that has not completed when the successor changed
 * (its destination died, or stopped listening), or that failed, is let go
 * with MPI_Request_free; its 8-byte buffer stays with MPI (leaked on
 * purpose: at most BEATS_OUT per successor that stopped listening). */
typedef struct sl_lock_beat_slot {
    MPI_Request req;
    uint64_t *buf; /* NULL: none yet, or the last one was left to MPI */
    int dest;
} sl_lock_beat_slot_t;

typedef struct sl_lock_beats_out {
    sl_lock_beat_slot_t slot[BEATS_OUT];
} sl_lock_beats_out_t;

typedef struct sl_lock_peer {
    int64_t pid;
    uint64_t start;    /* process start time: (pid, start) names one process */
    uint64_t node;     /* hash of host name and boot id */
    uint64_t beats;    /* its MPI thread level lets its heartbeat thread send beats */
} sl_lock_peer_t;

struct sluice_lock {
    MPI_Comm comm;           /* private duplicate */
    MPI_Win win;
    sl_word_t *base;         /* this rank's page */
    sl_word_t **pages;       /* every rank's page, mapped here: a shared-memory window whose
                                words are used with the processor's atomics; NULL: MPI's */
    int rank, size;
    sluice_lock_options_t opt;
    sl_lock_peer_t *peers;   /* per rank, from create's all-gather */
    uint64_t my_node;
    _Atomic int gate;        /* threads of this process: 1 while one of them is in or holds */
    sl_word_t pred;          /* predecessor of this rank's current or abandoned node */
    sl_word_t resume;        /* a release that timed out: the node it was passing, or NOBODY */
    _Atomic uintptr_t owner; /* the thread that acquired the held lock (sl_lock_self), or 0 */
    _Atomic uint64_t n_acquired, n_remote, n_passed, n_owner_dead, n_timed_out;
    /* Liveness across nodes (only while `beating`): */
    bool beating;            /* registered with the heartbeat thread */
    bool stale_waiting;      /* own state reads WAITING, but a failed swap never queued it */
    bool test_die_in_handoff; /* SLUICE_TEST_LOCK_DIE_IN_HANDOFF: a test's kill point */
    sl_beat_t beat;
    _Atomic uint64_t beat_word;
    sl_lock_beats_out_t *out; /* heartbeat thread only; leaked if a send never completes */
    sl_word_t watched;       /* the predecessor whose beats are being listened for */
    uint64_t heard_ns;       /* when it was last heard of (or the wait began) */
};

/* A name for the calling thread: the address of a thread-local byte. */
static uintptr_t sl_lock_self(void)
{
    static _Thread_local char tag;
    return (uintptr_t)&tag;
}

static void sl_lock_count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ------------------------------------------------------------ one-sided atomics */

/*
 * Each helper issues one atomic on `target`'s word `word` and flushes it, so
 * its result is complete and readable when it returns (never read a fetched
 * value before the flush: pshmem's mistake). Operations aimed at another
 * rank are counted: that count is the scaling argument of docs/locks.md.
 */
/*
 * The MPI guard is waited for until `dl`; NULL marks a step of the queue
 * protocol that must not stop half-way (a hand-over, or the grant after a
 * claim): that step waits for the guard without a bound (src/mpiguard.h).
 */
static int sl_lock_enter(const sl_deadline_t *dl, const char *what)
{
    if (!dl) {
        sl_mpi_enter();
        return SLUICE_OK;
    }
    return sl_mpi_enter_until(dl, what);
}

/*
 * On a shared-memory window (lk->pages, docs/locks.md "One node: the
 * processor's atomics") the same operations are sequentially consistent
 * atomics on the mapped word: no MPI call, so no guard, and nothing to flush.
 */
static sl_word_t *sl_lock_word(const sluice_lock_t *lk, int target, int word)
{
    return &lk->pages[target][word];
}

static void sl_lock_count_op(sluice_lock_t *lk, int target)
{
    if (target != lk->rank)
        sl_lock_count(&lk->n_remote, 1);
}

static int sl_lock_fop(sluice_lock_t *lk, int target, int word, sl_word_t value, MPI_Op op,
                       sl_word_t *old_p, const sl_deadline_t *dl)
{
    sl_word_t old = 0;
    if (lk->pages) {
        sl_word_t *w = sl_lock_word(lk, target, word);
        /* The protocol uses only these two. */
        old = op == MPI_NO_OP ? __atomic_load_n(w, __ATOMIC_SEQ_CST)
                              : __atomic_exchange_n(w, value, __ATOMIC_SEQ_CST);
        sl_lock_count_op(lk, target);
        if (old_p)
            *old_p = old;
        return SLUICE_OK;
    }
    int erc = sl_lock_enter(dl, "lock: MPI_Fetch_and_op");
    if (erc != SLUICE_OK)
        return erc; /* nothing done */
    int rc = MPI_Fetch_and_op(&value, &old, SL_MPI_WORD, target, word, op, lk->win);
    if (rc == MPI_SUCCESS)
        rc = MPI_Win_flush(target, lk->win);
    sl_mpi_leave();
    if (rc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "lock: MPI_Fetch_and_op on rank %d word %d failed", target,
                       word);
    sl_lock_count_op(lk, target);
    if (old_p)
        *old_p = old;
    return SLUICE_OK;
}

static int sl_lock_cas(sluice_lock_t *lk, int target, int word, sl_word_t expect, sl_word_t value,
                       sl_word_t *old_p, const sl_deadline_t *dl)
{
    if (lk->pages) {
        /* On failure `expect` becomes the value found; on success it was it. */
        __atomic_compare_exchange_n(sl_lock_word(lk, target, word), &expect, value, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        sl_lock_count_op(lk, target);
        *old_p = expect;
        return SLUICE_OK;
    }
    sl_word_t old = 0;
    int erc = sl_lock_enter(dl, "lock: MPI_Compare_and_swap");
    if (erc != SLUICE_OK)
        return erc; /* nothing done */
    int rc = MPI_Compare_and_swap(&value, &expect, &old, SL_MPI_WORD, target, word, lk->win);
    if (rc == MPI_SUCCESS)
        rc = MPI_Win_flush(target, lk->win);
    sl_mpi_leave();
    if (rc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "lock: MPI_Compare_and_swap on rank %d word %d failed", target,
                       word);
    sl_lock_count_op(lk, target);
    *old_p = old;
    return SLUICE_OK;
}

static int sl_lock_read(sluice_lock_t *lk, int target, int word, sl_word_t *v_p,
                        const sl_deadline_t *dl)
{
    return sl_lock_fop(lk, target, word, 0, MPI_NO_OP, v_p, dl);
}

static int sl_lock_write(sluice_lock_t *lk, int target, int word, sl_word_t v,
                         const sl_deadline_t *dl)
{
    return sl_lock_fop(lk, target, word, v, MPI_REPLACE, NULL, dl);
}

/*
 * A waiter on the processor's atomics calls no MPI, yet other ranks may
 * need it to: over osc/pt2pt, or osc/rdma's emulated atomics, a rank's
 * windows are served only while it is inside MPI, and the holder may be
 * writing into one of them (sluice_shared's set, the caller's own data)
 * before it can release. So such a waiter runs MPI's progress engine once
 * every PROGRESS_EVERY polls while it spins and yields, then after every
 * sleep of its back-off (found by the shared-data tests, which hung until
 * the deadline without it). Not more often: with more ranks than cores
 * Open MPI's progress yields the processor, and a probe on every poll
 * doubled the time of a hand-off at 16 ranks on 2 cores.
 */
enum { PROGRESS_EVERY = 16, SLEEPS_FROM = 2 * SPIN_POLLS + 16 /* sl_backoff_pause */ };

static void sl_lock_progress(const sluice_lock_t *lk, uint32_t polls)
{
    if (lk->pages && (polls % PROGRESS_EVERY == 0 || polls > SLEEPS_FROM))
        sl_mpi_poke();
}

/* ------------------------------------------------------------ liveness */

/*
 * This node and PID namespace: host name, boot id, and the namespace's
 * identity, so a process in another container of the same host, whose pid
 * means nothing here, is never taken for a local one (and judged dead).
 */
static uint64_t sl_lock_node_hash(void)
{
    char ident[256], ns[128] = "";
    sl_node_identity(ident, sizeof ident);
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    ns[n > 0 ? n : 0] = '\0';
    uint64_t h = sl_fnv1a(SL_FNV_OFFSET, ident, strlen(ident));
    return sl_fnv1a(h, ns, strlen(ns));
}

static bool sl_lock_remote(const sluice_lock_t *lk, sl_word_t r)
{
    return r >= 0 && r < lk->size && lk->peers[r].node != lk->my_node;
}

/*
 * Whether a send slot is free (under the guard): its send completed, or it
 * had none, or `let_go` lets an unfinished one go (its buffer with it). A
 * send that failed is let go too: its request may stay active.
 */
static bool sl_lock_slot_settle(sl_lock_beat_slot_t *s, bool let_go)
{
    if (s->req == MPI_REQUEST_NULL)
        return true;
    int done = 0;
    int rc = MPI_Test(&s->req, &done, MPI_STATUS_IGNORE);
    if (rc == MPI_SUCCESS && done)
        return true;
    if (rc == MPI_SUCCESS && !let_go)
        return false;
    MPI_Request_free(&s->req);
    s->req = MPI_REQUEST_NULL;
    s->buf = NULL; /* MPI's until the send ends, which may be never */
    return true;
}

/*
 * The heartbeat thread, every quarter of liveness_ms: a rank on another
 * node queued right behind this one hears that this process lives. Only
 * the successor listens (it is the one that would claim the lock), so a
 * beat is one small message, whatever the number of ranks. `next` is read
 * from this rank's own memory (what the last progress applied); the
 * guard is waited for only briefly, and a send still in flight in every
 * slot (a dead or slow successor) skips the beat.
 */
static void sl_lock_beat(void *arg, uint64_t value)
{
    sluice_lock_t *lk = arg;
    sl_deadline_t dl = sl_deadline_in(lk->opt.liveness_ms / 10);
    if (sl_mpi_enter_until(&dl, "lock: a heartbeat") != SLUICE_OK)
        return;
    int finalized = 1;
    if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) {
        sl_mpi_leave(); /* a lock not destroyed before MPI_Finalize: no more beats */
        return;
    }
    /* This rank's own words, as the last progress applied them (a hint:
     * a beat early or late by one period changes nothing). Queued means
     * waiting, holding, or an abandoned place not yet passed over. */
    MPI_Win_sync(lk->win);
    sl_word_t st = __atomic_load_n(&lk->base[W_STATE], __ATOMIC_RELAXED);
    sl_word_t next = __atomic_load_n(&lk->base[W_NEXT], __ATOMIC_RELAXED);
    if (st != ST_IDLE && st != ST_PASSED && sl_lock_remote(lk, next) && lk->peers[next].beats) {
        sl_lock_beat_slot_t *free_slot = NULL;
        for (int i = 0; i < BEATS_OUT; i++) {
            sl_lock_beat_slot_t *s = &lk->out->slot[i];
            /* A send to a former successor does not hold up the beats. */
            if (!sl_lock_slot_settle(s, s->dest != (int)next))
                continue;
            if (!free_slot && (s->buf || (s->buf = malloc(sizeof *s->buf))))
                free_slot = s;
        }
        if (free_slot) {
            *free_slot->buf = value;
            free_slot->dest = (int)next;
            if (MPI_Isend(free_slot->buf, 1, MPI_UINT64_T, (int)next, BEAT_TAG, lk->comm,
                          &free_slot->req) != MPI_SUCCESS)
                free_slot->req = MPI_REQUEST_NULL;
        }
    }
    sl_mpi_leave();
}

/* Take one beat that came, from anyone (under the guard); its sender in *from_p. */
static bool sl_lock_take_beat(sluice_lock_t *lk, int *from_p)
{
    int got = 0;
    MPI_Message msg;
    MPI_Status st;
    uint64_t v;
    if (MPI_Improbe(MPI_ANY_SOURCE, BEAT_TAG, lk->comm, &got, &msg, &st) != MPI_SUCCESS || !got ||
        MPI_Mrecv(&v, 1, MPI_UINT64_T, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS)
        return false;
    *from_p = st.MPI_SOURCE;
    return true;
}

/*
 * Whether predecessor `r` on another node fell silent: no beat from it for
 * liveness_ms since the wait began (a new predecessor gets a whole period).
 * Beats from anyone else (a former predecessor) are taken and dropped.
 * Without beats (this process or `r` below MPI_THREAD_SERIALIZED) nobody
 * is judged.
 */
static bool sl_lock_silent(sluice_lock_t *lk, sl_word_t r)
{
    uint64_t now = sl_now_ns();
    if (lk->watched != r) {
        lk->watched = r;
        lk->heard_ns = now;
    }
    if (!lk->beating || !lk->peers[r].beats)
        return false; /* a rank that cannot beat is never judged by its silence */
    sl_deadline_t dl = sl_deadline_in(lk->opt.liveness_ms / 10);
    if (sl_mpi_enter_until(&dl, "lock: listening for heartbeats") != SLUICE_OK)
        return false; /* no verdict this time */
    for (int from; sl_lock_take_beat(lk, &from);)
        if (from == r)
            lk->heard_ns = now;
    sl_mpi_leave();
    return now - lk->heard_ns > (uint64_t)lk->opt.liveness_ms * 1000000ull;
}

/* Whether `r` is known dead: by pid on this node, by its silence on another. */
static bool sl_lock_peer_dead(sluice_lock_t *lk, sl_word_t r)
{
    if (r < 0 || r >= lk->size || r == lk->rank)
        return false;
    const sl_lock_peer_t *p = &lk->peers[r];
    if (p->node != lk->my_node)
        return sl_lock_silent(lk, r);
    return !sl_proc_alive(p->pid, p->start);
}

/* ------------------------------------------------------------ the local gate */

static int sl_lock_gate_enter(sluice_lock_t *lk, const sl_deadline_t *dl)
{
    sl_backoff_t b;
    sl_backoff_init(&b, SPIN_POLLS, lk->opt.max_sleep_us);
    for (;;) {
        int free_ = 0;
        /* acquire: pairs with the release store in sl_lock_gate_leave, so
         * this thread sees `pred` as the last one left it. */
        if (atomic_compare_exchange_weak_explicit(&lk->gate, &free_, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return SLUICE_OK;
        if (sl_backoff_pause(&b, dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "lock: another thread of this process holds or "
                                             "waits for the lock");
    }
}

static void sl_lock_gate_leave(sluice_lock_t *lk)
{
    atomic_store_explicit(&lk->gate, 0, memory_order_release);
}

/* ------------------------------------------------------------ acquire */

/*
 * Give this rank's queued place up after a failed wait (`why`), unless the
 * grant won the race (then the lock is held: SLUICE_OK). This step waits
 * for the guard without a bound: a place left WAITING would be granted to
 * nobody and stop the queue for good.
 */
static int sl_lock_abandon(sluice_lock_t *lk, int why)
{
    sl_word_t was;
    int rc = sl_lock_cas(lk, lk->rank, W_STATE, ST_WAITING, ST_ABANDONED, &was, NULL);
    if (rc != SLUICE_OK)
        return rc;
    if (was == ST_GRANTED)
        return SLUICE_OK;
    if (why == SLUICE_ETIMEDOUT)
        return sl_fail(SLUICE_ETIMEDOUT, "lock: not granted before the deadline "
                                         "(predecessor rank %lld)", (long long)lk->pred);
    return why;
}

/* Wait for this rank's node to read GRANTED; see "A holder that dies". */
static int sl_lock_wait_granted(sluice_lock_t *lk, const sl_deadline_t *dl)
{
    sl_backoff_t b;
    sl_backoff_init(&b, SPIN_POLLS, lk->opt.max_sleep_us);
    uint64_t check_every = (uint64_t)lk->opt.liveness_ms * 100000ull; /* a tenth, in ns */
    uint64_t next_check = 0;
    lk->watched = NOBODY; /* the predecessor is given a whole period from now */
    for (;;) {
        sl_word_t st = ST_WAITING;
        /* This node is queued: a guard that stays held (SLUICE_ETIMEDOUT)
         * must end in giving the place up below, never in a plain return. */
        int rc = sl_lock_read(lk, lk->rank, W_STATE, &st, dl);
        bool stuck = rc == SLUICE_ETIMEDOUT;
        if (rc != SLUICE_OK && !stuck)
            return sl_lock_abandon(lk, rc);
        if (st == ST_GRANTED && !stuck)
            return SLUICE_OK;
        sl_lock_progress(lk, b.polls);
        if (!stuck && b.polls >= SPIN_POLLS && sl_now_ns() >= next_check) {
            next_check = sl_now_ns() + check_every;
            if (sl_lock_peer_dead(lk, lk->pred)) {
                /* `holder` names the predecessor only while it holds the
                 * lock or is being granted or passed over (docs/locks.md,
                 * "A holder that dies"): then nobody else will grant this
                 * node. Moving `holder` to this rank is the claim, one
                 * compare-and-swap on the home rank (alive), so only one
                 * rank can make it and the dead rank's memory is not touched.
                 * `holder` naming this rank already means a releaser moved it
                 * here and has not granted yet: if that releaser was the dead
                 * predecessor, nobody else will; if it lives, its grant finds
                 * this node GRANTED and stops. */
                sl_word_t was;
                rc = sl_lock_cas(lk, HOME, W_HOLDER, lk->pred, lk->rank, &was, dl);
                stuck = rc == SLUICE_ETIMEDOUT;
                if (rc != SLUICE_OK && !stuck)
                    return sl_lock_abandon(lk, rc);
                if (!stuck && (was == lk->pred || was == lk->rank)) {
                    /* Claimed: the grant must follow, whatever it waits. */
                    if ((rc = sl_lock_cas(lk, lk->rank, W_STATE, ST_WAITING, ST_GRANTED, &was,
                                          NULL)) != SLUICE_OK)
                        return rc;
                    /* GRANTED already: it handed the lock on just before it died. */
                    return was == ST_WAITING ? SLUICE_OWNERDEAD : SLUICE_OK;
                }
            }
        }
        if (stuck || sl_backoff_pause(&b, dl) != SLUICE_OK)
            return sl_lock_abandon(lk, SLUICE_ETIMEDOUT);
    }
}

/* Wait for a node that a releaser is passing over to become IDLE again. */
static int sl_lock_wait_idle(sluice_lock_t *lk, sl_word_t st, const sl_deadline_t *dl)
{
    sl_backoff_t b;
    sl_backoff_init(&b, SPIN_POLLS, lk->opt.max_sleep_us);
    while (st == ST_PASSED) {
        if (sl_backoff_pause(&b, dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "lock: this rank's abandoned place is still being "
                                             "passed over");
        int rc = sl_lock_read(lk, lk->rank, W_STATE, &st, dl);
        if (rc != SLUICE_OK)
            return rc;
        sl_lock_progress(lk, b.polls);
    }
    return SLUICE_OK;
}

/*
 * Drop the beats that came while this rank was not waiting (its former
 * predecessors' that it no longer listened to), so that they do not pile
 * up in MPI's queue. Only if the guard is free: never a wait.
 */
static void sl_lock_drop_beats(sluice_lock_t *lk)
{
    if (!lk->beating || !sl_mpi_try_enter())
        return;
    for (int from; sl_lock_take_beat(lk, &from);)
        ;
    sl_mpi_leave();
}

/* The queue part of acquire, under the gate. */
static int sl_lock_enqueue_and_wait(sluice_lock_t *lk, const sl_deadline_t *dl)
{
    sl_lock_drop_beats(lk);
    sl_word_t st;
    int rc = sl_lock_read(lk, lk->rank, W_STATE, &st, dl);
    if (rc != SLUICE_OK)
        return rc;
    if (st == ST_ABANDONED) {
        /* Reclaim the old place unless a releaser is passing over it. */
        if ((rc = sl_lock_cas(lk, lk->rank, W_STATE, ST_ABANDONED, ST_WAITING, &st, dl)) !=
            SLUICE_OK)
            return rc;
        if (st == ST_ABANDONED)
            return sl_lock_wait_granted(lk, dl);
    }
    if ((rc = sl_lock_wait_idle(lk, st, dl)) != SLUICE_OK)
        return rc;

    /* A fresh place: reset the node, then swap it onto the tail. */
    if ((rc = sl_lock_write(lk, lk->rank, W_NEXT, NOBODY, dl)) != SLUICE_OK ||
        (rc = sl_lock_write(lk, lk->rank, W_STATE, ST_WAITING, dl)) != SLUICE_OK)
        return rc;
    sl_word_t pred;
    if ((rc = sl_lock_fop(lk, HOME, W_TAIL, lk->rank, MPI_REPLACE, &pred, dl)) != SLUICE_OK) {
        /* Not queued (the swap failed on the guard, nothing was done): the
         * node goes back to IDLE, or trylock would read it as queued; if
         * the guard is still held, the next acquire or trylock knows. (An
         * MPI error after the swap was applied leaves the queue stuck: a
         * broken MPI is not recovered from.) */
        lk->stale_waiting = sl_lock_write(lk, lk->rank, W_STATE, ST_IDLE, dl) != SLUICE_OK;
        return rc;
    }
    lk->stale_waiting = false;
    lk->pred = pred;
    if (pred == NOBODY) {
        if ((rc = sl_lock_write(lk, lk->rank, W_STATE, ST_GRANTED, NULL)) != SLUICE_OK)
            return rc;
        return sl_lock_write(lk, HOME, W_HOLDER, lk->rank, NULL);
    }
    /* Link behind the predecessor, dead or alive: a releaser passing over a
     * dead abandoned node still needs its `next`. */
    if ((rc = sl_lock_write(lk, (int)pred, W_NEXT, lk->rank, NULL)) != SLUICE_OK)
        return sl_lock_abandon(lk, rc);
    return sl_lock_wait_granted(lk, dl);
}

int sluice_lock_acquire(sluice_lock_t *lk, uint32_t timeout_ms)
{
    if (!lk)
        return sl_fail(SLUICE_EINVAL, "lock: NULL lock");
    sl_deadline_t dl = sl_deadline_in(timeout_ms);
    if (atomic_load_explicit(&lk->owner, memory_order_relaxed) == sl_lock_self())
        return sl_fail(SLUICE_EALREADY, "lock: this thread holds the lock already");
    int rc = sl_lock_gate_enter(lk, &dl);
    if (rc != SLUICE_OK) {
        sl_lock_count(&lk->n_timed_out, 1);
        return rc;
    }
    rc = sl_lock_enqueue_and_wait(lk, &dl);
    if (rc == SLUICE_OK || rc == SLUICE_OWNERDEAD) {
        atomic_store_explicit(&lk->owner, sl_lock_self(), memory_order_release);
        sl_lock_count(&lk->n_acquired, 1);
        if (rc == SLUICE_OWNERDEAD)
            sl_lock_count(&lk->n_owner_dead, 1);
        /* The gate stays taken while the lock is held: release opens it. */
        return rc;
    }
    if (rc == SLUICE_ETIMEDOUT)
        sl_lock_count(&lk->n_timed_out, 1);
    sl_lock_gate_leave(lk);
    return rc;
}

int sluice_lock_try(sluice_lock_t *lk)
{
    if (!lk)
        return sl_fail(SLUICE_EINVAL, "lock: NULL lock");
    int free_ = 0;
    if (!atomic_compare_exchange_strong_explicit(&lk->gate, &free_, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        return SLUICE_EAGAIN;
    /* Only the first step may give up on the guard: nothing is changed yet. */
    sl_deadline_t dl = sl_deadline_in(lk->opt.timeout_ms);
    sl_word_t st, old;
    int rc = sl_lock_read(lk, lk->rank, W_STATE, &st, &dl);
    if (rc == SLUICE_OK && st != ST_IDLE && !(st == ST_WAITING && lk->stale_waiting))
        rc = SLUICE_EAGAIN; /* an abandoned place is still queued behind a holder */
    if (rc == SLUICE_OK && (rc = sl_lock_write(lk, lk->rank, W_NEXT, NOBODY, NULL)) == SLUICE_OK &&
        (rc = sl_lock_write(lk, lk->rank, W_STATE, ST_GRANTED, NULL)) == SLUICE_OK &&
        (rc = sl_lock_cas(lk, HOME, W_TAIL, NOBODY, lk->rank, &old, NULL)) == SLUICE_OK) {
        lk->stale_waiting = false;
        if (old == NOBODY) {
            lk->pred = NOBODY;
            atomic_store_explicit(&lk->owner, sl_lock_self(), memory_order_release);
            sl_lock_count(&lk->n_acquired, 1);
            /* On failure the lock is still held: the caller's release frees it. */
            return sl_lock_write(lk, HOME, W_HOLDER, lk->rank, NULL);
        }
        rc = sl_lock_write(lk, lk->rank, W_STATE, ST_IDLE, NULL);
        if (rc == SLUICE_OK)
            rc = SLUICE_EAGAIN;
    }
    sl_lock_gate_leave(lk);
    return rc;
}

/* ------------------------------------------------------------ release */

/* The successor of node `cur`, waiting for it to link if the tail moved on; NOBODY if the
 * lock is free now. */
static int sl_lock_successor(sluice_lock_t *lk, int cur, const sl_deadline_t *dl, sl_word_t *next_p)
{
    sl_word_t next, old;
    int rc = sl_lock_read(lk, cur, W_NEXT, &next, dl);
    if (rc != SLUICE_OK)
        return rc;
    if (next == NOBODY) {
        if ((rc = sl_lock_cas(lk, HOME, W_TAIL, cur, NOBODY, &old, dl)) != SLUICE_OK)
            return rc;
        if (old == cur) {
            *next_p = NOBODY;
            return SLUICE_OK;
        }
        /* Someone swapped itself onto the tail and links in a moment. */
        sl_backoff_t b;
        sl_backoff_init(&b, SPIN_POLLS, lk->opt.max_sleep_us);
        while (next == NOBODY) {
            if (sl_backoff_pause(&b, dl) != SLUICE_OK)
                return sl_fail(SLUICE_ETIMEDOUT, "lock: a waiter queued behind rank %d but "
                                                 "never linked (did it die?)", cur);
            if ((rc = sl_lock_read(lk, cur, W_NEXT, &next, dl)) != SLUICE_OK)
                return rc;
            sl_lock_progress(lk, b.polls);
        }
    }
    *next_p = next;
    return SLUICE_OK;
}

/*
 * Hand the lock on from this rank, passing over abandoned places. A wait for
 * a successor to link that times out leaves the lock held and remembers the
 * node it was at, so that the next release goes on from there.
 */
static int sl_lock_hand_on(sluice_lock_t *lk, const sl_deadline_t *dl)
{
    int cur = lk->resume == NOBODY ? lk->rank : (int)lk->resume;
    sl_word_t named = lk->rank; /* whom `holder` names: this rank or the node passed over */
    for (;;) {
        sl_word_t next, was;
        int rc = sl_lock_successor(lk, cur, dl, &next);
        if (rc == SLUICE_ETIMEDOUT && named != lk->rank) {
            /* The lock stays this rank's, so `holder` names it again: the
             * passed-over node does not beat, and its successor must not
             * claim the lock from it meanwhile. If it did already, the lock
             * is the successor's and this release is done. */
            int rc2 = sl_lock_cas(lk, HOME, W_HOLDER, named, lk->rank, &was, NULL);
            if (rc2 != SLUICE_OK)
                return rc2;
            if (was != named)
                return sl_lock_write(lk, cur, W_STATE, ST_IDLE, NULL);
        }
        if (rc == SLUICE_ETIMEDOUT)
            lk->resume = cur;
        if (rc != SLUICE_OK)
            return rc;
        lk->resume = NOBODY;
        /* `holder` moves on before `cur` is released (a passed-over node
         * turns IDLE and may queue again): it never names a rank that is
         * queued afresh. It moves only from whom it names: if it names
         * someone else, the successor claimed the lock (it judged `cur`
         * dead: a passed-over rank, or a releaser slower than liveness_ms),
         * and must not be granted too. Lock free: clear it unless a new
         * holder already wrote itself. */
        rc = sl_lock_cas(lk, HOME, W_HOLDER, named, next, &was, NULL);
        if (rc != SLUICE_OK)
            return rc;
        /* Done with a passed-over node: its owner may queue again. */
        if (cur != lk->rank && (rc = sl_lock_write(lk, cur, W_STATE, ST_IDLE, NULL)) != SLUICE_OK)
            return rc;
        if (next == NOBODY || was != named)
            return SLUICE_OK;
        if (lk->test_die_in_handoff)
            raise(SIGKILL); /* tests/mpi/lock.c, releaser_dead: between the move and the grant */
        for (;;) {
            if ((rc = sl_lock_cas(lk, (int)next, W_STATE, ST_WAITING, ST_GRANTED, &was, NULL)) !=
                SLUICE_OK)
                return rc;
            if (was != ST_ABANDONED)
                return SLUICE_OK; /* granted (or it recovered the lock itself) */
            if ((rc = sl_lock_cas(lk, (int)next, W_STATE, ST_ABANDONED, ST_PASSED, &was, NULL)) !=
                SLUICE_OK)
                return rc;
            if (was == ST_ABANDONED)
                break;            /* ours to pass over */
            /* Its owner reclaimed the place in between: grant again. */
        }
        sl_lock_count(&lk->n_passed, 1);
        cur = (int)next;
        named = next;
    }
}

int sluice_lock_release(sluice_lock_t *lk)
{
    if (!lk)
        return sl_fail(SLUICE_EINVAL, "lock: NULL lock");
    /* Any thread may release; exactly one of several racing releases
     * finds the owner set. acquire: pairs with the release store of the
     * acquiring thread, so this one sees its `pred` and the node it left. */
    if (atomic_exchange_explicit(&lk->owner, 0, memory_order_acquire) == 0)
        return sl_fail(SLUICE_EINVAL, "lock: this process does not hold the lock");
    sl_deadline_t dl = sl_deadline_in(lk->opt.timeout_ms);
    int rc = sl_lock_hand_on(lk, &dl);
    if (rc == SLUICE_ETIMEDOUT) {
        /* Still ours: a waiter swapped itself in and has not linked. Leaving
         * now would strand it with nobody to grant it (docs/locks.md). */
        atomic_store_explicit(&lk->owner, sl_lock_self(), memory_order_release);
        return rc;
    }
    int rc2 = sl_lock_write(lk, lk->rank, W_STATE, ST_IDLE, NULL);
    sl_lock_gate_leave(lk);
    return rc != SLUICE_OK ? rc : rc2;
}

/* ------------------------------------------------------------ create and destroy */

void sluice_lock_options_init(sluice_lock_options_t *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->timeout_ms = 30000;
    o->liveness_ms = 1000;
    o->max_sleep_us = 100;
}

static int sl_lock_options_check(const sluice_lock_options_t *user, sluice_lock_options_t *out)
{
    sluice_lock_options_init(out);
    if (!user)
        return SLUICE_OK;
    if (user->size < offsetof(sluice_lock_options_t, liveness_ms) || user->size > 4096)
        return sl_fail(SLUICE_EINVAL, "lock options: size %zu is not a sluice_lock_options_t "
                                      "(call sluice_lock_options_init)", user->size);
    memcpy(out, user, user->size < sizeof *out ? user->size : sizeof *out);
    out->size = sizeof *out;
    if (out->timeout_ms < 1 || out->timeout_ms > 3600000)
        return sl_fail(SLUICE_ERANGE, "lock options: timeout_ms %u outside 1 .. 3600000",
                       out->timeout_ms);
    if (out->liveness_ms < 10 || out->liveness_ms > 600000)
        return sl_fail(SLUICE_ERANGE, "lock options: liveness_ms %u outside 10 .. 600000",
                       out->liveness_ms);
    if (out->max_sleep_us < 1 || out->max_sleep_us > 100000)
        return sl_fail(SLUICE_ERANGE, "lock options: max_sleep_us %u outside 1 .. 100000",
                       out->max_sleep_us);
    if (out->mpi_atomics > 1)
        return sl_fail(SLUICE_EINVAL, "lock options: mpi_atomics %u is neither 0 nor 1",
                       out->mpi_atomics);
    return SLUICE_OK;
}

/*
 * Make the lock's window, under the guard. Ranks all on one node (lk->pages
 * allocated) get a shared-memory window and map every page; where MPI cannot
 * make one (no osc/sm, or jobs connected after their start: PLATFORM
 * notes), the call fails alike on every rank and they all fall back to
 * MPI_Win_allocate and MPI's atomics.
 */
static int sl_lock_window(sluice_lock_t *lk)
{
    MPI_Info info;
    MPI_Info_create(&info);
    /* Swaps, compare-and-swaps and no-op fetches mix on each word, so the
     * "accumulate_ops" hint keeps its default; the unit is common. */
    MPI_Info_set(info, "same_disp_unit", "true");
    int mrc;
    if (lk->pages) {
        MPI_Info_set(info, "alloc_shared_noncontig", "true"); /* each page near its rank */
        mrc = MPI_Win_allocate_shared(PAGE_BYTES, sizeof(sl_word_t), info, lk->comm, &lk->base,
                                      &lk->win);
        if (mrc == MPI_SUCCESS) {
            /* A local call on a window just made: a failure here is this
             * rank's alone, and its create fails (the window stays with MPI). */
            for (int r = 0; r < lk->size && mrc == MPI_SUCCESS; r++) {
                MPI_Aint bytes;
                int unit;
                mrc = MPI_Win_shared_query(lk->win, r, &bytes, &unit, &lk->pages[r]);
            }
            MPI_Info_free(&info);
            return mrc;
        }
        free(lk->pages);
        lk->pages = NULL;
    }
    mrc = MPI_Win_allocate(PAGE_BYTES, sizeof(sl_word_t), info, lk->comm, &lk->base, &lk->win);
    MPI_Info_free(&info);
    return mrc;
}

/*
 * Beats (sl_lock_beat) where a rank runs on another node and MPI lets the
 * heartbeat thread call it; below MPI_THREAD_SERIALIZED a holder that dies
 * on another node is not detected (docs/locks.md).
 */
static int sl_lock_start_beats(sluice_lock_t *lk)
{
    lk->watched = NOBODY;
    bool remote = false;
    for (int r = 0; r < lk->size; r++)
        remote = remote || sl_lock_remote(lk, r);
    if (!remote || !lk->peers[lk->rank].beats)
        return SLUICE_OK;
    if (!(lk->out = malloc(sizeof *lk->out)))
        return sl_fail(SLUICE_ENOMEM, "lock: cannot allocate the heartbeat buffers");
    for (int i = 0; i < BEATS_OUT; i++)
        lk->out->slot[i] = (sl_lock_beat_slot_t){ .req = MPI_REQUEST_NULL, .dest = -1 };
    lk->beat = (sl_beat_t){ .word = &lk->beat_word, .period_ms = lk->opt.liveness_ms,
                            .fn = sl_lock_beat, .arg = lk };
    int rc = sl_heartbeat_join(&lk->beat);
    if (rc != SLUICE_OK) {
        free(lk->out);
        lk->out = NULL;
        return rc;
    }
    lk->beating = true;
    return SLUICE_OK;
}

/*
 * Destroy, under the guard, after everyone's barrier (nobody waits any
 * more): drop the beats that came, and free the send buffers; a send still
 * in flight (to a dead rank) is let go, its buffer left to MPI.
 */
static void sl_lock_stop_beats(sluice_lock_t *lk)
{
    if (!lk->out)
        return;
    for (int i = 0; i < BEATS_OUT; i++) {
        sl_lock_beat_slot_t *s = &lk->out->slot[i];
        sl_lock_slot_settle(s, true);
        free(s->buf);
    }
    for (int from; sl_lock_take_beat(lk, &from);)
        ; /* dropped */
    free(lk->out);
    lk->out = NULL;
}

int sluice_lock_create(MPI_Comm comm, const sluice_lock_options_t *o, sluice_lock_t **lock_p)
{
    if (!lock_p || comm == MPI_COMM_NULL)
        return sl_fail(SLUICE_EINVAL, "lock: NULL communicator or lock_p");
    sl_mpi_guard_init();
    sluice_lock_t *lk = calloc(1, sizeof *lk);
    if (!lk)
        return sl_fail(SLUICE_ENOMEM, "lock: cannot allocate a lock");
    lk->test_die_in_handoff = getenv("SLUICE_TEST_LOCK_DIE_IN_HANDOFF") != NULL;
    int rc = sl_lock_options_check(o, &lk->opt);
    if (rc != SLUICE_OK)
        goto free_lock;
    sl_deadline_t dl = sl_deadline_in(lk->opt.timeout_ms);
    lk->pred = NOBODY;
    lk->resume = NOBODY;

    MPI_Request req;
    if ((rc = sl_mpi_enter_until(&dl, "lock: MPI_Comm_idup")) != SLUICE_OK)
        goto free_lock;
    int mrc = MPI_Comm_idup(comm, &lk->comm, &req);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "lock: MPI_Comm_idup failed");
        goto free_lock;
    }
    if ((rc = sl_mpi_wait(&req, &dl, 64, "lock: MPI_Comm_idup")) != SLUICE_OK)
        goto free_lock; /* the duplicate is left to MPI: it may still complete */
    if ((rc = sl_mpi_enter_until(&dl, "lock: setting up the communicator")) != SLUICE_OK)
        goto free_lock; /* the duplicate is left to MPI */
    MPI_Comm_set_errhandler(lk->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(lk->comm, &lk->rank);
    MPI_Comm_size(lk->comm, &lk->size);
    sl_mpi_leave();

    /* Who is who, for liveness; completing it is also the agreement that
     * every rank is here, so the window collective below cannot wait for
     * an absent rank. */
    /* One more entry for this rank's own, the send buffer: if the wait
     * times out, the pending collective keeps both (never the stack). */
    lk->peers = calloc((size_t)lk->size + 1, sizeof *lk->peers);
    if (!lk->peers) {
        rc = sl_fail(SLUICE_ENOMEM, "lock: cannot allocate the table of %d ranks", lk->size);
        goto free_comm;
    }
    lk->my_node = sl_lock_node_hash();
    sl_lock_peer_t *me = &lk->peers[lk->size];
    *me = (sl_lock_peer_t){ .pid = getpid(), .start = sl_proc_start_time(getpid()),
                            .node = lk->my_node };
    if ((rc = sl_mpi_enter_until(&dl, "lock: MPI_Iallgather of identities")) != SLUICE_OK)
        goto free_peers;
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    me->beats = level >= MPI_THREAD_SERIALIZED;
    mrc = MPI_Iallgather(me, (int)sizeof *me, MPI_BYTE, lk->peers, (int)sizeof *me, MPI_BYTE,
                         lk->comm, &req);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "lock: MPI_Iallgather failed");
        goto free_peers;
    }
    if ((rc = sl_mpi_wait(&req, &dl, 64, "lock: MPI_Iallgather of identities")) != SLUICE_OK)
        goto leak; /* the request still owns `peers` */

    /* Every rank decides alike from the same table and options. */
    bool one_node = !lk->opt.mpi_atomics;
    for (int r = 0; r < lk->size && one_node; r++)
        one_node = lk->peers[r].node == lk->peers[0].node;
    if (one_node && !(lk->pages = calloc((size_t)lk->size, sizeof *lk->pages))) {
        rc = sl_fail(SLUICE_ENOMEM, "lock: cannot allocate the table of %d pages", lk->size);
        goto free_peers;
    }

    /* Not entering means not entering the collective: the other ranks wait
     * in it without this one (docs/design.md, "MPI threading contract"). */
    if ((rc = sl_mpi_enter_until(&dl, "lock: MPI_Win_allocate")) != SLUICE_OK)
        goto free_peers;
    mrc = sl_lock_window(lk);
    if (mrc == MPI_SUCCESS) {
        MPI_Win_set_errhandler(lk->win, MPI_ERRORS_RETURN);
        lk->base[W_TAIL] = NOBODY;
        lk->base[W_HOLDER] = NOBODY;
        lk->base[W_NEXT] = NOBODY;
        lk->base[W_STATE] = ST_IDLE;
        mrc = MPI_Win_lock_all(MPI_MODE_NOCHECK, lk->win);
        if (mrc == MPI_SUCCESS)
            mrc = MPI_Win_sync(lk->win);
    }
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "lock: MPI_Win_allocate of the lock window failed");
        goto free_peers; /* every rank fails alike, or the window is left to MPI */
    }
    /* Nobody may operate on a page before its owner initialised it. */
    if ((rc = sl_mpi_enter_until(&dl, "lock: MPI_Ibarrier")) == SLUICE_OK) {
        mrc = MPI_Ibarrier(lk->comm, &req);
        sl_mpi_leave();
        rc = mrc == MPI_SUCCESS ? sl_mpi_wait(&req, &dl, 64, "lock: MPI_Ibarrier")
                                : sl_fail(SLUICE_EMPI, "lock: MPI_Ibarrier failed");
    }
    if (rc != SLUICE_OK) {
        free(lk->pages);
        free(lk->peers); /* the all-gather is done; the barrier and window stay with MPI */
        goto leak;
    }
    if ((rc = sl_lock_start_beats(lk)) != SLUICE_OK)
        goto leak; /* the others have their lock: this one's window stays with MPI */
    *lock_p = lk;
    return SLUICE_OK;

free_peers:
    free(lk->pages);
    free(lk->peers);
free_comm:
    /* A guard held past the deadline leaves the communicator to MPI. */
    if (sl_mpi_enter_until(&dl, "lock: freeing the communicator") == SLUICE_OK) {
        MPI_Comm_free(&lk->comm);
        sl_mpi_leave();
    }
free_lock:
    free(lk);
    return rc;
leak:
    /* A collective is still pending: its buffers and communicator stay with MPI. */
    free(lk);
    return rc;
}

int sluice_lock_destroy(sluice_lock_t *lk)
{
    if (!lk)
        return SLUICE_OK;
    if (atomic_load_explicit(&lk->gate, memory_order_acquire) != 0)
        return sl_fail(SLUICE_EBUSY, "lock: destroyed while this process holds or waits for it");
    if (lk->beating) {
        sl_heartbeat_leave(&lk->beat); /* the thread no longer touches the lock */
        lk->beating = false;
    }
    sl_deadline_t dl = sl_deadline_in(lk->opt.timeout_ms);
    MPI_Request req;
    int rc = sl_mpi_enter_until(&dl, "lock: MPI_Ibarrier of destroy");
    if (rc == SLUICE_OK) {
        int mrc = MPI_Ibarrier(lk->comm, &req);
        sl_mpi_leave();
        rc = mrc == MPI_SUCCESS ? sl_mpi_wait(&req, &dl, 64, "lock: MPI_Ibarrier of destroy")
                                : sl_fail(SLUICE_EMPI, "lock: MPI_Ibarrier failed");
    }
    /* Every rank has stopped using the window: free it collectively. The
     * barrier may have spent the deadline: the guard gets a timeout more.
     * A rank that still cannot enter leaves the window, and the others
     * wait in MPI_Win_free without it. */
    sl_deadline_t last = sl_deadline_in(lk->opt.timeout_ms);
    if (rc == SLUICE_OK &&
        (rc = sl_mpi_enter_until(&last, "lock: freeing the lock window")) == SLUICE_OK) {
        sl_lock_stop_beats(lk);
        int mrc = MPI_Win_unlock_all(lk->win);
        if (mrc == MPI_SUCCESS)
            mrc = MPI_Win_free(&lk->win);
        if (mrc == MPI_SUCCESS)
            mrc = MPI_Comm_free(&lk->comm);
        sl_mpi_leave();
        if (mrc != MPI_SUCCESS)
            rc = sl_fail(SLUICE_EMPI, "lock: freeing the lock window failed");
    }
    /* On a timeout the window and communicator are left to MPI (docs/locks.md). */
    free(lk->pages);
    free(lk->peers);
    free(lk);
    return rc;
}

int sluice_lock_stats(const sluice_lock_t *lk, sluice_lock_stats_t *out)
{
    if (!lk || !out)
        return sl_fail(SLUICE_EINVAL, "lock: NULL lock or stats");
    sluice_lock_t *m = (sluice_lock_t *)lk; /* atomics are read, not changed */
    out->acquired = atomic_load_explicit(&m->n_acquired, memory_order_relaxed);
    out->remote_ops = atomic_load_explicit(&m->n_remote, memory_order_relaxed);
    out->passed_over = atomic_load_explicit(&m->n_passed, memory_order_relaxed);
    out->owner_dead = atomic_load_explicit(&m->n_owner_dead, memory_order_relaxed);
    out->timed_out = atomic_load_explicit(&m->n_timed_out, memory_order_relaxed);
    return SLUICE_OK;
}

const char *sluice_lock_atomics(const sluice_lock_t *lk)
{
    return !lk ? NULL : lk->pages ? "cpu" : "mpi";
}
