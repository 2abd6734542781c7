/* SPDX-License-Identifier: MIT */
/*
 * The node-shared data suite: one case per behaviour of sluice_shared
 * (docs/locks.md), run as one job of N ranks:   mpiexec -n N sharedtest CASE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

static char h_role_buf[32];
const char *h_role = h_role_buf;

static int rank, size;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static sluice_shared_t *make_shared(size_t bytes)
{
    sluice_shared_options_t o;
    sluice_shared_options_init(&o);
    o.timeout_ms = 60000;
    sluice_shared_t *sh = NULL;
    int rc = sluice_shared_create(MPI_COMM_WORLD, bytes, &o, &sh);
    if (rc != SLUICE_OK)
        fprintf(stderr, "[%s] sluice_shared_create: %s (%s)\n", h_role, sluice_strerror(rc),
                sluice_last_error());
    return sh;
}

/* ------------------------------------------------------------ one copy per node */

/* The inode of the mapping that holds `addr` (from /proc/self/maps), or 0. */
static unsigned long mapping_inode(const void *addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 0;
    char line[512];
    unsigned long inode = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, ino;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &ino) == 3 &&
            (uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
            inode = ino;
            break;
        }
    }
    fclose(f);
    return inode;
}

/*
 * Every rank finds the file behind its copy. Ranks of one host must share
 * one file; each host has its own: as many copies as hosts.
 */
static int case_copies(void)
{
    sluice_shared_t *sh = make_shared(1 << 20);
    H_TRUE(sh, "no shared data");
    struct { char host[MPI_MAX_PROCESSOR_NAME]; unsigned long inode; } me = { { 0 }, 0 }, *all;
    int len;
    MPI_Get_processor_name(me.host, &len);
    me.inode = mapping_inode(sluice_shared_data(sh));
    H_TRUE(me.inode != 0, "the copy is not a file mapping");
    all = calloc((size_t)size, sizeof *all);
    H_TRUE(all, "calloc");
    MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, MPI_COMM_WORLD);
    int hosts = 0, copies = 0;
    for (int i = 0; i < size; i++) {
        int new_host = 1, new_copy = 1;
        for (int j = 0; j < i; j++) {
            int same_host = strcmp(all[i].host, all[j].host) == 0;
            new_host &= !same_host;
            new_copy &= all[i].inode != all[j].inode;
            H_TRUE(same_host == (all[i].inode == all[j].inode),
                   "ranks %d (%s) and %d (%s): same host %d but same copy %d", i, all[i].host, j,
                   all[j].host, same_host, all[i].inode == all[j].inode);
        }
        hosts += new_host;
        copies += new_copy;
    }
    free(all);
    H_TRUE(copies == hosts, "%d copies on %d hosts", copies, hosts);
    if (rank == 0)
        printf("copies: %d ranks on %d hosts, %d copies\n", size, hosts, copies);
    H_OK(sluice_shared_destroy(sh));
    return 0;
}

/* ------------------------------------------------------------ a set is seen everywhere */

/*
 * The last rank (on the other node in the two-node runs) sets a region; when
 * the call returned, every rank reads it in place and the version moved by
 * one set. Waiting for a newer version returns it; waiting for one newer
 * than that times out in time.
 */
static int case_set_visible(void)
{
    enum { BYTES = 4096 };
    sluice_shared_t *sh = make_shared(BYTES);
    H_TRUE(sh, "no shared data");
    H_TRUE(sluice_shared_version(sh) == 0, "fresh version %llu",
           (unsigned long long)sluice_shared_version(sh));
    /* Everyone has looked before the set: a create returns on each rank at
     * its own time, and the setter's may return first. */
    MPI_Barrier(MPI_COMM_WORLD);
    const char msg[] = "set by the last rank";
    uint64_t v = 0;
    if (rank == size - 1)
        H_OK(sluice_shared_set(sh, 100, msg, sizeof msg, &v));
    MPI_Bcast(&v, 1, MPI_UINT64_T, size - 1, MPI_COMM_WORLD);
    H_TRUE(v == 2, "one set made version %llu", (unsigned long long)v);
    /* Visible as soon as the setter returned (the broadcast came after). */
    H_TRUE(memcmp((const char *)sluice_shared_data(sh) + 100, msg, sizeof msg) == 0,
           "the copy does not hold the set data");
    uint64_t got;
    H_OK(sluice_shared_wait(sh, 0, 1000, &got));
    H_TRUE(got == 2, "wait gave version %llu", (unsigned long long)got);
    double t0 = now_s();
    H_STATUS(sluice_shared_wait(sh, 2, 100, &got), SLUICE_ETIMEDOUT);
    double took = now_s() - t0;
    H_TRUE(took >= 0.099 && took < 1.1, "a 100 ms wait took %.3f s", took);
    /* Out of range: refused, nothing changes. */
    H_STATUS(sluice_shared_set(sh, BYTES - 1, msg, 2, NULL), SLUICE_ERANGE);
    char buf[8];
    H_STATUS(sluice_shared_read(sh, BYTES, buf, 1, NULL), SLUICE_ERANGE);
    H_OK(sluice_shared_read(sh, BYTES, buf, 0, NULL)); /* empty, at the end: fine */
    MPI_Barrier(MPI_COMM_WORLD);
    H_TRUE(sluice_shared_version(sh) == 2, "a refused set moved the version");
    MPI_Barrier(MPI_COMM_WORLD); /* everyone checked before the next set */
    /* Every rank waits for a newer version that rank 0 makes later. */
    if (rank == 0)
        H_OK(sluice_shared_set(sh, 0, "x", 1, NULL));
    H_OK(sluice_shared_wait(sh, 2, 30000, &got));
    H_TRUE(got == 4 && ((const char *)sluice_shared_data(sh))[0] == 'x', "wait saw %llu",
           (unsigned long long)got);
    if (rank == 0)
        printf("set_visible: seen on every rank at version %llu; waits and ranges checked\n",
               (unsigned long long)got);
    H_OK(sluice_shared_destroy(sh));
    return 0;
}

