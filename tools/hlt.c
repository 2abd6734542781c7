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
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
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

enum { I_RAW = 1, I_RECHITS = 2, I_CLUSTERS = 3 };
enum { HLT_MAX_PEERS = 64, HLT_TAG_REPORT = 4711 };

/* ------------------------------------------------------------ configuration */

typedef struct hlt_cfg {
    uint32_t clients, servers;
    uint32_t streams;         /* per client */
    uint32_t workers;         /* per server; 0: as many as a client has streams */
    uint32_t events;          /* per client */
    uint32_t raw_kib, feds;
    uint32_t lumi_events, open_lumis;
    double work_us;           /* the application's CPU work per event, both sides together */
    uint32_t offload_pct;     /* of it, the share the server does */
    uint32_t reject_pct;      /* events the client's early filter rejects */
    sluice_dispatch_t dispatch;
    int kill_server;          /* -1: no fault */
    uint32_t kill_after;      /* the server's accepted events before it dies on the next */
    uint32_t corrupt_every;   /* servers spoil one rechit energy of every Nth answer; 0: never */
    double progress_s;
    const char *json;
    int mpi_threads;
} hlt_cfg_t;

static hlt_cfg_t cfg = {
    .clients = 2, .servers = 2, .streams = 8, .events = 2000, .raw_kib = 1024, .feds = 64,
    .lumi_events = 100, .open_lumis = 3, .work_us = 2000, .offload_pct = 10, .reject_pct = 20,
    .dispatch = SLUICE_DISPATCH_LEAST_LOADED, .kill_server = -1, .kill_after = 20,
    .progress_s = 2, .mpi_threads = MPI_THREAD_MULTIPLE,
};

static uint32_t fed_words;        /* payload words per FED */
static size_t raw_bytes;
static uint64_t n_hits, n_clusters;
static const sluice_type_t *T_RAW, *T_RECHITS, *T_CLUSTERS;
static int rank, me;              /* MPI rank; index among the clients or among the servers */
static bool is_client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e-6;
}

/* Whether the early filter of `client` rejects event `ev`: the same answer on every process. */
static bool rejected(uint32_t client, uint64_t ev)
{
    uint64_t x = (ev + 1) * 0xbf58476d1ce4e5b9ull ^ (uint64_t)client * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x % 100 < cfg.reject_pct;
}

static const char *role_name(void) { return is_client ? "client" : "server"; }

#define FAILED(...)                                                                                \
    do {                                                                                           \
        fprintf(stderr, "%s %d: ", role_name(), me);                                               \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
    } while (0)

/* A sluice call failed: say which, with the library's message. */
static int sluice_failed(const char *what, int rc)
{
    FAILED("%s: %s (%s)", what, sluice_strerror(rc), sluice_last_error());
    return 1;
}

static bool lost(int rc) { return rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED; }

/* ------------------------------------------------------------ what every process reports */

typedef struct hlt_report {
    int32_t is_client, index, killed, failed;
    char host[64], transport[8], path[24]; /* sluice_channel_transport, _path */
    double seconds, cpu_s, sluice_cpu_s;
    uint64_t events;          /* client: events of its run finished; server: events answered */
    uint64_t rejected;        /* client: cancelled by its filter; server: cancelled on it */
    uint64_t redispatched;    /* client */
    uint64_t verified;        /* client: events whose two collections it checked */
    uint64_t bytes_out, bytes_in;
    double p50_ms, p90_ms, p99_ms;
    uint32_t max_open_lumis;  /* server: most lumis of one client open at once */
    uint64_t per_server[HLT_MAX_PEERS]; /* client: events its group sent to each server */
} hlt_report_t;

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
static void *column(const sluice_type_t *type, void *base, uint64_t n, uint32_t c)
{
    size_t off = 0;
    sluice_type_column_offset(type, n, c, &off);
    return (char *)base + off;
}

static hlt_rechit_cols_t rechit_cols(void *base)
{
    return (hlt_rechit_cols_t){ column(T_RECHITS, base, n_hits, 0),
                                column(T_RECHITS, base, n_hits, 1),
                                column(T_RECHITS, base, n_hits, 2) };
}

static hlt_cluster_cols_t cluster_cols(void *base)
{
    return (hlt_cluster_cols_t){ column(T_CLUSTERS, base, n_clusters, 0),
                                 column(T_CLUSTERS, base, n_clusters, 1),
                                 column(T_CLUSTERS, base, n_clusters, 2),
                                 column(T_CLUSTERS, base, n_clusters, 3) };
}

static size_t bytes_of(const sluice_type_t *type, uint64_t n)
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

/* ------------------------------------------------------------ client */

typedef struct client {
    sluice_group_t *group;
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* lumis begun or finished, a failure */
    uint32_t n_lumis, begun, ended;
    uint32_t *done;           /* per lumi: events finished */
    _Atomic uint64_t next;    /* the next event index to take */
    _Atomic uint64_t finished, rejected_n, redispatched_n;
    _Atomic bool failed;
} client_t;

