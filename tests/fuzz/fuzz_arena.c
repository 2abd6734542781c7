/* SPDX-License-Identifier: MIT */
/* Fuzzes the product arena: a correct producer is always accepted, no forged region does harm. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../src/arena.h"

/*
 * One producer (sl_arena_place, and the commit rule of arena.h) and one
 * consumer (sl_arena_rx_t) with the ring between them modelled as a queue of
 * announced regions. The fuzzer picks the operations: place and announce a
 * region, accept the next announced one, release a region, let the producer
 * read the tail the consumer last published.
 *
 * The first byte picks the peer. An honest peer only announces what
 * sl_arena_place gave it; then every announced region must be accepted, and
 * the producer must find room whenever arena.h says it fits. A hostile peer
 * also announces regions of its own making (any position, any length); then
 * the consumer may refuse, but must refuse cleanly (SLUICE_ECORRUPT, no state
 * changed), and whatever it accepts must still be safe: inside the arena, not
 * over a region still held, the tail never moving back nor past a held byte.
 */

#define FZ_QUEUE 64u /* announced, not yet accepted: a ring of this depth */

typedef struct fz_region {
    uint64_t pos, need;
    bool released;
} fz_region_t;

typedef struct fz_arena {
    uint64_t cap;
    bool hostile;
    sl_arena_rx_t rx;
    /* Producer: its head, its view of the consumer's tail (raised on its
     * own at an empty restart), and the last tail it read from the consumer. */
    uint64_t head, tail_cache, tail_seen;
    /* The tail the consumer last published (after a release that advanced it). */
    uint64_t published;
    /* Announced regions the consumer has not accepted yet, oldest first. */
    struct { uint64_t pos, len; } queue[FZ_QUEUE];
    unsigned q_first, q_n;
    /* Every accepted region, by id - 1; and the ids not yet released. */
    fz_region_t *regions;
    uint64_t n_regions;
    uint64_t *held;
    uint64_t n_held;
} fz_arena_t;

static uint64_t fz_need(uint64_t len) { return sl_align_up(len, SL_ARENA_ALIGN); }

/* A length for the producer to ask for: mostly fitting, sometimes not. */
static uint64_t fz_len(fz_input_t *in, uint64_t cap)
{
    switch (fz_u8(in) % 6) {
    case 0: return 0;
    case 1: return fz_u8(in);
    case 2: return fz_u16(in) % (cap + 1);
    case 3: return cap - fz_u8(in) % (cap + 1);
    case 4: return cap + 1 + fz_u8(in);
    default: return fz_u64(in);
    }
}

/* Everything a consumer state must satisfy, whatever the peer did. */
static void fz_check_consumer(const fz_arena_t *f)
{
    const sl_arena_rx_t *a = &f->rx;
    fz_check(a->tail <= a->last_end, "tail %llu past the newest region's end %llu",
             (unsigned long long)a->tail, (unsigned long long)a->last_end);
    fz_check(f->published <= a->tail, "published tail %llu ahead of the tail %llu",
             (unsigned long long)f->published, (unsigned long long)a->tail);
    fz_check(a->next_id == f->n_regions + 1, "next id %llu after %llu regions",
             (unsigned long long)a->next_id, (unsigned long long)f->n_regions);
    /* The tail tells the producer which bytes are free: it must never pass
     * a byte of a region still held. */
    for (uint64_t i = 0; i < f->n_held; i++) {
        const fz_region_t *r = &f->regions[f->held[i] - 1];
        if (r->need)
            fz_check(r->pos >= a->tail, "tail %llu passed held region %llu at [%llu, +%llu)",
                     (unsigned long long)a->tail, (unsigned long long)f->held[i],
                     (unsigned long long)r->pos, (unsigned long long)r->need);
    }
}

