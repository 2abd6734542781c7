/* SPDX-License-Identifier: MIT */
/*
 * sluice lock benchmark: the hand-off cost of sluice_lock against MPI's own
 * exclusive window lock and a pshmem-style central lock, all three measured
 * in the same job, interleaved, on the same ranks.
 *
 *   mpiexec -n P sluice-lockbench [--iters N] [--reps R] [--quick]
 *
 * Every rank loops N times over acquire, an empty critical section (one
 * local increment) and release, so what is measured is the hand-off. Each
 * lock's phase sits between two barriers; the phases run in the order
 * sluice, mpi_win_lock, central, R times over, and the median of the R
 * repetitions is reported (after one short unmeasured warm-up phase of
 * each lock). Rank 0 prints a table for people and "csv,..."
 * lines with fixed columns (docs/benchmarks.md, "Locks"), then
 * "lockbench: done" only after every phase completed.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/sluice.h>

/*
 * One thread calls MPI here, so sluice's MPI guard (sluice_mpi_lock) is not
 * taken around the benchmark's own MPI calls: nothing else can be inside MPI
 * at the same time.
 */

enum {
    DEFAULT_ITERS = 2000,
    QUICK_ITERS = 200,
    DEFAULT_REPS = 3,
    MAX_REPS = 99,
    WARMUP_ITERS = 50,
    PAGE = 4096,
    TOKEN_TAG = 7,
    SLUICE_WORD_BYTES = 4,     /* a sluice remote operation moves one 32-bit word (docs/locks.md) */
    ACQUIRE_TIMEOUT_MS = 60000,
};

static int g_rank, g_size;

/* ------------------------------------------------------------ errors */

static _Noreturn void die(void)
{
    /* A benchmark tool, not the library: other ranks may wait in a lock or a
     * barrier for this one, so the whole job goes. */
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

static void check_mpi(int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fprintf(stderr, "lockbench: rank %d: %s failed: %s\n", g_rank, what, msg);
    die();
}

#define MPI_CHECK(call) check_mpi((call), #call)

static void check_sluice(int rc, const char *what)
{
    /* SLUICE_OWNERDEAD (> 0) would mean a rank died holding a lock: nobody
     * dies here, so anything but SLUICE_OK is a failure worth stopping for. */
    if (rc == SLUICE_OK)
        return;
    fprintf(stderr, "lockbench: rank %d: %s: %s (%s)\n", g_rank, what, sluice_strerror(rc),
            sluice_last_error());
    die();
}

/* ------------------------------------------------------------ the three locks */

/* Cumulative counts of this process for one lock. */
typedef struct lock_counts {
    uint64_t acquires;
    uint64_t remote_ops;   /* operations aimed at another rank */
    uint64_t remote_bytes; /* user data those operations read or wrote */
} lock_counts_t;

/* One lock under test: acquire and release abort the job on any error. */
typedef struct lock_kind {
    const char *name;
    void (*acquire)(void);
    void (*release)(void);
    void (*counts)(lock_counts_t *out);
} lock_kind_t;

/* Whether an operation aimed at `target` is remote: the same rule as sluice_lock_stats. */
static uint64_t remote(int target)
{
    return target != g_rank;
}

/* --- sluice_lock */

/* [0] with the default options; [1] told to use MPI's atomics ("sluice_mpi"), which [0]
 * does too unless every rank shares one node (sluice_lock_atomics). */
static sluice_lock_t *sl_lock[2];

static void sluice_counts_of(sluice_lock_t *lk, lock_counts_t *out)
{
    sluice_lock_stats_t s;
    check_sluice(sluice_lock_stats(lk, &s), "sluice_lock_stats");
    *out = (lock_counts_t){ s.acquired, s.remote_ops, s.remote_ops * SLUICE_WORD_BYTES };
}

static void sluice_acquire(void)
{
    check_sluice(sluice_lock_acquire(sl_lock[0], ACQUIRE_TIMEOUT_MS), "sluice_lock_acquire");
}

static void sluice_release(void)
{
    check_sluice(sluice_lock_release(sl_lock[0]), "sluice_lock_release");
}

static void sluice_counts(lock_counts_t *out) { sluice_counts_of(sl_lock[0], out); }

static void sluice_mpi_acquire(void)
{
    check_sluice(sluice_lock_acquire(sl_lock[1], ACQUIRE_TIMEOUT_MS), "sluice_lock_acquire");
}

static void sluice_mpi_release(void)
{
    check_sluice(sluice_lock_release(sl_lock[1]), "sluice_lock_release");
}

static void sluice_mpi_counts(lock_counts_t *out) { sluice_counts_of(sl_lock[1], out); }

/* --- MPI_Win_lock(MPI_LOCK_EXCLUSIVE) on rank 0 */

static struct {
    MPI_Win win;
    lock_counts_t n;
} wl;

static void winlock_acquire(void)
{
    MPI_CHECK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, wl.win));
    wl.n.acquires++;
    wl.n.remote_ops += remote(0);
}

