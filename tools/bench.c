/* SPDX-License-Identifier: MIT */
/*
 * sluice benchmark: ping-pong latencies measured in one run, as ratios
 * against baselines measured in the same run on the same two processes:
 *   - raw: a cache-line ping-pong through shared memory, and memcpy;
 *   - two-sided: MPI_Send/MPI_Recv of a metadata message then the payload
 *     (what the seeds' MPISender/MPIReceiver do), page-aligned separate buffers.
 * Prints a table for people and CSV lines ("csv,...") with fixed columns.
 * A second section, "waiting", measures what a waiting controller costs
 * (latency and CPU) when it blocks, polls, or sleeps until notified; it
 * prints its own table and "wait_csv,..." lines.
 *
 *   mpiexec -n 1 sluice-bench controller : -n 1 sluice-bench source
 *           [--quick] [--only-waiting | --only-pingpong]   (the same options on both sides)
 *   or, as two separate jobs on one node (tools/bench-jobs runs both ways and compares):
 *   mpiexec --ompi-server file:URI -n 1 sluice-bench source --serve NAME [options]
 *   mpiexec --ompi-server file:URI -n 1 sluice-bench controller --connect NAME [options]
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sluice/service.h>

static int is_ctrl, peer, quick, only_waiting, only_pingpong;
static MPI_Comm comm = MPI_COMM_NULL; /* the two processes: one job's world, or a service's */
static const char *service;           /* --serve / --connect NAME: two separate jobs */
static const sluice_type_t *T_BYTES;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ < 0) {                                                                             \
            fprintf(stderr, "%s: %s: %s (%s)\n", is_ctrl ? "controller" : "source", #expr,         \
                    sluice_strerror(rc_), sluice_last_error());                                   \
            MPI_Abort(MPI_COMM_WORLD, 1); /* a benchmark tool, not the library */                 \
        }                                                                                          \
    } while (0)

static int iters_for(size_t bytes)
{
    int n = bytes <= 65536 ? 5000 : (int)((512u << 20) / bytes);
    if (n < 10)
        n = 10;
    return quick ? (n / 10 > 5 ? n / 10 : 5) : n;
}

/* ------------------------------------------------------------ raw baselines */

/*
 * The baselines' MPI calls, each under sluice's MPI guard where sluice's own
 * threads call MPI meanwhile: at MPI_THREAD_SERIALIZED with an RMA channel
 * open, whose heartbeat thread tests and sends its beats (sluice_mpi_lock).
 * Not on a shared-memory channel: no sluice thread enters MPI there, and an
 * uncontended lock per call would still add to the one-node baseline.
 */
static bool guarded;
#define BASE(call)                                                                                 \
    do {                                                                                           \
        if (guarded)                                                                               \
            sluice_mpi_lock();                                                                     \
        call;                                                                                      \
        if (guarded)                                                                               \
            sluice_mpi_unlock();                                                                   \
    } while (0)

/* One-way latency of a cache-line ping-pong through an MPI shared window;
 * -1 where no shared window can be made (osc/sm excluded). */
static double raw_pingpong(void)
{
    MPI_Win win;
    _Atomic uint64_t *mine, *theirs;
    MPI_Aint sz;
    int disp;
    void *base, *pbase;
    int rc;
    BASE(rc = MPI_Win_allocate_shared(4096, 1, MPI_INFO_NULL, comm, &base, &win));
    if (rc != MPI_SUCCESS)
        return -1;
    BASE(MPI_Win_shared_query(win, peer, &sz, &disp, &pbase));
    mine = base;   /* each side spins on its own line; the peer writes it */
    theirs = pbase;
    atomic_store(mine, 0);
    BASE(MPI_Barrier(comm));
    int n = quick ? 20000 : 200000;
    double t0 = 0;
    for (int i = 1; i <= n + 1000; i++) {
        if (i == 1001)
            t0 = now_us();
        if (is_ctrl) {
            atomic_store_explicit(theirs, (uint64_t)i, memory_order_release);
            while (atomic_load_explicit(mine, memory_order_acquire) != (uint64_t)i)
                ;
        } else {
            while (atomic_load_explicit(mine, memory_order_acquire) != (uint64_t)i)
                ;
            atomic_store_explicit(theirs, (uint64_t)i, memory_order_release);
        }
    }
    double one_way = (now_us() - t0) / n / 2;
    BASE(MPI_Barrier(comm));
    BASE(MPI_Win_free(&win));
    return one_way;
}

