/* SPDX-License-Identifier: MIT */
/*
 * The lock suite: one case per behaviour of sluice_lock (docs/locks.md), run
 * as one job of N ranks:   mpiexec -n N locktest CASE
 * Ranks coordinate through a separate "board" window on rank 0 (counters and
 * a grant log), never through the lock under test.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static char h_role_buf[32];
const char *h_role = h_role_buf;

static int rank, size;
static MPI_Win board;   /* rank 0's words: see B_* */
static int64_t *board_base;

enum { B_COUNTER = 0, B_SEQ = 8, B_LOG_LEN = 16, B_LOG = 24, BOARD_WORDS = 512 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int64_t board_fop(int word, int64_t v, MPI_Op op)
{
    int64_t old = 0;
    MPI_Fetch_and_op(&v, &old, MPI_INT64_T, 0, word, op, board);
    MPI_Win_flush(0, board);
    return old;
}

static int64_t board_read(int word) { return board_fop(word, 0, MPI_NO_OP); }

/* Wait until the board word reads at least `v` (no deadline needed: ctest has one). */
static void board_wait(int word, int64_t v)
{
    while (board_read(word) < v)
        sleep_ms(1);
}

/* Append this rank to the grant log. Called only while holding the lock. */
static void log_grant(void)
{
    int64_t at = board_fop(B_LOG_LEN, 1, MPI_SUM);
    board_fop(B_LOG + (int)at, rank, MPI_REPLACE);
}

/* How many distinct hosts the job's ranks run on (the two-node tests check it). */
static int count_hosts(void)
{
    char me[MPI_MAX_PROCESSOR_NAME] = { 0 };
    int len;
    MPI_Get_processor_name(me, &len);
    char *all = calloc((size_t)size, MPI_MAX_PROCESSOR_NAME);
    if (!all)
        return -1;
    MPI_Allgather(me, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                  MPI_COMM_WORLD);
    int hosts = 0;
    for (int i = 0; i < size; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(all + (size_t)i * MPI_MAX_PROCESSOR_NAME,
                          all + (size_t)j * MPI_MAX_PROCESSOR_NAME) == 0;
        hosts += !seen;
    }
    free(all);
    return hosts;
}

static sluice_lock_t *make_lock_within(uint32_t timeout_ms)
{
    sluice_lock_options_t o;
    sluice_lock_options_init(&o);
    o.timeout_ms = timeout_ms;
    o.liveness_ms = 200;
    /* "mpi": MPI's atomics although every rank shares this node. */
    const char *atomics = getenv("SLUICE_TEST_LOCK_ATOMICS");
    o.mpi_atomics = atomics && !strcmp(atomics, "mpi");
    sluice_lock_t *lk = NULL;
    int rc = sluice_lock_create(MPI_COMM_WORLD, &o, &lk);
    if (rc != SLUICE_OK)
        fprintf(stderr, "[%s] sluice_lock_create: %s (%s)\n", h_role, sluice_strerror(rc),
                sluice_last_error());
    return lk;
}

static sluice_lock_t *make_lock(void) { return make_lock_within(60000); }

/* ------------------------------------------------------------ mutual exclusion */

/*
 * Every rank adds 1 to a plain (non-atomic) counter K times under the lock:
 * a read, then a write of the read value plus one, far apart. Any overlap of
 * two critical sections loses an increment.
 */
static int case_exclusion(int k)
{
    sluice_lock_t *lk = make_lock();
    H_TRUE(lk, "no lock");
    for (int i = 0; i < k; i++) {
        H_OK(sluice_lock_acquire(lk, 60000));
        int64_t v;
        MPI_Get(&v, 1, MPI_INT64_T, 0, B_COUNTER, 1, MPI_INT64_T, board);
        MPI_Win_flush(0, board);
        if ((i & 7) == 0)
            sched_yield(); /* give an intruder every chance */
        v += 1;
        MPI_Put(&v, 1, MPI_INT64_T, 0, B_COUNTER, 1, MPI_INT64_T, board);
        MPI_Win_flush(0, board);
        H_OK(sluice_lock_release(lk));
    }
    sluice_lock_stats_t st;
    H_OK(sluice_lock_stats(lk, &st));
    H_TRUE(st.acquired == (uint64_t)k, "acquired %llu times, expected %d",
           (unsigned long long)st.acquired, k);
    /* The scaling argument: at most 2 remote operations per acquire and 3 per release. */
    H_TRUE(st.remote_ops <= 5ull * (uint64_t)k, "%llu remote operations for %d acquires",
           (unsigned long long)st.remote_ops, k);
    int hosts = count_hosts();
    if (rank == 0) {
        int64_t total = board_read(B_COUNTER);
        H_TRUE(total == (int64_t)size * k, "counter %lld, expected %d x %d",
               (long long)total, size, k);
        printf("exclusion: %d ranks on %d hosts x %d increments = %lld, %s atomics\n", size,
               hosts, k, (long long)total, sluice_lock_atomics(lk));
    }
    H_OK(sluice_lock_destroy(lk));
    return 0;
}

/* ------------------------------------------------------------ churn */

/*
 * Mutual exclusion while places are abandoned, reclaimed and passed over all
 * the time: every rank acquires K times with a deadline of 0 to 3 ms (most
 * time out under contention), increments the plain counter when it got the
 * lock (every tenth time slowly, 2 ms), and sometimes sleeps past its next
 * deadline. The counter must equal
 * the number of successful acquires over all ranks, and some of each kind
 * must have happened.
 */
static int case_churn(int k)
{
    sluice_lock_t *lk = make_lock();
    H_TRUE(lk, "no lock");
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(rank + 1);
    int64_t got = 0;
    for (int i = 0; i < k; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int rc = sluice_lock_acquire(lk, (uint32_t)(x % 4));
        if (rc == SLUICE_ETIMEDOUT) {
            if (x % 5 == 0)
                sleep_ms(2); /* come back late: the place may have been passed over */
            continue;
        }
        H_OK(rc);
        int64_t v;
        MPI_Get(&v, 1, MPI_INT64_T, 0, B_COUNTER, 1, MPI_INT64_T, board);
        MPI_Win_flush(0, board);
        if (i % 10 == 0)
            sleep_ms(2); /* a long critical section: the others' short deadlines expire */
        v += 1;
        MPI_Put(&v, 1, MPI_INT64_T, 0, B_COUNTER, 1, MPI_INT64_T, board);
        MPI_Win_flush(0, board);
        got++;
        H_OK(sluice_lock_release(lk));
    }
    /* A last acquire without a deadline problem, so no place stays queued. */
    H_OK(sluice_lock_acquire(lk, 60000));
    H_OK(sluice_lock_release(lk));
    sluice_lock_stats_t st;
    H_OK(sluice_lock_stats(lk, &st));
    int64_t mine[3] = { got, (int64_t)st.timed_out, (int64_t)st.passed_over }, sum[3];
    MPI_Allreduce(mine, sum, 3, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        int64_t total = board_read(B_COUNTER);
        H_TRUE(total == sum[0], "counter %lld, but %lld acquires succeeded", (long long)total,
               (long long)sum[0]);
        H_TRUE(sum[0] > 0 && sum[1] > 0, "%lld acquires succeeded, %lld timed out: no churn",
               (long long)sum[0], (long long)sum[1]);
        printf("churn: %d ranks: %lld acquired, %lld timed out, %lld places passed over, "
               "counter exact\n", size, (long long)sum[0], (long long)sum[1], (long long)sum[2]);
    }
    H_OK(sluice_lock_destroy(lk));
    return 0;
}

/* ------------------------------------------------------------ FIFO */

/*
 * Rank 0 holds the lock while ranks 1..N-1 queue one after the other, in
 * rank order: each joins the queue with a 1 ms acquire that times out
 * (its place is kept), tells the next rank, then waits for real (taking its
 * place back). Grants must come in the order the ranks queued.
 */
static int case_fifo(void)
{
    sluice_lock_t *lk = make_lock();
    H_TRUE(lk, "no lock");
    if (rank == 0) {
        H_OK(sluice_lock_acquire(lk, 1000));
        MPI_Barrier(MPI_COMM_WORLD);
        board_wait(B_SEQ, size - 1);
        sleep_ms(500); /* let the last one take its place back */
        log_grant();
        H_OK(sluice_lock_release(lk));
    } else {
        MPI_Barrier(MPI_COMM_WORLD);
        board_wait(B_SEQ, rank - 1);
        H_STATUS(sluice_lock_acquire(lk, 1), SLUICE_ETIMEDOUT);
        board_fop(B_SEQ, 1, MPI_SUM);
        H_OK(sluice_lock_acquire(lk, 60000));
        log_grant();
        H_OK(sluice_lock_release(lk));
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        H_TRUE(board_read(B_LOG_LEN) == size, "%lld grants logged",
               (long long)board_read(B_LOG_LEN));
        for (int i = 0; i < size; i++)
            H_TRUE(board_read(B_LOG + i) == i, "grant %d went to rank %lld", i,
                   (long long)board_read(B_LOG + i));
        printf("fifo: %d grants in queue order\n", size);
    }
    H_OK(sluice_lock_destroy(lk));
    return 0;
}

/* ------------------------------------------------------------ two locks */

/*
 * Two locks on one communicator, used at once: even ranks take A, odd
 * ranks take B, every third iteration everybody takes both (A then B).
 * Each lock guards its own plain counter; a hand-off of one lock reaching
 * the other's waiter would break a count.
 */
static int case_two_locks(int k)
{
    sluice_lock_t *a = make_lock(), *b = make_lock();
    H_TRUE(a && b, "no locks");
    int64_t expect_a = 0, expect_b = 0;
    for (int i = 0; i < k; i++) {
        int both = i % 3 == 0, take_a = both || rank % 2 == 0, take_b = both || rank % 2 == 1;
        if (take_a)
            H_OK(sluice_lock_acquire(a, 60000));
        if (take_b)
            H_OK(sluice_lock_acquire(b, 60000));
        for (int w = 0; w < 2; w++) {
            if (!(w == 0 ? take_a : take_b))
                continue;
            int word = w == 0 ? B_COUNTER : B_SEQ;
            int64_t v;
            MPI_Get(&v, 1, MPI_INT64_T, 0, word, 1, MPI_INT64_T, board);
            MPI_Win_flush(0, board);
            v += 1;
            MPI_Put(&v, 1, MPI_INT64_T, 0, word, 1, MPI_INT64_T, board);
            MPI_Win_flush(0, board);
        }
        if (take_b)
            H_OK(sluice_lock_release(b));
        if (take_a)
            H_OK(sluice_lock_release(a));
        expect_a += take_a;
        expect_b += take_b;
    }
    int64_t sums[2] = { expect_a, expect_b }, totals[2];
    MPI_Allreduce(sums, totals, 2, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        H_TRUE(board_read(B_COUNTER) == totals[0] && board_read(B_SEQ) == totals[1],
               "counters %lld/%lld, expected %lld/%lld", (long long)board_read(B_COUNTER),
               (long long)board_read(B_SEQ), (long long)totals[0], (long long)totals[1]);
        printf("two_locks: A %lld, B %lld increments, none lost\n", (long long)totals[0],
               (long long)totals[1]);
    }
    H_OK(sluice_lock_destroy(b));
    H_OK(sluice_lock_destroy(a));
    return 0;
}

/* ------------------------------------------------------------ deadlines */

/*
 * Rank 0 holds the lock. Rank 1's acquire with a 100 ms deadline times out
 * in time; rank 2 then queues behind rank 1's abandoned place. When rank 0
 * releases, it passes over rank 1 and rank 2 gets the lock; afterwards rank
 * 1 gets it too. Needs 3 ranks.
 */
static int case_deadline(void)
{
    H_TRUE(size >= 3, "needs 3 ranks");
    sluice_lock_t *lk = make_lock();
    H_TRUE(lk, "no lock");
    if (rank == 0) {
        H_OK(sluice_lock_acquire(lk, 1000));
        MPI_Barrier(MPI_COMM_WORLD);
        board_wait(B_SEQ, 1);
        sleep_ms(200); /* rank 2 queues meanwhile, or later: either way rank 1 is passed over */
        H_OK(sluice_lock_release(lk));
        sluice_lock_stats_t st;
        H_OK(sluice_lock_stats(lk, &st));
        H_TRUE(st.passed_over == 1, "release passed over %llu places, expected 1",
               (unsigned long long)st.passed_over);
    } else if (rank == 1) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now_s();
        H_STATUS(sluice_lock_acquire(lk, 100), SLUICE_ETIMEDOUT);
        double took = now_s() - t0;
        H_TRUE(took >= 0.099 && took < 0.1 + 1.0, "a 100 ms acquire took %.3f s", took);
        board_fop(B_SEQ, 1, MPI_SUM);
        board_wait(B_LOG_LEN, 1); /* rank 2 had its turn */
        H_OK(sluice_lock_acquire(lk, 60000));
        log_grant();
        H_OK(sluice_lock_release(lk));
    } else {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 2) {
            board_wait(B_SEQ, 1);
            H_OK(sluice_lock_acquire(lk, 60000));
            log_grant();
            H_OK(sluice_lock_release(lk));
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        H_TRUE(board_read(B_LOG) == 2 && board_read(B_LOG + 1) == 1,
               "grants went to %lld then %lld, expected 2 then 1", (long long)board_read(B_LOG),
               (long long)board_read(B_LOG + 1));
        printf("deadline: timed-out place passed over, lock still usable\n");
    }
    H_OK(sluice_lock_destroy(lk));
    return 0;
}

