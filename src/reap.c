/* SPDX-License-Identifier: MIT */
/* Exported device arenas waiting for their peer to let go (reap.h). */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "../gpu/gpu.h"
#include "liveness.h"
#include "reap.h"

/* A short list: one item per channel closed before its peer, while the peer is slow to close. */
static pthread_mutex_t sl_reap_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_reap_item_t *sl_reap_items;
static size_t sl_reap_n, sl_reap_cap;

bool sl_reap_proven_dead(const sl_reap_item_t *item)
{
    return item->pid_visible && !sl_proc_alive(item->peer_pid, item->peer_start);
}

bool sl_reap_released(const sl_reap_item_t *item)
{
    return atomic_load_explicit(item->mark, memory_order_acquire) || sl_reap_proven_dead(item);
}

static void sl_reap_release(const sl_reap_item_t *item)
{
    /* Shared memory only (reap.h): its close ignores the deadline. */
    sl_deadline_t now = sl_deadline_in(0);
    item->tp->close(item->link, &now);
    sl_gpu_free(item->dev, item->dev_bytes);
}

static void sl_reap_hide(sl_reap_item_t *item, bool give_up);

void sl_reap_defer(const sl_reap_item_t *item)
{
    if (sl_reap_released(item)) {
        sl_reap_release(item);
        return;
    }
    sl_reap_item_t kept = *item;
    sl_reap_hide(&kept, false); /* at once if its deadline has passed already */
    pthread_mutex_lock(&sl_reap_lock);
    if (sl_reap_n == sl_reap_cap) {
        size_t cap = sl_reap_cap ? 2 * sl_reap_cap : 8;
        sl_reap_item_t *grown = realloc(sl_reap_items, cap * sizeof *grown);
        if (!grown) {
            /* Nowhere to keep it: the arena and inbox stay for the life of
             * the process, a leak rather than a free under a mapping. */
            pthread_mutex_unlock(&sl_reap_lock);
            sl_reap_hide(&kept, true);
            return;
        }
        sl_reap_items = grown;
        sl_reap_cap = cap;
    }
    sl_reap_items[sl_reap_n++] = kept;
    pthread_mutex_unlock(&sl_reap_lock);
}

/* An item past its deadline: a peer that has not found its inbox by now never will. */
static void sl_reap_hide(sl_reap_item_t *item, bool give_up)
{
    if (!item->hidden && (give_up || sl_now_ns() >= item->deadline_ns)) {
        if (item->tp->hide)
            item->tp->hide(item->link); /* never waits */
        item->hidden = true;
    }
}

/* Take the released items off the list (into `out`, at most `max`), under the lock. */
static size_t sl_reap_take(sl_reap_item_t *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&sl_reap_lock);
    for (size_t i = 0; i < sl_reap_n && n < max;) {
        if (sl_reap_released(&sl_reap_items[i])) {
            out[n++] = sl_reap_items[i];
            sl_reap_items[i] = sl_reap_items[--sl_reap_n];
        } else {
            sl_reap_hide(&sl_reap_items[i++], false);
        }
    }
    pthread_mutex_unlock(&sl_reap_lock);
    return n;
}

void sl_reap_poll(void)
{
    sl_reap_item_t batch[16];
    size_t n;
    do {
        n = sl_reap_take(batch, sizeof batch / sizeof batch[0]);
        for (size_t i = 0; i < n; i++)
            sl_reap_release(&batch[i]); /* outside the lock: cudaFree may wait for the device */
    } while (n == sizeof batch / sizeof batch[0]);
}

void sl_reap_drain(const void *owner)
{
    for (;;) {
        sl_reap_poll();
        uint64_t latest = 0;
        pthread_mutex_lock(&sl_reap_lock);
        for (size_t i = 0; i < sl_reap_n; i++)
            if (sl_reap_items[i].owner == owner && sl_reap_items[i].deadline_ns > latest)
                latest = sl_reap_items[i].deadline_ns;
        if (sl_now_ns() >= latest) {
            for (size_t i = 0; i < sl_reap_n; i++)
                if (sl_reap_items[i].owner == owner)
                    sl_reap_hide(&sl_reap_items[i], true);
            pthread_mutex_unlock(&sl_reap_lock);
            return;
        }
        pthread_mutex_unlock(&sl_reap_lock);
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
    }
}