static double memcpy_us(size_t bytes)
{
    char *a = aligned_alloc(4096, bytes ? (bytes + 4095) & ~(size_t)4095 : 4096);
    char *b = aligned_alloc(4096, bytes ? (bytes + 4095) & ~(size_t)4095 : 4096);
    memset(a, 1, bytes), memset(b, 2, bytes);
    int n = iters_for(bytes);
    double t0 = now_us();
    for (int i = 0; i < n; i++) {
        memcpy(i & 1 ? a : b, i & 1 ? b : a, bytes);
        __asm__ __volatile__("" ::: "memory");
    }
    double t = (now_us() - t0) / n;
    free(a), free(b);
    return t;
}

/* Half round trip: metadata then payload, each way, as the seeds' modules do. */
static double two_sided(size_t bytes)
{
    size_t cap = bytes ? (bytes + 4095) & ~(size_t)4095 : 4096;
    char *sbuf = aligned_alloc(4096, cap), *rbuf = aligned_alloc(4096, cap);
    memset(sbuf, 3, cap), memset(rbuf, 0, cap);
    uint64_t meta[8] = { bytes };
    int n = iters_for(bytes), warm = n / 10 + 1;
    BASE(MPI_Barrier(comm));
    double t0 = 0;
    for (int i = 0; i < n + warm; i++) {
        if (i == warm)
            t0 = now_us();
        if (is_ctrl) {
            BASE(MPI_Send(meta, sizeof meta, MPI_BYTE, peer, 1, comm));
            BASE(MPI_Send(sbuf, (int)bytes, MPI_BYTE, peer, 2, comm));
            BASE(MPI_Recv(meta, sizeof meta, MPI_BYTE, peer, 1, comm, MPI_STATUS_IGNORE));
            BASE(MPI_Recv(rbuf, (int)bytes, MPI_BYTE, peer, 2, comm, MPI_STATUS_IGNORE));
        } else {
            BASE(MPI_Recv(meta, sizeof meta, MPI_BYTE, peer, 1, comm, MPI_STATUS_IGNORE));
            BASE(MPI_Recv(rbuf, (int)bytes, MPI_BYTE, peer, 2, comm, MPI_STATUS_IGNORE));
            BASE(MPI_Send(meta, sizeof meta, MPI_BYTE, peer, 1, comm));
            BASE(MPI_Send(sbuf, (int)bytes, MPI_BYTE, peer, 2, comm));
        }
    }
    double t = (now_us() - t0) / n / 2;
    free(sbuf), free(rbuf);
    return t;
}

/*
 * One-way latency of the raw one-sided path sluice's RMA transport builds on:
 * MPI_Put of the payload, flush, put of a flag word, flush; the peer polls
 * its flag (MPI_Win_sync, MPI_Iprobe for progress) and answers the same way.
 */
static MPI_Win put_win;
static char *put_base;

static double raw_put(size_t bytes)
{
    if (put_win == MPI_WIN_NULL)
        return -1; /* no window between these processes (separate jobs, osc/rdma) */
    int n = iters_for(bytes), warm = n / 10 + 1;
    char *src = aligned_alloc(4096, bytes ? (bytes + 4095) & ~(size_t)4095 : 4096);
    memset(src, 7, bytes);
    _Atomic uint64_t *flag = (_Atomic uint64_t *)(void *)put_base;
    atomic_store(flag, 0);
    BASE(MPI_Win_sync(put_win));
    BASE(MPI_Barrier(comm));
    double t0 = 0;
    for (int i = 1; i <= n + warm; i++) {
        if (i == warm + 1)
            t0 = now_us();
        uint64_t v = (uint64_t)i;
        for (int leg = 0; leg < 2; leg++) {
            if ((leg == 0) == is_ctrl) {
                BASE(MPI_Put(src, (int)bytes, MPI_BYTE, peer, 64, (int)bytes, MPI_BYTE, put_win));
                BASE(MPI_Win_flush(peer, put_win));
                BASE(MPI_Put(&v, 1, MPI_UINT64_T, peer, 0, 1, MPI_UINT64_T, put_win));
                BASE(MPI_Win_flush(peer, put_win));
            } else {
                int f;
                while (atomic_load_explicit(flag, memory_order_acquire) != v) {
                    BASE(MPI_Win_sync(put_win));
                    BASE(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &f, MPI_STATUS_IGNORE));
                }
            }
        }
    }
    double t = (now_us() - t0) / n / 2;
    BASE(MPI_Barrier(comm));
    free(src);
    return t;
}