/* ------------------------------------------------------------ trylock */

static int case_trylock(void)
{
    sluice_lock_t *lk = make_lock();
    H_TRUE(lk, "no lock");
    /* Held by rank 0: everyone else's trylock fails at once. */
    if (rank == 0)
        H_OK(sluice_lock_try(lk));
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank != 0) {
        double t0 = now_s();
        H_STATUS(sluice_lock_try(lk), SLUICE_EAGAIN);
        H_TRUE(now_s() - t0 < 0.5, "a failing trylock took %.3f s", now_s() - t0);
    } else {
        H_STATUS(sluice_lock_acquire(lk, 1000), SLUICE_EALREADY);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        H_OK(sluice_lock_release(lk));
    H_STATUS(sluice_lock_release(lk), SLUICE_EINVAL); /* nobody holds it now */
    MPI_Barrier(MPI_COMM_WORLD);
    /* Free: each rank in turn takes it with trylock. */
    for (int r = 0; r < size; r++) {
        if (rank == r) {
            H_OK(sluice_lock_try(lk));
            log_grant();
            H_OK(sluice_lock_release(lk));
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    if (rank == 0) {
        H_TRUE(board_read(B_LOG_LEN) == size, "%lld trylocks succeeded",
               (long long)board_read(B_LOG_LEN));
        printf("trylock: refused while held, granted when free\n");
    }
    H_OK(sluice_lock_destroy(lk));
    return 0;
}

/* ------------------------------------------------------------ threads of one process */

typedef struct thread_job {
    sluice_lock_t *lk;
    int k, failed;
    char why[256];   /* the failing call's sluice_last_error(), from its own thread */
} thread_job_t;

static void *thread_incr(void *arg)
{
    thread_job_t *j = arg;
    for (int i = 0; i < j->k && !j->failed; i++) {
        if (sluice_lock_acquire(j->lk, 60000) != SLUICE_OK) {
            j->failed = 1;
            snprintf(j->why, sizeof j->why, "acquire: %s", sluice_last_error());
            break;
        }
        sluice_mpi_lock();
        int64_t v;
        MPI_Get(&v, 1, MPI_INT64_T, 0, B_COUNTER, 1, MPI_INT64_T, board);
        MPI_Win_flush(0, board);
        v += 1;
        MPI_Put(&v, 1, MPI_INT64_T, 0, B_COUNTER, 1, MPI_INT64_T, board);
        MPI_Win_flush(0, board);
        sluice_mpi_unlock();
        if (sluice_lock_release(j->lk) != SLUICE_OK) {
            j->failed = 1;
            snprintf(j->why, sizeof j->why, "release: %s", sluice_last_error());
        }
    }
    return NULL;
}

/* Two threads per rank take turns with every other rank's threads. */
static int case_threads(int k)
{
    int level;
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_SERIALIZED) {
        printf("threads: skipped, MPI gives only thread level %d\n", level);
        return 77;
    }
    sluice_lock_t *lk = make_lock();
    H_TRUE(lk, "no lock");
    thread_job_t jobs[2] = { { lk, k, 0, "" }, { lk, k, 0, "" } };
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        H_TRUE(pthread_create(&th[i], NULL, thread_incr, &jobs[i]) == 0, "pthread_create");
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    H_TRUE(!jobs[0].failed && !jobs[1].failed, "a thread failed: %s%s", jobs[0].why,
           jobs[1].why);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        int64_t total = board_read(B_COUNTER);
        H_TRUE(total == 2LL * size * k, "counter %lld, expected %d", (long long)total,
               2 * size * k);
        printf("threads: %d ranks x 2 threads x %d increments = %lld\n", size, k,
               (long long)total);
    }
    H_OK(sluice_lock_destroy(lk));
    return 0;
}

