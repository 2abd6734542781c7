/* SPDX-License-Identifier: MIT */
/* Bounded waiting: deadlines and spin → yield → sleep back-off. */
#ifndef SL_BACKOFF_H
#define SL_BACKOFF_H

#include <pthread.h>
#include <stdint.h>

#include "internal.h"

typedef struct sl_deadline {
    uint64_t at_ns;       /* CLOCK_MONOTONIC time at which waits give up */
} sl_deadline_t;

typedef struct sl_backoff {
    uint32_t polls;       /* polls so far */
    uint32_t spin;        /* polls spent spinning */
    uint32_t sleep_us;    /* current sleep, doubling up to max_sleep_us */
    uint32_t max_sleep_us;
} sl_backoff_t;

uint64_t sl_now_ns(void);

static inline sl_deadline_t sl_deadline_in(uint32_t ms)
{
    sl_deadline_t d = { sl_now_ns() + (uint64_t)ms * 1000000ull };
    return d;
}

static inline bool sl_deadline_passed(const sl_deadline_t *d) { return sl_now_ns() >= d->at_ns; }

static inline void sl_backoff_init(sl_backoff_t *b, uint32_t spin, uint32_t max_sleep_us)
{
    b->polls = 0;
    b->spin = spin;
    b->sleep_us = 1;
    b->max_sleep_us = max_sleep_us ? max_sleep_us : 1;
}

/*
 * Pause once between two polls: spin `spin` times, then yield for as many
 * polls again, then sleep with doubling length. Returns SLUICE_ETIMEDOUT once
 * `deadline` has passed (checked only after the spinning phase, so the fast
 * path does not read the clock).
 */
int sl_backoff_pause(sl_backoff_t *b, const sl_deadline_t *deadline);

/*
 * Take `m` unless it stays held until `deadline`: SLUICE_OK when taken, else
 * SLUICE_ETIMEDOUT, with a message naming `what` and `held_by` (who holds
 * it: "another thread inside MPI"), and `m` not taken. Never waits when `m`
 * is free. Blocks on the mutex itself (its waiters are queued fairly),
 * in slices of at most 100 ms of the realtime clock, which is all
 * pthread_mutex_timedlock takes; the deadline stays monotonic.
 */
int sl_mutex_lock_until(pthread_mutex_t *m, const sl_deadline_t *deadline, const char *what,
                        const char *held_by);

#endif
