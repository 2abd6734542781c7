/* SPDX-License-Identifier: MIT */
/* Product arenas: variable-size regions in a byte ring, released in any order. */
#include <stdlib.h>

#include "arena.h"

int sl_arena_place(uint64_t head, uint64_t tail, uint64_t cap, uint64_t len, uint64_t *pos_p)
{
    uint64_t need = sl_align_up(len, SL_ARENA_ALIGN);
    if (need > cap || len > need)
        return SLUICE_ETOOBIG;
    uint64_t off = head % cap;
    uint64_t pos = head;
    if (tail == head) {
        /* Everything placed so far is released: nothing can be overlapped,
         * and a region of bytes restarts at offset 0, where the cache is
         * still warm. The skipped bytes are not counted against the arena:
         * the caller moves its view of the tail up to `pos` at commit
         * (sl_arena_empty_tail), and the consumer does the same at accept. */
        if (need && off != 0)
            pos += cap - off;
        *pos_p = pos;
        return SLUICE_OK;
    }
    if (need && off + need > cap)
        pos += cap - off; /* skip to the next lap; the gap is freed with this region */
    /* Nothing may overlap unreleased bytes [tail, head) modulo cap. */
    if (pos + need - tail > cap)
        return SLUICE_EAGAIN;
    *pos_p = pos;
    return SLUICE_OK;
}

void sl_arena_rx_init(sl_arena_rx_t *a, uint64_t cap)
{
    *a = (sl_arena_rx_t){ .cap = cap, .first_id = 1, .next_id = 1 };
}

void sl_arena_rx_fini(sl_arena_rx_t *a)
{
    free(a->entries);
    a->entries = NULL;
}

static int sl_arena_rx_grow(sl_arena_rx_t *a)
{
    size_t room = a->room ? a->room * 2 : 16;
    struct sl_arena_entry *e = malloc(room * sizeof *e);
    if (!e)
        return sl_fail(SLUICE_ENOMEM, "cannot grow the arena region list to %zu", room);
    for (size_t i = 0; i < a->n; i++)
        e[i] = a->entries[(a->first + i) % a->room];
    free(a->entries);
    a->entries = e;
    a->first = 0;
    a->room = room;
    return SLUICE_OK;
}

int sl_arena_rx_accept(sl_arena_rx_t *a, uint64_t pos, uint64_t len, uint64_t *id_p)
{
    uint64_t need = sl_align_up(len, SL_ARENA_ALIGN);
    /* Every byte handed out so far is released (zero-length regions may
     * still be held: they cover no bytes). The producer then places the next
     * region anywhere after its head (sl_arena_place), and everything before
     * it is free. */
    bool empty = a->tail == a->last_end;
    if (len > a->cap || pos > UINT64_MAX - 2 * a->cap || pos < a->last_end ||
        (need && pos % a->cap + need > a->cap) || (!empty && pos + need - a->tail > a->cap))
        return sl_fail(SLUICE_ECORRUPT, "arena region [%llu, +%llu) is impossible: previous end "
                                        "%llu, released tail %llu, capacity %llu",
                       (unsigned long long)pos, (unsigned long long)len,
                       (unsigned long long)a->last_end, (unsigned long long)a->tail,
                       (unsigned long long)a->cap);
    if (a->n == a->room) {
        int rc = sl_arena_rx_grow(a);
        if (rc)
            return rc;
    }
    if (empty)
        a->tail = pos; /* mirrors the producer's sl_arena_empty_tail */
    a->entries[(a->first + a->n) % a->room] = (struct sl_arena_entry){ pos + need, false };
    a->n++;
    a->last_end = pos + need;
    *id_p = a->next_id++;
    return SLUICE_OK;
}

int sl_arena_rx_release(sl_arena_rx_t *a, uint64_t id, bool *advanced_p)
{
    *advanced_p = false;
    if (id == 0 || id >= a->next_id)
        return sl_fail(SLUICE_EINVAL, "arena region %llu was never handed out",
                       (unsigned long long)id);
    if (id < a->first_id || a->entries[(a->first + (id - a->first_id)) % a->room].released)
        return sl_fail(SLUICE_EALREADY, "arena region %llu was already released",
                       (unsigned long long)id);
    a->entries[(a->first + (id - a->first_id)) % a->room].released = true;
    while (a->n && a->entries[a->first].released) {
        /* A zero-length region held across an empty restart ends before the
         * tail: the tail never moves back. */
        if (a->entries[a->first].end > a->tail) {
            a->tail = a->entries[a->first].end;
            *advanced_p = true;
        }
        a->first = (a->first + 1) % a->room;
        a->n--;
        a->first_id++;
    }
    return SLUICE_OK;
}