/* ------------------------------------------------------------ a holder killed */

static void *watchdog(void *arg)
{
    (void)arg;
    sleep(3); /* the verdict is printed by then */
    printf("[%s] MPI_Finalize did not return within 3 s after a rank's death (Open MPI waits "
           "for it; docs/design.md, \"Liveness\")\n", h_role);
    fflush(stdout);
    _exit(0);
}

/*
 * Rank 1 takes the lock and is killed with SIGKILL inside its critical
 * section; every other rank is queued. Exactly one of them is granted the
 * lock with SLUICE_OWNERDEAD within a few liveness periods; the others then
 * get it normally. Run under mpirun --enable-recovery. Ranks on one node.
 */
static int case_owner_dead(void)
{
    H_TRUE(size >= 2, "needs 2 ranks");
    int hosts = count_hosts(); /* before anyone dies: it is collective */
    sluice_lock_t *lk = make_lock_within(2000);
    H_TRUE(lk, "no lock");
    if (rank == 1) {
        H_OK(sluice_lock_acquire(lk, 1000));
        MPI_Barrier(MPI_COMM_WORLD);
        board_wait(B_SEQ, size - 1); /* everybody else queued */
        sleep_ms(300);
        raise(SIGKILL);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    /* Queue one after the other so the order is known: 0, 2, 3, ... */
    int before = rank == 0 ? 0 : rank - 1;
    board_wait(B_SEQ, before);
    H_STATUS(sluice_lock_acquire(lk, 1), SLUICE_ETIMEDOUT);
    board_fop(B_SEQ, 1, MPI_SUM);
    double t0 = now_s();
    int rc = sluice_lock_acquire(lk, 30000);
    double took = now_s() - t0;
    H_TRUE(rc == SLUICE_OK || rc == SLUICE_OWNERDEAD, "acquire: %s (%s)", sluice_strerror(rc),
           sluice_last_error());
    board_fop(B_COUNTER, rc == SLUICE_OWNERDEAD, MPI_SUM);
    log_grant();
    H_OK(sluice_lock_release(lk));
    if (rc == SLUICE_OWNERDEAD) {
        H_TRUE(rank == 0, "rank %d was told the owner died, but rank 0 queued first", rank);
        H_TRUE(took < 0.3 + 3.0, "the death was seen after %.2f s", took);
        printf("[%s] owner_dead: told the holder died, after %.3f s (%d ranks on %d hosts)\n",
               h_role, took, size, hosts);
    }
    /* The survivors agree on what they saw: exactly one was told. */
    board_wait(B_LOG_LEN, size - 1);
    H_TRUE(board_read(B_COUNTER) == 1, "%lld ranks were told the owner died",
           (long long)board_read(B_COUNTER));
    H_TRUE(board_read(B_LOG) == 0, "the first grant went to rank %lld",
           (long long)board_read(B_LOG));
    /* The window is shared with the dead rank: destroy cannot agree, and
     * MPI_Finalize may wait for it (bounded by the watchdog). */
    H_STATUS(sluice_lock_destroy(lk), SLUICE_ETIMEDOUT);
    pthread_t th;
    pthread_create(&th, NULL, watchdog, NULL);
    return 0;
}

/*
 * Rank 1 holds the lock with rank 0 queued behind it, and is killed inside
 * its release, after it moved `holder` to rank 0 and before it granted it
 * (SLUICE_TEST_LOCK_DIE_IN_HANDOFF, set on rank 1 alone). Rank 0 sees its
 * predecessor dead, finds `holder` already naming itself, and takes the
 * lock with SLUICE_OWNERDEAD within a few liveness periods, not at its
 * deadline. Two ranks on one node, under mpirun --enable-recovery.
 */
static int case_releaser_dead(void)
{
    H_TRUE(size == 2, "needs 2 ranks");
    if (rank == 1)
        setenv("SLUICE_TEST_LOCK_DIE_IN_HANDOFF", "1", 1);
    sluice_lock_t *lk = make_lock_within(2000);
    unsetenv("SLUICE_TEST_LOCK_DIE_IN_HANDOFF");
    H_TRUE(lk, "no lock");
    if (rank == 1) {
        H_OK(sluice_lock_acquire(lk, 1000));
        MPI_Barrier(MPI_COMM_WORLD);
        board_wait(B_SEQ, 1); /* rank 0 queued */
        sleep_ms(300);
        sluice_lock_release(lk); /* killed inside */
        H_TRUE(0, "the release returned: the test hook did not kill this rank");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    board_fop(B_SEQ, 1, MPI_SUM);
    double t0 = now_s();
    int rc = sluice_lock_acquire(lk, 30000);
    double took = now_s() - t0;
    H_STATUS(rc, SLUICE_OWNERDEAD);
    H_TRUE(took < 0.3 + 3.0, "the death in the hand-off was seen after %.2f s", took);
    H_OK(sluice_lock_release(lk));
    /* Free again: the next acquire is a plain one. */
    H_OK(sluice_lock_acquire(lk, 1000));
    H_OK(sluice_lock_release(lk));
    printf("[%s] releaser_dead: granted itself after the releaser died in the hand-off, "
           "after %.3f s\n", h_role, took);
    H_STATUS(sluice_lock_destroy(lk), SLUICE_ETIMEDOUT);
    pthread_t th;
    pthread_create(&th, NULL, watchdog, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    int provided;
    const char *lvl = getenv("SLUICE_TEST_MPI_THREADS");
    int want = lvl && strcmp(lvl, "serialized") == 0 ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE;
    MPI_Init_thread(&argc, &argv, want, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    snprintf(h_role_buf, sizeof h_role_buf, "rank %d", rank);
    MPI_Win_allocate(BOARD_WORDS * sizeof(int64_t), sizeof(int64_t), MPI_INFO_NULL,
                     MPI_COMM_WORLD, &board_base, &board);
    memset(board_base, 0, BOARD_WORDS * sizeof(int64_t));
    MPI_Win_lock_all(MPI_MODE_NOCHECK, board);
    MPI_Win_sync(board);
    MPI_Barrier(MPI_COMM_WORLD);

    const char *c = argc > 1 ? argv[1] : "";
    int k = argc > 2 ? atoi(argv[2]) : 200;
    int rc;
    if (strcmp(c, "exclusion") == 0)
        rc = case_exclusion(k);
    else if (strcmp(c, "fifo") == 0)
        rc = case_fifo();
    else if (strcmp(c, "churn") == 0)
        rc = case_churn(k);
    else if (strcmp(c, "two_locks") == 0)
        rc = case_two_locks(k);
    else if (strcmp(c, "deadline") == 0)
        rc = case_deadline();
    else if (strcmp(c, "trylock") == 0)
        rc = case_trylock();
    else if (strcmp(c, "threads") == 0)
        rc = case_threads(k);
    else if (strcmp(c, "owner_dead") == 0)
        rc = case_owner_dead();
    else if (strcmp(c, "releaser_dead") == 0)
        rc = case_releaser_dead();
    else {
        fprintf(stderr, "usage: locktest exclusion|churn|fifo|two_locks|deadline|trylock|"
                        "threads|owner_dead|releaser_dead [K]\n");
        rc = 2;
    }
    if (rc != 0 && rc != 77) {
        fprintf(stderr, "[%s] FAILED: %s\n", h_role, c);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1); /* a test, not the library: end the whole job */
    }
    if (strcmp(c, "owner_dead") != 0 && strcmp(c, "releaser_dead") != 0) {
        MPI_Win_unlock_all(board);
        MPI_Win_free(&board);
    }
    MPI_Finalize();
    return rc;
}