static void winlock_release(void)
{
    MPI_CHECK(MPI_Win_unlock(0, wl.win));
    wl.n.remote_ops += remote(0);
}

static void winlock_counts(lock_counts_t *out)
{
    *out = wl.n;
}

/*
 * --- central: the waiting-list lock of pshmem's MPILock, rebuilt here as
 * the O(P) baseline. Rank 0's window holds one byte per rank, 1 while that
 * rank holds or waits for the lock. Every lock and unlock rewrites the own
 * byte and fetches the whole list under MPI's exclusive window lock; a rank
 * that finds someone else listed waits for a token message, which the
 * holder sends on unlock to the next listed rank after itself, cyclically.
 * The list is only ever read and written under the window lock, so exactly
 * one listed rank holds the lock (or has its token in flight) while any
 * byte is set.
 */
static struct {
    MPI_Comm comm;       /* private duplicate: the token cannot match anyone else's message */
    MPI_Win win;
    unsigned char *seen; /* this rank's copy of the list, fetched under the window lock */
    lock_counts_t n;
} cl;

/* Set this rank's byte to `v` and fetch the whole list, under the window lock. */
static void central_mark(unsigned char v)
{
    MPI_CHECK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, cl.win));
    MPI_CHECK(MPI_Put(&v, 1, MPI_BYTE, 0, g_rank, 1, MPI_BYTE, cl.win));
    /* The put and the get overlap in one epoch and are not ordered, so the
     * own byte of `seen` is undefined (MPI 4.0 §12.7) and never read. */
    MPI_CHECK(MPI_Get(cl.seen, g_size, MPI_BYTE, 0, 0, g_size, MPI_BYTE, cl.win));
    MPI_CHECK(MPI_Win_unlock(0, cl.win));
    /* lock, put, get (counted as one operation however long), unlock */
    cl.n.remote_ops += 4 * remote(0);
    cl.n.remote_bytes += (1 + (uint64_t)g_size) * remote(0);
}

/* The first listed rank after this one, cyclically, or -1. */
static int central_next_listed(void)
{
    for (int k = 1; k < g_size; k++) {
        int r = (g_rank + k) % g_size;
        if (cl.seen[r])
            return r;
    }
    return -1;
}

static void central_acquire(void)
{
    central_mark(1);
    if (central_next_listed() >= 0) {
        unsigned char token;
        MPI_CHECK(MPI_Recv(&token, 1, MPI_BYTE, MPI_ANY_SOURCE, TOKEN_TAG, cl.comm,
                           MPI_STATUS_IGNORE));
    }
    cl.n.acquires++;
}

static void central_release(void)
{
    central_mark(0);
    int next = central_next_listed();
    if (next >= 0) {
        unsigned char token = 1;
        MPI_CHECK(MPI_Send(&token, 1, MPI_BYTE, next, TOKEN_TAG, cl.comm));
        cl.n.remote_ops += 1; /* `next` is never this rank */
        cl.n.remote_bytes += 1;
    }
}

static void central_counts(lock_counts_t *out)
{
    *out = cl.n;
}

static const lock_kind_t kinds[] = {
    { "sluice", sluice_acquire, sluice_release, sluice_counts },
    { "sluice_mpi", sluice_mpi_acquire, sluice_mpi_release, sluice_mpi_counts },
    { "mpi_win_lock", winlock_acquire, winlock_release, winlock_counts },
    { "central", central_acquire, central_release, central_counts },
};
enum { N_KINDS = sizeof kinds / sizeof kinds[0] };

