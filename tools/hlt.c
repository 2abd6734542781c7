/* SPDX-License-Identifier: MIT */
/*
 * sluice-hlt: an HLT-like demonstrator (docs/hlt.md). Client processes run
 * many event streams each and do most of every event's work on their own
 * CPU; server processes do the offloaded part. Per event a client sends the
 * RAW data (FED fragments, about 1 MiB) to a server its group chooses, works
 * on the event locally meanwhile, and gets back two Structure-of-Arrays
 * collections, HCAL-like rechits and PF-like clusters, which it checks
 * against its own reconstruction of the same RAW. A configurable fraction
 * of events is rejected early by the client's filter, which cancels the
 * offloaded work in flight. Lumis begin ahead of time, so several are open
 * at once, as in a real run.
 *
 * One job: ranks 0 .. C-1 are the clients, the rest the servers; every
 * client opens a channel to every server (shared memory on one node, MPI
 * windows across nodes, chosen by the library).
 *
 *   mpiexec -n 4 sluice-hlt --clients 2 --servers 2 [options]
 *
 * The fault mode (--kill-server K) makes server K kill itself (SIGKILL) in
 * the middle of an event; the clients move its events to the other servers
 * and the report shows them re-dispatched, none lost. Run that job with
 * `mpiexec --enable-recovery`, or Open MPI ends it with the first death.
 *
 * This file: the configuration, the types and channels, and main. The
 * client is in hlt_client.c, the server in hlt_server.c, the report in
 * hlt_report.c, the event data in hlt_data.c.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sluice/group.h>
#include <sluice/sluice.h>

#include "hlt.h"

/* ------------------------------------------------------------ configuration */

hlt_cfg_t cfg = {
    .clients = 2, .servers = 2, .streams = 8, .events = 2000, .raw_kib = 1024, .feds = 64,
    .lumi_events = 100, .open_lumis = 3, .work_us = 2000, .offload_pct = 10, .reject_pct = 20,
    .dispatch = SLUICE_DISPATCH_LEAST_LOADED, .kill_server = -1, .kill_after = 20,
    .progress_s = 2, .mpi_threads = MPI_THREAD_MULTIPLE,
};

uint32_t fed_words;        /* payload words per FED */
size_t raw_bytes;
uint64_t n_hits, n_clusters;
const sluice_type_t *T_RAW, *T_RECHITS, *T_CLUSTERS;
int rank, me;              /* MPI rank; index among the clients or among the servers */
bool is_client;

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e-6;
}

/* Whether the early filter of `client` rejects event `ev`: the same answer on every process. */
bool rejected(uint32_t client, uint64_t ev)
{
    uint64_t x = (ev + 1) * 0xbf58476d1ce4e5b9ull ^ (uint64_t)client * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x % 100 < cfg.reject_pct;
}

const char *role_name(void) { return is_client ? "client" : "server"; }



/* A sluice call failed: say which, with the library's message. */
int sluice_failed(const char *what, int rc)
{
    FAILED("%s: %s (%s)", what, sluice_strerror(rc), sluice_last_error());
    return 1;
}

/* ------------------------------------------------------------ types and channels */

static int make_types(sluice_registry_t **reg_p)
{
    static const sluice_column_t hits[] = { { "detid", 4, 64 }, { "energy", 4, 64 },
                                            { "time", 4, 64 } };
    static const sluice_column_t clus[] = { { "energy", 4, 64 }, { "eta", 4, 64 },
                                            { "phi", 4, 64 }, { "hits", 4, 64 } };
    static const sluice_type_desc_t raw = { .size = sizeof raw, .name = "hlt::FEDRawData",
                                            .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1,
                                            .align = 8 };
    static const sluice_type_desc_t rechits = { .size = sizeof rechits,
                                                .name = "hlt::HBHERecHitSoA",
                                                .layout = SLUICE_LAYOUT_SOA, .columns = hits,
                                                .n_columns = 3 };
    static const sluice_type_desc_t clusters = { .size = sizeof clusters,
                                                 .name = "hlt::PFClusterSoA",
                                                 .layout = SLUICE_LAYOUT_SOA, .columns = clus,
                                                 .n_columns = 4 };
    sluice_registry_t *reg;
    if (sluice_registry_create(&reg) != SLUICE_OK)
        return 1;
    if (sluice_registry_add(reg, &raw, &T_RAW) != SLUICE_OK ||
        sluice_registry_add(reg, &rechits, &T_RECHITS) != SLUICE_OK ||
        sluice_registry_add(reg, &clusters, &T_CLUSTERS) != SLUICE_OK) {
        sluice_registry_destroy(reg);
        return 1;
    }
    *reg_p = reg;
    return 0;
}

