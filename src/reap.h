/* SPDX-License-Identifier: MIT */
/*
 * Exported device arenas whose peer may still map them (docs/gpu.md,
 * "Lifetime"). A closing shared-memory channel whose peer has not let go of
 * its arena yet hands the arena, with the inbox the peer marks, to a list
 * in this process; later opens and closes release what the peer has let go
 * of since, and context destroy waits for the rest up to their deadlines.
 * So a close never waits for the peer's. Releasing frees device memory
 * (cudaFree), which waits for the device's outstanding work: it runs
 * outside the list's lock.
 */
#ifndef SL_REAP_H
#define SL_REAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

typedef struct sl_reap_item {
    const void *owner;                /* the channel's context: its destroy drains the item */
    const sl_transport_ops_t *tp;
    sl_link_t *link;                  /* closed (tp->close) when the item goes */
    const _Atomic uint64_t *mark;     /* the inbox's peer_closed, inside the link */
    void *dev;                        /* the exported arena, freed when the item goes */
    size_t dev_bytes;
    int64_t peer_pid;                 /* checked only when pid_visible */
    uint64_t peer_start;
    bool pid_visible;
    uint64_t deadline_ns;             /* the close's deadline (sl_now_ns): until then a late
                                       * peer may still find the inbox; then it is hidden */
    bool hidden;
} sl_reap_item_t;

/*
 * Whether the peer has let go of our arena: it marked our inbox closed (it
 * unmaps before it marks), or it is proven dead by its pid. A missing
 * heartbeat or an unanswered read is no proof: a live peer may still map it.
 */
bool sl_reap_released(const sl_reap_item_t *item);

/* The peer part of that: its process is gone, checked by pid (only where its pid is visible). */
bool sl_reap_proven_dead(const sl_reap_item_t *item);

/* Release the item now if the peer has let go, else keep it on the list. `item->tp` has
 * SL_CAP_PEER_POINTER. */
void sl_reap_defer(const sl_reap_item_t *item);

/*
 * Release every item whose peer has let go since; hide (the transport's
 * hide: a late peer can no longer find it) the inbox of each whose
 * deadline has passed. Never waits for a peer; any thread.
 */
void sl_reap_poll(void);

/*
 * Context destroy: wait for the peers of `owner`'s items, up to their
 * deadlines, then hide what is left and keep it for the life of the
 * process (a leak, never a free under a mapping).
 */
void sl_reap_drain(const void *owner);

#endif