/* ------------------------------------------------------------ set-up and tear-down */

/* A window of at least a page on every rank: no zero-size corner of any osc component. */
static void alloc_window(size_t bytes, MPI_Comm comm, void *base_p, MPI_Win *win_p)
{
    MPI_Aint size = (MPI_Aint)((bytes + PAGE - 1) / PAGE * PAGE);
    MPI_CHECK(MPI_Win_allocate(size, 1, MPI_INFO_NULL, comm, base_p, win_p));
    MPI_CHECK(MPI_Win_set_errhandler(*win_p, MPI_ERRORS_RETURN));
}

static void locks_create(void)
{
    sluice_lock_options_t o;
    sluice_lock_options_init(&o);
    check_sluice(sluice_lock_create(MPI_COMM_WORLD, &o, &sl_lock[0]), "sluice_lock_create");
    o.mpi_atomics = 1;
    check_sluice(sluice_lock_create(MPI_COMM_WORLD, &o, &sl_lock[1]), "sluice_lock_create");

    void *base;
    alloc_window(8, MPI_COMM_WORLD, &base, &wl.win);

    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &cl.comm));
    MPI_CHECK(MPI_Comm_set_errhandler(cl.comm, MPI_ERRORS_RETURN));
    unsigned char *list;
    alloc_window((size_t)g_size, cl.comm, &list, &cl.win);
    /* Nobody listed. The barrier orders this store before anyone's first
     * epoch on the window (the window was created just now, so no epoch of
     * another rank can overlap it). */
    memset(list, 0, (size_t)g_size);
    cl.seen = calloc((size_t)g_size, 1);
    if (!cl.seen) {
        fprintf(stderr, "lockbench: rank %d: cannot allocate %d bytes\n", g_rank, g_size);
        die();
    }
    MPI_CHECK(MPI_Barrier(cl.comm));
}

static void locks_destroy(void)
{
    MPI_CHECK(MPI_Win_free(&cl.win));
    MPI_CHECK(MPI_Comm_free(&cl.comm));
    free(cl.seen);
    MPI_CHECK(MPI_Win_free(&wl.win));
    for (int i = 0; i < 2; i++)
        check_sluice(sluice_lock_destroy(sl_lock[i]), "sluice_lock_destroy");
}

/* ------------------------------------------------------------ measuring */

static uint64_t g_in_critical; /* the critical section's whole work */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One phase: every rank runs `iters` hand-offs of `k` between two barriers.
 * Returns this rank's elapsed seconds and what its counts grew by. */
static double run_phase(const lock_kind_t *k, int iters, lock_counts_t *delta)
{
    lock_counts_t before, after;
    k->counts(&before);
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        k->acquire();
        g_in_critical++;
        k->release();
    }
    double elapsed = now_s() - t0;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    k->counts(&after);
    *delta = (lock_counts_t){ after.acquires - before.acquires,
                              after.remote_ops - before.remote_ops,
                              after.remote_bytes - before.remote_bytes };
    return elapsed;
}

/* What rank 0 keeps of one lock over all repetitions. */
typedef struct lock_result {
    double slowest_s[MAX_REPS]; /* elapsed of the slowest rank, per repetition */
    double fastest_s[MAX_REPS]; /* ... of the fastest: far below when the lock is unfair */
    lock_counts_t total;        /* summed over ranks and repetitions */
} lock_result_t;