/* Offer one region to the consumer and check the outcome. */
static void fz_accept(fz_arena_t *f, uint64_t pos, uint64_t len, bool honest)
{
    sl_arena_rx_t before = f->rx;
    uint64_t id = 0;
    int rc = sl_arena_rx_accept(&f->rx, pos, len, &id);
    if (honest)
        fz_check(rc == SLUICE_OK,
                 "a region [%llu, +%llu) placed by sl_arena_place was refused: %d (%s); "
                 "consumer tail %llu, last end %llu, %zu held",
                 (unsigned long long)pos, (unsigned long long)len, rc, sluice_strerror(rc),
                 (unsigned long long)before.tail, (unsigned long long)before.last_end, before.n);
    if (rc != SLUICE_OK) {
        fz_check_status(rc, SLUICE_ECORRUPT, "sl_arena_rx_accept of an impossible region");
        fz_check(f->rx.tail == before.tail && f->rx.last_end == before.last_end &&
                     f->rx.n == before.n && f->rx.next_id == before.next_id,
                 "refusing [%llu, +%llu) changed the consumer", (unsigned long long)pos,
                 (unsigned long long)len);
        fz_check(strstr(sluice_last_error(), "arena region") != NULL, "message names no region");
        return;
    }
    uint64_t need = fz_need(len);
    fz_check(id == before.next_id, "accepted id %llu, expected %llu", (unsigned long long)id,
             (unsigned long long)before.next_id);
    fz_check(len <= f->cap && pos % f->cap + need <= f->cap,
             "accepted [%llu, +%llu) runs past the arena of %llu", (unsigned long long)pos,
             (unsigned long long)len, (unsigned long long)f->cap);
    fz_check(f->rx.tail >= before.tail, "accept moved the tail back from %llu to %llu",
             (unsigned long long)before.tail, (unsigned long long)f->rx.tail);
    /* The new region shares no byte, modulo the capacity, with one still held. */
    uint64_t off = pos % f->cap;
    for (uint64_t i = 0; need && i < f->n_held; i++) {
        const fz_region_t *r = &f->regions[f->held[i] - 1];
        uint64_t roff = r->pos % f->cap;
        fz_check(!r->need || off + need <= roff || roff + r->need <= off,
                 "accepted [%llu, +%llu) overlaps held region %llu at [%llu, +%llu) "
                 "(capacity %llu)",
                 (unsigned long long)pos, (unsigned long long)need, (unsigned long long)f->held[i],
                 (unsigned long long)r->pos, (unsigned long long)r->need,
                 (unsigned long long)f->cap);
    }
    f->regions[f->n_regions++] = (fz_region_t){ pos, need, false };
    f->held[f->n_held++] = id;
}

/* Release `id` and check the status against the model. */
static void fz_release(fz_arena_t *f, uint64_t id)
{
    sl_arena_rx_t before = f->rx;
    int want = id == 0 || id > f->n_regions       ? SLUICE_EINVAL
             : f->regions[id - 1].released          ? SLUICE_EALREADY
                                                    : SLUICE_OK;
    bool advanced = true;
    int rc = sl_arena_rx_release(&f->rx, id, &advanced);
    fz_check(rc == want, "release of id %llu: %d (%s), model %d (%s)", (unsigned long long)id, rc,
             sluice_strerror(rc), want, sluice_strerror(want));
    if (rc != SLUICE_OK) {
        fz_check(!advanced && f->rx.tail == before.tail && f->rx.n == before.n,
                 "failed release of id %llu changed the consumer", (unsigned long long)id);
        return;
    }
    f->regions[id - 1].released = true;
    for (uint64_t i = 0; i < f->n_held; i++) {
        if (f->held[i] == id) {
            f->held[i] = f->held[--f->n_held];
            break;
        }
    }
    fz_check(f->rx.tail >= before.tail, "release moved the tail back from %llu to %llu",
             (unsigned long long)before.tail, (unsigned long long)f->rx.tail);
    /* A tail that moved without saying so is never published: the producer
     * would wait for space that is already free. */
    fz_check(advanced || f->rx.tail == before.tail, "tail moved to %llu but not reported",
             (unsigned long long)f->rx.tail);
    if (advanced)
        f->published = f->rx.tail; /* what the channel stores for the producer */
}

/*
 * arena.h's promise: with the producer's view of the tail up to date, a
 * region fits when the rounded sizes of the regions from the oldest one
 * still held up to the new one, plus the largest of them, come to at most
 * the capacity.
 */
static bool fz_must_fit(const fz_arena_t *f, uint64_t need)
{
    if (f->q_n || f->tail_cache != f->rx.tail)
        return false; /* the producer's view is stale: no promise */
    uint64_t sum = need, max = need;
    for (uint64_t id = f->rx.first_id; id < f->rx.next_id; id++) {
        sum += f->regions[id - 1].need;
        if (f->regions[id - 1].need > max)
            max = f->regions[id - 1].need;
    }
    return sum + max <= f->cap;
}

