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

/*
 * Write a record `k` places past the head, unpublished: the consumer does
 * not look at it before sl_ring_tx_publish(). Writing it again before then
 * is harmless. Call only when there is room for k + 1 records.
 */
static inline int sl_ring_tx_write(sl_ring_tx_t *r, const sl_transport_ops_t *t, sl_link_t *l,
                                   uint64_t k, const sl_record_t *rec)
{
    uint64_t slot = sl_ring_slots(r->ctrl) + ((r->head + k) & r->mask) * SL_RECORD_BYTES;
    return t->put(l, slot, rec, SL_RECORD_HEAD_BYTES + rec->aux_size);
}

/*
 * Publish the `n` records written past the head, with one counter (over RMA
 * one flush for all of them). store64 is a release store of head: it pairs
 * with the consumer's acquire load in sl_ring_rx_peek(), so the records'
 * bytes are visible first. On failure nothing is published.
 */
static inline int sl_ring_tx_publish(sl_ring_tx_t *r, const sl_transport_ops_t *t, sl_link_t *l,
                                     uint64_t n)
{
    int rc = t->store64(l, r->ctrl + SL_RING_HEAD_OFF, r->head + n);
    if (rc)
        return rc;
    r->head += n;
    if (t->wake)
        t->wake(l);
    return SLUICE_OK;
}

/* Write one record and publish it. Call only after sl_ring_tx_room() said OK. */
static inline int sl_ring_tx_push(sl_ring_tx_t *r, const sl_transport_ops_t *t, sl_link_t *l,
                                  const sl_record_t *rec)
{
    int rc = sl_ring_tx_write(r, t, l, 0, rec);
    return rc ? rc : sl_ring_tx_publish(r, t, l, 1);
}

/*
 * Copy the oldest record out, if any: SLUICE_OK, SLUICE_EAGAIN when empty.
 * The acquire load of head pairs with the producer's release store in
 * sl_ring_tx_push(). A head that runs ahead by more than the depth cannot
 * come from a correct producer: SLUICE_ECORRUPT.
 */
static inline int sl_ring_rx_peek(const sl_ring_rx_t *r, sl_record_t *rec_p)
{
    _Atomic uint64_t *head_p = (_Atomic uint64_t *)(void *)(r->base + r->ctrl + SL_RING_HEAD_OFF);
    uint64_t head = atomic_load_explicit(head_p, memory_order_acquire);
    if (head == r->tail)
        return SLUICE_EAGAIN;
    if (head - r->tail > r->mask + 1)
        return sl_fail(SLUICE_ECORRUPT, "ring at 0x%llx: producer head %llu is more than %llu "
                                        "records ahead of tail %llu",
                       (unsigned long long)r->ctrl, (unsigned long long)head,
                       (unsigned long long)(r->mask + 1), (unsigned long long)r->tail);
    const char *slot = r->base + sl_ring_slots(r->ctrl) + (r->tail & r->mask) * SL_RECORD_BYTES;
    memcpy(rec_p, slot, SL_RECORD_HEAD_BYTES);
    if (rec_p->aux_size > SLUICE_AUX_MAX)
        return sl_fail(SLUICE_ECORRUPT, "ring at 0x%llx: record %llu claims %u aux bytes",
                       (unsigned long long)r->ctrl, (unsigned long long)r->tail, rec_p->aux_size);
    memcpy(rec_p->aux, slot + SL_RECORD_HEAD_BYTES, rec_p->aux_size);
    return SLUICE_OK;
}

/*
 * Give the peeked slot back. Release store: pairs with the producer's
 * acquire load of tail in sl_ring_tx_room(); our copy of the slot is complete
 * before the producer may reuse it. Returns whether fewer than
 * SL_RING_WAKE_FREE slots were free before: only then can the producer be
 * waiting for room (it asks for at most one slot per open reservation plus
 * one), so only then does the caller ring its doorbell (a wake costs a full
 * fence; a nearly full ring means the consumer is behind anyway).
 */
#define SL_RING_WAKE_FREE 18u
static inline bool sl_ring_rx_consume(sl_ring_rx_t *r)
{
    _Atomic uint64_t *head_p = (_Atomic uint64_t *)(void *)(r->base + r->ctrl + SL_RING_HEAD_OFF);
    uint64_t used = atomic_load_explicit(head_p, memory_order_relaxed) - r->tail;
    bool was_full = used + SL_RING_WAKE_FREE > r->mask + 1;
    r->tail++;
    _Atomic uint64_t *tail_p = (_Atomic uint64_t *)(void *)(r->base + r->ctrl + SL_RING_TAIL_OFF);
    atomic_store_explicit(tail_p, r->tail, memory_order_release);
    return was_full;
}

#endif
