/* SPDX-License-Identifier: MIT */
/* Single-producer/single-consumer rings of fixed-size records in an inbox. */
#ifndef SL_RING_H
#define SL_RING_H

#include <stdatomic.h>
#include <string.h>

#include "inbox.h"
#include "transport.h"

/*
 * Producer half; lives in the writer's private memory. The ring itself is in
 * the peer's inbox at `ctrl`. Counters are free-running; slot = head & mask.
 */
typedef struct sl_ring_tx {
    uint64_t ctrl;        /* offset of the control block in the peer's inbox */
    uint64_t mask;        /* depth - 1 */
    uint64_t head;        /* next record number to write */
    uint64_t tail_cache;  /* last tail read from the peer: a lower bound */
} sl_ring_tx_t;

/* Consumer half; lives in the reader's private memory, ring in its own inbox. */
typedef struct sl_ring_rx {
    char *base;           /* local inbox base */
    uint64_t ctrl;
    uint64_t mask;
    uint64_t tail;        /* next record number to read */
} sl_ring_rx_t;

static inline void sl_ring_tx_init(sl_ring_tx_t *r, uint64_t ctrl, uint32_t depth)
{
    r->ctrl = ctrl;
    r->mask = depth - 1u;
    r->head = 0;
    r->tail_cache = 0;
}

static inline void sl_ring_rx_init(sl_ring_rx_t *r, void *base, uint64_t ctrl, uint32_t depth)
{
    r->base = base;
    r->ctrl = ctrl;
    r->mask = depth - 1u;
    r->tail = 0;
}

/*
 * Is there room for `n` records? Reads the peer's tail only when the cached
 * one says full. The load is acquire: it pairs with the consumer's release
 * store of tail in sl_ring_rx_consume(), so the consumer has finished copying
 * the slot out before we overwrite it.
 */
static inline int sl_ring_tx_room_n(sl_ring_tx_t *r, const sl_transport_ops_t *t, sl_link_t *l,
                                    uint64_t n)
{
    if (r->head + n - r->tail_cache <= r->mask + 1)
        return SLUICE_OK;
    uint64_t tail;
    int rc = t->load64(l, r->ctrl + SL_RING_TAIL_OFF, &tail);
    if (rc)
        return rc;
    if (tail > r->head || r->head - tail > r->mask + 1)
        return sl_fail(SLUICE_ECORRUPT, "ring at 0x%llx: consumer tail %llu is outside [%llu-%llu, "
                                        "%llu]",
                       (unsigned long long)r->ctrl, (unsigned long long)tail,
                       (unsigned long long)r->head, (unsigned long long)(r->mask + 1),
                       (unsigned long long)r->head);
    r->tail_cache = tail;
    return r->head + n - tail <= r->mask + 1 ? SLUICE_OK : SLUICE_EAGAIN;
}

static inline int sl_ring_tx_room(sl_ring_tx_t *r, const sl_transport_ops_t *t, sl_link_t *l)
{
    return sl_ring_tx_room_n(r, t, l, 1);
}

/* Offset of record `n`'s slot; its stamp is the slot's first word. */
static inline uint64_t sl_ring_slot(uint64_t ctrl, uint64_t mask, uint64_t n)
{
    return sl_ring_slots(ctrl) + (n & mask) * SL_RECORD_BYTES;
}

/* Most records one push publishes. */
#define SL_RING_PUSH_MAX 16u

/* A product's bytes that go out with its record (sl_ring_tx_push_payloads). */
typedef struct sl_ring_payload {
    size_t off;               /* in the peer's inbox */
    const void *src;          /* NULL: none */
    size_t len;
} sl_ring_payload_t;

/*
 * Write `n` records at the head and publish them: each payload (where
 * `payloads` names one) and body, then each stamp (its record number + 1),
 * through one call of the transport's publish(). The stamp's release store
 * pairs with the consumer's acquire load of it in sl_ring_rx_peek(), so a
 * record's bytes are visible first (over RMA one flush covers all n). The
 * consumer takes records in order, so a stamp that lands early waits for
 * its predecessors. All or nothing: on failure nothing was stamped and the
 * head stays, for a retry to write them again, and no payload went out, so
 * its source may be given back. Call only when there is room for n
 * (sl_ring_tx_room_n); n <= SL_RING_PUSH_MAX.
 */
static inline int sl_ring_tx_push_payloads(sl_ring_tx_t *r, const sl_transport_ops_t *t,
                                           sl_link_t *l, const sl_record_t *recs,
                                           const sl_ring_payload_t *payloads, uint32_t n)
{
    sl_stamped_t st[SL_RING_PUSH_MAX];
    if (n > SL_RING_PUSH_MAX)
        return sl_fail(SLUICE_EINVAL, "ring: %u records in one push (at most %u)", n,
                       SL_RING_PUSH_MAX);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t number = r->head + i;
        st[i] = (sl_stamped_t){ .off = sl_ring_slot(r->ctrl, r->mask, number),
                                .body_off = SL_RECORD_BODY_OFF,
                                .body = (const char *)&recs[i] + SL_RECORD_BODY_OFF,
                                .body_len = SL_RECORD_HEAD_BYTES - SL_RECORD_BODY_OFF +
                                            recs[i].aux_size,
                                .stamp = number + 1 };
        if (payloads && payloads[i].src) {
            st[i].payload_off = payloads[i].off;
            st[i].payload = payloads[i].src;
            st[i].payload_len = payloads[i].len;
        }
    }
    int rc = t->publish(l, st, n);
    if (rc)
        return rc;
    r->head += n;
    if (t->wake)
        t->wake(l);
    return SLUICE_OK;
}

