/* SPDX-License-Identifier: MIT */
/* Channel internals shared by channel.c, transition.c and product.c. */
#ifndef SL_CHANNEL_H
#define SL_CHANNEL_H

#include <pthread.h>
#include <stdatomic.h>

#include "arena.h"
#include "backoff.h"
#include "context.h"
#include "heartbeat.h"
#include "inbox.h"
#include "monitor.h"
#include "ring.h"
#include "stream.h"
#include "transport.h"

typedef struct sl_lumi_slot {
    bool open;
    uint32_t run, lumi;
    uint64_t begin_seq;       /* global record number of its begin */
    uint64_t events;          /* events sent in it (counted before they are published) */
    uint32_t inflight;        /* events counted but not yet published: its end waits for them */
} sl_lumi_slot_t;

typedef struct sl_run_slot {
    bool open;
    uint32_t run;
    uint32_t open_lumis;
} sl_run_slot_t;

struct sluice_channel {
    sluice_context_t *ctx;
    char name[64];
    sluice_role_t role;
    int peer_rank;            /* in ctx->comm */
    sluice_options_t opt;
    sl_geometry_t geo;
    MPI_Comm pair;
    const sl_transport_ops_t *tp;
    sl_link_t *link;
    char *local;              /* local inbox */
    sl_inbox_header_t *header; /* == local */

    /* The peer process, for liveness (wait.c). */
    int64_t peer_pid;
    uint64_t peer_start;
    bool peer_local;          /* on this node: its process can be checked directly */
    bool peer_pid_visible;    /* its pid can be checked here (peer_local, unless a test
                               * hook makes it watch the heartbeat instead) */
    _Atomic bool peer_dead;   /* sticky once seen */
    _Atomic uint64_t live_next_ns; /* when to check the peer process next */
    /* A peer elsewhere: its heartbeat word, read by one thread at a time. */
    atomic_flag hb_busy;
    uint64_t hb_value;        /* the last value read ... */
    uint64_t hb_moved_ns;     /* ... and when it last changed */
    sl_beat_t beat;           /* this side's own heartbeat (registered while open) */
    bool beating;

    sluice_endpoint_t *endpoints;
    size_t n_endpoints;

    /* Device products (docs/gpu.md): the path agreed at open, and device
     * memory laid out like the inboxes, offset for offset (dev_bytes each).
     * Set at open, read-only until close. */
    uint32_t dev_path;        /* SLUICE_DEVICE_PATH_IPC or _STAGED; 0: no device endpoint */
    size_t dev_bytes;         /* == geo.inbox_bytes */
    void *dev_local;          /* device products this side receives land here */
    void *dev_peer;           /* ipc: the peer's dev_local, mapped; staged: this side's
                                 device staging for what it sends */
    bool dev_peer_mapped;     /* dev_peer is a mapping (unmapped, not freed) */
    bool dev_exported;        /* dev_local's handle is in our header: the peer may map it */
    bool told_closed;         /* we marked the peer's inbox closed (sl_signal_closed) */
    void *dev_pinned_local;   /* staged: our inbox, registered with the device (or NULL) */
    void *dev_pinned_peer;    /* staged over shm: the peer's inbox as mapped here, likewise */

    uint32_t n_streams;       /* the user's streams; ... */
    sl_stream_t *streams;     /* ... plus one more, the scope stream (SL_SCOPE) */

    /* Controller: global producer and ordering state, under global_lock. */
    pthread_mutex_t global_lock;
    sl_ring_tx_t gtx;
    sl_lumi_slot_t *lumis;    /* max_open_lumis */
    sl_run_slot_t *runs;      /* max_open_lumis */
    bool job_ended;
    bool job_ending;          /* END_JOB is waiting for room: no new events */

    /* Source: global consumer; delivered_global and slot_events are shared
     * with the stream threads. */
    sl_ring_rx_t grx;
    _Atomic uint64_t delivered_global; /* record number of the last delivered global */
    _Atomic uint64_t *slot_events;     /* per lumi slot: events delivered */
    _Atomic bool global_eof;          /* written under source_lock; read without it too */
    uint32_t next_stream;              /* sluice_source_next: where its scan of the streams starts */
    sluice_token_t scope_token;        /* the scope of the transition last delivered, if any */
    pthread_mutex_t source_lock;       /* the global reader (grx, global_eof, next_stream) */

    /* Notifications (notify.c). */
    pthread_mutex_t notify_lock;       /* the armed list; taken before any stream or source lock */
    struct sl_note *notes;
    size_t n_notes, notes_room;
    int efd;                           /* eventfd, written when notifications fire */
    pthread_t progress_thread;
    _Atomic bool progress_started;
    _Atomic bool progress_run;

    /* The channel's slot of the status page (monitor.h), or private memory
     * when there is no page: its counters are the channel's own, so the
     * data path counts once, for sluice_channel_stats and sluice-monitor. */
    sl_mon_slot_t *mon;
    sl_mon_counters_t *stats; /* == &mon->stats */

