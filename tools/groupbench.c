/* SPDX-License-Identifier: MIT */
/*
 * sluice-groupbench: one controller offloading events to k sources through a
 * group, against the same work over two-sided MPI the way the seeds' modules
 * do it (each event sent to source i mod k, metadata then payload, the reply
 * the same way), in the same run, for k = 1, 2, 4, ... up to the sources the
 * job has and 1 to 64 events in flight (the controller's streams).
 *
 * An event carries a product of --bytes (default 1024) to its source, which
 * answers with a product of the same size; the controller checks the answer.
 * The controller drives all its streams from one thread without waiting
 * (SLUICE_NONBLOCK), as a framework's scheduler polling its tasks would.
 * CPU is user + system time of the controller and of the k sources taking
 * part (getrusage around each configuration), per event. Each configuration
 * is measured three times (once with --quick), alternating sluice and
 * two-sided; a row is the best of the three (least CPU per event, and the
 * work and polling times of that run), so that one time slice lost to
 * another process does not decide.
 *
 *   mpiexec -n 1 sluice-groupbench controller [--quick] [--bytes B]
 *         : -n S sluice-groupbench source [--quick] [--bytes B]
 *
 * Prints a table and "group_csv,..." lines with fixed columns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <mpi.h>
#include <sluice/group.h>
#include <sluice/sluice.h>

#define IN 1u
#define OUT 2u
#define MAX_STREAMS 64u

static int is_ctrl, me, n_src, quick;
static size_t bytes = 1024;
static const sluice_type_t *T;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != SLUICE_OK) {                                                                    \
            fprintf(stderr, "groupbench %s %d: %s: %s (%s)\n", is_ctrl ? "controller" : "source", \
                    me, #expr, sluice_strerror(rc_), sluice_last_error());                        \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

/* The configurations, the same on every rank. */
static const uint32_t streams_sweep[] = { 1, 4, 16, 64 };
#define N_STREAMS (sizeof streams_sweep / sizeof streams_sweep[0])

/* Events per measurement: 0.06 to 1.2 s each here, many time slices of
 * this noisy machine, and a measurement repeated repeats() times, sluice
 * and two-sided alternating, the best of each kept. */
static uint32_t events_for(uint32_t w) { return quick ? 200u + 4u * w : 60000u + 400u * w; }
static int repeats(void) { return quick ? 1 : 3; }

/* ------------------------------------------------------------ sluice */

typedef struct slot {
    int busy;
    uint64_t ev;
    sluice_token_t tok;
} slot_t;

static uint64_t fill_word(uint64_t ev) { return ev * 0x9e3779b97f4a7c15ull; }

/*
 * Where the controller's time goes (wall clock, read through the vDSO, so
 * a few tens of ns per call): inside sluice calls that did an event's work
 * (send, product send, the receive that got the answer, release, finish),
 * inside the receives that found no answer yet (the driver's polling: it
 * asks every busy slot each round, so their number grows with the streams),
 * and the rest. Separates the library's cost per event from this driver's.
 */
static double t_work, t_poll;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define TIMED(acc, rc, call)                                                                       \
    do {                                                                                           \
        double t0_ = mono_s();                                                                     \
        (rc) = (call);                                                                             \
        (acc) += mono_s() - t0_;                                                                   \
    } while (0)