typedef struct cstream {
    client_t *c;
    uint32_t stream;
    sem_t ready;              /* posted by a notification */
    double *latency;
    uint64_t n_latency, accepted, rejected, redispatched, bytes_out, bytes_in;
    double sluice_cpu;
    void *raw;                /* the client's own copy of the RAW, to check against */
    void *hits, *clusters;    /* ... and its own reconstruction of it */
} cstream_t;

/* Time spent inside sluice on this thread. */
#define IN_SLUICE(s, rc, call)                                                                     \
    do {                                                                                           \
        double c0_ = hlt_thread_cpu();                                                             \
        (rc) = (call);                                                                             \
        (s)->sluice_cpu += hlt_thread_cpu() - c0_;                                                 \
    } while (0)

static uint32_t lumi_of(uint64_t idx) { return (uint32_t)(idx / cfg.lumi_events) + 1; }

static uint32_t lumi_size(uint32_t lumi)
{
    uint64_t first = (uint64_t)(lumi - 1) * cfg.lumi_events;
    uint64_t left = cfg.events - first;
    return left < cfg.lumi_events ? (uint32_t)left : cfg.lumi_events;
}

static void wake(void *arg) { sem_post(arg); }

/* Send the RAW of event `ev`, made in place in the server's arena (zero copy). */
static int send_raw(cstream_t *s, sluice_token_t *tok, uint64_t ev)
{
    sluice_reservation_t res;
    int rc;
    IN_SLUICE(s, rc, sluice_product_reserve(tok, I_RAW, raw_bytes, raw_bytes, 0, &res));
    if (rc != SLUICE_OK)
        return rc;
    hlt_make_raw(res.data, cfg.feds, fed_words, (uint32_t)me, ev);
    IN_SLUICE(s, rc, sluice_product_commit(tok, &res));
    if (rc == SLUICE_OK)
        s->bytes_out += raw_bytes;
    return rc;
}

/* The server of `tok` was lost: send the event to another one, with its RAW again. */
static int move_event(cstream_t *s, sluice_token_t *tok, uint64_t ev)
{
    int rc;
    do {
        sluice_token_t fresh;
        /* No free stream on the others within the group's deadline: ask again, a few times. */
        int tries = 0;
        do
            IN_SLUICE(s, rc, sluice_group_redispatch(s->c->group, tok, 0, &fresh));
        while ((rc == SLUICE_ETIMEDOUT || rc == SLUICE_EAGAIN) && ++tries < 3);
        if (rc != SLUICE_OK)
            return rc;
        s->redispatched++;
        *tok = fresh;
        rc = send_raw(s, tok, ev);
    } while (lost(rc));
    return rc;
}

/* Receive product `inst` of `tok`, sleeping on a notification while it is not there. */
static int take(cstream_t *s, sluice_token_t *tok, uint32_t inst, sluice_view_t *v)
{
    for (;;) {
        int rc;
        IN_SLUICE(s, rc, sluice_product_receive(tok, inst, SLUICE_NONBLOCK, v));
        if (rc != SLUICE_EAGAIN)
            return rc;
        IN_SLUICE(s, rc, sluice_notify_product(tok, inst, wake, &s->ready));
        if (rc != SLUICE_OK)
            return rc;
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        at.tv_sec += 60;
        while ((rc = sem_timedwait(&s->ready, &at)) != 0 && errno == EINTR) {
        }
        if (rc) {
            FAILED("stream %u: no notification for instance %u within 60 s", s->stream, inst);
            return SLUICE_ETIMEDOUT;
        }
    }
}

/* Whether the first `ncols` columns (4-byte elements, `n` of them) of two SoA buffers are
 * equal: the columns only, not the padding between them, which nobody writes. */
static bool same_columns(const sluice_type_t *type, uint64_t n, uint32_t ncols, const void *a,
                         const void *b)
{
    for (uint32_t c = 0; c < ncols; c++) {
        size_t off = 0;
        sluice_type_column_offset(type, n, c, &off);
        if (memcmp((const char *)a + off, (const char *)b + off, n * 4))
            return false;
    }
    return true;
}

/* Both collections of event `ev` against the client's own reconstruction of its RAW. */
static int verify(cstream_t *s, uint64_t ev, const sluice_view_t *hits, const sluice_view_t *clus)
{
    if (hits->count != n_hits || hits->bytes != bytes_of(T_RECHITS, n_hits) ||
        clus->count != n_clusters || clus->bytes != bytes_of(T_CLUSTERS, n_clusters)) {
        FAILED("event %llu: %llu rechits and %llu clusters back, expected %llu and %llu",
               (unsigned long long)ev, (unsigned long long)hits->count,
               (unsigned long long)clus->count, (unsigned long long)n_hits,
               (unsigned long long)n_clusters);
        return 1;
    }
    hlt_make_raw(s->raw, cfg.feds, fed_words, (uint32_t)me, ev);
    hlt_rechit_cols_t h = rechit_cols(s->hits);
    hlt_cluster_cols_t k = cluster_cols(s->clusters);
    if (hlt_unpack(s->raw, raw_bytes, ev, cfg.feds, fed_words, &h)) {
        FAILED("event %llu: own RAW malformed", (unsigned long long)ev);
        return 1;
    }
    hlt_cluster(&h, n_hits, &k);
    if (!same_columns(T_RECHITS, n_hits, 3, hits->data, s->hits) ||
        !same_columns(T_CLUSTERS, n_clusters, 4, clus->data, s->clusters)) {
        FAILED("event %llu: a returned collection differs from the client's reconstruction",
               (unsigned long long)ev);
        return 1;
    }
    return 0;
}

