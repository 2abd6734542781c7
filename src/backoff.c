/* SPDX-License-Identifier: MIT */
/* Bounded waiting: deadlines and spin → yield → sleep back-off. */
#include <errno.h>
#include <sched.h>
#include <time.h>

#include "backoff.h"

uint64_t sl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void sl_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The longest single timed wait: a realtime clock set back costs at most this much more. */
#define SL_LOCK_SLICE_NS 100000000ull

int sl_mutex_lock_until(pthread_mutex_t *m, const sl_deadline_t *deadline, const char *what,
                        const char *held_by)
{
    if (pthread_mutex_trylock(m) == 0)
        return SLUICE_OK;
    for (;;) {
        uint64_t now = sl_now_ns();
        if (now >= deadline->at_ns)
            return sl_fail(SLUICE_ETIMEDOUT, "%s: %s until the deadline", what, held_by);
        uint64_t slice = deadline->at_ns - now;
        if (slice > SL_LOCK_SLICE_NS)
            slice = SL_LOCK_SLICE_NS;
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        uint64_t ns = (uint64_t)at.tv_nsec + slice;
        at.tv_sec += (time_t)(ns / 1000000000ull);
        at.tv_nsec = (long)(ns % 1000000000ull);
        int e = pthread_mutex_timedlock(m, &at);
        if (e == 0)
            return SLUICE_OK;
        if (e != ETIMEDOUT)
            return sl_fail(SLUICE_ESYS, "%s: pthread_mutex_timedlock failed (error %d)", what, e);
    }
}

int sl_backoff_pause(sl_backoff_t *b, const sl_deadline_t *deadline)
{
    uint32_t n = b->polls++;
    if (n < b->spin) {
        sl_cpu_relax();
        return SLUICE_OK;
    }
    if (sl_deadline_passed(deadline))
        return SLUICE_ETIMEDOUT;
    if (n < 2 * b->spin + 16) {
        sched_yield();
        return SLUICE_OK;
    }
    struct timespec ts = { 0, (long)b->sleep_us * 1000 };
    nanosleep(&ts, NULL);
    if (b->sleep_us < b->max_sleep_us)
        b->sleep_us = b->sleep_us * 2 > b->max_sleep_us ? b->max_sleep_us : b->sleep_us * 2;
    return SLUICE_OK;
}
