/* SPDX-License-Identifier: MIT */
/* Bounded waiting: deadlines and spin → yield → sleep back-off. */
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