static void ctrl_sluice(sluice_group_t *g, uint32_t run, uint32_t w, uint32_t n_events,
                        char *buf)
{
    sluice_transition_t t = { .kind = SLUICE_BEGIN_RUN, .run = run };
    CHECK(sluice_group_transition_send(g, &t, 0));
    t = (sluice_transition_t){ .kind = SLUICE_BEGIN_LUMI, .run = run, .lumi = 1 };
    CHECK(sluice_group_transition_send(g, &t, 0));
    slot_t slot[MAX_STREAMS] = { 0 };
    uint64_t next = 1, done = 0;
    while (done < n_events) {
        for (uint32_t k = 0; k < w && next <= n_events; k++) {
            if (slot[k].busy)
                continue;
            sluice_transition_t ev = { .kind = SLUICE_EVENT, .run = run, .lumi = 1,
                                       .event = next };
            int rc;
            TIMED(t_work, rc, sluice_group_event_send(g, k, &ev, SLUICE_NONBLOCK, &slot[k].tok));
            if (rc == SLUICE_EAGAIN)
                break;
            CHECK(rc);
            uint64_t word = fill_word(next);
            memcpy(buf, &word, sizeof word);
            TIMED(t_work, rc, sluice_product_send(&slot[k].tok, IN, buf, bytes, bytes, 0));
            CHECK(rc);
            slot[k].busy = 1;
            slot[k].ev = next++;
        }
        for (uint32_t k = 0; k < w; k++) {
            if (!slot[k].busy)
                continue;
            sluice_view_t v;
            double t0 = mono_s();
            int rc = sluice_product_receive(&slot[k].tok, OUT, SLUICE_NONBLOCK, &v);
            if (rc == SLUICE_EAGAIN) {
                t_poll += mono_s() - t0;
                continue;
            }
            t_work += mono_s() - t0;
            CHECK(rc);
            uint64_t word;
            memcpy(&word, v.data, sizeof word);
            if (v.bytes != bytes || word != ~fill_word(slot[k].ev)) {
                fprintf(stderr, "groupbench: wrong answer for event %llu\n",
                        (unsigned long long)slot[k].ev);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            TIMED(t_work, rc, sluice_view_release(slot[k].tok.channel, &v));
            CHECK(rc);
            TIMED(t_work, rc, sluice_event_finish(&slot[k].tok));
            CHECK(rc);
            slot[k].busy = 0;
            done++;
        }
    }
    t = (sluice_transition_t){ .kind = SLUICE_END_LUMI, .run = run, .lumi = 1 };
    CHECK(sluice_group_transition_send(g, &t, 0));
    t = (sluice_transition_t){ .kind = SLUICE_END_RUN, .run = run };
    CHECK(sluice_group_transition_send(g, &t, 0));
}

/* Source: answer every event of `run` until its END_RUN. */
static void src_sluice(sluice_channel_t *ch, char *buf)
{
    for (;;) {
        sluice_item_t it;
        int rc = sluice_source_next(ch, 0, &it);
        CHECK(rc);
        if (it.transition.kind == SLUICE_END_RUN)
            return;
        if (it.transition.kind != SLUICE_EVENT)
            continue;
        sluice_view_t v;
        CHECK(sluice_product_receive(&it.token, IN, 0, &v));
        uint64_t word;
        memcpy(&word, v.data, sizeof word);
        word = ~word;
        CHECK(sluice_view_release(ch, &v));
        memcpy(buf, &word, sizeof word);
        CHECK(sluice_product_send(&it.token, OUT, buf, bytes, bytes, 0));
        CHECK(sluice_event_finish(&it.token));
    }
}

/* ------------------------------------------------------------ two-sided, as the seeds */

typedef struct meta {
    uint64_t event;           /* 0: end of the configuration */
    uint64_t bytes;
} meta_t;

static void ctrl_mpi(uint32_t k, uint32_t w, uint32_t n_events, char *bufs)
{
    /* Per stream slot: metadata out, payload out, metadata back, payload back. */
    MPI_Request req[MAX_STREAMS][4];
    meta_t out[MAX_STREAMS], back[MAX_STREAMS];
    uint64_t ev_of[MAX_STREAMS];
    int busy[MAX_STREAMS] = { 0 };
    char *in_buf = bufs, *out_buf = bufs + (size_t)MAX_STREAMS * bytes;
    uint64_t next = 1, done = 0;
    while (done < n_events) {
        for (uint32_t s = 0; s < w && next <= n_events; s++) {
            if (busy[s])
                continue;
            int dst = 1 + (int)((next - 1) % k); /* event i to source i mod k */
            uint64_t word = fill_word(next);
            memcpy(out_buf + s * bytes, &word, sizeof word);
            out[s] = (meta_t){ next, bytes };
            MPI_Irecv(&back[s], sizeof back[s], MPI_BYTE, dst, 2 * (int)s, MPI_COMM_WORLD,
                      &req[s][2]);
            MPI_Irecv(in_buf + s * bytes, (int)bytes, MPI_BYTE, dst, 2 * (int)s + 1,
                      MPI_COMM_WORLD, &req[s][3]);
            MPI_Isend(&out[s], sizeof out[s], MPI_BYTE, dst, 2 * (int)s, MPI_COMM_WORLD,
                      &req[s][0]);
            MPI_Isend(out_buf + s * bytes, (int)bytes, MPI_BYTE, dst, 2 * (int)s + 1,
                      MPI_COMM_WORLD, &req[s][1]);
            ev_of[s] = next++;
            busy[s] = 1;
        }
        for (uint32_t s = 0; s < w; s++) {
            int flag = 0;
            if (!busy[s])
                continue;
            MPI_Testall(4, req[s], &flag, MPI_STATUSES_IGNORE);
            if (!flag)
                continue;
            uint64_t word;
            memcpy(&word, in_buf + s * bytes, sizeof word);
            if (back[s].event != ev_of[s] || word != ~fill_word(ev_of[s])) {
                fprintf(stderr, "groupbench: wrong two-sided answer for event %llu\n",
                        (unsigned long long)ev_of[s]);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            busy[s] = 0;
            done++;
        }
    }
    meta_t end = { 0, 0 };
    for (uint32_t i = 1; i <= k; i++)
        MPI_Send(&end, sizeof end, MPI_BYTE, (int)i, 0, MPI_COMM_WORLD);
}

static void src_mpi(char *buf)
{
    for (;;) {
        meta_t m;
        MPI_Status st;
        MPI_Recv(&m, sizeof m, MPI_BYTE, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
        if (m.event == 0)
            return;
        MPI_Recv(buf, (int)m.bytes, MPI_BYTE, 0, st.MPI_TAG + 1, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        uint64_t word;
        memcpy(&word, buf, sizeof word);
        word = ~word;
        memcpy(buf, &word, sizeof word);
        MPI_Send(&m, sizeof m, MPI_BYTE, 0, st.MPI_TAG, MPI_COMM_WORLD);
        MPI_Send(buf, (int)m.bytes, MPI_BYTE, 0, st.MPI_TAG + 1, MPI_COMM_WORLD);
    }
}

/* ------------------------------------------------------------ main */

typedef struct result {
    double seconds, cpu;      /* wall of the controller; CPU of all taking part */
} result_t;

/*
 * A barrier that sleeps while it waits: the sources not taking part in a
 * configuration wait in it, and must not take CPU from those that do (MPI's
 * own barrier spins, and this machine has two cores).
 */
static void quiet_barrier(void)
{
    MPI_Request r;
    int done = 0;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    while (MPI_Test(&r, &done, MPI_STATUS_IGNORE), !done) {
        struct timespec ts = { 0, 500000 };
        nanosleep(&ts, NULL);
    }
}

/* Everyone: sum the CPU of the ranks taking part; the controller's wall decides. */
static result_t settle(double wall, double cpu, int taking_part)
{
    quiet_barrier();
    double mine = taking_part ? cpu : 0.0, sum = 0.0;
    MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    return (result_t){ wall, sum };
}

static void open_all(sluice_context_t *ctx, sluice_channel_t **ch)
{
    sluice_endpoint_t eps[2] = { { IN, is_ctrl ? SLUICE_SEND : SLUICE_RECEIVE, T },
                                 { OUT, is_ctrl ? SLUICE_RECEIVE : SLUICE_SEND, T } };
    sluice_options_t o;
    sluice_options_init(&o);
    o.arena_bytes = bytes * 4 < 65536 ? 65536 : bytes * 4;
    CHECK(sluice_options_from_env(&o));
    for (int s = 0; s < n_src; s++) {
        if (!is_ctrl && s != me)
            continue;
        char name[32], peer[32];
        snprintf(name, sizeof name, "groupbench-%d", s);
        snprintf(peer, sizeof peer, "source-%d", s);
        sluice_channel_desc_t d = { .size = sizeof d, .name = name,
                                    .role = is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                    .peer = is_ctrl ? peer : "controller", .streams = MAX_STREAMS,
                                    .endpoints = eps, .n_endpoints = 2, .options = &o };
        CHECK(sluice_channel_open(ctx, &d, &ch[is_ctrl ? s : 0]));
    }
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    is_ctrl = argc > 1 && strcmp(argv[1], "controller") == 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--bytes") && i + 1 < argc)
            bytes = (size_t)atol(argv[++i]);
    }
    if (argc < 2 || (is_ctrl != (rank == 0)) || size < 2 || bytes < 8) {
        if (rank == 0)
            fprintf(stderr, "usage: mpiexec -n 1 sluice-groupbench controller [--quick] "
                            "[--bytes B>=8] : -n S sluice-groupbench source [same options]\n");
        MPI_Finalize();
        return 2;
    }
    n_src = size - 1;
    me = is_ctrl ? 0 : rank - 1;
    char name[32];
    snprintf(name, sizeof name, is_ctrl ? "controller" : "source-%d", me);
    sluice_context_t *ctx;
    sluice_registry_t *reg;
    sluice_type_desc_t td = { .size = sizeof td, .name = "groupbench::Bytes",
                              .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1, .align = 1 };
    CHECK(sluice_context_create(MPI_COMM_WORLD, name, &ctx));
    CHECK(sluice_registry_create(&reg));
    CHECK(sluice_registry_add(reg, &td, &T));
    sluice_channel_t **ch = calloc((size_t)n_src, sizeof *ch);
    open_all(ctx, ch);
    char *buf = calloc(2 * MAX_STREAMS, bytes);

    if (is_ctrl) {
        printf("sluice-groupbench: 1 controller, up to %d sources, %zu-byte products both "
               "ways; %s\n", n_src, bytes, sluice_channel_transport(ch[0]));
        printf("%-9s %7s %7s %8s %11s %12s %14s %10s %10s\n", "impl", "sources", "streams",
               "events", "events/s", "cpu us/ev", "sluice/2-sided", "work us/ev", "poll us/ev");
        printf("group_csv,impl,sources,streams,events,bytes,seconds,events_per_s,cpu_us_per_"
               "event,rate_vs_two_sided,work_us_per_event,poll_us_per_event\n");
    }
    uint32_t run = 0;
    for (int k = 1; k <= n_src; k *= 2) {
        double cpu1 = 0, cpu_max = 0, cpu_min = 1e30, work_max = 0, work_min = 1e30;
        for (size_t wi = 0; wi < N_STREAMS; wi++) {
            uint32_t w = streams_sweep[wi], n = events_for(w);
            int part = is_ctrl || me < k;
            result_t rs = { 1e30, 1e30 }, rm = { 1e30, 1e30 };
            double work_s = 0, poll_s = 0;
            for (int r = 0; r < repeats(); r++) {
                /* sluice, through a group of the first k channels */
                sluice_group_t *g = NULL;
                if (is_ctrl) {
                    sluice_group_desc_t gd = { .size = sizeof gd, .members = ch,
                                               .n_members = (size_t)k,
                                               .dispatch = SLUICE_DISPATCH_LEAST_LOADED };
                    CHECK(sluice_group_create(&gd, &g));
                }
                quiet_barrier();
                double t0 = now_s(), c0 = cpu_s();
                t_work = t_poll = 0;
                run++;
                if (is_ctrl)
                    ctrl_sluice(g, run, w, n, buf);
                else if (part)
                    src_sluice(ch[0], buf);
                result_t one = settle(now_s() - t0, cpu_s() - c0, part);
                sluice_group_destroy(g);
                if (one.cpu < rs.cpu) {
                    rs = one;
                    work_s = t_work;
                    poll_s = t_poll;
                }
                /* the same over two-sided MPI */
                quiet_barrier();
                t0 = now_s();
                c0 = cpu_s();
                if (is_ctrl)
                    ctrl_mpi((uint32_t)k, w, n, buf);
                else if (part)
                    src_mpi(buf);
                one = settle(now_s() - t0, cpu_s() - c0, part);
                if (one.cpu < rm.cpu)
                    rm = one;
            }
            if (is_ctrl) {
                double rate_s = n / rs.seconds, rate_m = n / rm.seconds;
                double cpu_s_ev = rs.cpu / n * 1e6, cpu_m_ev = rm.cpu / n * 1e6;
                double work_ev = work_s / n * 1e6, poll_ev = poll_s / n * 1e6;
                printf("%-9s %7d %7u %8u %11.0f %12.2f %14.2f %10.2f %10.2f\n", "sluice", k, w,
                       n, rate_s, cpu_s_ev, rate_s / rate_m, work_ev, poll_ev);
                printf("%-9s %7d %7u %8u %11.0f %12.2f %14s %10s %10s\n", "two-sided", k, w, n,
                       rate_m, cpu_m_ev, "", "-", "-");
                printf("group_csv,sluice,%d,%u,%u,%zu,%.6f,%.1f,%.3f,%.4f,%.3f,%.3f\n", k, w, n,
                       bytes, rs.seconds, rate_s, cpu_s_ev, rate_s / rate_m, work_ev, poll_ev);
                printf("group_csv,two-sided,%d,%u,%u,%zu,%.6f,%.1f,%.3f,%.4f,-1,-1\n", k, w, n,
                       bytes, rm.seconds, rate_m, cpu_m_ev, 1.0);
                work_max = work_ev > work_max ? work_ev : work_max;
                work_min = work_ev < work_min ? work_ev : work_min;
                if (wi == 0)
                    cpu1 = cpu_s_ev;
                cpu_max = cpu_s_ev > cpu_max ? cpu_s_ev : cpu_max;
                cpu_min = cpu_s_ev < cpu_min ? cpu_s_ev : cpu_min;
            }
        }
        if (is_ctrl)
            printf("  %d source(s): sluice CPU per event from 1 to %u streams: %.2f .. %.2f us "
                   "(max/min %.2f, at 1 stream %.2f); inside the calls that did the work: "
                   "%.2f .. %.2f us (max/min %.2f)\n",
                   k, streams_sweep[N_STREAMS - 1], cpu_min, cpu_max, cpu_max / cpu_min, cpu1,
                   work_min, work_max, work_max / work_min);
        fflush(stdout);
    }
    if (is_ctrl) {
        sluice_group_desc_t gd = { .size = sizeof gd, .members = ch, .n_members = (size_t)n_src,
                                   .dispatch = SLUICE_DISPATCH_ROUND_ROBIN };
        sluice_group_t *g;
        CHECK(sluice_group_create(&gd, &g));
        sluice_transition_t t = { .kind = SLUICE_END_JOB };
        CHECK(sluice_group_transition_send(g, &t, 0));
        sluice_group_destroy(g);
    } else {
        sluice_item_t it;
        int rc = sluice_source_next(ch[0], 0, &it);
        if (rc != SLUICE_OK || it.transition.kind != SLUICE_END_JOB)
            fprintf(stderr, "groupbench source %d: expected END_JOB, got %d\n", me, rc);
    }
    for (int s = 0; s < (is_ctrl ? n_src : 1); s++)
        CHECK(sluice_channel_close(ch[s]));
    free(ch);
    free(buf);
    sluice_registry_destroy(reg);
    sluice_context_destroy(ctx);
    if (is_ctrl)
        printf("groupbench: done\n");
    MPI_Finalize();
    return 0;
}
