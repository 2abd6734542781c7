/* SPDX-License-Identifier: MIT */
/* sluice_history: process histories registered once, resolved by id from any node's shared copy. */
#include <stdlib.h>
#include <string.h>

#include <sluice/history.h>
#include <sluice/shared.h>

#include "../shm/shared.h"
#include "backoff.h"
#include "internal.h"

/*
 * Layout inside the sluice_shared array (offsets from its start):
 *   0     header: count of entries, heap bytes used
 *   64    entries[max_entries]: id, heap offset, length
 *   ...   heap: the histories, each 8-byte aligned
 * Append-only: an entry and its bytes are written (and complete on every
 * node) before the count that makes them visible, and never change again.
 */
typedef struct sl_history_header {
    uint64_t count;
    uint64_t heap_used;
} sl_history_header_t;

typedef struct sl_history_entry {
    uint8_t id[SLUICE_HISTORY_ID_BYTES];
    uint64_t offset;   /* from the start of the heap */
    uint64_t bytes;
} sl_history_entry_t;

enum { ENTRIES_AT = 64 };

struct sluice_history {
    sluice_shared_t *sh;
    uint32_t max_entries;
    uint32_t timeout_ms;
    size_t heap_at, heap_bytes;
};

int sluice_history_create(MPI_Comm comm, uint32_t max_entries, size_t heap_bytes,
                          uint32_t timeout_ms, sluice_history_t **h_p)
{
    if (!h_p)
        return sl_fail(SLUICE_EINVAL, "history: NULL h_p");
    if (max_entries < 1 || max_entries > (1u << 20) || heap_bytes < 1 ||
        heap_bytes > (1ull << 36))
        return sl_fail(SLUICE_ERANGE, "history: %u entries or %zu heap bytes out of range",
                       max_entries, heap_bytes);
    sluice_history_t *h = calloc(1, sizeof *h);
    if (!h)
        return sl_fail(SLUICE_ENOMEM, "history: cannot allocate a handle");
    h->max_entries = max_entries;
    h->heap_at = ENTRIES_AT + (size_t)max_entries * sizeof(sl_history_entry_t);
    h->heap_bytes = heap_bytes;
    sluice_shared_options_t o;
    sluice_shared_options_init(&o);
    if (timeout_ms)
        o.timeout_ms = timeout_ms;
    h->timeout_ms = o.timeout_ms;
    int rc = sluice_shared_create(comm, h->heap_at + heap_bytes, &o, &h->sh);
    if (rc != SLUICE_OK) {
        free(h);
        return rc;
    }
    *h_p = h;
    return SLUICE_OK;
}

int sluice_history_destroy(sluice_history_t *h)
{
    if (!h)
        return SLUICE_OK;
    int rc = sluice_shared_destroy(h->sh);
    if (rc == SLUICE_EBUSY)
        return rc;
    free(h);
    return rc;
}

/*
 * Find `id` among the visible entries of this node's copy. The caller holds
 * the writer lock or checks the version around the call; `count` is bounded
 * by the capacity whatever the copy holds.
 */
static const sl_history_entry_t *sl_history_find(const sluice_history_t *h, const uint8_t *id)
{
    const char *base = sluice_shared_data(h->sh);
    const sl_history_header_t *hd = (const void *)base;
    uint64_t n = __atomic_load_n(&hd->count, __ATOMIC_ACQUIRE);
    if (n > h->max_entries)
        n = h->max_entries;
    const sl_history_entry_t *e = (const void *)(base + ENTRIES_AT);
    for (uint64_t i = 0; i < n; i++)
        if (memcmp(e[i].id, id, SLUICE_HISTORY_ID_BYTES) == 0)
            return &e[i];
    return NULL;
}

/* Whether entry `e` is a valid region of the heap (the copy is shared: check before use). */
static bool sl_history_entry_ok(const sluice_history_t *h, const sl_history_entry_t *e)
{
    return e->offset <= h->heap_bytes && e->bytes <= h->heap_bytes - e->offset;
}