/* One event: offload, local work, early filter, results back and checked. */
static int client_event(cstream_t *s, uint64_t idx)
{
    client_t *c = s->c;
    sluice_transition_t t = { .kind = SLUICE_EVENT, .run = 1, .lumi = lumi_of(idx),
                              .event = idx };
    double t0 = now_s();
    double local_us = cfg.work_us * (100 - cfg.offload_pct) / 100.0;
    sluice_token_t tok;
    int rc;
    IN_SLUICE(s, rc, sluice_group_event_send(c->group, s->stream, &t, 0, &tok));
    if (rc != SLUICE_OK)
        return sluice_failed("sluice_group_event_send", rc);
    rc = send_raw(s, &tok, idx);
    if (lost(rc))
        rc = move_event(s, &tok, idx);
    if (rc != SLUICE_OK)
        return sluice_failed("sending RAW", rc);
    hlt_burn(local_us * 0.1); /* the part of the local work the early filter needs */
    if (rejected((uint32_t)me, idx)) {
        IN_SLUICE(s, rc, sluice_group_cancel(c->group, &tok));
        /* A server lost meanwhile: the event is finished and counted cancelled all the same. */
        if (rc != SLUICE_OK && !lost(rc))
            return sluice_failed("sluice_group_cancel", rc);
        s->rejected++;
        return 0;
    }
    hlt_burn(local_us * 0.9);
    for (;;) {
        sluice_view_t hits, clus;
        rc = take(s, &tok, I_RECHITS, &hits);
        if (rc == SLUICE_OK) {
            rc = take(s, &tok, I_CLUSTERS, &clus);
            if (rc != SLUICE_OK)
                sluice_view_release(tok.channel, &hits);
        }
        if (lost(rc)) {
            if ((rc = move_event(s, &tok, idx)) != SLUICE_OK)
                return sluice_failed("moving an event off a lost server", rc);
            continue;
        }
        if (rc != SLUICE_OK)
            return sluice_failed("receiving the collections", rc);
        int bad = verify(s, idx, &hits, &clus);
        s->bytes_in += hits.bytes + clus.bytes;
        IN_SLUICE(s, rc, sluice_view_release(tok.channel, &hits));
        int rc2;
        IN_SLUICE(s, rc2, sluice_view_release(tok.channel, &clus));
        if (bad)
            return 1;
        if (rc != SLUICE_OK || rc2 != SLUICE_OK)
            return sluice_failed("sluice_view_release", rc ? rc : rc2);
        break;
    }
    IN_SLUICE(s, rc, sluice_event_finish(&tok));
    if (rc != SLUICE_OK && !lost(rc)) /* lost: finished here all the same, results in hand */
        return sluice_failed("sluice_event_finish", rc);
    s->latency[s->n_latency++] = now_s() - t0;
    s->accepted++;
    return 0;
}