/* ------------------------------------------------------------ sluice */

static sluice_channel_t *ch;
static uint64_t next_ev;

static void begin_event(sluice_token_t *tok)
{
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.kind = SLUICE_EVENT;
    t.run = 1;
    t.lumi = 1;
    t.event = ++next_ev;
    if (is_ctrl)
        CHECK(sluice_event_send(ch, 0, &t, 0, tok));
    else
        CHECK(sluice_event_next(ch, 0, &t, 0, tok));
}

/*
 * One-way transition latency: the controller publishes an event, the source
 * takes it and answers with an empty product; half of that round trip.
 */
static double sluice_transition(void)
{
    int n = quick ? 2000 : 20000, warm = 500;
    BASE(MPI_Barrier(comm));
    double t0 = 0;
    for (int i = 0; i < n + warm; i++) {
        if (i == warm)
            t0 = now_us();
        sluice_token_t tok;
        sluice_view_t v;
        begin_event(&tok);
        if (is_ctrl) {
            CHECK(sluice_product_receive(&tok, 2, 0, &v));
            CHECK(sluice_view_release(ch, &v));
        } else {
            CHECK(sluice_product_send(&tok, 2, NULL, 0, 0, 0));
        }
        CHECK(sluice_event_finish(&tok));
    }
    return (now_us() - t0) / n / 2;
}

/*
 * Product ping-pong of `bytes` each way inside one event: zero copy
 * (reserve + commit; the receiver takes a view and releases it) or copy-in
 * (sluice_product_send from a user buffer).
 */
static double sluice_product(size_t bytes, int zero_copy)
{
    char *src = aligned_alloc(4096, bytes ? (bytes + 4095) & ~(size_t)4095 : 4096);
    memset(src, 5, bytes);
    int n = iters_for(bytes), warm = n / 10 + 1;
    sluice_token_t tok;
    begin_event(&tok);
    BASE(MPI_Barrier(comm));
    double t0 = 0;
    for (int i = 0; i < n + warm; i++) {
        if (i == warm)
            t0 = now_us();
        for (int leg = 0; leg < 2; leg++) {
            int sending = (leg == 0) == is_ctrl;
            uint32_t inst = leg == 0 ? 1 : 2;
            if (sending && zero_copy) {
                sluice_reservation_t r;
                CHECK(sluice_product_reserve(&tok, inst, bytes, bytes, 0, &r));
                CHECK(sluice_product_commit(&tok, &r));
            } else if (sending) {
                CHECK(sluice_product_send(&tok, inst, src, bytes, bytes, 0));
            } else {
                sluice_view_t v;
                CHECK(sluice_product_receive(&tok, inst, 0, &v));
                CHECK(sluice_view_release(ch, &v));
            }
        }
    }
    double t = (now_us() - t0) / n / 2;
    CHECK(sluice_event_finish(&tok));
    free(src);
    return t;
}

/* ------------------------------------------------------------ report */

static const char *transport;
static char where[2 * MPI_MAX_PROCESSOR_NAME + 256]; /* where the two processes run */

/*
 * "on one node (HOST)" or "on two nodes (controller on A, source on B)",
 * and for the RMA transport the path (sluice_channel_path: which osc
 * component serves the windows) and which components Open MPI was allowed.
 */
static void find_where(void)
{
    char mine[MPI_MAX_PROCESSOR_NAME] = "", theirs[MPI_MAX_PROCESSOR_NAME] = "";
    int n = 0;
    MPI_Get_processor_name(mine, &n);
    BASE(MPI_Sendrecv(mine, sizeof mine, MPI_CHAR, peer, 4, theirs, sizeof theirs, MPI_CHAR,
                      peer, 4, comm, MPI_STATUS_IGNORE));
    const char *ctrl_host = is_ctrl ? mine : theirs, *src_host = is_ctrl ? theirs : mine;
    const char *osc = getenv("OMPI_MCA_osc");
    char note[160] = "";
    if (strcmp(transport, "rma") == 0)
        snprintf(note, sizeof note, " (path %.24s; osc allowed: %.96s)", sluice_channel_path(ch),
                 osc ? osc : "Open MPI's choice");
    if (strcmp(ctrl_host, src_host) == 0)
        snprintf(where, sizeof where, "on one node (%s)%s", ctrl_host, note);
    else
        snprintf(where, sizeof where, "on two nodes (controller on %s, source on %s)%s",
                 ctrl_host, src_host, note);
}