/* One measured phase, reduced onto rank 0. */
static void measure(const lock_kind_t *k, int iters, int rep, lock_result_t *res)
{
    lock_counts_t d;
    double elapsed = run_phase(k, iters, &d), slowest = 0, fastest = 0;
    uint64_t mine[3] = { d.acquires, d.remote_ops, d.remote_bytes }, sum[3] = { 0, 0, 0 };
    MPI_CHECK(MPI_Reduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Reduce(&elapsed, &fastest, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Reduce(mine, sum, 3, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
    res->slowest_s[rep] = slowest;
    res->fastest_s[rep] = fastest;
    res->total.acquires += sum[0];
    res->total.remote_ops += sum[1];
    res->total.remote_bytes += sum[2];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double s[MAX_REPS];
    memcpy(s, v, (size_t)n * sizeof *v);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* ------------------------------------------------------------ report */

typedef struct lock_row {
    double us;            /* per acquire+release, as the slowest rank saw it (median) */
    double us_min, us_max; /* the same over the repetitions */
    double us_fastest;    /* per acquire+release as the fastest rank saw it (median) */
    double acq_per_s;     /* all ranks' acquires per second of the slowest rank (median rep) */
    double ops, bytes;    /* remote operations and bytes per acquire+release */
} lock_row_t;

static lock_row_t summarise(const lock_result_t *r, int iters, int reps)
{
    double us[MAX_REPS], fast[MAX_REPS];
    for (int i = 0; i < reps; i++) {
        us[i] = r->slowest_s[i] * 1e6 / iters;
        fast[i] = r->fastest_s[i] * 1e6 / iters;
    }
    lock_row_t row = { .us = median(us, reps), .us_min = us[0], .us_max = us[0],
                       .us_fastest = median(fast, reps) };
    for (int i = 1; i < reps; i++) {
        row.us_min = us[i] < row.us_min ? us[i] : row.us_min;
        row.us_max = us[i] > row.us_max ? us[i] : row.us_max;
    }
    /* g_size * iters acquires in the slowest rank's elapsed = us * iters. */
    row.acq_per_s = (double)g_size / (row.us * 1e-6);
    double acq = r->total.acquires ? (double)r->total.acquires : 1;
    row.ops = (double)r->total.remote_ops / acq;
    row.bytes = (double)r->total.remote_bytes / acq;
    return row;
}

static void print_header(void)
{
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, "\n")] = '\0';
    const char *osc = getenv("OMPI_MCA_osc");
    printf("lockbench: %s; osc: %s%s; ranks: %d; sluice's atomics: %s\n", lib,
           osc ? "OMPI_MCA_osc=" : "", osc ? osc : "default selection (OMPI_MCA_osc not set)",
           g_size, sluice_lock_atomics(sl_lock[0]));
}

static void print_report(const lock_result_t *res, int iters, int reps)
{
    lock_row_t rows[N_KINDS];
    for (int k = 0; k < N_KINDS; k++)
        rows[k] = summarise(&res[k], iters, reps);
    double sluice_us = rows[0].us;

    printf("%d ranks x %d acquire+release each, median of %d repetitions (interleaved); "
           "empty critical section\n\n",
           g_size, iters, reps);
    printf("%-13s %6s %7s %10s %10s %10s %10s %12s %9s %10s %9s %9s\n", "lock", "ranks",
           "iters", "us_per_acq", "us_min", "us_max", "us_fastest", "acq_per_s", "ops_acq",
           "bytes_acq", "x_sluice", "sluice_x");
    for (int k = 0; k < N_KINDS; k++) {
        const lock_row_t *w = &rows[k];
        printf("%-13s %6d %7d %10.2f %10.2f %10.2f %10.2f %12.0f %9.2f %10.1f %9.2f %9.2f\n",
               kinds[k].name, g_size, iters, w->us, w->us_min, w->us_max, w->us_fastest,
               w->acq_per_s, w->ops, w->bytes, w->us / sluice_us, sluice_us / w->us);
    }
    printf("\nus_per_acq: max over ranks of elapsed / iters, median of the repetitions "
           "(us_min, us_max: their range)\n"
           "us_fastest: the same for the rank that finished first (far below us_per_acq: the "
           "lock let some ranks through more often)\n"
           "acq_per_s: ranks * iters / the slowest rank's elapsed\n"
           "ops_acq, bytes_acq: operations aimed at another rank, and the user data they "
           "moved, per acquire+release, averaged over ranks\n"
           "x_sluice: this lock's us_per_acq / sluice's; sluice_x: sluice's / this lock's "
           "(below 1: sluice faster)\n");
    printf("sluice / mpi_win_lock = %.2f, sluice / central = %.2f, sluice / sluice_mpi = %.2f\n\n",
           sluice_us / rows[2].us, sluice_us / rows[3].us, sluice_us / rows[1].us);

    printf("csv,lock,ranks,iters,us_per_acq,acq_per_s,remote_ops_per_acq,bytes_per_acq,"
           "ratio_sluice\n");
    for (int k = 0; k < N_KINDS; k++)
        printf("csv,%s,%d,%d,%.3f,%.1f,%.3f,%.2f,%.4f\n", kinds[k].name, g_size, iters,
               rows[k].us, rows[k].acq_per_s, rows[k].ops, rows[k].bytes,
               rows[k].us / sluice_us);
}

/* ------------------------------------------------------------ options */

typedef struct bench_opts {
    int iters, reps;
} bench_opts_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: mpiexec -n P sluice-lockbench [--iters N] [--reps R] [--quick] [--help]\n"
               "  --iters N  acquire+release per rank per phase (default %d)\n"
               "  --reps R   repetitions of each lock's phase, interleaved; the median is "
               "reported (default %d, at most %d)\n"
               "  --quick    --iters %d (an explicit --iters wins)\n",
            DEFAULT_ITERS, DEFAULT_REPS, MAX_REPS, QUICK_ITERS);
}