/* Column `c` of an SoA product of `type` with `n` elements at `base`. */
void *column(const sluice_type_t *type, void *base, uint64_t n, uint32_t c)
{
    size_t off = 0;
    sluice_type_column_offset(type, n, c, &off);
    return (char *)base + off;
}

hlt_rechit_cols_t rechit_cols(void *base)
{
    return (hlt_rechit_cols_t){ column(T_RECHITS, base, n_hits, 0),
                                column(T_RECHITS, base, n_hits, 1),
                                column(T_RECHITS, base, n_hits, 2) };
}

hlt_cluster_cols_t cluster_cols(void *base)
{
    return (hlt_cluster_cols_t){ column(T_CLUSTERS, base, n_clusters, 0),
                                 column(T_CLUSTERS, base, n_clusters, 1),
                                 column(T_CLUSTERS, base, n_clusters, 2),
                                 column(T_CLUSTERS, base, n_clusters, 3) };
}

size_t bytes_of(const sluice_type_t *type, uint64_t n)
{
    size_t b = 0;
    sluice_type_bytes(type, n, &b);
    return b;
}

/* One channel from client `c` to server `s`, opened by both in increasing peer order. */
static int open_channel(sluice_context_t *ctx, uint32_t c, uint32_t s, sluice_channel_t **ch_p)
{
    sluice_endpoint_t eps[3] = {
        { .instance = I_RAW, .direction = is_client ? SLUICE_SEND : SLUICE_RECEIVE, .type = T_RAW },
        { .instance = I_RECHITS, .direction = is_client ? SLUICE_RECEIVE : SLUICE_SEND,
          .type = T_RECHITS },
        { .instance = I_CLUSTERS, .direction = is_client ? SLUICE_RECEIVE : SLUICE_SEND,
          .type = T_CLUSTERS },
    };
    sluice_options_t o;
    sluice_options_init(&o);
    /* Room for two products of each kind in flight per stream and direction. */
    uint64_t need = 2 * (uint64_t)(raw_bytes + bytes_of(T_RECHITS, n_hits) +
                                   bytes_of(T_CLUSTERS, n_clusters)) + 65536;
    need = (need + 4095) & ~4095ull;
    if (o.arena_bytes < need)
        o.arena_bytes = need;
    if (o.max_open_lumis < cfg.open_lumis)
        o.max_open_lumis = cfg.open_lumis;
    int rc = sluice_options_from_env(&o);
    if (rc != SLUICE_OK)
        return sluice_failed("SLUICE_* environment", rc);
    char name[48], peer[32];
    snprintf(name, sizeof name, "hlt-c%u-s%u", c, s);
    snprintf(peer, sizeof peer, is_client ? "server-%u" : "client-%u", is_client ? s : c);
    sluice_channel_desc_t d = { .size = sizeof d, .name = name,
                                .role = is_client ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = peer, .streams = cfg.streams, .endpoints = eps,
                                .n_endpoints = 3, .options = &o };
    rc = sluice_channel_open(ctx, &d, ch_p);
    return rc == SLUICE_OK ? 0 : sluice_failed(name, rc);
}

/* ------------------------------------------------------------ main */

