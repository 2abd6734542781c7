/* SPDX-License-Identifier: MIT */
/* Fuzzes the rings against a hostile peer: consumer peek/consume, and the producer's room check. */
#include <sanitizer/asan_interface.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../src/ring.h"

/*
 * One real inbox (sl_inbox_init of a small geometry) in a heap block of
 * exactly its size, so that a read past its end hits ASan's redzone. One of
 * its rings is under test; the fuzzer plays the peer, which may write
 * anything anywhere in the inbox at any time.
 *
 * Reads outside the inbox are not the only danger: a ring that reads another
 * ring's slots, or a slot other than the one its counters name, is as wrong.
 * So the whole inbox stays ASan-poisoned, and each call gets only the bytes
 * it may touch unpoisoned for its duration (peek: the slot at the tail,
 * stamp included; consume: the tail counter, and the stamp of the record
 * SL_RING_WAKE_FREE short of a full ring, only read, to tell whether the
 * producer may be waiting for room; the producer's room check: the
 * consumer's tail counter; push: its slot).
 */

/* Loopback link: the producer's "peer inbox" is the same buffer, reached
 * with the memory orders of the shm transport. */
struct sl_link {
    char *mem;
};

static int fz_lb_put(sl_link_t *l, size_t off, const void *src, size_t len)
{
    memcpy(l->mem + off, src, len);
    return SLUICE_OK;
}

static int fz_lb_store64(sl_link_t *l, size_t off, uint64_t v)
{
    atomic_store_explicit((_Atomic uint64_t *)(void *)(l->mem + off), v, memory_order_release);
    return SLUICE_OK;
}

static const sl_transport_ops_t fz_lb_ops;
static int fz_lb_publish(sl_link_t *l, const sl_stamped_t *recs, size_t n)
{
    return sl_publish_in_order(&fz_lb_ops, l, recs, n);
}

static int fz_lb_load64(sl_link_t *l, size_t off, uint64_t *v)
{
    *v = atomic_load_explicit((_Atomic uint64_t *)(void *)(l->mem + off), memory_order_acquire);
    return SLUICE_OK;
}

static const sl_transport_ops_t fz_lb_ops = {
    .size = sizeof(sl_transport_ops_t),
    .name = "fuzz-loopback",
    .put = fz_lb_put,
    .store64 = fz_lb_store64,
    .publish = fz_lb_publish,
    .load64 = fz_lb_load64,
};

typedef struct fz_ring {
    char *mem;
    uint64_t bytes; /* the whole inbox */
    uint64_t ctrl;  /* the ring under test */
    uint64_t depth;
} fz_ring_t;

static char *fz_slot(const fz_ring_t *f, uint64_t counter)
{
    return f->mem + sl_ring_slots(f->ctrl) + (counter & (f->depth - 1)) * SL_RECORD_BYTES;
}

static void fz_hide_all(const fz_ring_t *f) { ASAN_POISON_MEMORY_REGION(f->mem, f->bytes); }
static void fz_show_all(const fz_ring_t *f) { ASAN_UNPOISON_MEMORY_REGION(f->mem, f->bytes); }
static void fz_show(const void *p, size_t n) { ASAN_UNPOISON_MEMORY_REGION(p, n); }

/* The peer writes a counter or bytes; it may write anywhere, so it sees all. */
static void fz_peer_store64(const fz_ring_t *f, uint64_t off, uint64_t v)
{
    fz_show_all(f);
    atomic_store_explicit((_Atomic uint64_t *)(void *)(f->mem + off), v, memory_order_release);
    fz_hide_all(f);
}

static uint64_t fz_peer_load64(const fz_ring_t *f, uint64_t off)
{
    fz_show_all(f);
    uint64_t v = atomic_load_explicit((_Atomic uint64_t *)(void *)(f->mem + off),
                                      memory_order_acquire);
    fz_hide_all(f);
    return v;
}

/* The peer overwrites part of one slot with the fuzzer's bytes, or sets its
 * aux_size (a 4-byte field that random bytes would almost never make small). */