    _Atomic bool grouped;     /* a member of a group (group.c): in one at most */
};

/* Per-wait state: back-off, deadline, and whether the peer's close was seen. */
typedef struct sl_wait {
    sl_backoff_t backoff;
    sl_deadline_t deadline; /* 0 until the first failed poll */
    bool closed_seen;
} sl_wait_t;

void sl_wait_init(const sluice_channel_t *ch, sl_wait_t *w);

/*
 * One round of a wait whose condition just failed. SLUICE_EAGAIN at once
 * with SLUICE_NONBLOCK, unless the peer has closed; SLUICE_EPEERCLOSED once
 * the peer closed (after one more poll of the condition, so records
 * published before the close are still seen); SLUICE_ETIMEDOUT at the
 * deadline, with `what` in the message.
 */
int sl_wait_step(sluice_channel_t *ch, sl_wait_t *w, unsigned flags, const char *what);

/*
 * The same for a wait on this side's own threads (an ordering gate), whose
 * data has already arrived: the peer closing does not end it.
 */
int sl_wait_step_local(sluice_channel_t *ch, sl_wait_t *w, unsigned flags, const char *what);

/* Internal result of the waits for room: the peer has finished the event
 * being sent, so what would be sent is dropped instead (nobody reads it). */
#define SL_DROPPED 100

/*
 * sl_wait_step (or, `local`, sl_wait_step_local) for a call that holds the
 * stream's lock: the lock is let go for the wait and taken back. With `seq`
 * (non-zero) the call works on that event; if another thread finished it
 * meanwhile, SLUICE_EALREADY.
 */
int sl_stream_wait_step(sluice_channel_t *ch, sl_stream_t *st, sl_wait_t *w, unsigned flags,
                        const char *what, uint64_t seq, bool local);

/*
 * Wait (bounded) for a free slot in a stream ring or the global ring.
 * With `st` (its lock held), one slot more than the stream's open
 * reservations own; meanwhile it takes in the stream's own inbox
 * (sl_stream_take_in), and returns SL_DROPPED if the stream's event is open
 * and the peer has already finished it. NULL for the global ring, or for
 * end of job (no event open anywhere).
 */
int sl_ring_wait_room(sluice_channel_t *ch, sl_ring_tx_t *tx, sl_stream_t *st, unsigned flags,
                      const char *what);

/* Whether the peer has finished the stream's current event (it reads no more of it). */
int sl_stream_peer_done(sluice_channel_t *ch, sl_stream_t *st, bool *done_p);

/*
 * A channel's private state from its descriptor and options (no transport
 * yet), and its release; sl_channel_free does not touch the link or the
 * inboxes. sl_channel_wire points every ring and arena at the inboxes once
 * `local` and `geo` are set. Used by open, and by tests that run the core
 * over an in-process transport.
 */
int sl_channel_alloc(sluice_context_t *ctx, const sluice_channel_desc_t *d,
                     const sluice_options_t *o, sluice_channel_t **ch_p);
void sl_channel_free(sluice_channel_t *ch);
void sl_channel_wire(sluice_channel_t *ch);

/* Whether endpoint `e` carries products in device memory. */
static inline bool sl_endpoint_device(const sluice_endpoint_t *e)
{
    return e->memory == SLUICE_MEMORY_DEVICE;
}

/*
 * Device memory at inbox offset `off` (docs/gpu.md): of the peer's arena,
 * where this side's device products go (ipc: mapped; staged: this side's
 * staging copy), or of this side's, where it receives them.
 */
static inline void *sl_dev_peer(const sluice_channel_t *ch, uint64_t off)
{
    return (char *)ch->dev_peer + off;
}
static inline void *sl_dev_local(const sluice_channel_t *ch, uint64_t off)
{
    return (char *)ch->dev_local + off;
}

/* Look up this side's endpoint (instance, direction), or NULL. */
const sluice_endpoint_t *sl_channel_endpoint(const sluice_channel_t *ch, uint32_t instance,
                                             sluice_direction_t dir);


/* Notifications: set-up and teardown with the channel; poke this side's own engine. */
int sl_notify_init(sluice_channel_t *ch);
void sl_notify_fini(sluice_channel_t *ch);
void sl_notify_poke(sluice_channel_t *ch);
bool sl_on_progress_thread(const sluice_channel_t *ch);

/* Whether the peer closed or died (a liveness check, throttled like the waits'). */
bool sl_peer_gone(sluice_channel_t *ch);

/* Source, with source_lock held: would sluice_source_next return without waiting? */
bool sl_source_ready(sluice_channel_t *ch);

/*
 * The scope stream: after the user's streams, one more in every inbox, on
 * which run- and lumi-scoped products travel. Each global transition sent
 * with products opens an "event" there (docs/design.md, "Run and lumi
 * products"); its token works like an event's.
 */