static int parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return fprintf(stderr, "sluice-hlt: %s needs a value\n", o), -1;
        char *end;
        double x = strtod(v, &end);
        bool num = *end == '\0' && x >= 0;
        if (!strcmp(o, "--json")) {
            cfg.json = v;
        } else if (!strcmp(o, "--dispatch")) {
            cfg.dispatch = !strcmp(v, "rr")       ? SLUICE_DISPATCH_ROUND_ROBIN
                           : !strcmp(v, "affine") ? SLUICE_DISPATCH_STREAM_AFFINE
                           : !strcmp(v, "least")  ? SLUICE_DISPATCH_LEAST_LOADED
                                                  : 0;
            if (!cfg.dispatch)
                return fprintf(stderr, "sluice-hlt: --dispatch rr|affine|least\n"), -1;
        } else if (!strcmp(o, "--mpi-threads")) {
            if (strcmp(v, "serialized") && strcmp(v, "multiple"))
                return fprintf(stderr, "sluice-hlt: --mpi-threads serialized|multiple\n"), -1;
            cfg.mpi_threads = !strcmp(v, "serialized") ? MPI_THREAD_SERIALIZED
                                                       : MPI_THREAD_MULTIPLE;
        } else if (!num) {
            return fprintf(stderr, "sluice-hlt: %s %s: not a number\n", o, v), -1;
        } else if (!strcmp(o, "--work-us")) {
            cfg.work_us = x;
        } else if (!strcmp(o, "--progress")) {
            cfg.progress_s = x > 0 ? x : 1e9;
        } else {
            static const struct { const char *name; uint32_t *field; uint32_t lo, hi; } opts[] = {
                { "--clients", &cfg.clients, 1, HLT_MAX_PEERS },
                { "--servers", &cfg.servers, 1, HLT_MAX_PEERS },
                { "--streams", &cfg.streams, 1, 256 },
                { "--workers", &cfg.workers, 1, 256 },
                { "--events", &cfg.events, 1, 100000000 },
                { "--raw-kib", &cfg.raw_kib, 16, 65536 },
                { "--feds", &cfg.feds, 1, 1024 },
                { "--lumi-events", &cfg.lumi_events, 1, 100000000 },
                { "--open-lumis", &cfg.open_lumis, 1, 64 },
                { "--offload-pct", &cfg.offload_pct, 0, 100 },
                { "--reject-pct", &cfg.reject_pct, 0, 100 },
                { "--kill-after", &cfg.kill_after, 0, 100000000 },
                { "--corrupt-every", &cfg.corrupt_every, 1, 100000000 },
            };
            size_t k = 0;
            while (k < sizeof opts / sizeof *opts && strcmp(o, opts[k].name))
                k++;
            if (!strcmp(o, "--kill-server")) {
                cfg.kill_server = (int)x;
                continue;
            }
            if (k == sizeof opts / sizeof *opts)
                return fprintf(stderr, "sluice-hlt: unknown option %s\n", o), -1;
            if (x != (uint32_t)x || x < opts[k].lo || x > opts[k].hi)
                return fprintf(stderr, "sluice-hlt: %s must be %u .. %u\n", o, opts[k].lo,
                               opts[k].hi), -1;
            *opts[k].field = (uint32_t)x;
        }
    }
    if (cfg.kill_server >= (int)cfg.servers || (cfg.kill_server >= 0 && cfg.servers < 2))
        return fprintf(stderr, "sluice-hlt: --kill-server needs another server to take over\n"),
               -1;
    return 0;
}

/* The fault mode: after a death, Open MPI 4.1's MPI_Finalize may wait for the dead rank. */
static int exit_status;
static void *finalize_watchdog(void *arg)
{
    (void)arg;
    sleep(3);
    fprintf(stderr, "%s %d: MPI_Finalize still waits for the killed rank after 3 s (Open MPI "
                    "4.1 does); leaving without it\n", role_name(), me);
    _exit(exit_status);
    return NULL;
}