static void row(const char *what, size_t bytes, int iters, double sluice_us, double base_us,
                double raw_us, double put_us)
{
    if (!is_ctrl)
        return;
    double vs_put = put_us > 0 ? sluice_us / put_us : -1; /* -1: no put baseline */
    printf("%-18s %-9s %10zu %7d %10.3f %11.3f %8.2f %9.3f %9.3f %8.2f\n", what, transport, bytes,
           iters, sluice_us, base_us, base_us / sluice_us, raw_us, put_us, vs_put);
    printf("csv,%s,%s,%zu,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n", what, transport, bytes, iters,
           sluice_us, base_us, base_us / sluice_us, raw_us, put_us, vs_put);
}

/* The ping-pong cases, each against its baselines of the same run. */
static void pingpong_section(void)
{
    if (is_ctrl)
        printf("sluice benchmark: two processes %s %s, transport %s; times are "
               "one-way (half a round trip), in microseconds\n\n%-18s %-9s %10s %7s %10s %11s "
               "%8s %9s %9s %8s\n",
               where, service ? "in two separate jobs" : "in one job", transport, "case",
               "transport", "bytes", "iters", "sluice_us",
               "baseline_us", "speedup", "raw_us", "put_us", "vs_put");
    if (is_ctrl)
        printf("csv,case,transport,bytes,iters,sluice_us,baseline_us,speedup,raw_us,put_us,"
               "vs_put\n");

    double raw = raw_pingpong();
    double tr = sluice_transition();
    row("transition", 0, quick ? 2000 : 20000, tr, two_sided(0), raw, raw_put(0));

    static const size_t sizes[] = { 8, 512, 4096, 65536, 1u << 20, 16u << 20, 64u << 20 };
    double zc8 = 0, zc1m = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t b = sizes[i];
        double base = two_sided(b);
        double zc = sluice_product(b, 1), cp = sluice_product(b, 0);
        double mc = memcpy_us(b), put = raw_put(b);
        row("product_zero_copy", b, iters_for(b), zc, base, raw, put);
        row("product_copy_in", b, iters_for(b), cp, base, mc, put);
        if (b == 8)
            zc8 = zc;
        if (b == (1u << 20))
            zc1m = zc;
    }
    if (is_ctrl) {
        if (raw > 0)
            printf("\ntargets: transition / raw ping-pong = %.2f (target <= 1.5); zero-copy "
                   "1 MiB / 8 B = %.2f (target <= 2)\n", tr / raw, zc1m / zc8);
        printf("speedup = baseline_us / sluice_us; baseline = two-sided MPI (metadata + payload); "
               "raw_us = cache-line ping-pong (transition, zero copy; -1: no shared window) or "
               "one memcpy (copy-in); put_us = raw MPI_Put + flush + flag ping-pong (-1: no "
               "window between separate jobs); vs_put = "
               "sluice_us / put_us (RMA target <= 1.2)\n");
    }
}

/* ------------------------------------------------------------ waiting */

/*
 * What a waiting side costs. The controller sends an event with a 64-byte
 * product; the source takes both, works for W µs (a busy loop on the clock)
 * and replies with 64 bytes; the controller waits for the reply in one of
 * three modes:
 *   block  - sluice_product_receive with flags 0 (the channel's own
 *            spin → yield → sleep back-off);
 *   poll   - sluice_product_receive with SLUICE_NONBLOCK in a loop, as a
 *            framework's scheduler polling its tasks would;
 *   notify - sluice_notify_product, then sleep in poll() on the channel's
 *            eventfd while its progress thread (sluice_progress_start) fires
 *            the notification; then a SLUICE_NONBLOCK receive.
 * The source waits with blocking calls in every mode. CPU time is
 * getrusage(RUSAGE_SELF), user + system, of every thread of the process
 * (the progress thread included), around the measured loop of each side.
 * Its own channel, with the default options (SLUICE_* overrides): the
 * ping-pong channel above spins 10^6 polls before it yields, and the
 * progress engine spins `spin` rounds too before it sleeps.
 */
