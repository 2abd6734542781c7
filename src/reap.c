/* SPDX-License-Identifier: MIT */
/* Exported device arenas waiting for their peer to let go (reap.h). */
#include <pthread.h>
#include <stdlib.h>

#include "../gpu/gpu.h"
#include "liveness.h"
#include "reap.h"

/* A short list: one item per channel closed before its peer, while the peer is slow to close. */
static pthread_mutex_t sl_reap_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_reap_item_t *sl_reap_items;
static size_t sl_reap_n, sl_reap_cap;

bool sl_reap_released(const sl_reap_item_t *item)
{
    return atomic_load_explicit(item->mark, memory_order_acquire) ||
           (item->pid_visible && !sl_proc_alive(item->peer_pid, item->peer_start));
}

static void sl_reap_release(const sl_reap_item_t *item)
{
    item->tp->close(item->link, NULL);
    sl_gpu_free(item->dev, item->dev_bytes);
}

void sl_reap_defer(const sl_reap_item_t *item)
{
    if (sl_reap_released(item)) {
        sl_reap_release(item);
        return;
    }
    pthread_mutex_lock(&sl_reap_lock);
    if (sl_reap_n == sl_reap_cap) {
        size_t cap = sl_reap_cap ? 2 * sl_reap_cap : 8;
        sl_reap_item_t *grown = realloc(sl_reap_items, cap * sizeof *grown);
        if (!grown) {
            /* Nowhere to keep it: the arena and inbox stay for the life of
             * the process, a leak rather than a free under a mapping. */
            pthread_mutex_unlock(&sl_reap_lock);
            return;
        }
        sl_reap_items = grown;
        sl_reap_cap = cap;
    }
    sl_reap_items[sl_reap_n++] = *item;
    pthread_mutex_unlock(&sl_reap_lock);
}

void sl_reap_poll(void)
{
    pthread_mutex_lock(&sl_reap_lock);
    for (size_t i = 0; i < sl_reap_n;) {
        if (sl_reap_released(&sl_reap_items[i])) {
            sl_reap_release(&sl_reap_items[i]);
            sl_reap_items[i] = sl_reap_items[--sl_reap_n];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&sl_reap_lock);
}