int sluice_history_lookup(const sluice_history_t *h, const uint8_t id[SLUICE_HISTORY_ID_BYTES],
                          const void **blob_p, size_t *bytes_p)
{
    if (!h || !id || !blob_p || !bytes_p)
        return sl_fail(SLUICE_EINVAL, "history: NULL argument");
    /* A registration publishes its entry with one version step, after the
     * bytes were complete: an entry seen under an even, unchanged version is
     * whole, and stays so (append-only). */
    sl_deadline_t dl = sl_deadline_in(h->timeout_ms);
    sl_backoff_t b;
    sl_backoff_init(&b, 64, 100);
    for (;;) {
        /* A reader that polls for an id must not starve the registration it
         * waits for, which may need this process inside MPI. */
        sl_shared_poke(h->sh);
        uint64_t before = sluice_shared_version(h->sh);
        const sl_history_entry_t *e = before % 2 == 0 ? sl_history_find(h, id) : NULL;
        sl_history_entry_t copy;
        if (e)
            memcpy(&copy, e, sizeof copy);
        if (before % 2 == 0 && sluice_shared_version(h->sh) == before) {
            if (!e)
                return sl_fail(SLUICE_ENOTFOUND, "history: id not registered");
            if (!sl_history_entry_ok(h, &copy))
                return sl_fail(SLUICE_ECORRUPT, "history: entry outside the heap");
            *blob_p = (const char *)sluice_shared_data(h->sh) + h->heap_at + copy.offset;
            *bytes_p = copy.bytes;
            return SLUICE_OK;
        }
        /* A registration is writing: it takes a few flushed puts. Longer
         * than the registry's timeout means its writer died between them. */
        if (sl_backoff_pause(&b, &dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "history: the registry stayed under update for %u ms",
                           h->timeout_ms);
    }
}

/* The registration itself, under the writer lock. */
static int sl_history_append(sluice_history_t *h, const uint8_t *id, const void *blob,
                             size_t bytes)
{
    const char *base = sluice_shared_data(h->sh);
    const sl_history_entry_t *old = sl_history_find(h, id);
    if (old) {
        if (!sl_history_entry_ok(h, old))
            return sl_fail(SLUICE_ECORRUPT, "history: entry outside the heap");
        if (old->bytes == bytes && memcmp(base + h->heap_at + old->offset, blob, bytes) == 0)
            return SLUICE_EALREADY;
        return sl_fail(SLUICE_EINVAL, "history: id already registered with other content "
                                      "(%llu bytes there, %zu offered)",
                       (unsigned long long)old->bytes, bytes);
    }
    sl_history_header_t hd;
    memcpy(&hd, base, sizeof hd);
    uint64_t at = sl_align_up(hd.heap_used, 8);
    if (hd.count >= h->max_entries || at > h->heap_bytes || bytes > h->heap_bytes - at)
        return sl_fail(SLUICE_ELIMIT, "history: full (%llu of %u entries, %llu of %zu heap "
                                      "bytes used; %zu more wanted)",
                       (unsigned long long)hd.count, h->max_entries,
                       (unsigned long long)hd.heap_used, h->heap_bytes, bytes);
    sl_history_entry_t e;
    memset(&e, 0, sizeof e);
    memcpy(e.id, id, SLUICE_HISTORY_ID_BYTES);
    e.offset = at;
    e.bytes = bytes;
    /* Bytes and entry first, the count that makes them visible last. */
    int rc = bytes ? sl_shared_put(h->sh, h->heap_at + at, blob, bytes, NULL) : SLUICE_OK;
    if (rc == SLUICE_OK)
        rc = sl_shared_put(h->sh, ENTRIES_AT + hd.count * sizeof e, &e, sizeof e, NULL);
    sl_history_header_t next = { hd.count + 1, at + bytes };
    if (rc == SLUICE_OK)
        rc = sl_shared_put(h->sh, 0, &next, sizeof next, NULL);
    return rc;
}

/*
 * After a registrar died part-way: every node has its bytes and entry (each
 * put goes to every node before the next starts), but the count that makes
 * them visible may have reached only some nodes. Give every node the
 * highest header, so no node reuses a slot another already shows.
 */
static int sl_history_repair(sluice_history_t *h)
{
    sl_history_header_t top = { 0, 0 };
    for (int i = 0; i < sl_shared_nodes_n(h->sh); i++) {
        sl_history_header_t hd;
        int rc = sl_shared_get(h->sh, i, 0, &hd, sizeof hd);
        if (rc != SLUICE_OK)
            return rc;
        if (hd.count > top.count)
            top = hd;
    }
    return sl_shared_put(h->sh, 0, &top, sizeof top, NULL);
}

int sluice_history_register(sluice_history_t *h, const uint8_t id[SLUICE_HISTORY_ID_BYTES],
                            const void *blob, size_t bytes)
{
    if (!h || !id || (!blob && bytes))
        return sl_fail(SLUICE_EINVAL, "history: NULL argument");
    int rc = sl_shared_lock(h->sh);
    if (rc != SLUICE_OK && rc != SLUICE_OWNERDEAD)
        return rc;
    if (rc == SLUICE_OWNERDEAD)
        rc = sl_history_repair(h);
    if (rc == SLUICE_OK)
        rc = sl_history_append(h, id, blob, bytes);
    int urc = sl_shared_unlock(h->sh);
    return rc != SLUICE_OK ? rc : urc;
}