enum { WAIT_BYTES = 64 };
enum wait_mode { WAIT_BLOCK, WAIT_POLL, WAIT_NOTIFY, WAIT_MODES };
static const char *const wait_mode_names[WAIT_MODES] = { "block", "poll", "notify" };
static sluice_channel_t *wch;
static uint64_t wait_ev;

typedef struct wait_result {
    int events;
    double rtt_p50, rtt_p99; /* the controller's round trip, work included */
    double wall;             /* mean wall time per event of the controller's loop */
    double ctrl_cpu, src_cpu; /* CPU µs per event of each process */
    double thread_cpu;       /* ... of the controller's calling thread alone */
    double calls;            /* receive calls (notify: eventfd wake-ups) per event */
} wait_result_t;

static double cpu_now_us(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Events measured per work time: at most a second or two per mode; --quick: a 25th. */
static int wait_events(int work_us)
{
    int n = work_us == 0 ? 50000 : work_us <= 50 ? 20000 : 3000;
    return quick ? n / 25 : n;
}

/* Controller: the reply of `tok`, waited for in `mode`; returns the calls it took. */
static int wait_reply(sluice_token_t *tok, enum wait_mode mode, sluice_view_t *v)
{
    int rc, calls = 1;
    if (mode == WAIT_BLOCK) {
        CHECK(sluice_product_receive(tok, 2, 0, v));
    } else if (mode == WAIT_POLL) {
        while ((rc = sluice_product_receive(tok, 2, SLUICE_NONBLOCK, v)) == SLUICE_EAGAIN)
            calls++;
        CHECK(rc);
    } else {
        int fd = sluice_channel_fd(wch);
        for (calls = 1;; calls++) {
            CHECK(sluice_notify_product(tok, 2, NULL, NULL));
            struct pollfd p = { .fd = fd, .events = POLLIN };
            int n;
            while ((n = poll(&p, 1, 10000)) < 0 && errno == EINTR)
                ;
            uint64_t count;
            if (n != 1 || read(fd, &count, sizeof count) != sizeof count) {
                fprintf(stderr, "controller: waiting/notify: no notification within 10 s for "
                                "event %llu (poll %d)\n", (unsigned long long)wait_ev, n);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            /* One-shot: a firing whose product is not receivable yet is re-armed. */
            if ((rc = sluice_product_receive(tok, 2, SLUICE_NONBLOCK, v)) != SLUICE_EAGAIN)
                break;
        }
        CHECK(rc);
    }
    return calls;
}

/* One event each side; the controller returns its round trip in µs. */
static double wait_event(enum wait_mode mode, int work_us, int *calls_p)
{
    sluice_transition_t t = { .kind = SLUICE_EVENT, .run = 1, .lumi = 1, .event = ++wait_ev };
    sluice_token_t tok;
    sluice_view_t v;
    uint64_t msg[WAIT_BYTES / 8] = { wait_ev };
    double t0 = now_us();
    if (is_ctrl) {
        CHECK(sluice_event_send(wch, 0, &t, 0, &tok));
        CHECK(sluice_product_send(&tok, 1, msg, WAIT_BYTES, WAIT_BYTES, 0));
        *calls_p += wait_reply(&tok, mode, &v);
        if (v.bytes != WAIT_BYTES || *(const uint64_t *)v.data != wait_ev + 1000000) {
            fprintf(stderr, "controller: waiting: wrong reply to event %llu\n",
                    (unsigned long long)wait_ev);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    } else {
        CHECK(sluice_event_next(wch, 0, &t, 0, &tok));
        CHECK(sluice_product_receive(&tok, 1, 0, &v));
        msg[0] = *(const uint64_t *)v.data + 1000000;
    }
    CHECK(sluice_view_release(wch, &v));
    if (!is_ctrl) {
        for (double until = now_us() + work_us; now_us() < until;)
            ; /* the source's work */
        CHECK(sluice_product_send(&tok, 2, msg, WAIT_BYTES, WAIT_BYTES, 0));
    }
    CHECK(sluice_event_finish(&tok));
    return now_us() - t0;
}

static void wait_run(enum wait_mode mode, int work_us, wait_result_t *r)
{
    int n = wait_events(work_us), warm = n / 10 + 10, calls = 0;
    double *rtt = malloc((size_t)n * sizeof *rtt), cpu0 = 0, thread0 = 0, t0 = 0;
    sluice_mpi_lock(); /* sluice's threads may be in MPI (see sluice_mpi_lock) */
    MPI_Barrier(comm);
    sluice_mpi_unlock();
    if (is_ctrl && mode == WAIT_NOTIFY)
        CHECK(sluice_progress_start(wch));
    for (int i = 0; i < warm + n; i++) {
        if (i == warm) {
            cpu0 = cpu_now_us(RUSAGE_SELF);
            thread0 = cpu_now_us(RUSAGE_THREAD);
            t0 = now_us();
            calls = 0;
        }
        double us = wait_event(mode, work_us, &calls);
        if (i >= warm)
            rtt[i - warm] = us;
    }
    double wall = now_us() - t0, thread = cpu_now_us(RUSAGE_THREAD) - thread0;
    double cpu = cpu_now_us(RUSAGE_SELF) - cpu0; /* the progress thread's idle tail is in */
    if (is_ctrl && mode == WAIT_NOTIFY)
        CHECK(sluice_progress_stop(wch));
    double src_cpu = 0;
    sluice_mpi_lock();
    if (is_ctrl)
        MPI_Recv(&src_cpu, 1, MPI_DOUBLE, peer, 3, comm, MPI_STATUS_IGNORE);
    else
        MPI_Send(&cpu, 1, MPI_DOUBLE, peer, 3, comm);
    sluice_mpi_unlock();
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
    *r = (wait_result_t){ n,          rtt[n / 2],  rtt[(int)(n * 0.99)], wall / n,
                          cpu / n,    src_cpu / n, thread / n,           (double)calls / n };
    free(rtt);
}

/* One way: half of the round trip less the work (two hops and a wake-up). */
static double wait_oneway(const wait_result_t *r, int work_us)
{
    return (r->rtt_p50 - work_us) / 2;
}

static void wait_row(enum wait_mode mode, int work_us, const wait_result_t *r,
                     const wait_result_t *block)
{
    double oneway = wait_oneway(r, work_us), oneway_ratio = oneway / wait_oneway(block, work_us);
    double rtt_ratio = r->rtt_p50 / block->rtt_p50, cpu_ratio = block->ctrl_cpu / r->ctrl_cpu;
    const char *wtransport = sluice_channel_transport(wch);
    printf("%-7s %-9s %7d %7d %9.2f %9.2f %9.2f %8.2f %9.2f %9.2f %9.2f %8.2f %7.2f %8.2f "
           "%9.2f\n", wait_mode_names[mode], wtransport, work_us, r->events, r->rtt_p50,
           r->rtt_p99, r->wall, oneway, r->ctrl_cpu, r->thread_cpu, r->src_cpu, r->calls,
           rtt_ratio, oneway_ratio, cpu_ratio);
    printf("wait_csv,%s,%s,%d,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f\n",
           wait_mode_names[mode], wtransport, work_us, r->events, r->rtt_p50, r->rtt_p99, r->wall,
           oneway, r->ctrl_cpu, r->thread_cpu, r->src_cpu, r->calls, rtt_ratio, oneway_ratio,
           cpu_ratio);
}

static void waiting_section(sluice_context_t *ctx)
{
    sluice_endpoint_t eps[2] = { { 1, is_ctrl ? SLUICE_SEND : SLUICE_RECEIVE, T_BYTES },
                                 { 2, is_ctrl ? SLUICE_RECEIVE : SLUICE_SEND, T_BYTES } };
    sluice_options_t o;
    sluice_options_init(&o);
    CHECK(sluice_options_from_env(&o));
    sluice_channel_desc_t d = { .size = sizeof d, .name = "bench-wait",
                                .role = is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = is_ctrl ? "source" : "controller", .streams = 1,
                                .endpoints = eps, .n_endpoints = 2, .options = &o };
    CHECK(sluice_channel_open(ctx, &d, &wch));
    static const sluice_transition_kind_t begin[] = { SLUICE_BEGIN_RUN, SLUICE_BEGIN_LUMI },
                                          end[] = { SLUICE_END_LUMI, SLUICE_END_RUN,
                                                    SLUICE_END_JOB };
    sluice_transition_t t = { .run = 1, .lumi = 1 };
    for (int k = 0; k < 2; k++) {
        t.kind = begin[k];
        CHECK(is_ctrl ? sluice_transition_send(wch, &t, 0) : sluice_transition_next(wch, &t, 0));
    }

    static const int works[] = { 0, 50, 500 };
    enum { N_WORKS = sizeof works / sizeof works[0] };
    wait_result_t res[N_WORKS][WAIT_MODES];
    for (int w = 0; w < N_WORKS; w++)
        for (enum wait_mode m = 0; m < WAIT_MODES; m++)
            wait_run(m, works[w], &res[w][m]);

    if (is_ctrl) {
        printf("\nwaiting: the controller sends an event with %d bytes, the source works W µs "
               "and replies with %d bytes;\nthe controller waits in each mode (options: spin %u, "
               "max_sleep_us %u); CPU is µs per event, all threads of the process\n\n"
               "%-7s %-9s %7s %7s %9s %9s %9s %8s %9s %9s %9s %8s %7s %8s %9s\n",
               WAIT_BYTES, WAIT_BYTES, o.spin, o.max_sleep_us, "mode", "transport", "work_us",
               "events", "rtt_p50", "rtt_p99", "wall", "oneway", "ctrl_cpu", "ctrl_thr",
               "src_cpu", "calls", "rtt_x", "oneway_x", "cpu_gain");
        printf("wait_csv,mode,transport,work_us,events,rtt_p50_us,rtt_p99_us,wall_us,oneway_us,"
               "ctrl_cpu_us,ctrl_thread_cpu_us,src_cpu_us,calls,rtt_vs_block,oneway_vs_block,"
               "block_cpu_over\n");
        for (int w = 0; w < N_WORKS; w++)
            for (enum wait_mode m = 0; m < WAIT_MODES; m++)
                wait_row(m, works[w], &res[w][m], &res[w][WAIT_BLOCK]);
        printf("\nwall = mean wall time per event; oneway = (rtt_p50 - work) / 2; ctrl_thr = CPU "
               "of the controller's waiting thread alone (ctrl_cpu less it: the progress thread); "
               "calls = receive calls (notify: eventfd wake-ups) per event; rtt_x, oneway_x = this "
               "mode's / blocking's; cpu_gain = blocking's controller CPU / this mode's\n");
        for (int w = 0; w < N_WORKS; w++) {
            const wait_result_t *b = &res[w][WAIT_BLOCK], *nt = &res[w][WAIT_NOTIFY];
            double lat = wait_oneway(nt, works[w]) / wait_oneway(b, works[w]);
            double gain = b->ctrl_cpu / nt->ctrl_cpu;
            printf("targets, W = %3d µs: notify / block one-way latency %.2f (<= 1.5: %s; "
                   "round trip %.2f), block / notify controller CPU %.1f (>= 10: %s)\n",
                   works[w], lat, lat <= 1.5 ? "met" : "NOT met", nt->rtt_p50 / b->rtt_p50, gain,
                   gain >= 10 ? "met" : "NOT met");
        }
    }
    for (int k = 0; k < 3 && is_ctrl; k++) {
        t.kind = end[k];
        CHECK(sluice_transition_send(wch, &t, 0));
    }
    CHECK(sluice_channel_close(wch));
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int size, rank, serve = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    for (int i = 2; i < argc; i++) {
        quick |= strcmp(argv[i], "--quick") == 0;
        only_waiting |= strcmp(argv[i], "--only-waiting") == 0;
        only_pingpong |= strcmp(argv[i], "--only-pingpong") == 0;
        if (i + 1 < argc && (!strcmp(argv[i], "--serve") || !strcmp(argv[i], "--connect"))) {
            serve = !strcmp(argv[i], "--serve");
            service = argv[++i];
        }
    }
    if (argc < 2 || (strcmp(argv[1], "controller") && strcmp(argv[1], "source")) ||
        size != (service ? 1 : 2) || (service && serve != !strcmp(argv[1], "source"))) {
        if (rank == 0)
            fprintf(stderr, "usage: mpiexec -n 1 sluice-bench controller : -n 1 sluice-bench "
                            "source [--quick] [--only-waiting | --only-pingpong]\n"
                            "   or, as two jobs: mpiexec --ompi-server file:URI -n 1 sluice-bench "
                            "source --serve NAME [...], and the same with controller --connect "
                            "NAME\n");
        MPI_Finalize();
        return 2;
    }
    is_ctrl = strcmp(argv[1], "controller") == 0;

    sluice_context_t *ctx;
    if (!service) {
        comm = MPI_COMM_WORLD;
        CHECK(sluice_context_create(comm, argv[1], &ctx));
    } else if (serve) {
        sluice_service_t *svc;
        CHECK(sluice_service_open(service, NULL, &svc));
        CHECK(sluice_service_accept(svc, argv[1], 60000, &ctx));
        sluice_service_close(svc);
    } else {
        CHECK(sluice_service_connect(service, argv[1], NULL, &ctx));
    }
    if (service) {
        comm = sluice_context_comm(ctx);
        MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN); /* baselines that cannot run say so */
    }
    peer = 1 - sluice_context_rank(ctx);
    sluice_registry_t *reg;
    sluice_type_desc_t bd = { .size = sizeof bd, .name = "bench::Bytes",
                              .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1, .align = 1 };
    CHECK(sluice_registry_create(&reg));
    CHECK(sluice_registry_add(reg, &bd, &T_BYTES));
    sluice_endpoint_t eps[2] = { { 1, is_ctrl ? SLUICE_SEND : SLUICE_RECEIVE, T_BYTES },
                                 { 2, is_ctrl ? SLUICE_RECEIVE : SLUICE_SEND, T_BYTES } };
    sluice_options_t o;
    sluice_options_init(&o);
    o.arena_bytes = 130u << 20; /* two 64 MiB products in flight */
    o.spin = 1000000;           /* a benchmark may spin: one core per process */
    CHECK(sluice_options_from_env(&o));
    sluice_channel_desc_t d = { .size = sizeof d, .name = "bench",
                                .role = is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = is_ctrl ? "source" : "controller", .streams = 1,
                                .endpoints = eps, .n_endpoints = 2, .options = &o };
    CHECK(sluice_channel_open(ctx, &d, &ch));
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.run = 1;
    t.lumi = 1;
    if (is_ctrl) {
        t.kind = SLUICE_BEGIN_RUN;
        CHECK(sluice_transition_send(ch, &t, 0));
        t.kind = SLUICE_BEGIN_LUMI;
        CHECK(sluice_transition_send(ch, &t, 0));
    } else {
        CHECK(sluice_transition_next(ch, &t, 0));
        CHECK(sluice_transition_next(ch, &t, 0));
    }

    transport = sluice_channel_transport(ch);
    guarded = strcmp(transport, "rma") == 0;
    find_where();
    int wrc;
    BASE(wrc = MPI_Win_allocate((64u << 20) + 4096, 1, MPI_INFO_NULL, comm, &put_base,
                                &put_win));
    if (wrc != MPI_SUCCESS) {
        if (!service) {
            fprintf(stderr, "MPI_Win_allocate for the raw put baseline failed\n");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        put_win = MPI_WIN_NULL; /* osc/rdma between jobs (PLATFORM.md): no put baseline */
    } else {
        BASE(MPI_Win_lock_all(MPI_MODE_NOCHECK, put_win));
    }
    if (!only_waiting)
        pingpong_section();
    if (!only_pingpong)
        waiting_section(ctx);
    t.kind = SLUICE_END_LUMI;
    if (is_ctrl) {
        CHECK(sluice_transition_send(ch, &t, 0));
        t.kind = SLUICE_END_RUN;
        CHECK(sluice_transition_send(ch, &t, 0));
        t.kind = SLUICE_END_JOB;
        CHECK(sluice_transition_send(ch, &t, 0));
    }
    if (put_win != MPI_WIN_NULL) {
        BASE(MPI_Win_unlock_all(put_win));
        BASE(MPI_Win_free(&put_win));
    }
    CHECK(sluice_channel_close(ch));
    sluice_registry_destroy(reg);
    sluice_context_destroy(ctx);
    MPI_Finalize();
    return 0;
}
