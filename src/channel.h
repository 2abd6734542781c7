/* SPDX-License-Identifier: MIT */
/* Channel internals shared by channel.c, transition.c and product.c. */
#ifndef SL_CHANNEL_H
#define SL_CHANNEL_H

#include <pthread.h>
#include <stdatomic.h>

#include "arena.h"
#include "backoff.h"
#include "context.h"
#include "inbox.h"
#include "ring.h"
#include "transport.h"

/* A product taken from the ring for the current event but not yet claimed. */
typedef struct sl_pending {
    uint32_t instance;
    bool absent;
    uint64_t id;          /* arena region id (0 when absent) */
    uint64_t pos, bytes, count;
} sl_pending_t;

/* Per-stream state of this side. Driven by one thread at a time. */
typedef struct sl_stream {
    /* Toward the peer's inbox. */
    sl_ring_tx_t tx;
    uint64_t arena_off;       /* arena offset (same in both inboxes) */
    uint64_t arena_head;      /* free-running, private to this producer */
    uint64_t arena_tail_cache;
    uint64_t arena_reload_at; /* head at which to look at the consumer's tail again */
    bool reserved;
    uint64_t res_pos, res_len;
    void *staging;            /* for transports without a peer pointer */
    size_t staging_bytes;

    /* From our own inbox. */
    sl_ring_rx_t rx;
    sl_arena_rx_t arx;
    sl_pending_t *pending;
    size_t n_pending, pending_room;

    /* Event token. token_open is read by end-of-job under the global lock. */
    _Atomic bool token_open;
    uint64_t token_seq;
    uint64_t next_seq;        /* controller: sequence numbers handed out */
    uint64_t done_seq;        /* newest event this side finished */
    bool peer_ended;          /* the peer finished token_seq */
    bool eof;                 /* source: stream end seen */
} sl_stream_t;

typedef struct sl_lumi_slot {
    bool open;
    uint32_t run, lumi;
    uint64_t begin_seq;       /* global record number of its begin */
    uint64_t events;          /* events sent in it */
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

    sluice_endpoint_t *endpoints;
    size_t n_endpoints;

    uint32_t n_streams;
    sl_stream_t *streams;

    /* Controller: global producer and ordering state, under global_lock. */
    pthread_mutex_t global_lock;
    sl_ring_tx_t gtx;
    sl_lumi_slot_t *lumis;    /* max_open_lumis */
    sl_run_slot_t *runs;      /* max_open_lumis */
    bool job_ended;

    /* Source: global consumer; delivered_global and slot_events are shared
     * with the stream threads. */
    sl_ring_rx_t grx;
    _Atomic uint64_t delivered_global; /* record number of the last delivered global */
    _Atomic uint64_t *slot_events;     /* per lumi slot: events delivered */
    bool global_eof;

    struct {
        _Atomic uint64_t transitions_sent, transitions_received;
        _Atomic uint64_t products_sent, products_received;
        _Atomic uint64_t bytes_sent, bytes_received, discarded;
    } stats;
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
 * with SLUICE_NONBLOCK; SLUICE_EPEERCLOSED once the peer closed (after one
 * more poll of the condition, so records published before the close are
 * still seen); SLUICE_ETIMEDOUT at the deadline, with `what` in the message.
 */
int sl_wait_step(sluice_channel_t *ch, sl_wait_t *w, unsigned flags, const char *what);

/*
 * The same for a wait on this side's own threads (an ordering gate), whose
 * data has already arrived: the peer closing does not end it.
 */
int sl_wait_step_local(sluice_channel_t *ch, sl_wait_t *w, unsigned flags, const char *what);

/* Look up this side's endpoint (instance, direction), or NULL. */
const sluice_endpoint_t *sl_channel_endpoint(const sluice_channel_t *ch, uint32_t instance,
                                             sluice_direction_t dir);

/* Check a token against its channel; returns its stream. */
int sl_token_stream(const sluice_token_t *token, sl_stream_t **st_p);

/*
 * Wait (bounded) for one free slot in a ring. With `st` (only from that
 * stream's own thread), it also drains the stream's own inbox of records for
 * events this side already finished while it waits, so two sides that both
 * send never wait on each other's full rings. NULL for the global ring, or
 * when another thread than the stream's pushes.
 */
int sl_ring_wait_room(sluice_channel_t *ch, sl_ring_tx_t *tx, sl_stream_t *st, unsigned flags,
                      const char *what);

/* Bytes of arena traffic between two unprompted looks at the consumer's tail. */
#define SL_ARENA_WARM (1u << 20)

/* Discard the leading records of the stream's inbox that belong to finished events. */
int sl_stream_drain(sluice_channel_t *ch, sl_stream_t *st);

/* Release every pending product of the stream (the event is finished). */
void sl_stream_drop_pending(sluice_channel_t *ch, sl_stream_t *st);

/* Take one record off a stream ring that belongs to an event older than the
 * current one, releasing any arena region it names. */
int sl_stream_discard(sluice_channel_t *ch, sl_stream_t *st, const sl_record_t *rec);

/* Publish the stream's consumer arena tail after releases. */
void sl_stream_publish_arena_tail(sluice_channel_t *ch, sl_stream_t *st);

static inline void sl_stat_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

#endif