static void fz_peer_scribble(const fz_ring_t *f, fz_input_t *in, int aux_size_only)
{
    uint64_t slot = fz_u8(in);
    fz_show_all(f);
    char *s = fz_slot(f, slot);
    if (aux_size_only) {
        uint32_t aux = fz_u8(in) % (SLUICE_AUX_MAX + 8u);
        memcpy(s + offsetof(sl_record_t, aux_size), &aux, sizeof aux);
    } else {
        size_t off = fz_u8(in);
        size_t len = fz_u8(in) % (SL_RECORD_BYTES - off + 1);
        fz_take(in, s + off, len);
    }
    fz_hide_all(f);
}

/* A counter value near `base`: a few records behind, level, up to a few
 * past the depth ahead; or anything at all. */
static uint64_t fz_near(fz_input_t *in, uint64_t base, uint64_t depth)
{
    uint8_t how = fz_u8(in);
    if (how < 224)
        return base + (uint64_t)(how % (depth + 9)) - 4u;
    return fz_u64(in);
}

/* What the stamp of record `n`'s slot means: 1 published, 0 not yet, -1 corrupt. */
static int fz_stamp_model(uint64_t stamp, uint64_t n, uint64_t depth)
{
    if (stamp == n + 1)
        return 1;
    return stamp == n + 1 - depth || (stamp == 0 && n < depth) ? 0 : -1;
}

/* The consumer against a peer that writes stamps and slot bytes. */
static void fz_consumer(fz_ring_t *f, fz_input_t *in)
{
    sl_ring_rx_t rx;
    sl_ring_rx_init(&rx, f->mem, f->ctrl, (uint32_t)f->depth);
    /* Stamps are compared by value, so a consumer near the 2^64 wrap
     * behaves like one at 0: start anywhere, including just before the wrap,
     * with every slot holding the record a lap before, as it would there. */
    uint8_t start = fz_u8(in);
    rx.tail = start < 128 ? 0 : start < 192 ? UINT64_MAX - start % 32 : fz_u64(in);
    fz_peer_store64(f, f->ctrl + SL_RING_TAIL_OFF, rx.tail);
    if (rx.tail)
        for (uint64_t i = 0; i < f->depth; i++)
            fz_peer_store64(f, (uint64_t)(fz_slot(f, rx.tail + i) - f->mem),
                            rx.tail + i + 1 - f->depth);

    while (in->left) {
        uint8_t op = fz_u8(in) % 6;
        if (op == 0) {
            /* A stamp on one of the next slots: mostly near what a producer
             * would store there, sometimes anything. */
            uint64_t n = rx.tail + fz_u8(in) % f->depth;
            fz_peer_store64(f, (uint64_t)(fz_slot(f, n) - f->mem), fz_near(in, n + 1, f->depth));
        } else if (op == 1 || op == 2) {
            fz_peer_scribble(f, in, op == 2);
        } else if (op == 3) {
            /* The tail counter is ours, but the peer can write it: the
             * consumer must go by its private copy, never read it back. */
            fz_peer_store64(f, f->ctrl + SL_RING_TAIL_OFF, fz_u64(in));
        } else {
            uint64_t tail = rx.tail;
            /* Copy the slot now: what the model expects peek to return. */
            sl_record_t want;
            fz_show_all(f);
            memcpy(&want, fz_slot(f, tail), sizeof want);
            fz_hide_all(f);
            int state = fz_stamp_model(want.stamp, tail, f->depth);
            int expect = state == 0                       ? SLUICE_EAGAIN
                       : state < 0                        ? SLUICE_ECORRUPT
                       : want.aux_size > SLUICE_AUX_MAX ? SLUICE_ECORRUPT
                                                          : SLUICE_OK;
            sl_record_t got;
            memset(&got, 0xa5, sizeof got);
            fz_show(fz_slot(f, tail), SL_RECORD_BYTES);
            int rc = sl_ring_rx_peek(&rx, &got);
            fz_hide_all(f);
            fz_check(rc == expect,
                     "peek at tail %llu, stamp %llu, depth %llu, aux %u: %d (%s), model %d (%s)",
                     (unsigned long long)tail, (unsigned long long)want.stamp,
                     (unsigned long long)f->depth, want.aux_size, rc, sluice_strerror(rc), expect,
                     sluice_strerror(expect));
            fz_check(rx.tail == tail, "peek moved the tail from %llu to %llu",
                     (unsigned long long)tail, (unsigned long long)rx.tail);
            if (rc != SLUICE_OK)
                continue;
            /* Transitions and records with aux come out whole; the others
             * as their first line, the rest zero. */
            bool whole = want.kind < SL_REC_PRODUCT || want.aux_size;
            if (!whole)
                memset((char *)&want + SL_CACHELINE, 0, SL_RECORD_HEAD_BYTES - SL_CACHELINE);
            fz_check(memcmp(&got, &want, SL_RECORD_HEAD_BYTES + want.aux_size) == 0,
                     "record %llu differs from its slot's bytes", (unsigned long long)tail);
            if (op == 5) {
                uint64_t far = tail + f->depth - SL_RING_WAKE_FREE;
                uint64_t far_stamp = 0;
                if (f->depth > SL_RING_WAKE_FREE)
                    far_stamp = fz_peer_load64(f, (uint64_t)(fz_slot(f, far) - f->mem));
                fz_show(f->mem + f->ctrl + SL_RING_TAIL_OFF, sizeof(uint64_t));
                if (f->depth > SL_RING_WAKE_FREE)
                    fz_show(fz_slot(f, far), sizeof(uint64_t));
                bool was_full = sl_ring_rx_consume(&rx);
                fz_hide_all(f);
                fz_check(rx.tail == tail + 1, "consume moved the tail from %llu to %llu",
                         (unsigned long long)tail, (unsigned long long)rx.tail);
                bool want_full = f->depth <= SL_RING_WAKE_FREE ||
                                 fz_stamp_model(far_stamp, far, f->depth) > 0;
                fz_check(was_full == want_full, "consume at tail %llu, depth %llu, stamp %llu "
                         "there says nearly full %d, model %d", (unsigned long long)tail,
                         (unsigned long long)f->depth, (unsigned long long)far_stamp, was_full,
                         want_full);
                uint64_t published = fz_peer_load64(f, f->ctrl + SL_RING_TAIL_OFF);
                fz_check(published == rx.tail, "consume published %llu, its tail is %llu",
                         (unsigned long long)published, (unsigned long long)rx.tail);
            }
        }
    }
}