/* A stream: takes the client's events in turn, each once its lumi has begun. */
static void *client_stream(void *arg)
{
    cstream_t *s = arg;
    client_t *c = s->c;
    for (;;) {
        uint64_t idx = atomic_fetch_add(&c->next, 1);
        if (idx >= cfg.events || atomic_load(&c->failed))
            break;
        uint32_t lumi = lumi_of(idx);
        pthread_mutex_lock(&c->lock);
        while (c->begun < lumi && !atomic_load(&c->failed))
            pthread_cond_wait(&c->cond, &c->lock);
        pthread_mutex_unlock(&c->lock);
        uint64_t redisp = s->redispatched, rej = s->rejected;
        if (atomic_load(&c->failed) || client_event(s, idx)) {
            atomic_store(&c->failed, true);
            pthread_mutex_lock(&c->lock);
            pthread_cond_broadcast(&c->cond);
            pthread_mutex_unlock(&c->lock);
            break;
        }
        atomic_fetch_add(&c->rejected_n, s->rejected - rej);
        atomic_fetch_add(&c->redispatched_n, s->redispatched - redisp);
        atomic_fetch_add(&c->finished, 1);
        pthread_mutex_lock(&c->lock);
        if (++c->done[lumi - 1] == lumi_size(lumi))
            pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    return NULL;
}

static int global(client_t *c, sluice_transition_kind_t kind, uint32_t lumi)
{
    sluice_transition_t t = { .kind = kind, .run = kind == SLUICE_END_JOB ? 0 : 1, .lumi = lumi,
                              .timestamp = (uint64_t)(now_s() * 1e9) };
    int rc = sluice_group_transition_send(c->group, &t, 0);
    return rc == SLUICE_OK ? 0 : sluice_failed("sluice_group_transition_send", rc);
}

/*
 * The client's main thread: begins lumis up to --open-lumis ahead of the
 * oldest one still running, ends each once all its events are finished,
 * and prints progress lines.
 */
static int client_drive(client_t *c, double t0)
{
    if (global(c, SLUICE_BEGIN_RUN, 0))
        return 1;
    double next_line = t0 + cfg.progress_s;
    int failed = 0;
    pthread_mutex_lock(&c->lock);
    while (c->ended < c->n_lumis && !(failed |= atomic_load(&c->failed))) {
        uint32_t l;
        if (c->begun < c->n_lumis && c->begun < c->ended + cfg.open_lumis) {
            l = c->begun + 1;
            pthread_mutex_unlock(&c->lock);
            failed = global(c, SLUICE_BEGIN_LUMI, l);
            pthread_mutex_lock(&c->lock);
            c->begun = l;
            pthread_cond_broadcast(&c->cond);
            continue;
        }
        l = c->ended + 1;
        if (c->done[l - 1] == lumi_size(l)) {
            pthread_mutex_unlock(&c->lock);
            failed = global(c, SLUICE_END_LUMI, l);
            pthread_mutex_lock(&c->lock);
            c->ended = l;
            continue;
        }
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        at.tv_nsec += 100 * 1000 * 1000;
        if (at.tv_nsec >= 1000000000) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&c->cond, &c->lock, &at);
        double now = now_s();
        if (now >= next_line) {
            uint64_t f = atomic_load(&c->finished);
            printf("  client %d: %6llu / %u events  %7.0f events/s  lumis open %u-%u  "
                   "rejected %llu  re-dispatched %llu\n",
                   me, (unsigned long long)f, cfg.events, (double)f / (now - t0), c->ended + 1,
                   c->begun, (unsigned long long)atomic_load(&c->rejected_n),
                   (unsigned long long)atomic_load(&c->redispatched_n));
            fflush(stdout);
            next_line = now + cfg.progress_s;
        }
    }
    if (failed) {
        atomic_store(&c->failed, true);
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
    if (failed)
        return 1;
    return global(c, SLUICE_END_RUN, 0) || global(c, SLUICE_END_JOB, 0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int client_run(sluice_channel_t **ch, hlt_report_t *r)
{
    client_t c = { .n_lumis = lumi_of(cfg.events - 1) };
    c.done = calloc(c.n_lumis, sizeof *c.done);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    sluice_group_desc_t gd = { .size = sizeof gd, .members = ch, .n_members = cfg.servers,
                               .dispatch = cfg.dispatch, .on_loss = SLUICE_GROUP_REDISPATCH };
    int rc = sluice_group_create(&gd, &c.group);
    if (rc != SLUICE_OK)
        return free(c.done), sluice_failed("sluice_group_create", rc);
    int failed = 0;
    uint32_t progressing = 0; /* channels whose progress thread runs */
    for (; progressing < cfg.servers; progressing++)
        if ((rc = sluice_progress_start(ch[progressing])) != SLUICE_OK) {
            failed = sluice_failed("sluice_progress_start", rc);
            break;
        }
    cstream_t *s = calloc(cfg.streams, sizeof *s);
    pthread_t *th = calloc(cfg.streams, sizeof *th);
    double t0 = now_s(), cpu0 = process_cpu();
    uint32_t started = 0;
    for (uint32_t i = 0; i < cfg.streams && !failed; i++) {
        s[i] = (cstream_t){ .c = &c, .stream = i, .latency = calloc(cfg.events, sizeof(double)),
                            .raw = malloc(raw_bytes),
                            .hits = malloc(bytes_of(T_RECHITS, n_hits)),
                            .clusters = malloc(bytes_of(T_CLUSTERS, n_clusters)) };
        sem_init(&s[i].ready, 0, 0);
        if (pthread_create(&th[i], NULL, client_stream, &s[i]) != 0) {
            FAILED("cannot start stream thread %u", i);
            failed = 1;
            sem_destroy(&s[i].ready);
            free(s[i].latency), free(s[i].raw), free(s[i].hits), free(s[i].clusters);
            break;
        }
        started++;
    }
    /* Without its streams the lumi driver would wait for events nobody runs. */
    if (!failed)
        failed |= client_drive(&c, t0);
    if (failed) { /* the streams stop at their next event */
        pthread_mutex_lock(&c.lock);
        atomic_store(&c.failed, true);
        pthread_cond_broadcast(&c.cond);
        pthread_mutex_unlock(&c.lock);
    }
    double *lat = calloc(cfg.events, sizeof *lat);
    uint64_t n_lat = 0;
    for (uint32_t i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        memcpy(lat + n_lat, s[i].latency, s[i].n_latency * sizeof *lat);
        n_lat += s[i].n_latency;
        r->verified += s[i].accepted;
        r->rejected += s[i].rejected;
        r->redispatched += s[i].redispatched;
        r->bytes_out += s[i].bytes_out;
        r->bytes_in += s[i].bytes_in;
        r->sluice_cpu_s += s[i].sluice_cpu;
    }
    r->seconds = now_s() - t0;
    r->cpu_s = process_cpu() - cpu0;
    r->events = atomic_load(&c.finished); /* counted apart from the two it must add up to */
    failed |= atomic_load(&c.failed);
    qsort(lat, n_lat, sizeof *lat, cmp_double);
    if (n_lat) {
        r->p50_ms = lat[n_lat / 2] * 1e3;
        r->p90_ms = lat[n_lat * 9 / 10] * 1e3;
        r->p99_ms = lat[n_lat * 99 / 100] * 1e3;
    }
    for (uint32_t k = 0; k < progressing; k++)
        if ((rc = sluice_progress_stop(ch[k])) != SLUICE_OK)
            failed |= sluice_failed("sluice_progress_stop", rc);
    /* Only now: a notification armed before a wait gave up may fire until the stops. */
    for (uint32_t i = 0; i < started; i++) {
        sem_destroy(&s[i].ready);
        free(s[i].latency), free(s[i].raw), free(s[i].hits), free(s[i].clusters);
    }
    sluice_group_stats(c.group, NULL, r->per_server, cfg.servers);
    sluice_group_destroy(c.group);
    free(lat), free(s), free(th), free(c.done);
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.cond);
    return failed;
}

/* ------------------------------------------------------------ server */

typedef struct server {
    sluice_group_t *group;
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* the queue changed */
    sluice_item_t *queue;     /* events taken, waiting for a worker */
    size_t cap, head, n;
    bool eof;
    _Atomic bool failed;
    _Atomic uint32_t taken;   /* events whose RAW arrived and that the filter keeps */
    _Atomic uint64_t made;    /* events whose collections were made */
} server_t;

typedef struct worker {
    server_t *srv;
    uint64_t answered, cancelled, bytes_in, bytes_out;
    double sluice_cpu;
} worker_t;

/* The offloaded part of one event: RAW in, rechits and clusters out, into the client's arena. */
static int serve_event(worker_t *w, sluice_item_t *it, uint32_t client)
{
    sluice_token_t *tok = &it->token;
    uint64_t ev = it->transition.event;
    sluice_view_t raw;
    int rc;
    IN_SLUICE(w, rc, sluice_product_receive(tok, I_RAW, 0, &raw));
    if (rc == SLUICE_OK) {
        /* The fault mode dies holding an event its client keeps: the client must move it. */
        if (me == cfg.kill_server && !rejected(client, ev) &&
            atomic_fetch_add(&w->srv->taken, 1) == cfg.kill_after) {
            printf("  server %d: killing itself (SIGKILL) in the middle of event %llu of "
                   "client %u\n", me, (unsigned long long)ev, client);
            fflush(stdout);
            raise(SIGKILL);
        }
        w->bytes_in += raw.bytes;
        sluice_reservation_t rh, rk;
        size_t hb = bytes_of(T_RECHITS, n_hits), kb = bytes_of(T_CLUSTERS, n_clusters);
        IN_SLUICE(w, rc, sluice_product_reserve(tok, I_RECHITS, hb, n_hits, 0, &rh));
        if (rc == SLUICE_OK) {
            IN_SLUICE(w, rc, sluice_product_reserve(tok, I_CLUSTERS, kb, n_clusters, 0, &rk));
            if (rc != SLUICE_OK)
                sluice_product_cancel(tok, &rh);
        }
        if (rc == SLUICE_OK) {
            hlt_rechit_cols_t h = rechit_cols(rh.data);
            hlt_cluster_cols_t k = cluster_cols(rk.data);
            if (hlt_unpack(raw.data, raw.bytes, ev, cfg.feds, fed_words, &h)) {
                FAILED("event %llu of client %u: malformed RAW", (unsigned long long)ev, client);
                sluice_product_cancel(tok, &rh);
                sluice_product_cancel(tok, &rk);
                sluice_view_release(tok->channel, &raw);
                /* Its client hears it at once, not at the end of its wait. */
                sluice_event_fail(tok, SLUICE_ECORRUPT, "the server found the RAW malformed");
                return 1;
            }
            hlt_cluster(&h, n_hits, &k);
            /* The checks' own test: a wrong value the client must catch. */
            if (cfg.corrupt_every &&
                (atomic_fetch_add(&w->srv->made, 1) + 1) % cfg.corrupt_every == 0)
                h.energy[n_hits / 2] += 1.0f;
            hlt_burn(cfg.work_us * cfg.offload_pct / 100.0);
            IN_SLUICE(w, rc, sluice_product_commit(tok, &rh));
            if (rc == SLUICE_OK)
                IN_SLUICE(w, rc, sluice_product_commit(tok, &rk));
            else
                sluice_product_cancel(tok, &rk);
            if (rc == SLUICE_OK)
                w->bytes_out += hb + kb;
        }
        sluice_view_release(tok->channel, &raw);
    }
    if (rc == SLUICE_OK)
        w->answered++;
    else if (rc == SLUICE_ECANCELED)
        w->cancelled++; /* the client's filter rejected it meanwhile */
    else if (!lost(rc)) {
        sluice_failed("serving an event", rc);
        sluice_event_fail(tok, rc, "the server could not serve the event");
        return 1;
    }
    int frc;
    IN_SLUICE(w, frc, sluice_event_finish(tok));
    if (frc != SLUICE_OK && frc != SLUICE_EALREADY && frc != SLUICE_ECANCELED && !lost(frc))
        return sluice_failed("sluice_event_finish", frc);
    return 0;
}

static void *server_worker(void *arg)
{
    worker_t *w = arg;
    server_t *srv = w->srv;
    for (;;) {
        pthread_mutex_lock(&srv->lock);
        while (!srv->n && !srv->eof && !atomic_load(&srv->failed))
            pthread_cond_wait(&srv->cond, &srv->lock);
        if (!srv->n || atomic_load(&srv->failed)) {
            pthread_mutex_unlock(&srv->lock);
            break;
        }
        sluice_item_t it = srv->queue[srv->head];
        srv->head = (srv->head + 1) % srv->cap;
        srv->n--;
        pthread_cond_broadcast(&srv->cond);
        pthread_mutex_unlock(&srv->lock);
        size_t member = 0;
        sluice_group_member_of(srv->group, it.token.channel, &member);
        if (serve_event(w, &it, (uint32_t)member)) {
            atomic_store(&srv->failed, true);
            pthread_mutex_lock(&srv->lock);
            pthread_cond_broadcast(&srv->cond);
            pthread_mutex_unlock(&srv->lock);
            break;
        }
    }
    return NULL;
}

/* The server's InputSource thread: takes every client's items, hands events to the workers. */
static int server_take(server_t *srv, uint32_t *max_open)
{
    uint32_t open[HLT_MAX_PEERS] = { 0 };
    for (;;) {
        sluice_item_t it;
        size_t m = 0;
        int rc = sluice_group_next(srv->group, 0, &it, &m);
        if (rc == SLUICE_EOF)
            return 0;
        if (lost(rc)) {
            printf("  server %d: client %zu %s\n", me, m,
                   rc == SLUICE_EPEERDEAD ? "died" : "closed its channel");
            fflush(stdout);
            continue;
        }
        if (rc != SLUICE_OK)
            return sluice_failed("sluice_group_next", rc);
        if (it.transition.kind == SLUICE_BEGIN_LUMI && ++open[m] > *max_open)
            *max_open = open[m];
        if (it.transition.kind == SLUICE_END_LUMI)
            open[m]--;
        if (it.transition.kind != SLUICE_EVENT)
            continue;
        pthread_mutex_lock(&srv->lock);
        while (srv->n == srv->cap && !atomic_load(&srv->failed))
            pthread_cond_wait(&srv->cond, &srv->lock);
        bool failed = atomic_load(&srv->failed);
        if (!failed) {
            srv->queue[(srv->head + srv->n) % srv->cap] = it;
            srv->n++;
            pthread_cond_broadcast(&srv->cond);
        }
        pthread_mutex_unlock(&srv->lock);
        if (failed) {
            sluice_event_finish(&it.token);
            return 1;
        }
    }
}

static int server_run(sluice_channel_t **ch, hlt_report_t *r)
{
    uint32_t n_workers = cfg.workers ? cfg.workers : cfg.streams;
    server_t srv = { .cap = (size_t)cfg.clients * cfg.streams };
    srv.queue = calloc(srv.cap, sizeof *srv.queue);
    pthread_mutex_init(&srv.lock, NULL);
    pthread_cond_init(&srv.cond, NULL);
    sluice_group_desc_t gd = { .size = sizeof gd, .members = ch, .n_members = cfg.clients };
    int rc = sluice_group_create(&gd, &srv.group);
    if (rc != SLUICE_OK)
        return free(srv.queue), sluice_failed("sluice_group_create", rc);
    worker_t *w = calloc(n_workers, sizeof *w);
    pthread_t *th = calloc(n_workers, sizeof *th);
    double t0 = now_s(), cpu0 = process_cpu();
    for (uint32_t i = 0; i < n_workers; i++) {
        w[i].srv = &srv;
        pthread_create(&th[i], NULL, server_worker, &w[i]);
    }
    int failed = server_take(&srv, &r->max_open_lumis);
    pthread_mutex_lock(&srv.lock);
    srv.eof = true;
    if (failed)
        atomic_store(&srv.failed, true);
    pthread_cond_broadcast(&srv.cond);
    pthread_mutex_unlock(&srv.lock);
    for (uint32_t i = 0; i < n_workers; i++) {
        pthread_join(th[i], NULL);
        r->events += w[i].answered;
        r->rejected += w[i].cancelled;
        r->bytes_in += w[i].bytes_in;
        r->bytes_out += w[i].bytes_out;
        r->sluice_cpu_s += w[i].sluice_cpu;
    }
    r->seconds = now_s() - t0;
    r->cpu_s = process_cpu() - cpu0;
    failed |= atomic_load(&srv.failed);
    /* Events still queued after a failure: their clients hear it now. */
    for (; srv.n; srv.n--, srv.head = (srv.head + 1) % srv.cap)
        sluice_event_fail(&srv.queue[srv.head].token, SLUICE_EFAILED, "the server stopped");
    sluice_group_destroy(srv.group);
    free(w), free(th), free(srv.queue);
    pthread_mutex_destroy(&srv.lock);
    pthread_cond_destroy(&srv.cond);
    return failed;
}

/* ------------------------------------------------------------ the report */

/* Every live process sends its report to rank 0, which waits for each at most `seconds`. */
static int gather(const hlt_report_t *mine, hlt_report_t *all, double seconds)
{
    int size = (int)(cfg.clients + cfg.servers);
    if (rank != 0) {
        MPI_Request rq;
        MPI_Isend(mine, sizeof *mine, MPI_BYTE, 0, HLT_TAG_REPORT, MPI_COMM_WORLD, &rq);
        int done = 0;
        for (double until = now_s() + seconds; !done && now_s() < until; usleep(1000))
            MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
        return done ? 0 : 1;
    }
    all[0] = *mine;
    int missing = 0;
    MPI_Request *rq = calloc((size_t)size, sizeof *rq);
    rq[0] = MPI_REQUEST_NULL;
    for (int i = 1; i < size; i++) {
        all[i] = (hlt_report_t){ .is_client = i < (int)cfg.clients,
                                 .index = i < (int)cfg.clients ? i : i - (int)cfg.clients };
        /* Marked killed unless a report comes: a victim that lived to report did not die. */
        all[i].killed = !all[i].is_client && all[i].index == cfg.kill_server;
        MPI_Irecv(&all[i], sizeof all[i], MPI_BYTE, i, HLT_TAG_REPORT, MPI_COMM_WORLD, &rq[i]);
    }
    /* Wait for every process but the victim, which is looked at once at the end. */
    for (double until = now_s() + seconds;; usleep(1000)) {
        int waiting = 0;
        for (int i = 1; i < size; i++) {
            int got = 0;
            if (rq[i] != MPI_REQUEST_NULL && !all[i].killed) {
                MPI_Test(&rq[i], &got, MPI_STATUS_IGNORE);
                waiting += !got;
            }
        }
        if (!waiting || now_s() >= until)
            break;
    }
    for (int i = 1; i < size; i++) {
        int got = 0;
        if (rq[i] == MPI_REQUEST_NULL)
            continue;
        MPI_Test(&rq[i], &got, MPI_STATUS_IGNORE);
        if (got)
            continue;
        if (!all[i].killed) {
            fprintf(stderr, "%s %d sent no report within %.0f s\n",
                    all[i].is_client ? "client" : "server", all[i].index, seconds);
            missing = 1;
        }
        /* Cancelling a receive is local: the buffer is ours again after the wait. */
        MPI_Cancel(&rq[i]);
        MPI_Wait(&rq[i], MPI_STATUS_IGNORE);
    }
    free(rq);
    return missing;
}

static double per_event_us(double s, uint64_t n) { return n ? s * 1e6 / (double)n : 0; }

static void print_report(const hlt_report_t *all, int n)
{
    printf("\n  %-9s %-10s %-9s %8s %9s %9s %8s %8s %8s %9s %9s %11s %9s\n", "process", "host",
           "path", "events", "events/s", "rejected", "moved", "p50 ms", "p99 ms", "MiB out",
           "MiB in", "sluice us/ev", "cpu us/ev");
    for (int i = 0; i < n; i++) {
        const hlt_report_t *r = &all[i];
        char who[16];
        snprintf(who, sizeof who, "%s %d", r->is_client ? "client" : "server", r->index);
        if (r->killed) {
            printf("  %-9s killed in the middle of a run (fault mode): no report\n", who);
            continue;
        }
        char moved[24] = "-", p50[24] = "-", p99[24] = "-";
        if (r->is_client) {
            snprintf(moved, sizeof moved, "%llu", (unsigned long long)r->redispatched);
            snprintf(p50, sizeof p50, "%.2f", r->p50_ms);
            snprintf(p99, sizeof p99, "%.2f", r->p99_ms);
        }
        printf("  %-9s %-10.10s %-9s %8llu %9.0f %9llu %8s %8s %8s %9.1f %9.1f %11.1f %9.0f\n",
               who, r->host, r->path, (unsigned long long)r->events,
               r->seconds > 0 ? (double)r->events / r->seconds : 0,
               (unsigned long long)r->rejected, moved, p50, p99,
               (double)r->bytes_out / (1 << 20), (double)r->bytes_in / (1 << 20),
               per_event_us(r->sluice_cpu_s, r->events + (r->is_client ? 0 : r->rejected)),
               per_event_us(r->cpu_s, r->events));
    }
    printf("  (client: rejected = cancelled by its early filter, moved = re-dispatched after a "
           "server was lost;\n   server: events = answered, rejected = cancelled while on it)\n");
    printf("  events each server took, as the clients' groups sent them:");
    for (uint32_t s = 0; s < cfg.servers; s++) {
        uint64_t sum = 0;
        for (int i = 0; i < (int)cfg.clients; i++)
            sum += all[i].per_server[s];
        printf(" server %u: %llu%s", s, (unsigned long long)sum, s + 1 < cfg.servers ? "," : "\n");
    }
}

static void json_report(FILE *f, const hlt_report_t *all, int n, bool ok)
{
    fprintf(f, "{\n  \"config\": {\"clients\": %u, \"servers\": %u, \"streams\": %u, "
               "\"events_per_client\": %u, \"raw_bytes\": %zu, \"feds\": %u, "
               "\"lumi_events\": %u, \"open_lumis\": %u, \"work_us\": %.0f, "
               "\"offload_pct\": %u, \"reject_pct\": %u, \"kill_server\": %d},\n",
            cfg.clients, cfg.servers, cfg.streams, cfg.events, raw_bytes, cfg.feds,
            cfg.lumi_events, cfg.open_lumis, cfg.work_us, cfg.offload_pct, cfg.reject_pct,
            cfg.kill_server);
    for (int pass = 0; pass < 2; pass++) {
        fprintf(f, "  \"%s\": [", pass ? "servers" : "clients");
        const char *sep = "\n";
        for (int i = 0; i < n; i++) {
            const hlt_report_t *r = &all[i];
            if (r->is_client != !pass)
                continue;
            fprintf(f, "%s    {\"index\": %d, \"killed\": %s", sep, r->index,
                    r->killed ? "true" : "false");
            sep = ",\n";
            if (r->killed) {
                fprintf(f, "}");
                continue;
            }
            fprintf(f, ", \"host\": \"%s\", \"events\": %llu, \"events_per_s\": %.1f, "
                       "\"rejected\": %llu, \"bytes_out\": %llu, \"bytes_in\": %llu, "
                       "\"sluice_cpu_us_per_event\": %.2f, \"cpu_us_per_event\": %.1f",
                    r->host, (unsigned long long)r->events,
                    r->seconds > 0 ? (double)r->events / r->seconds : 0,
                    (unsigned long long)r->rejected, (unsigned long long)r->bytes_out,
                    (unsigned long long)r->bytes_in,
                    per_event_us(r->sluice_cpu_s, r->events + (pass ? r->rejected : 0)),
                    per_event_us(r->cpu_s, r->events));
            if (pass) {
                fprintf(f, ", \"max_open_lumis\": %u}", r->max_open_lumis);
                continue;
            }
            fprintf(f, ", \"transport\": \"%s\", \"path\": \"%s\", \"verified\": %llu, "
                       "\"redispatched\": %llu, "
                       "\"latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
                       "\"per_server\": [",
                    r->transport, r->path, (unsigned long long)r->verified,
                    (unsigned long long)r->redispatched, r->p50_ms, r->p90_ms, r->p99_ms);
            for (uint32_t s = 0; s < cfg.servers; s++)
                fprintf(f, "%s%llu", s ? ", " : "", (unsigned long long)r->per_server[s]);
            fprintf(f, "]}");
        }
        fprintf(f, "\n  ],\n");
    }
    fprintf(f, "  \"verdict\": \"%s\"\n}\n", ok ? "OK" : "FAILED");
}

/* Rank 0: every client's events accounted for and checked; in the fault mode, some moved. */
static bool judge(const hlt_report_t *all, int n)
{
    bool ok = true;
    uint64_t moved = 0, lumis = 0;
    for (int i = 0; i < n; i++) {
        const hlt_report_t *r = &all[i];
        if (r->killed)
            continue;
        if (r->failed) {
            printf("  %s %d failed (its messages are above)\n", r->is_client ? "client" : "server",
                   r->index);
            ok = false;
        }
        if (!r->is_client) {
            lumis = r->max_open_lumis > lumis ? r->max_open_lumis : lumis;
            continue;
        }
        moved += r->redispatched;
        if (r->events != cfg.events || r->verified + r->rejected != cfg.events) {
            printf("  client %d: %llu of %u events finished (%llu verified, %llu rejected)\n",
                   r->index, (unsigned long long)r->events, cfg.events,
                   (unsigned long long)r->verified, (unsigned long long)r->rejected);
            ok = false;
        }
    }
    printf("  lumis of one client open at once on a server: up to %llu\n",
           (unsigned long long)lumis);
    if (cfg.kill_server >= 0 && !all[cfg.clients + (uint32_t)cfg.kill_server].killed) {
        printf("  fault mode: server %d reported at the end: it did not die\n", cfg.kill_server);
        ok = false;
    } else if (cfg.kill_server >= 0 && !moved) {
        printf("  fault mode: server %d was killed, but no event was re-dispatched\n",
               cfg.kill_server);
        ok = false;
    } else if (cfg.kill_server >= 0) {
        printf("  fault mode: server %d was killed; %llu event(s) re-dispatched to the others, "
               "none lost\n", cfg.kill_server, (unsigned long long)moved);
    }
    return ok;
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
        printf("  GPU server: not used (sluice has no device data path yet: docs/gpu.md)\n");
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