/* Records without payloads. */
static inline int sl_ring_tx_push_n(sl_ring_tx_t *r, const sl_transport_ops_t *t, sl_link_t *l,
                                    const sl_record_t *recs, uint32_t n)
{
    return sl_ring_tx_push_payloads(r, t, l, recs, NULL, n);
}

/* One record. Call only after sl_ring_tx_room() said OK. */
static inline int sl_ring_tx_push(sl_ring_tx_t *r, const sl_transport_ops_t *t, sl_link_t *l,
                                  const sl_record_t *rec)
{
    return sl_ring_tx_push_n(r, t, l, rec, 1);
}

/*
 * What the stamp of record `n`'s slot says: 1 published, 0 not yet (the
 * slot still holds the record one lap before, or was never written), and
 * -1 for anything else, which no correct producer stores.
 */
static inline int sl_ring_rx_stamp(const sl_ring_rx_t *r, uint64_t n, memory_order order,
                                   uint64_t *stamp_p)
{
    const _Atomic uint64_t *p =
        (const _Atomic uint64_t *)(const void *)(r->base + sl_ring_slot(r->ctrl, r->mask, n));
    uint64_t stamp = atomic_load_explicit(p, order);
    *stamp_p = stamp;
    if (stamp == n + 1)
        return 1;
    return stamp == n + 1 - (r->mask + 1) || (stamp == 0 && n <= r->mask) ? 0 : -1;
}

/*
 * Copy the oldest record out, if any: SLUICE_OK, SLUICE_EAGAIN when empty.
 * The acquire load of its stamp pairs with the producer's release store in
 * sl_ring_tx_push_n(). Line 1 is all a product, absent, end or fail mark
 * without aux carries; the rest of the copy is zeroed for those, so one
 * cache line crosses. A stamp no producer writes: SLUICE_ECORRUPT.
 */
static inline int sl_ring_rx_peek(const sl_ring_rx_t *r, sl_record_t *rec_p)
{
    uint64_t stamp;
    int state = sl_ring_rx_stamp(r, r->tail, memory_order_acquire, &stamp);
    if (state == 0)
        return SLUICE_EAGAIN;
    if (state < 0)
        return sl_fail(SLUICE_ECORRUPT, "ring at 0x%llx: record %llu's slot is stamped %llu, "
                                        "neither it nor the record a lap before",
                       (unsigned long long)r->ctrl, (unsigned long long)r->tail,
                       (unsigned long long)stamp);
    const char *slot = r->base + sl_ring_slot(r->ctrl, r->mask, r->tail);
    memcpy(rec_p, slot, SL_CACHELINE);
    if (rec_p->aux_size > SLUICE_AUX_MAX)
        return sl_fail(SLUICE_ECORRUPT, "ring at 0x%llx: record %llu claims %u aux bytes",
                       (unsigned long long)r->ctrl, (unsigned long long)r->tail, rec_p->aux_size);
    size_t rest = SL_RECORD_HEAD_BYTES - SL_CACHELINE;
    if (rec_p->kind < SL_REC_PRODUCT || rec_p->aux_size)
        memcpy((char *)rec_p + SL_CACHELINE, slot + SL_CACHELINE, rest + rec_p->aux_size);
    else
        memset((char *)rec_p + SL_CACHELINE, 0, rest);
    return SLUICE_OK;
}

/* Records published past the tail, counted by their stamps (tests and tools). */
static inline uint64_t sl_ring_rx_published(const sl_ring_rx_t *r)
{
    uint64_t n = 0, stamp;
    while (n <= r->mask && sl_ring_rx_stamp(r, r->tail + n, memory_order_acquire, &stamp) > 0)
        n++;
    return n;
}

/*
 * Give the peeked slot back. Release store: pairs with the producer's
 * acquire load of tail in sl_ring_tx_room(); our copy of the slot is complete
 * before the producer may reuse it. Returns whether fewer than
 * SL_RING_WAKE_FREE slots were free before: only then can the producer be
 * waiting for room (it asks for at most one slot per open reservation plus
 * one), so only then does the caller ring its doorbell (a wake costs a full
 * fence; a nearly full ring means the consumer is behind anyway). It looks
 * at the stamp of the record SL_RING_WAKE_FREE short of a full ring: a line
 * this side read a lap ago, still in its cache unless the producer has
 * written that far since.
 */
#define SL_RING_WAKE_FREE 18u
static inline bool sl_ring_rx_consume(sl_ring_rx_t *r)
{
    uint64_t depth = r->mask + 1, stamp, old = r->tail++;
    _Atomic uint64_t *tail_p = (_Atomic uint64_t *)(void *)(r->base + r->ctrl + SL_RING_TAIL_OFF);
    atomic_store_explicit(tail_p, r->tail, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst); /* nor may the compiler hoist the load */
    /* The stamp is read after the tail is stored: a producer that filled
     * the ring past it, went to sleep and then read the old tail must have
     * done so within the store's flight (no fence orders the two: it would
     * cost one per record), not across a preemption of this thread between
     * them (docs/design.md, "Rings"). */
    return depth <= SL_RING_WAKE_FREE ||
           sl_ring_rx_stamp(r, old + depth - SL_RING_WAKE_FREE, memory_order_relaxed, &stamp) > 0;
}

#endif