/* The producer against a consumer (the peer) that writes its tail counter. */
static void fz_producer(fz_ring_t *f, fz_input_t *in)
{
    struct sl_link link = { f->mem };
    sl_ring_tx_t tx;
    sl_ring_tx_init(&tx, f->ctrl, (uint32_t)f->depth);
    /* The producer compares the tail it reads with its head by value
     * (tail > head is corrupt), so its counters must not wrap; they start at
     * 0 in the library and 2^64 records never happen. Start anywhere below
     * 2^63 to exercise large values all the same. */
    uint8_t start = fz_u8(in);
    tx.head = start < 128 ? 0 : fz_u64(in) >> 1;
    tx.tail_cache = tx.head;
    fz_peer_store64(f, f->ctrl + SL_RING_TAIL_OFF, tx.head);

    while (in->left) {
        uint8_t op = fz_u8(in) % 4;
        if (op == 0) {
            fz_peer_store64(f, f->ctrl + SL_RING_TAIL_OFF,
                            fz_near(in, tx.head - f->depth, f->depth));
        } else if (op == 1) {
            fz_peer_store64(f, f->ctrl + SL_RING_TAIL_OFF, fz_u64(in));
        } else {
            /* Read the record's bytes first, so that the input's layout
             * does not depend on what room answers. */
            uint8_t fill = 0, aux_size = 0;
            if (op == 3) {
                fill = fz_u8(in);
                aux_size = fz_u8(in);
            }
            uint64_t head = tx.head, cached = tx.tail_cache;
            uint64_t tail = fz_peer_load64(f, f->ctrl + SL_RING_TAIL_OFF);
            int expect;
            uint64_t want_cache = cached;
            if (head - cached <= f->depth - 1) {
                expect = SLUICE_OK; /* room by the cached tail: no need to look */
            } else if (tail > head || head - tail > f->depth) {
                expect = SLUICE_ECORRUPT;
            } else {
                want_cache = tail;
                expect = head - tail <= f->depth - 1 ? SLUICE_OK : SLUICE_EAGAIN;
            }
            fz_show(f->mem + f->ctrl + SL_RING_TAIL_OFF, sizeof(uint64_t));
            int rc = sl_ring_tx_room(&tx, &fz_lb_ops, &link);
            fz_hide_all(f);
            fz_check(rc == expect,
                     "room at head %llu, cached tail %llu, peer tail %llu: %d (%s), model %d (%s)",
                     (unsigned long long)head, (unsigned long long)cached,
                     (unsigned long long)tail, rc, sluice_strerror(rc), expect,
                     sluice_strerror(expect));
            fz_check(tx.tail_cache == want_cache && tx.head == head,
                     "room left head %llu, cached tail %llu; model %llu, %llu",
                     (unsigned long long)tx.head, (unsigned long long)tx.tail_cache,
                     (unsigned long long)head, (unsigned long long)want_cache);
            if (rc != SLUICE_OK || op == 2)
                continue;
            /* The producer copies records without looking at them: a fill
             * byte and the record number make each one recognisable. */
            sl_record_t rec;
            memset(&rec, fill, sizeof rec);
            rec.seq = head;
            rec.aux_size = aux_size % (SLUICE_AUX_MAX + 1u); /* the library's records are valid */
            fz_show(fz_slot(f, head), SL_RECORD_BYTES);
            rc = sl_ring_tx_push(&tx, &fz_lb_ops, &link, &rec);
            fz_hide_all(f);
            fz_check_status(rc, SLUICE_OK, "sl_ring_tx_push after room");
            fz_show_all(f);
            int same = memcmp(fz_slot(f, head) + SL_RECORD_BODY_OFF,
                              (const char *)&rec + SL_RECORD_BODY_OFF,
                              SL_RECORD_HEAD_BYTES - SL_RECORD_BODY_OFF + rec.aux_size) == 0;
            fz_hide_all(f);
            fz_check(same, "record %llu not in its slot", (unsigned long long)head);
            uint64_t stamp = fz_peer_load64(f, (uint64_t)(fz_slot(f, head) - f->mem));
            fz_check(tx.head == head + 1 && stamp == head + 1,
                     "push left head %llu, stamped %llu, from %llu", (unsigned long long)tx.head,
                     (unsigned long long)stamp, (unsigned long long)head);
        }
        /* Whatever the peer wrote, the producer never believes in more than
         * `depth` records in flight. */
        fz_check(tx.tail_cache <= tx.head && tx.head - tx.tail_cache <= f->depth,
                 "producer head %llu, cached tail %llu, depth %llu",
                 (unsigned long long)tx.head, (unsigned long long)tx.tail_cache,
                 (unsigned long long)f->depth);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input_t in = { data, size };
    /* A small geometry: 1-3 streams, depths 2-16, the smallest arena. */
    uint8_t shape = fz_u8(&in);
    sluice_options_t o;
    sluice_options_init(&o);
    o.ring_depth = 2u << (shape % 4);
    o.global_depth = 2u << (shape / 4 % 4);
    o.arena_bytes = 4096;
    uint32_t streams = 1u + shape / 16 % 3;
    sl_geometry_t g;
    int rc = sl_geometry_compute(streams, &o, &g);
    fz_check_status(rc, SLUICE_OK, "sl_geometry_compute");

    fz_ring_t f = { .bytes = g.inbox_bytes };
    f.mem = aligned_alloc(4096, f.bytes);
    fz_check(f.mem != NULL, "no memory for an inbox of %llu", (unsigned long long)f.bytes);
    sl_inbox_init(f.mem, &g, 0, NULL);
    uint8_t which = fz_u8(&in);
    if (which % 4 == 0) {
        f.ctrl = g.global_off;
        f.depth = g.global_depth;
    } else {
        f.ctrl = sl_stream_ctrl(&g, (which % 4 - 1u) % streams);
        f.depth = g.ring_depth;
    }
    fz_hide_all(&f);
    if (fz_u8(&in) % 2 == 0)
        fz_consumer(&f, &in);
    else
        fz_producer(&f, &in);
    fz_show_all(&f);
    free(f.mem);
    return 0;
}