int main(int argc, char **argv)
{
    int bad = parse(argc, argv);
    int provided, size;
    MPI_Init_thread(&argc, &argv, cfg.mpi_threads, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (!bad && (uint32_t)size != cfg.clients + cfg.servers) {
        if (rank == 0)
            fprintf(stderr, "sluice-hlt: the job has %d ranks; --clients %u and --servers %u "
                            "need %u\n", size, cfg.clients, cfg.servers,
                    cfg.clients + cfg.servers);
        bad = 1;
    }
    if (bad) {
        if (rank == 0)
            fprintf(stderr,
                    "usage: mpiexec -n C+S sluice-hlt [--clients C] [--servers S] "
                    "[--streams N] [--workers N] [--events N] [--raw-kib K] [--feds F] "
                    "[--lumi-events L] [--open-lumis K] [--work-us W] [--offload-pct P] "
                    "[--reject-pct P] [--dispatch rr|affine|least] [--kill-server K] "
                    "[--kill-after N] [--corrupt-every N] [--progress S] [--json FILE] "
                    "[--mpi-threads multiple|serialized]\n");
        MPI_Finalize();
        return 2;
    }
    is_client = (uint32_t)rank < cfg.clients;
    me = is_client ? rank : rank - (int)cfg.clients;
    fed_words = hlt_fed_words((size_t)cfg.raw_kib << 10, cfg.feds);
    raw_bytes = hlt_raw_bytes(cfg.feds, fed_words);
    n_hits = hlt_rechits(cfg.feds, fed_words);
    n_clusters = hlt_clusters(cfg.feds, fed_words);
    hlt_report_t mine = { .is_client = is_client, .index = me };
    int hn = 0;
    char host[MPI_MAX_PROCESSOR_NAME];
    MPI_Get_processor_name(host, &hn);
    snprintf(mine.host, sizeof mine.host, "%.63s", host);
    for (char *h = mine.host; *h; h++) /* it goes into JSON unescaped */
        if (!isalnum((unsigned char)*h) && *h != '.' && *h != '-' && *h != '_')
            *h = '_';
    if (rank == 0) {
        printf("sluice HLT demonstrator: %u client(s) x %u streams, %u server(s) x %u workers; "
               "%u events per client,\n  RAW %.0f KiB in %u FEDs, %llu rechits and %llu "
               "clusters back; %.0f us of work per event, %u %% offloaded; %u %% rejected "
               "early; lumis of %u events, %u open at once\n",
               cfg.clients, cfg.streams, cfg.servers, cfg.workers ? cfg.workers : cfg.streams,
               cfg.events, (double)raw_bytes / 1024, cfg.feds, (unsigned long long)n_hits,
               (unsigned long long)n_clusters, cfg.work_us, cfg.offload_pct, cfg.reject_pct,
               cfg.lumi_events, cfg.open_lumis);
        printf("  GPU server: not used (the servers compute on the CPU; device products: "
               "docs/gpu.md)\n");
        fflush(stdout);
    }
    sluice_registry_t *reg = NULL;
    sluice_context_t *ctx = NULL;
    int failed = make_types(&reg);
    char name[32];
    snprintf(name, sizeof name, "%s-%d", role_name(), me);
    int rc = failed ? SLUICE_OK : sluice_context_create(MPI_COMM_WORLD, name, &ctx);
    if (rc != SLUICE_OK)
        failed = sluice_failed("sluice_context_create", rc);
    uint32_t n_ch = is_client ? cfg.servers : cfg.clients;
    sluice_channel_t **ch = calloc(n_ch, sizeof *ch);
    uint32_t opened = 0;
    for (; !failed && opened < n_ch; opened++)
        failed = is_client ? open_channel(ctx, (uint32_t)me, opened, &ch[opened])
                           : open_channel(ctx, opened, (uint32_t)me, &ch[opened]);
    if (!failed) {
        snprintf(mine.transport, sizeof mine.transport, "%s", sluice_channel_transport(ch[0]));
        snprintf(mine.path, sizeof mine.path, "%s", sluice_channel_path(ch[0]));
        failed = is_client ? client_run(ch, &mine) : server_run(ch, &mine);
    }
    for (uint32_t k = 0; k < opened; k++) {
        if (!ch[k])
            continue;
        rc = sluice_channel_close(ch[k]);
        /* A channel to the killed server closes with its death reported: expected. */
        if (rc != SLUICE_OK && !(cfg.kill_server >= 0 && lost(rc)))
            failed |= sluice_failed("sluice_channel_close", rc);
    }
    free(ch);
    if (ctx)
        sluice_context_destroy(ctx);
    sluice_registry_destroy(reg);

    hlt_report_t *all = rank == 0 ? calloc((size_t)size, sizeof *all) : NULL;
    /* No collective from here on: in the fault mode a rank is dead. */
    mine.failed = failed;
    int missing = gather(&mine, all, 30);
    if (rank == 0) {
        print_report(all, size);
        bool ok = !missing && judge(all, size);
        if (cfg.json) {
            FILE *f = fopen(cfg.json, "w");
            if (f) {
                json_report(f, all, size, ok);
                ok &= fclose(f) == 0;
            } else {
                fprintf(stderr, "sluice-hlt: cannot write %s\n", cfg.json);
                ok = false;
            }
        }
        printf(ok ? "OK: every returned collection verified against the client's own "
                    "reconstruction\n"
                  : "FAILED: not every event was finished and verified (see above)\n");
        failed = !ok;
        free(all);
    }
    fflush(stdout);
    exit_status = failed;
    if (cfg.kill_server >= 0) {
        pthread_t th;
        if (pthread_create(&th, NULL, finalize_watchdog, NULL) == 0)
            pthread_detach(th);
    }
    MPI_Finalize();
    return failed;
}
