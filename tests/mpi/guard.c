/* SPDX-License-Identifier: MIT */
/* Waits for the MPI guard are bounded: a thread that keeps it cannot make sluice's calls hang. */
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/options.h>
#include <sluice/sluice.h>

/*
 * Two ranks, controller and source, one channel (the job's SLUICE_TRANSPORT:
 * rma over osc/pt2pt at MPI_THREAD_SERIALIZED is where the guard matters).
 * A helper thread holds the guard with sluice_mpi_lock, standing in for a
 * thread stuck inside MPI (an MPI_Win_flush towards a dead peer). Meanwhile:
 *   mpi_lock_until: sluice_mpi_lock_until(200) returns SLUICE_ETIMEDOUT in
 *     200 ms + slack, and SLUICE_OK once the guard is free.
 *   send: the controller's sluice_transition_send (a put and a publication
 *     over RMA) returns SLUICE_ETIMEDOUT within liveness_ms + slack instead
 *     of hanging, publishes nothing, and succeeds once the guard is free;
 *     the source receives exactly the transitions that succeeded.
 * Exits 77 (skip) at MPI_THREAD_MULTIPLE, where there is no guard.
 */

#define LIVENESS_MS 500u
#define SLACK_MS 1500u

static const char *role;
static atomic_int hold_state; /* 0 idle, 1 held, 2 release now */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "[%s] %s:%d: ", role, __FILE__, __LINE__);                        \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

#define CHECK_RC(rc, want, what)                                                              \
    do {                                                                                      \
        int rc_ = (rc);                                                                       \
        CHECK(rc_ == (want), "%s: got %d (%s: %s), want %d", what, rc_, sluice_strerror(rc_), \
              sluice_last_error(), (want));                                                   \
    } while (0)

static void *holder(void *arg)
{
    (void)arg;
    sluice_mpi_lock();
    atomic_store(&hold_state, 1);
    while (atomic_load(&hold_state) != 2) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    sluice_mpi_unlock();
    return NULL;
}

static pthread_t hold_guard(void)
{
    pthread_t t;
    atomic_store(&hold_state, 0);
    CHECK(pthread_create(&t, NULL, holder, NULL) == 0, "pthread_create");
    while (atomic_load(&hold_state) != 1) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    return t;
}

static void free_guard(pthread_t t)
{
    atomic_store(&hold_state, 2);
    pthread_join(t, NULL);
}

static void case_mpi_lock_until(void)
{
    pthread_t t = hold_guard();
    uint64_t t0 = now_ms();
    CHECK_RC(sluice_mpi_lock_until(200), SLUICE_ETIMEDOUT, "sluice_mpi_lock_until while held");
    uint64_t took = now_ms() - t0;
    CHECK(took >= 190 && took <= 200 + SLACK_MS, "the timed wait took %llu ms, want ~200",
          (unsigned long long)took);
    free_guard(t);
    CHECK_RC(sluice_mpi_lock_until(200), SLUICE_OK, "sluice_mpi_lock_until when free");
    sluice_mpi_unlock();
}

static sluice_transition_t run_begin(uint32_t run)
{
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.kind = SLUICE_BEGIN_RUN;
    t.run = run;
    return t;
}

