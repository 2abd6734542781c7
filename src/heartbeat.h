/* SPDX-License-Identifier: MIT */
/* The heartbeat: keeps a word in every remote channel's inbox advancing while this process lives. */
#ifndef SL_HEARTBEAT_H
#define SL_HEARTBEAT_H

#include <stdatomic.h>
#include <stdint.h>

#include "transport.h"

/*
 * A peer on another node cannot be checked by pid. Instead each side owns a
 * heartbeat word in its inbox header, which one process-wide thread
 * advances every quarter of the shortest liveness period registered, also
 * while the application is idle or busy outside sluice; the peer reads it
 * one-sidedly and calls this side dead when it has not moved for a whole
 * liveness period (wait.c). The same thread drives MPI progress for
 * transports that need it (osc/pt2pt answers the peer's reads only while
 * this process is inside MPI), taking the MPI guard only when it is free.
 *
 * The thread runs while at least one beat (a channel or a lock) is registered and is joined
 * when the last one leaves.
 */
typedef struct sl_beat {
    _Atomic uint64_t *word;   /* the heartbeat word in the local inbox */
    uint32_t period_ms;       /* the channel's liveness period */
    const sl_transport_ops_t *tp; /* a channel's transport; NULL: `fn` below */
    sl_link_t *link;
    /* Not a channel (a lock, rma/lock.c): called on every beat instead of
     * the transport's beat, and MPI progress is driven for it. */
    void (*fn)(void *arg, uint64_t value);
    void *arg;
    struct sl_beat *next;
} sl_beat_t;

/* Register `b` (filled by the caller; it must stay put until sl_heartbeat_leave). */
int sl_heartbeat_join(sl_beat_t *b);

/* Unregister `b`; returns once the thread no longer touches it. */
void sl_heartbeat_leave(sl_beat_t *b);

#endif