/* ------------------------------------------------------------ never torn */

enum { REC_WORDS = 8192 }; /* a 64 KiB record: word 0 seq, 1 writer, then payload */

static uint64_t rec_word(uint64_t seq, uint64_t writer, uint64_t i)
{
    uint64_t x = (seq * 0x9e3779b97f4a7c15ull) ^ (writer << 56) ^ (i * 0xbf58476d1ce4e5b9ull);
    return x ^ (x >> 29);
}

/* Whether a copied record is exactly one that a writer produced. */
static int rec_whole(const uint64_t *r)
{
    for (uint64_t i = 2; i < REC_WORDS; i++)
        if (r[i] != rec_word(r[0], r[1], i))
            return 0;
    return 1;
}

/*
 * Two writers (rank 0 and the last rank) replace the whole record, K times
 * each, while every other rank reads continuously, by copy and in place:
 * every record read whole is one a writer produced, and readers do see it
 * change under them (the check is attacked, not idle).
 */
static int case_torn(int k)
{
    sluice_shared_t *sh = make_shared(REC_WORDS * sizeof(uint64_t));
    H_TRUE(sh, "no shared data");
    uint64_t *rec = malloc(REC_WORDS * sizeof(uint64_t));
    H_TRUE(rec, "malloc");
    int writer = rank == 0 || rank == size - 1;
    MPI_Barrier(MPI_COMM_WORLD);
    long reads = 0, versions_seen = 0, in_place = 0;
    if (writer) {
        for (int s = 1; s <= k; s++) {
            rec[0] = (uint64_t)s;
            rec[1] = (uint64_t)rank;
            for (uint64_t i = 2; i < REC_WORDS; i++)
                rec[i] = rec_word((uint64_t)s, (uint64_t)rank, i);
            H_OK(sluice_shared_set(sh, 0, rec, REC_WORDS * sizeof(uint64_t), NULL));
        }
    } else {
        /* 2 writers x K sets: the last version is 4K. */
        uint64_t last = 0, final = 4ull * (uint64_t)k;
        while (last < final) {
            uint64_t v;
            H_OK(sluice_shared_read(sh, 0, rec, REC_WORDS * sizeof(uint64_t), &v));
            H_TRUE(v == 0 || rec_whole(rec), "torn record at version %llu (seq %llu, writer %llu)",
                   (unsigned long long)v, (unsigned long long)rec[0], (unsigned long long)rec[1]);
            reads++;
            versions_seen += v != last;
            last = v;
            /* In place, by the documented protocol. */
            const uint64_t *p = sluice_shared_data(sh);
            uint64_t before = sluice_shared_version(sh);
            uint64_t seq = p[0], who = p[1], w = p[REC_WORDS - 1];
            if (before % 2 == 0 && before != 0 && sluice_shared_version(sh) == before) {
                H_TRUE(w == rec_word(seq, who, REC_WORDS - 1), "torn in-place read at %llu",
                       (unsigned long long)before);
                in_place++;
            }
        }
        H_TRUE(versions_seen >= 2, "the readers saw only %ld versions", versions_seen);
    }
    long tot[3] = { reads, versions_seen, in_place }, sum[3];
    MPI_Reduce(tot, sum, 3, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("torn: %d sets of 64 KiB by 2 writers; readers made %ld reads over %ld versions "
               "(%ld in place), none torn\n", 2 * k, sum[0], sum[1], sum[2]);
    free(rec);
    H_OK(sluice_shared_destroy(sh));
    return 0;
}

/* ------------------------------------------------------------ the process-history registry */

/* Rank r's history length: one of them empty, the others of different sizes, all under 4 KiB. */
static size_t history_len(int r) { return r == 1 ? 0 : 100 + (700 * (size_t)r) % 3900; }

/* Ids of the race below: a space of their own (history_id wraps at 256). */
static void race_id(uint8_t id[SLUICE_HISTORY_ID_BYTES], int k)
{
    memset(id, 0xee, SLUICE_HISTORY_ID_BYTES);
    id[0] = (uint8_t)k;
    id[1] = (uint8_t)(k >> 8);
}

static void history_id(uint8_t id[SLUICE_HISTORY_ID_BYTES], int who)
{
    for (int i = 0; i < SLUICE_HISTORY_ID_BYTES; i++)
        id[i] = (uint8_t)(0xa0 + who * 7 + i);
}

/*
 * Every rank registers its own history at once (different sizes, one of
 * them empty); afterwards every rank on every node resolves every id to
 * exactly those bytes. Registering again is EALREADY; other bytes under a
 * known id, an unknown id and a full registry each get their own status.
 */
static int case_history(void)
{
    sluice_history_t *h;
    H_OK(sluice_history_create(MPI_COMM_WORLD, 256, 1 << 20, 60000, &h));
    char blob[4096];
    size_t n = history_len(rank);
    for (size_t i = 0; i < n; i++)
        blob[i] = (char)('A' + (rank * 31 + (int)i) % 26);
    uint8_t id[SLUICE_HISTORY_ID_BYTES];
    history_id(id, rank);
    H_OK(sluice_history_register(h, id, blob, n));
    H_STATUS(sluice_history_register(h, id, blob, n), SLUICE_EALREADY);
    MPI_Barrier(MPI_COMM_WORLD);
    for (int r = 0; r < size; r++) {
        const void *p;
        size_t got;
        history_id(id, r);
        H_OK(sluice_history_lookup(h, id, &p, &got));
        size_t want = history_len(r);
        H_TRUE(got == want, "history of rank %d: %zu bytes, expected %zu", r, got, want);
        for (size_t i = 0; i < got; i++)
            H_TRUE(((const char *)p)[i] == (char)('A' + (r * 31 + (int)i) % 26),
                   "history of rank %d differs at byte %zu", r, i);
    }
    /* Lookups racing registrations: the last rank registers 100 more while
     * the others resolve them as they come; whatever is found is whole. */
    MPI_Barrier(MPI_COMM_WORLD);
    enum { RACE = 100 };
    if (rank == size - 1) {
        for (int k = 0; k < RACE; k++) {
            race_id(id, k);
            size_t m = (size_t)(k * 37 % 4000);
            for (size_t i = 0; i < m; i++)
                blob[i] = (char)(k + (int)i);
            H_OK(sluice_history_register(h, id, blob, m));
        }
    } else {
        int found = 0, looks = 0;
        while (found < RACE) {
            const void *p;
            size_t got;
            race_id(id, found);
            int rc = sluice_history_lookup(h, id, &p, &got);
            looks++;
            if (rc == SLUICE_ENOTFOUND)
                continue;
            H_OK(rc);
            H_TRUE(got == (size_t)(found * 37 % 4000), "history %d: %zu bytes", found, got);
            for (size_t i = 0; i < got; i++)
                H_TRUE(((const char *)p)[i] == (char)(found + (int)i),
                       "history %d differs at byte %zu", found, i);
            found++;
        }
        H_TRUE(looks > found, "every lookup found its entry at once: the race was not run");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    history_id(id, 0);
    H_STATUS(sluice_history_register(h, id, "other", 5), SLUICE_EINVAL);
    history_id(id, size + 5);
    const void *p;
    size_t got;
    H_STATUS(sluice_history_lookup(h, id, &p, &got), SLUICE_ENOTFOUND);
    MPI_Barrier(MPI_COMM_WORLD);
    H_OK(sluice_history_destroy(h));

    /* Two entries only: the third registration is refused, the first two stay. */
    H_OK(sluice_history_create(MPI_COMM_WORLD, 2, 1024, 60000, &h));
    if (rank == 0) {
        for (int k = 0; k < 3; k++) {
            history_id(id, 100 + k);
            H_STATUS(sluice_history_register(h, id, "x", 1), k < 2 ? SLUICE_OK : SLUICE_ELIMIT);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    history_id(id, 101);
    H_OK(sluice_history_lookup(h, id, &p, &got));
    H_OK(sluice_history_destroy(h));
    if (rank == 0)
        printf("history: %d histories registered at once, all resolved on every rank\n", size);
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
    snprintf(h_role_buf, sizeof h_role_buf, "rank %d", rank);
    const char *c = argc > 1 ? argv[1] : "";
    int k = argc > 2 ? atoi(argv[2]) : 50;
    int rc;
    if (strcmp(c, "copies") == 0)
        rc = case_copies();
    else if (strcmp(c, "set_visible") == 0)
        rc = case_set_visible();
    else if (strcmp(c, "torn") == 0)
        rc = case_torn(k);
    else if (strcmp(c, "history") == 0)
        rc = case_history();
    else {
        fprintf(stderr, "usage: sharedtest copies|set_visible|torn [K]|history\n");
        rc = 2;
    }
    if (rc != 0) {
        fprintf(stderr, "[%s] FAILED: %s\n", h_role, c);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1); /* a test, not the library: end the whole job */
    }
    MPI_Finalize();
    return 0;
}