/* The producer places a region and announces it. */
static void fz_produce(fz_arena_t *f, fz_input_t *in)
{
    if (f->q_n == FZ_QUEUE)
        return; /* the ring is full: a real producer would wait */
    uint64_t len = fz_len(in, f->cap), need = fz_need(len);
    bool empty = f->tail_cache == f->head;
    uint64_t pos = UINT64_MAX;
    int rc = sl_arena_place(f->head, f->tail_cache, f->cap, len, &pos);
    if (len > f->cap) {
        fz_check_status(rc, SLUICE_ETOOBIG, "sl_arena_place of more than the capacity");
        return;
    }
    if (rc == SLUICE_EAGAIN) {
        fz_check(!empty, "an empty arena of %llu has no room for %llu bytes",
                 (unsigned long long)f->cap, (unsigned long long)len);
        fz_check(f->hostile || !fz_must_fit(f, need),
                 "no room for %llu bytes though arena.h promises it: head %llu, tail %llu, "
                 "capacity %llu, %zu regions held",
                 (unsigned long long)len, (unsigned long long)f->head,
                 (unsigned long long)f->tail_cache, (unsigned long long)f->cap, f->rx.n);
        return;
    }
    fz_check_status(rc, SLUICE_OK, "sl_arena_place");
    fz_check(pos >= f->head && pos - f->head < f->cap,
             "placed at %llu, head %llu: skipped a lap or more", (unsigned long long)pos,
             (unsigned long long)f->head);
    fz_check(pos % f->cap + need <= f->cap, "placed [%llu, +%llu) wraps an arena of %llu",
             (unsigned long long)pos, (unsigned long long)need, (unsigned long long)f->cap);
    if (empty) {
        fz_check(!need || pos % f->cap == 0, "an empty arena placed at offset %llu, not 0",
                 (unsigned long long)(pos % f->cap));
        f->tail_cache = pos; /* arena.h: an empty producer raises its tail to the region */
    } else {
        fz_check(pos + need - f->tail_cache <= f->cap,
                 "placed [%llu, +%llu) over unreleased bytes from %llu", (unsigned long long)pos,
                 (unsigned long long)need, (unsigned long long)f->tail_cache);
    }
    f->head = pos + need;
    unsigned slot = (f->q_first + f->q_n++) % FZ_QUEUE;
    f->queue[slot].pos = pos;
    f->queue[slot].len = len;
}

/* The peer announces a region of its own making. */
static void fz_forge(fz_arena_t *f, fz_input_t *in)
{
    const sl_arena_rx_t *a = &f->rx;
    uint64_t small = fz_u16(in), pos;
    switch (fz_u8(in) % 8) {
    case 0: pos = a->last_end + small; break;
    case 1: pos = a->tail + f->cap - small; break;
    case 2: pos = a->last_end - small; break;
    case 3: pos = UINT64_MAX - small; break;
    case 4: pos = (a->last_end / f->cap + small % 4) * f->cap; break;
    case 5: pos = (a->last_end / f->cap + 1) * f->cap - small; break;
    case 6: pos = f->head; break;
    default: pos = fz_u64(in); break;
    }
    fz_accept(f, pos, fz_len(in, f->cap), false);
}

/*
 * The producer reads the tail the consumer published, as the channel does
 * (sl_arena_load_tail in product.c): a tail behind the last one read, or past
 * the head, is corrupt; its own view only moves up, since after an empty
 * restart it is ahead of what the consumer has published.
 */
static void fz_load_tail(fz_arena_t *f)
{
    bool believable = f->published >= f->tail_seen && f->published <= f->head;
    fz_check(f->hostile || believable,
             "the producer would call the tail %llu of a correct consumer corrupt: last read "
             "%llu, head %llu",
             (unsigned long long)f->published, (unsigned long long)f->tail_seen,
             (unsigned long long)f->head);
    if (!believable)
        return;
    f->tail_seen = f->published;
    if (f->published > f->tail_cache)
        f->tail_cache = f->published;
}

/* A release id: one still held, or any other, known or not. */
static uint64_t fz_pick_id(const fz_arena_t *f, fz_input_t *in)
{
    uint8_t how = fz_u8(in);
    uint64_t k = fz_u8(in);
    switch (how % 6) {
    case 0: case 1: return f->n_held ? f->held[k % f->n_held] : 0;
    case 2: return 0;
    case 3: return f->rx.next_id + k % 4;
    case 4: return f->n_regions ? 1 + k % f->n_regions : 1; /* maybe released */
    default: return fz_u64(in);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input_t in = { data, size };
    uint8_t mode = fz_u8(&in);
    uint8_t c = fz_u8(&in);
    fz_arena_t f = { .hostile = mode % 2 != 0 };
    /* Small arenas wrap often; a huge one reaches the overflow guards. */
    f.cap = c >= 250 ? 1ull << 40 : (uint64_t)SL_ARENA_ALIGN * (1u + c % 64u);
    sl_arena_rx_init(&f.rx, f.cap);
    /* One operation takes at least one byte: at most `size` regions. */
    f.regions = malloc((size + 1) * sizeof *f.regions);
    f.held = malloc((size + 1) * sizeof *f.held);
    fz_check(f.regions && f.held, "no memory for %zu regions", size);

    while (in.left) {
        switch (fz_u8(&in) % 6) {
        case 0:
            fz_produce(&f, &in);
            break;
        case 1:
            if (f.q_n) {
                unsigned slot = f.q_first;
                f.q_first = (f.q_first + 1) % FZ_QUEUE;
                f.q_n--;
                fz_accept(&f, f.queue[slot].pos, f.queue[slot].len, !f.hostile);
            }
            break;
        case 2:
        case 3:
            fz_release(&f, fz_pick_id(&f, &in));
            break;
        case 4:
            fz_load_tail(&f);
            break;
        default:
            if (f.hostile)
                fz_forge(&f, &in);
            break;
        }
        fz_check_consumer(&f);
    }
    sl_arena_rx_fini(&f.rx);
    free(f.regions);
    free(f.held);
    return 0;
}