/* A whole decimal number in [lo, hi], or -1. */
static long parse_count(const char *s, long lo, long hi)
{
    if (!s || !*s)
        return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < lo || v > hi ? -1 : v;
}

/* 0: go on; 1: --help printed; 2: bad options (rank 0 said why). */
static int parse_options(int argc, char **argv, bench_opts_t *o)
{
    int iters = -1, quick = 0;
    o->reps = DEFAULT_REPS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (g_rank == 0)
                usage(stdout);
            return 1;
        } else if (strcmp(a, "--quick") == 0) {
            quick = 1;
        } else if (strcmp(a, "--iters") == 0 || strcmp(a, "--reps") == 0) {
            int is_iters = a[2] == 'i';
            long v = parse_count(i + 1 < argc ? argv[i + 1] : NULL, 1,
                                 is_iters ? INT_MAX : MAX_REPS);
            if (v < 0) {
                if (g_rank == 0) {
                    fprintf(stderr, "sluice-lockbench: %s needs a whole number from 1 to %d, "
                                    "got '%s'\n", a, is_iters ? INT_MAX : MAX_REPS,
                            i + 1 < argc ? argv[i + 1] : "(nothing)");
                    usage(stderr);
                }
                return 2;
            }
            if (is_iters)
                iters = (int)v;
            else
                o->reps = (int)v;
            i++;
        } else {
            if (g_rank == 0) {
                fprintf(stderr, "sluice-lockbench: unknown option '%s'\n", a);
                usage(stderr);
            }
            return 2;
        }
    }
    o->iters = iters > 0 ? iters : quick ? QUICK_ITERS : DEFAULT_ITERS;
    return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    int provided;
    /* SERIALIZED, not SINGLE: osc/pt2pt needs it for windows. */
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);

    bench_opts_t o;
    int prc = parse_options(argc, argv, &o); /* every rank parses the same argv */
    if (prc != 0) {
        MPI_Finalize();
        return prc == 1 ? 0 : 2;
    }
    if (provided < MPI_THREAD_SERIALIZED && g_rank == 0)
        fprintf(stderr, "lockbench: MPI gave thread level %d, below SERIALIZED; osc/pt2pt "
                        "may refuse windows\n", provided);
    locks_create();
    if (g_rank == 0) {
        print_header();
        fflush(stdout);
    }
    /* Unmeasured: first touches of pages and of MPI's connections. */
    lock_counts_t ignored;
    for (int k = 0; k < N_KINDS; k++)
        run_phase(&kinds[k], o.iters < WARMUP_ITERS ? o.iters : WARMUP_ITERS, &ignored);

    static lock_result_t res[N_KINDS];
    for (int rep = 0; rep < o.reps; rep++)
        for (int k = 0; k < N_KINDS; k++)
            measure(&kinds[k], o.iters, rep, &res[k]);

    uint64_t expect = (uint64_t)N_KINDS *
                      ((uint64_t)(o.iters < WARMUP_ITERS ? o.iters : WARMUP_ITERS) +
                       (uint64_t)o.reps * (uint64_t)o.iters);
    if (g_in_critical != expect) {
        fprintf(stderr, "lockbench: rank %d: %llu critical sections run, %llu expected\n",
                g_rank, (unsigned long long)g_in_critical, (unsigned long long)expect);
        die();
    }
    locks_destroy();

    if (g_rank == 0) {
        print_report(res, o.iters, o.reps);
        printf("lockbench: done\n");
    }
    MPI_Finalize();
    return 0;
}