#define SL_SCOPE(ch) ((ch)->n_streams)

/* Geometry of a channel's inboxes: its streams and the scope stream. */
static inline int sl_channel_geometry(const sluice_channel_t *ch, sl_geometry_t *g_p)
{
    return sl_geometry_compute(ch->n_streams + 1, &ch->opt, g_p);
}

/*
 * Bytes of arena traffic between two unprompted looks at the consumer's
 * tail (sl_arena_warm). On a node a look is one cache-line read and a
 * restart at offset 0 keeps copy-in writing into lines still in the
 * writer's cache (a 1 MiB walk made 4 KiB copy-in 5x slower than zero
 * copy). What stays warm is this much per stream, so the channel's streams
 * share a budget: 32 KiB each up to 8 streams, down to 4 KiB each at 64
 * (with 32 KiB each, 64 streams walked 4 MiB and their CPU per event rose
 * by half; a look per 4 KiB costs a single stream 0.1-0.2 us at 4 KiB
 * products, so few streams keep the longer interval). Over RMA a look is a
 * round trip and the target's cache is not the writer's, so it stays rare.
 */
#define SL_ARENA_WARM_BUDGET (1u << 18)
#define SL_ARENA_WARM_LOCAL_MAX (1u << 15)
#define SL_ARENA_WARM_LOCAL_MIN (1u << 12)
#define SL_ARENA_WARM_REMOTE (1u << 20)

static inline uint64_t sl_arena_warm(const sluice_channel_t *ch)
{
    if (!(ch->tp->caps & SL_CAP_PEER_POINTER))
        return SL_ARENA_WARM_REMOTE;
    uint64_t per = SL_ARENA_WARM_BUDGET / (ch->n_streams ? ch->n_streams : 1);
    return per > SL_ARENA_WARM_LOCAL_MAX ? SL_ARENA_WARM_LOCAL_MAX
           : per < SL_ARENA_WARM_LOCAL_MIN ? SL_ARENA_WARM_LOCAL_MIN
                                           : per;
}

static inline void sl_stat_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/*
 * Gauges of the status page (docs/monitor.md), from state this side already
 * keeps: relaxed stores, under the stream's lock (one writer per stream).
 * Streams past SL_MON_STREAMS, and the scope stream, have none.
 */
static inline sl_mon_stream_t *sl_mon_stream_of(sluice_channel_t *ch, sl_stream_t *st)
{
    size_t s = (size_t)(st - ch->streams);
    return s < ch->n_streams && s < SL_MON_STREAMS ? &ch->mon->stream[s] : NULL;
}

/* After this side published on the stream's ring or placed arena bytes. */
static inline void sl_mon_stream_tx(sluice_channel_t *ch, sl_stream_t *st)
{
    sl_mon_stream_t *g = sl_mon_stream_of(ch, st);
    if (!g)
        return;
    sl_mon_set(&g->tx_head, st->tx.head);
    sl_mon_set(&g->tx_seen, st->tx.tail_cache);
    sl_mon_set(&g->arena_out, st->arena_head - st->arena_tail_cache);
}

/* After this side took a record from its own ring or released arena bytes. */
static inline void sl_mon_stream_rx(sluice_channel_t *ch, sl_stream_t *st)
{
    sl_mon_stream_t *g = sl_mon_stream_of(ch, st);
    if (!g)
        return;
    sl_mon_set(&g->rx_tail, st->rx.tail);
    sl_mon_set(&g->arena_in, st->arx.n ? st->arx.last_end - st->arx.tail : 0);
}

/*
 * The stream's token opens or closes; call it just before the store of
 * token_open (whose writers take turns on a stream), so a close of a token
 * already closed stores nothing. Only the stream's own line is written: the
 * reader sums the streams' event_open (no channel-wide counter that every
 * stream thread would pull across cores), so streams past SL_MON_STREAMS
 * are not in that sum. The scope stream's are no events.
 */
static inline void sl_mon_token(sluice_channel_t *ch, sl_stream_t *st, bool open)
{
    if (st == &ch->streams[SL_SCOPE(ch)] ||
        atomic_load_explicit(&st->token_open, memory_order_relaxed) == open)
        return;
    sl_mon_stream_t *g = sl_mon_stream_of(ch, st);
    if (g) {
        sl_mon_set(&g->event_seq, st->token_seq);
        sl_mon_set(&g->event_open, open);
    }
}

/*
 * What a public call on the channel returns, counted on the status page
 * when it is a failure that a healthy run does not return (sl_mon_counts:
 * not EAGAIN, EPEERCLOSED, ECANCELED or EALREADY). Costs a compare on
 * success.
 */
static inline int sl_channel_result(sluice_channel_t *ch, int rc)
{
    if (SL_UNLIKELY(rc < 0) && sl_mon_counts(rc))
        sl_mon_error(ch->mon, rc, sluice_last_error());
    return rc;
}

#endif