static void case_send(sluice_context_t *ctx, int is_ctrl)
{
    sluice_options_t o;
    sluice_options_init(&o);
    o.timeout_ms = 20000;
    o.max_sleep_us = 100;
    CHECK_RC(sluice_options_from_env(&o), SLUICE_OK, "SLUICE_* environment");
    o.liveness_ms = LIVENESS_MS;
    sluice_channel_desc_t d = { .size = sizeof d, .name = "guard",
                                .role = is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = is_ctrl ? "source" : "controller", .streams = 1,
                                .options = &o };
    sluice_channel_t *ch = NULL;
    CHECK_RC(sluice_channel_open(ctx, &d, &ch), SLUICE_OK, "open");
    printf("[%s] transport %s\n", role, sluice_channel_transport(ch));
    /* Both opens are complete before the guard is held: over osc/pt2pt the
     * source's last read of our header needs this process inside MPI, and a
     * guard held longer than liveness_ms would make us look dead to it. */
    sluice_mpi_lock();
    MPI_Barrier(MPI_COMM_WORLD);
    sluice_mpi_unlock();

    if (is_ctrl) {
        pthread_t t = hold_guard();
        sluice_transition_t begin = run_begin(7);
        uint64_t t0 = now_ms();
        int rc = sluice_transition_send(ch, &begin, 0);
        uint64_t took = now_ms() - t0;
        free_guard(t);
        if (strcmp(sluice_channel_transport(ch), "rma") == 0) {
            CHECK_RC(rc, SLUICE_ETIMEDOUT, "transition send while the guard is held");
            CHECK(took <= LIVENESS_MS + SLACK_MS, "the send gave up after %llu ms, want at "
                  "most %u", (unsigned long long)took, LIVENESS_MS + SLACK_MS);
            printf("[%s] send under a held guard: SLUICE_ETIMEDOUT after %llu ms\n", role,
                   (unsigned long long)took);
            /* Nothing was published: the same transition goes now. */
            CHECK_RC(sluice_transition_send(ch, &begin, 0), SLUICE_OK, "send once free");
        } else {
            CHECK_RC(rc, SLUICE_OK, "transition send (no MPI after open)");
        }
        sluice_transition_t end = run_begin(7);
        end.kind = SLUICE_END_RUN;
        CHECK_RC(sluice_transition_send(ch, &end, 0), SLUICE_OK, "end of run");
        memset(&end, 0, sizeof end);
        end.kind = SLUICE_END_JOB;
        CHECK_RC(sluice_transition_send(ch, &end, 0), SLUICE_OK, "end of job");
    } else {
        sluice_transition_t t;
        CHECK_RC(sluice_transition_next(ch, &t, 0), SLUICE_OK, "first transition");
        CHECK(t.kind == SLUICE_BEGIN_RUN && t.run == 7, "got kind %d run %u, want BEGIN_RUN 7",
              (int)t.kind, t.run);
        CHECK_RC(sluice_transition_next(ch, &t, 0), SLUICE_OK, "second transition");
        CHECK(t.kind == SLUICE_END_RUN && t.run == 7,
              "got kind %d run %u, want END_RUN 7 (a duplicate begin?)", (int)t.kind, t.run);
        CHECK_RC(sluice_transition_next(ch, &t, 0), SLUICE_OK, "third transition");
        CHECK(t.kind == SLUICE_END_JOB, "got kind %d, want END_JOB", (int)t.kind);
        CHECK_RC(sluice_transition_next(ch, &t, 0), SLUICE_EOF, "after END_JOB");
    }
    CHECK_RC(sluice_channel_close(ch), SLUICE_OK, "close");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s controller|source mpi_lock_until|send\n", argv[0]);
        return 2;
    }
    role = argv[1];
    int is_ctrl = strcmp(role, "controller") == 0;
    const char *lvl = getenv("SLUICE_TEST_MPI_THREADS");
    int want = lvl && strcmp(lvl, "serialized") == 0 ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE;
    int got;
    MPI_Init_thread(&argc, &argv, want, &got);
    sluice_context_t *ctx = NULL;
    CHECK_RC(sluice_context_create(MPI_COMM_WORLD, role, &ctx), SLUICE_OK, "context");
    int code = 0;
    if (got >= MPI_THREAD_MULTIPLE) {
        printf("[%s] MPI_THREAD_MULTIPLE: there is no guard to hold (skipped)\n", role);
        code = 77;
    } else if (strcmp(argv[2], "mpi_lock_until") == 0) {
        case_mpi_lock_until();
    } else if (strcmp(argv[2], "send") == 0) {
        case_send(ctx, is_ctrl);
    } else {
        CHECK(0, "unknown case %s", argv[2]);
    }
    if (code == 0)
        printf("[%s] %s: ok\n", role, argv[2]);
    sluice_context_destroy(ctx);
    MPI_Finalize();
    return code;
}
