/* SPDX-License-Identifier: MIT */
/* The heartbeat thread: advances the heartbeat words of remote channels and drives MPI progress. */
#include <pthread.h>
#include <time.h>

#include "heartbeat.h"
#include "mpiguard.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;      /* a registration left: the period may have changed */
    sl_beat_t *list;
    uint64_t gen;             /* a thread runs while its generation is current */
    bool running;
    pthread_t thread;
    uint64_t beats;
} sl_hb = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t sl_hb_once = PTHREAD_ONCE_INIT;

/* The thread sleeps against CLOCK_MONOTONIC, which a static initialiser
 * cannot choose. */
static void sl_heartbeat_once(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sl_hb.wake, &ca);
    pthread_condattr_destroy(&ca);
}

/* One beat: every word advances; one progress call serves every link
 * (MPI progress is process-wide). Called with sl_hb.lock held. */
static uint32_t sl_heartbeat_beat(void)
{
    uint32_t period = UINT32_MAX;
    bool progressed = false;
    sl_hb.beats++;
    for (sl_beat_t *b = sl_hb.list; b; b = b->next) {
        atomic_store_explicit(b->word, sl_hb.beats, memory_order_relaxed);
        if (!b->tp)
            b->fn(b->arg, sl_hb.beats);
        else if (b->tp->beat)
            b->tp->beat(b->link, sl_hb.beats);
        if (b->period_ms < period)
            period = b->period_ms;
        /* Only when the guard is free: a thread already inside MPI drives
         * progress itself, and an application holding the guard across a
         * long call must not stop the beat. */
        if (!progressed && (!b->tp || (b->tp->caps & SL_CAP_NEEDS_PROGRESS))) {
            sl_mpi_poke();
            progressed = true;
        }
    }
    return period;
}

static void *sl_heartbeat_main(void *arg)
{
    uint64_t gen = (uint64_t)(uintptr_t)arg;
    pthread_mutex_lock(&sl_hb.lock);
    while (sl_hb.gen == gen) {
        uint32_t period = sl_heartbeat_beat();
        uint64_t step_ns = (uint64_t)(period / 4 ? period / 4 : 1) * 1000000ull;
        struct timespec at;
        clock_gettime(CLOCK_MONOTONIC, &at);
        uint64_t ns = (uint64_t)at.tv_nsec + step_ns;
        at.tv_sec += (time_t)(ns / 1000000000ull);
        at.tv_nsec = (long)(ns % 1000000000ull);
        /* A join or leave wakes it early (the period may have changed):
         * one beat more does no harm. */
        pthread_cond_timedwait(&sl_hb.wake, &sl_hb.lock, &at);
    }
    pthread_mutex_unlock(&sl_hb.lock);
    return NULL;
}

int sl_heartbeat_join(sl_beat_t *b)
{
    int rc = SLUICE_OK;
    pthread_once(&sl_hb_once, sl_heartbeat_once);
    pthread_mutex_lock(&sl_hb.lock);
    b->next = sl_hb.list;
    sl_hb.list = b;
    atomic_store_explicit(b->word, ++sl_hb.beats, memory_order_relaxed);
    if (!sl_hb.running) {
        if (pthread_create(&sl_hb.thread, NULL, sl_heartbeat_main,
                           (void *)(uintptr_t)sl_hb.gen) == 0) {
            sl_hb.running = true;
        } else {
            sl_hb.list = b->next;
            rc = sl_fail(SLUICE_ENOMEM, "cannot start the heartbeat thread");
        }
    } else {
        /* The period may be shorter now. */
        pthread_cond_broadcast(&sl_hb.wake);
    }
    pthread_mutex_unlock(&sl_hb.lock);
    return rc;
}

void sl_heartbeat_leave(sl_beat_t *b)
{
    bool stop = false;
    pthread_t th;
    pthread_mutex_lock(&sl_hb.lock);
    for (sl_beat_t **p = &sl_hb.list; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    if (!sl_hb.list && sl_hb.running) {
        /* The last one: end this thread's generation; a later join starts
         * a new thread even before this one has gone. */
        sl_hb.gen++;
        sl_hb.running = false;
        th = sl_hb.thread;
        stop = true;
    }
    pthread_cond_broadcast(&sl_hb.wake);
    pthread_mutex_unlock(&sl_hb.lock);
    if (stop)
        pthread_join(th, NULL);
}
