/* SPDX-License-Identifier: MIT */
/* Product arenas: variable-size regions in a byte ring, released in any order. */
#ifndef SL_ARENA_H
#define SL_ARENA_H

#include "internal.h"

#define SL_ARENA_ALIGN 64u

/*
 * Producer side: where would a region of `len` bytes start, given the
 * producer's free-running `head`, the consumer's released `tail` and the
 * arena capacity `cap`? A region never wraps; if it does not fit before the
 * end it starts at the next lap. It may not overlap unreleased bytes.
 *
 * When everything is released (tail == head) any region up to `cap` fits,
 * restarting at offset 0; the producer then treats every byte before the
 * region as released (it raises its tail to *pos_p when it commits), and the
 * consumer does the same when it accepts a region while holding no bytes.
 *
 * The rule that follows (docs/design.md, "Arena rule"): a region fits once
 * the bytes from the oldest region still held (or the first region placed
 * since the arena was last empty) up to and including it, each rounded up to
 * SL_ARENA_ALIGN, plus one gap at the end of a lap (smaller than the region
 * that skipped it), come to at most `cap`. So regions whose rounded sizes add
 * up to `cap` minus the largest of them always fit together, however they
 * are held and released.
 *
 * SLUICE_ETOOBIG if it can never fit, SLUICE_EAGAIN if it does not fit now.
 * On success *pos_p is the free-running start and the new head is *pos_p +
 * aligned len.
 */
int sl_arena_place(uint64_t head, uint64_t tail, uint64_t cap, uint64_t len, uint64_t *pos_p);

/* Consumer side: the regions handed out, in arrival order. */
typedef struct sl_arena_rx {
    uint64_t cap;
    uint64_t tail;        /* released prefix end; published to the producer */
    uint64_t last_end;    /* end of the newest accepted region */
    uint64_t first_id;    /* id of entries[first] */
    uint64_t next_id;     /* id the next accepted region gets */
    size_t first, n, room;
    struct sl_arena_entry {
        uint64_t end;
        bool released;
    } *entries;
} sl_arena_rx_t;

void sl_arena_rx_init(sl_arena_rx_t *a, uint64_t cap);
void sl_arena_rx_fini(sl_arena_rx_t *a);

/*
 * Accept a region announced by the producer, after checking it against what
 * a correct producer could have written: starts at or after the previous
 * region, does not wrap, lies within one capacity of the released tail
 * (anywhere, when no bytes are held). Zero-length regions are accepted and
 * held like others but cover no bytes. Returns its id (>= 1) in *id_p.
 */
int sl_arena_rx_accept(sl_arena_rx_t *a, uint64_t pos, uint64_t len, uint64_t *id_p);

/*
 * Release the region `id`. SLUICE_EALREADY if it was released before,
 * SLUICE_EINVAL if no such region was handed out. *advanced_p tells whether
 * `tail` moved (and so should be published).
 */
int sl_arena_rx_release(sl_arena_rx_t *a, uint64_t id, bool *advanced_p);

/* Offset of free-running position `pos` inside the arena. */
static inline uint64_t sl_arena_offset(uint64_t pos, uint64_t cap) { return pos % cap; }

#endif
