/* SPDX-License-Identifier: MIT */
/* Per-stream consumer state: what this side takes in from its own inbox for one stream. */
#ifndef SL_STREAM_H
#define SL_STREAM_H

#include <pthread.h>

#include "arena.h"
#include "inbox.h"
#include "ring.h"

typedef struct sluice_channel sluice_channel_t;

/*
 * A record taken off the stream ring for the current event but not yet
 * claimed by a receive. `status` is what the receive of its instance
 * returns: SLUICE_OK (a product), SLUICE_ABSENT, or a failure found when the
 * record was checked (bad type, count that does not fit its bytes).
 */
typedef struct sl_pending {
    uint32_t instance;
    int status;
    uint64_t id;          /* arena region id; 0 when no region is held */
    uint64_t pos, bytes, count;
} sl_pending_t;

/*
 * Most records one event may leave unclaimed. A correct peer stays far below
 * it (each product also holds arena bytes, and zero-length ones are rare);
 * past it the peer is flooding the stream and the receive fails with
 * SLUICE_ELIMIT instead of this side allocating without end.
 */
#define SL_PENDING_MAX 65536u

/*
 * Most reservations open at once on one stream. Records are published in
 * reservation order (the receiver's arena takes regions in order), so a
 * reservation committed after a younger one waits for it.
 */
#define SL_RESV_MAX 16u

/* COMMITTING: open, while its commit waits outside the lock for the device
 * work that fills it (sluice_product_commit); only that commit ends it. */
enum { SL_RESV_OPEN = 1, SL_RESV_COMMITTED, SL_RESV_CANCELLED, SL_RESV_COMMITTING };

/* One reservation of the stream's current event, in the stream's queue. */
typedef struct sl_resv {
    uint64_t handle;          /* the caller's sluice_reservation_t.handle; never 0 */
    uint64_t pos, len, count;
    uint64_t head_before;     /* producer arena state before it, restored if it is */
    uint64_t tail_before;     /* cancelled while the newest */
    uint32_t instance;
    uint8_t state;            /* SL_RESV_* */
    bool placed;              /* holds arena space; false when dropped (the peer finished) */
    void *staging;            /* local buffer where the transport has no peer pointer, */
    size_t staging_bytes;     /* taken from the stream's spares, given back when it leaves the queue */
    const void *src;          /* the caller's bytes, put with the record by the commit that
                                 names them (sluice_product_send); NULL once it returned */
} sl_resv_t;

/*
 * One stream of a channel, as this side sees it: the producer half toward
 * the peer's inbox and the consumer half of our own, plus the event token.
 * Every field is under `lock`, which no wait holds (sluice.h says which
 * calls may run concurrently); `token_open` is also read atomically.
 */
typedef struct sl_stream {
    pthread_mutex_t lock;

    /* Toward the peer's inbox. */
    sl_ring_tx_t tx;
    uint64_t arena_off;       /* arena offset (same in both inboxes) */
    uint64_t arena_head;      /* free-running, private to this producer */
    uint64_t arena_tail_cache; /* consumer's tail as far as we know (may be ahead of what it published) */
    uint64_t arena_tail_seen; /* last tail read from the consumer: it never goes back */
    uint64_t arena_reload_at; /* head at which to look at the consumer's tail again */
    sl_resv_t resv[SL_RESV_MAX]; /* queue of reservations, oldest at resv_first */
    uint32_t resv_first, resv_n;
    uint64_t resv_handles;    /* handles handed out */
    /* Staging buffers no reservation holds, the most recently used on top:
     * one origin buffer stays in use in a steady exchange (a fresh one per
     * product made every large RMA put pay the MPI library's first-use cost:
     * 16 MiB zero copy took 50 ms instead of 6 ms over osc/pt2pt). */
    struct sl_spare { void *buf; size_t bytes; } spare[SL_RESV_MAX];
    uint32_t n_spare;
    /* Device memory (arena_bytes) that reservations of device products
     * write into when the peer has finished their event: it goes nowhere. */
    void *dev_scratch;

    /* From our own inbox. */
    sl_ring_rx_t rx;
    sl_arena_rx_t arx;
    sl_pending_t *pending;
    size_t n_pending, pending_room;
    bool peer_ended;          /* the peer finished token_seq */
    bool eof;                 /* source: stream end seen */

    /* Event token. token_open is read by end-of-job under the global lock. */
    _Atomic bool token_open;
    uint64_t token_seq;
    uint64_t next_seq;        /* controller: sequence numbers handed out */
    uint64_t done_seq;        /* newest event this side finished */
    bool finishing;           /* sluice_event_finish is under way (it may wait) */
    uint32_t committing;      /* reservations in SL_RESV_COMMITTING: finish waits for them */
    /* The peer failed the current event (sluice_event_fail): its status and message. */
    int peer_failed;
    char peer_failed_msg[SLUICE_AUX_MAX + 1];
} sl_stream_t;

/*
 * Discard the leading records of events this side already finished,
 * releasing their arena regions. Stops at the first record of a later
 * event, at an EVENT or STREAM_END record, or when the ring is empty.
 */
int sl_stream_drain(sluice_channel_t *ch, sl_stream_t *st);

/*
 * Take one record off the ring: records of finished events are discarded,
 * a record of the current event goes to the pending list (or marks the
 * peer's end of it). SLUICE_EAGAIN if the ring is empty, SLUICE_ELIMIT if
 * the pending list is full; an EVENT or STREAM_END record is left in the
 * ring and ends the current event (peer_ended).
 */
int sl_stream_pump(sluice_channel_t *ch, sl_stream_t *st);

/*
 * While this side waits for room to send: take in everything the peer has
 * published for the current and for finished events, so that two sides
 * that both send never wait on each other's full rings. Stops quietly when
 * the ring is empty or the pending list is full.
 */
int sl_stream_take_in(sluice_channel_t *ch, sl_stream_t *st);

/* Remove and return the oldest pending record of `instance`, if any. */
bool sl_stream_pending_take(sl_stream_t *st, uint32_t instance, sl_pending_t *p_p);

/* Discard one record of an older event that was peeked off the ring. */
int sl_stream_discard(sluice_channel_t *ch, sl_stream_t *st, const sl_record_t *rec);

/* Release every pending product of the current event unread. */
void sl_stream_drop_pending(sluice_channel_t *ch, sl_stream_t *st);

/*
 * This side is done with the current event: release what is still pending
 * and publish the event as done in our own inbox, so the peer stops sending
 * products nobody will read.
 */
void sl_stream_finish(sluice_channel_t *ch, sl_stream_t *st);

/* Records the stream's reservations still owe the peer's ring (one per
 * reservation that holds arena space and is not cancelled). */
uint32_t sl_stream_owed(const sl_stream_t *st);

/* Give the peeked stream record's slot back; wake the peer if it may wait for it. */
void sl_stream_consume(sluice_channel_t *ch, sl_stream_t *st);

/* Release arena region `id` of the stream, publishing the tail if it moved. */
int sl_stream_release(sluice_channel_t *ch, sl_stream_t *st, uint64_t id);

#endif
