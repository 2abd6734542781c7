/* SPDX-License-Identifier: MIT */
/*
 * sluice demo: a controller hands synthetic events to a source on N streams;
 * the source "reconstructs" each one into a Structure-of-Arrays product and
 * sends it back; the controller checks every result. Then the same work runs
 * over plain two-sided MPI for comparison.
 *
 * The source is one thread asking what comes next, the way a framework's
 * InputSource does. The controller's stream threads do not spin while the
 * source works: each arms a notification for its result and sleeps until
 * the channel's progress thread says it is there.
 *
 * With several sources (--sources N) each controller drives one channel per
 * source through a group that picks a source per event (--dispatch); with
 * several controllers (--controllers M) each source serves all of them
 * through a source group. Controllers are ranks 0 .. M-1, sources the rest.
 *
 * The same source also serves controllers of other jobs (--serve NAME, a
 * service, sluice/service.h), each started by its own mpiexec (--connect
 * NAME) at any time, several at once: the seeds' way, two commands in two
 * shells. Each connection is one more member of the source's group.
 *
 *   mpiexec -n 1 sluice-demo controller : -n 1 sluice-demo source
 *   mpiexec --ompi-server file:URI -n 1 sluice-demo --serve NAME [--clients N]
 *   mpiexec --ompi-server file:URI -n 1 sluice-demo --connect NAME
 *   options (every process): --events N --streams S --raw-kib K --lumi-events L
 *                            --sources N --controllers M --dispatch rr|affine|least
 *   (--streams and --raw-kib of a --connect must be those of its --serve)
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sluice/group.h>
#include <sluice/service.h>
#include <sluice/sluice.h>

#include "demo.h"



/* 256 KiB of RAW per event */
demo_cfg_t cfg = { 0, 2000, 4, 64 * 1024, 250, MPI_THREAD_MULTIPLE, 1, 1,
                          SLUICE_DISPATCH_LEAST_LOADED, 0, DEMO_JOB, NULL, 0 };
static const sluice_type_t *T_RAW, *T_CLUSTERS;

#define WORDS_PER_CLUSTER 64u
#define I_RAW 1
#define I_CLUSTERS 2

/* Arena bytes for products of up to `bytes`: room for a few in flight. */
static uint64_t arena_for(uint64_t bytes)
{
    uint64_t a = (bytes * 4 + 4095) & ~4095ull;
    return a < 65536 ? 65536 : a;
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The "detector": deterministic words for event `ev`. */
static void make_raw(uint32_t *w, uint32_t n, uint64_t ev)
{
    uint64_t x = ev * 0x9e3779b97f4a7c15ull + 7;
    for (uint32_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = (uint32_t)x;
    }
}

/* The "reconstruction": one cluster per 64 words: energy, position, id. */
static void reconstruct(const uint32_t *w, uint32_t n, float *energy, float *pos, uint32_t *id)
{
    for (uint32_t c = 0; c < n / WORDS_PER_CLUSTER; c++) {
        uint64_t e = 0, p = 0;
        for (uint32_t i = 0; i < WORDS_PER_CLUSTER; i++) {
            uint32_t v = w[c * WORDS_PER_CLUSTER + i];
            e += v & 0xfff;
            p += (v >> 12 & 0xff) * i;
        }
        energy[c] = (float)e * 0.25f;
        pos[c] = e ? (float)p / (float)(e ? e : 1) : 0.f;
        id[c] = c ^ w[c * WORDS_PER_CLUSTER];
    }
}

typedef struct stream_ctx {
    sluice_group_t *group;
    uint32_t stream;
    double *latency;     /* per event handled by this stream, seconds */
    uint64_t n, bytes;
    int failed;
    sem_t result;        /* controller: posted when the result may be received */
} stream_ctx_t;

/* Notification callback (progress thread): the stream's result is there. */
static void result_ready(void *arg) { sem_post(arg); }

/* Sleep until the notification fired, at most `seconds`. */
static int await_result(sem_t *sem, double seconds)
{
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += (time_t)seconds;
    int rc;
    while ((rc = sem_timedwait(sem, &at)) != 0 && errno == EINTR) {
    }
    if (rc) {
        fprintf(stderr, "controller: no result within %.0f s\n", seconds);
        return 1;
    }
    return 0;
}

static int cols(uint64_t n, size_t off[3])
{
    for (uint32_t c = 0; c < 3; c++)
        if (sluice_type_column_offset(T_CLUSTERS, n, c, &off[c]) != SLUICE_OK)
            return -1;
    return 0;
}


typedef struct demo_result {
    double seconds, p50, p90, p99;
    uint64_t events, bytes;
} demo_result_t;


/* Controller stream: events ev = stream, stream + S, ... of the batch. */
static _Atomic uint64_t next_event;
static _Atomic uint64_t done_events;
static uint32_t batch_lumi;

static int ctrl_event(stream_ctx_t *s, uint64_t ev, uint32_t *expect_buf, float *e, float *p,
                      uint32_t *id)
{
    uint32_t nclus = cfg.raw_words / WORDS_PER_CLUSTER;
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.kind = SLUICE_EVENT;
    t.run = 1;
    t.lumi = batch_lumi;
    t.event = ev;
    double t0 = now_s();
    sluice_token_t tok; /* on the channel of the source the group chose */
    DEMO_CHECK(sluice_group_event_send(s->group, s->stream, &t, 0, &tok));
    sluice_reservation_t res; /* fill the RAW buffer in place: zero copy */
    DEMO_CHECK(sluice_product_reserve(&tok, I_RAW, cfg.raw_words * 4u, cfg.raw_words, 0, &res));
    make_raw(res.data, cfg.raw_words, ev);
    DEMO_CHECK(sluice_product_commit(&tok, &res));
    /* Wait by notification: this thread sleeps, no core spins for it. */
    DEMO_CHECK(sluice_notify_product(&tok, I_CLUSTERS, result_ready, &s->result));
    if (await_result(&s->result, 60))
        return 1;
    sluice_view_t v;
    DEMO_CHECK(sluice_product_receive(&tok, I_CLUSTERS, SLUICE_NONBLOCK, &v));
    s->latency[s->n++] = now_s() - t0;
    s->bytes += cfg.raw_words * 4u + v.bytes;
    /* Check the result against our own reconstruction of the same event. */
    make_raw(expect_buf, cfg.raw_words, ev);
    reconstruct(expect_buf, cfg.raw_words, e, p, id);
    size_t off[3];
    if (v.count != nclus || cols(v.count, off) ||
        memcmp((const char *)v.data + off[0], e, nclus * 4) ||
        memcmp((const char *)v.data + off[1], p, nclus * 4) ||
        memcmp((const char *)v.data + off[2], id, nclus * 4)) {
        fprintf(stderr, "controller: result of event %llu is wrong\n", (unsigned long long)ev);
        return 1;
    }
    DEMO_CHECK(sluice_view_release(tok.channel, &v));
    DEMO_CHECK(sluice_event_finish(&tok));
    return 0;
}

static uint64_t batch_end;

static void *ctrl_stream(void *arg)
{
    stream_ctx_t *s = arg;
    uint32_t *buf = malloc(cfg.raw_words * 4u);
    uint32_t nclus = cfg.raw_words / WORDS_PER_CLUSTER;
    float *e = malloc(nclus * 4u), *p = malloc(nclus * 4u);
    uint32_t *id = malloc(nclus * 4u);
    for (;;) {
        uint64_t ev = atomic_fetch_add(&next_event, 1);
        if (ev >= batch_end)
            break;
        if ((s->failed = ctrl_event(s, ev, buf, e, p, id)))
            break;
        atomic_fetch_add(&done_events, 1);
    }
    free(buf), free(e), free(p), free(id);
    return NULL;
}

/* Source: one event, received, reconstructed into the controller's arena, finished. */
int src_event(sluice_channel_t *ch, sluice_token_t *tok, uint64_t *bytes_p)
{
    sluice_view_t raw;
    DEMO_CHECK(sluice_product_receive(tok, I_RAW, 0, &raw));
    uint64_t n = raw.count / WORDS_PER_CLUSTER;
    size_t bytes, off[3];
    DEMO_CHECK(sluice_type_bytes(T_CLUSTERS, n, &bytes));
    if (cols(n, off))
        return 1;
    sluice_reservation_t res; /* reconstruct straight into the controller's arena */
    DEMO_CHECK(sluice_product_reserve(tok, I_CLUSTERS, bytes, n, 0, &res));
    char *d = res.data;
    reconstruct(raw.data, (uint32_t)raw.count, (float *)(d + off[0]), (float *)(d + off[1]),
                (uint32_t *)(d + off[2]));
    DEMO_CHECK(sluice_view_release(ch, &raw));
    DEMO_CHECK(sluice_product_commit(tok, &res));
    DEMO_CHECK(sluice_event_finish(tok));
    *bytes_p += raw.bytes + bytes;
    return 0;
}

/* Source: the InputSource loop, one thread for every stream of every controller. */
static int src_run(sluice_group_t *g, demo_result_t *r, uint64_t *per_ctrl)
{
    for (;;) {
        sluice_item_t it;
        size_t c;
        int rc = sluice_group_next(g, 0, &it, &c);
        if (rc == SLUICE_EOF)
            return 0;
        DEMO_CHECK(rc);
        if (it.transition.kind != SLUICE_EVENT)
            continue; /* runs and lumis: nothing to do in this demo */
        if (src_event(it.token.channel, &it.token, &r->bytes))
            return 1;
        r->events++;
        per_ctrl[c]++;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarise(double *lat, uint64_t n, demo_result_t *r)
{
    qsort(lat, n, sizeof *lat, cmp_double);
    r->p50 = n ? lat[n / 2] * 1e6 : 0;
    r->p90 = n ? lat[n * 9 / 10] * 1e6 : 0;
    r->p99 = n ? lat[n * 99 / 100] * 1e6 : 0;
}

/* A global transition to every source; `v` (END_JOB only, else NULL) rides in its aux. */
static int global(sluice_group_t *g, sluice_transition_kind_t k, uint32_t run, uint32_t lumi,
                  const demo_verdict_t *v)
{
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.kind = k;
    t.run = run;
    t.lumi = lumi;
    t.timestamp = (uint64_t)(now_s() * 1e9);
    if (v) {
        memcpy(t.aux, v, sizeof *v);
        t.aux_size = sizeof *v;
    }
    DEMO_CHECK(sluice_group_transition_send(g, &t, 0)); /* to every source */
    return 0;
}

/* One channel per peer: controller i to every source, source j to every controller. */
int open_channels(sluice_context_t *ctx, sluice_channel_t **ch, uint32_t n)
{
    sluice_endpoint_t eps[2] = {
        { I_RAW, cfg.is_ctrl ? SLUICE_SEND : SLUICE_RECEIVE, T_RAW },
        { I_CLUSTERS, cfg.is_ctrl ? SLUICE_RECEIVE : SLUICE_SEND, T_CLUSTERS },
    };
    sluice_options_t o;
    sluice_options_init(&o);
    o.arena_bytes = arena_for((uint64_t)cfg.raw_words * 4u);
    DEMO_CHECK(sluice_options_from_env(&o));
    for (uint32_t k = 0; k < n; k++) {
        /* Both sides open in increasing peer order, so no two wait on each other. */
        int c = cfg.is_ctrl ? cfg.me : (int)k, s = cfg.is_ctrl ? (int)k : cfg.me;
        char name[64], peer[32];
        snprintf(name, sizeof name, "demo-c%d-s%d", c, s);
        snprintf(peer, sizeof peer, cfg.is_ctrl ? "source-%d" : "controller-%d",
                 cfg.is_ctrl ? s : c);
        sluice_channel_desc_t d = { .size = sizeof d, .name = name,
                                    .role = cfg.is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                    .peer = peer, .streams = cfg.streams, .endpoints = eps,
                                    .n_endpoints = 2, .options = &o };
        DEMO_CHECK(sluice_channel_open(ctx, &d, &ch[k]));
    }
    return 0;
}

static int run_sluice(sluice_context_t *ctx, demo_result_t *r)
{
    uint32_t n_ch = cfg.is_ctrl ? cfg.sources : cfg.controllers;
    sluice_channel_t **ch = calloc(n_ch, sizeof *ch);
    if (open_channels(ctx, ch, n_ch))
        return 1;
    sluice_group_desc_t gd = { .size = sizeof gd, .members = ch, .n_members = n_ch,
                               .dispatch = cfg.dispatch };
    sluice_group_t *g;
    DEMO_CHECK(sluice_group_create(&gd, &g));
    char host[MPI_MAX_PROCESSOR_NAME];
    int hn;
    MPI_Get_processor_name(host, &hn);
    if (cfg.is_ctrl)
        printf("  controller-%d on %s; channel transport: %s (path %s)\n", cfg.me, host,
               sluice_channel_transport(ch[0]), sluice_channel_path(ch[0]));
    else
        printf("  source-%d on %s\n", cfg.me, host);
    fflush(stdout);
    uint64_t *per = calloc(n_ch, sizeof *per);
    stream_ctx_t *s = calloc(cfg.streams, sizeof *s);
    pthread_t *th = calloc(cfg.streams, sizeof *th);
    double *lat = calloc(cfg.events, sizeof *lat);
    int failed = 0;
    double t0 = now_s();
    if (cfg.is_ctrl) {
        for (uint32_t i = 0; i < cfg.streams; i++) {
            s[i] = (stream_ctx_t){ .group = g, .stream = i,
                                   .latency = calloc(cfg.events, sizeof(double)) };
            sem_init(&s[i].result, 0, 0);
        }
        for (uint32_t k = 0; k < n_ch; k++)
            DEMO_CHECK(sluice_progress_start(ch[k]));
        failed |= global(g, SLUICE_BEGIN_RUN, 1, 0, NULL);
        uint64_t ev = 0;
        for (uint32_t lumi = 1; ev < cfg.events && !failed; lumi++) {
            batch_lumi = lumi;
            batch_end = ev + cfg.lumi_events < cfg.events ? ev + cfg.lumi_events : cfg.events;
            atomic_store(&next_event, ev);
            failed |= global(g, SLUICE_BEGIN_LUMI, 1, lumi, NULL);
            for (uint32_t i = 0; i < cfg.streams; i++)
                pthread_create(&th[i], NULL, ctrl_stream, &s[i]);
            for (uint32_t i = 0; i < cfg.streams; i++) {
                pthread_join(th[i], NULL);
                failed |= s[i].failed;
            }
            /* A failed event was left open: its lumi could not end (the end
             * would wait for it until the deadline). Closing tells the sources. */
            if (failed)
                break;
            ev = atomic_load(&done_events);
            failed |= global(g, SLUICE_END_LUMI, 1, lumi, NULL);
            printf("  sluice   %6llu / %u events  %8.0f events/s\n", (unsigned long long)ev,
                   cfg.events, (double)ev / (now_s() - t0));
            fflush(stdout);
        }
        if (!failed) {
            failed |= global(g, SLUICE_END_RUN, 1, 0, NULL);
            demo_verdict_t v = { .checked = atomic_load(&done_events) };
            failed |= global(g, SLUICE_END_JOB, 0, 0, &v);
        }
        for (uint32_t k = 0; k < n_ch; k++)
            failed |= sluice_progress_stop(ch[k]) != SLUICE_OK;
        sluice_group_stats(g, NULL, per, n_ch);
        for (uint32_t i = 0; i < cfg.streams; i++) {
            memcpy(lat + r->events, s[i].latency, s[i].n * sizeof(double));
            r->events += s[i].n;
            r->bytes += s[i].bytes;
            free(s[i].latency);
            sem_destroy(&s[i].result);
        }
    } else {
        failed |= src_run(g, r, per);
    }
    r->seconds = now_s() - t0;
    summarise(lat, cfg.is_ctrl ? r->events : 0, r); /* latencies are the controller's */
    if (n_ch > 1) {
        printf("  %s-%d: events per %s:", cfg.is_ctrl ? "controller" : "source", cfg.me,
               cfg.is_ctrl ? "source" : "controller");
        for (uint32_t k = 0; k < n_ch; k++)
            printf(" %llu", (unsigned long long)per[k]);
        printf("\n");
        fflush(stdout);
    }
    free(per);
    free(lat);
    free(s);
    free(th);
    sluice_group_destroy(g);
    for (uint32_t k = 0; k < n_ch; k++)
        failed |= sluice_channel_close(ch[k]) != SLUICE_OK;
    free(ch);
    return failed;
}

/* ------------------------------------------------------------ two-sided MPI, same work */

typedef struct mpi_meta {
    uint64_t event;      /* UINT64_MAX: end */
    uint64_t count;
    uint64_t bytes;
} mpi_meta_t;

typedef struct mpi_stream {
    MPI_Comm comm;
    int peer;
    uint32_t stream;
    double *latency;
    uint64_t n, bytes;
    int failed;
} mpi_stream_t;

static void *mpi_ctrl_stream(void *arg)
{
    mpi_stream_t *s = arg;
    uint32_t nclus = cfg.raw_words / WORDS_PER_CLUSTER;
    size_t rbytes;
    sluice_type_bytes(T_CLUSTERS, nclus, &rbytes);
    uint32_t *raw = aligned_alloc(4096, cfg.raw_words * 4u);
    char *result = aligned_alloc(4096, (rbytes + 4095) & ~(size_t)4095);
    float *e = malloc(nclus * 4u), *p = malloc(nclus * 4u);
    uint32_t *id = malloc(nclus * 4u);
    int tag = (int)s->stream * 2;
    for (;;) {
        uint64_t ev = atomic_fetch_add(&next_event, 1);
        if (ev >= cfg.events)
            break;
        double t0 = now_s();
        mpi_meta_t m = { ev, cfg.raw_words, cfg.raw_words * 4u };
        /* As the seeds' sender does: metadata, then the payload. */
        make_raw(raw, cfg.raw_words, ev);
        MPI_Send(&m, sizeof m, MPI_BYTE, s->peer, tag, s->comm);
        MPI_Send(raw, (int)m.bytes, MPI_BYTE, s->peer, tag + 1, s->comm);
        MPI_Recv(&m, sizeof m, MPI_BYTE, s->peer, tag, s->comm, MPI_STATUS_IGNORE);
        MPI_Recv(result, (int)m.bytes, MPI_BYTE, s->peer, tag + 1, s->comm, MPI_STATUS_IGNORE);
        s->latency[s->n++] = now_s() - t0;
        s->bytes += cfg.raw_words * 4u + m.bytes;
        reconstruct(raw, cfg.raw_words, e, p, id);
        size_t off[3];
        if (m.count != nclus || cols(nclus, off) || memcmp(result + off[0], e, nclus * 4) ||
            memcmp(result + off[2], id, nclus * 4)) {
            fprintf(stderr, "controller: two-sided result of event %llu is wrong\n",
                    (unsigned long long)ev);
            s->failed = 1;
            break;
        }
    }
    mpi_meta_t end = { UINT64_MAX, 0, 0 };
    MPI_Send(&end, sizeof end, MPI_BYTE, s->peer, tag, s->comm);
    free(raw), free(result), free(e), free(p), free(id);
    return NULL;
}

static void *mpi_src_stream(void *arg)
{
    mpi_stream_t *s = arg;
    uint32_t *raw = aligned_alloc(4096, cfg.raw_words * 4u);
    size_t rbytes, off[3];
    uint32_t nclus = cfg.raw_words / WORDS_PER_CLUSTER;
    sluice_type_bytes(T_CLUSTERS, nclus, &rbytes);
    cols(nclus, off);
    char *result = aligned_alloc(4096, (rbytes + 4095) & ~(size_t)4095);
    int tag = (int)s->stream * 2;
    for (;;) {
        mpi_meta_t m;
        MPI_Recv(&m, sizeof m, MPI_BYTE, s->peer, tag, s->comm, MPI_STATUS_IGNORE);
        if (m.event == UINT64_MAX)
            break;
        MPI_Recv(raw, (int)m.bytes, MPI_BYTE, s->peer, tag + 1, s->comm, MPI_STATUS_IGNORE);
        reconstruct(raw, (uint32_t)m.count, (float *)(result + off[0]),
                    (float *)(result + off[1]), (uint32_t *)(result + off[2]));
        mpi_meta_t back = { m.event, nclus, rbytes };
        MPI_Send(&back, sizeof back, MPI_BYTE, s->peer, tag, s->comm);
        MPI_Send(result, (int)rbytes, MPI_BYTE, s->peer, tag + 1, s->comm);
        s->n++;
        s->bytes += m.bytes + rbytes;
    }
    free(raw), free(result);
    return NULL;
}

static int run_two_sided(sluice_context_t *ctx, demo_result_t *r)
{
    sluice_peer_info_t me, peer = { 0 };
    sluice_context_peer(ctx, sluice_context_rank(ctx), &me);
    for (int i = 0; i < sluice_context_size(ctx); i++) {
        sluice_context_peer(ctx, i, &peer);
        if (strcmp(peer.name, cfg.is_ctrl ? "source-0" : "controller-0") == 0)
            break;
    }
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    mpi_stream_t *s = calloc(cfg.streams, sizeof *s);
    pthread_t *th = calloc(cfg.streams, sizeof *th);
    atomic_store(&next_event, 0);
    double t0 = now_s();
    for (uint32_t i = 0; i < cfg.streams; i++) {
        s[i] = (mpi_stream_t){ .comm = comm, .peer = peer.rank, .stream = i,
                               .latency = calloc(cfg.events, sizeof(double)) };
        pthread_create(&th[i], NULL, cfg.is_ctrl ? mpi_ctrl_stream : mpi_src_stream, &s[i]);
    }
    int failed = 0;
    double *lat = calloc(cfg.events, sizeof *lat);
    for (uint32_t i = 0; i < cfg.streams; i++) {
        pthread_join(th[i], NULL);
        failed |= s[i].failed;
        memcpy(lat + r->events, s[i].latency, s[i].n * sizeof(double));
        r->events += s[i].n;
        r->bytes += s[i].bytes;
        free(s[i].latency);
    }
    r->seconds = now_s() - t0;
    summarise(lat, r->events, r);
    free(lat), free(s), free(th);
    MPI_Comm_free(&comm);
    return failed;
}

/* ------------------------------------------------------------ a source serving other jobs */

/*
 * --serve NAME: controllers started by other mpiexec commands (--connect
 * NAME) come and go while the source serves the ones it has. Each is a
 * two-rank context from sluice_service_accept with one channel, a member
 * of a source group that starts empty. One thread takes the next item of
 * any member (src_event for its events, as in a job) and, between items,
 * lets in the next controller at the door. A member leaves at its end of
 * job, when it closes or dies, or when serving it fails; the service goes
 * on until --clients controllers came and went, or until SIGINT/SIGTERM.
 */

/* ------------------------------------------------------------ main */

static int parse(int argc, char **argv)
{
    /* A job's process starts with its role; --serve and --connect are options. */
    int role = argc >= 2 && (!strcmp(argv[1], "controller") || !strcmp(argv[1], "source"));
    int i = role ? 2 : 1;
    cfg.is_ctrl = role && strcmp(argv[1], "controller") == 0;
    for (; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--serve") || !strcmp(argv[i], "--connect")) {
            if (role || cfg.mode != DEMO_JOB)
                return -1; /* a role and a service, or two services */
            cfg.mode = !strcmp(argv[i], "--serve") ? DEMO_SERVE : DEMO_CONNECT;
            cfg.is_ctrl = cfg.mode == DEMO_CONNECT;
            cfg.service = argv[i + 1];
            continue;
        }
        if (!strcmp(argv[i], "--mpi-threads")) {
            /* serialized: for osc/pt2pt (TCP clusters), which refuses multiple */
            if (!strcmp(argv[i + 1], "serialized"))
                cfg.mpi_threads = MPI_THREAD_SERIALIZED;
            else if (strcmp(argv[i + 1], "multiple"))
                return -1;
            continue;
        }
        if (!strcmp(argv[i], "--dispatch")) {
            const char *d = argv[i + 1];
            cfg.dispatch = !strcmp(d, "rr")       ? SLUICE_DISPATCH_ROUND_ROBIN
                           : !strcmp(d, "affine") ? SLUICE_DISPATCH_STREAM_AFFINE
                           : !strcmp(d, "least")  ? SLUICE_DISPATCH_LEAST_LOADED
                                                  : 0;
            if (!cfg.dispatch)
                return -1;
            continue;
        }
        long v = atol(argv[i + 1]);
        if (v <= 0)
            return -1;
        if (!strcmp(argv[i], "--events"))
            cfg.events = (uint32_t)v;
        else if (!strcmp(argv[i], "--streams"))
            cfg.streams = (uint32_t)v;
        else if (!strcmp(argv[i], "--raw-kib"))
            cfg.raw_words = (uint32_t)v * 256u;
        else if (!strcmp(argv[i], "--lumi-events"))
            cfg.lumi_events = (uint32_t)v;
        else if (!strcmp(argv[i], "--sources") && v <= 64)
            cfg.sources = (uint32_t)v;
        else if (!strcmp(argv[i], "--controllers") && v <= 64)
            cfg.controllers = (uint32_t)v;
        else if (!strcmp(argv[i], "--clients"))
            cfg.clients = (uint32_t)v;
        else
            return -1;
    }
    if (i < argc)
        return -1; /* an option without its value */
    if (cfg.mode == DEMO_JOB)
        return role && !cfg.clients ? 0 : -1;
    /* One controller and one source per connection; --clients is the service's. */
    return cfg.sources == 1 && cfg.controllers == 1 && (cfg.mode == DEMO_SERVE || !cfg.clients)
               ? 0
               : -1;
}

static void print_row(const char *name, const demo_result_t *r)
{
    printf("  %-12s %8llu %8u %10.0f %9.1f %9.1f %9.1f %10.1f\n", name,
           (unsigned long long)r->events, cfg.streams, (double)r->events / r->seconds, r->p50,
           r->p90, r->p99, (double)r->bytes / (1 << 20));
}

/* The demo's product types: RAW words one way, cluster SoA the other. */
static int make_types(sluice_registry_t **reg_p)
{
    static const sluice_column_t clusters[] = { { "energy", 4, 64 }, { "position", 4, 64 },
                                                { "id", 4, 64 } };
    static const sluice_type_desc_t raw = { .size = sizeof raw, .name = "demo::RawWords",
                                            .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 4,
                                            .align = 4 };
    static const sluice_type_desc_t soa = { .size = sizeof soa, .name = "demo::ClusterSoA",
                                            .layout = SLUICE_LAYOUT_SOA, .columns = clusters,
                                            .n_columns = 3 };
    sluice_registry_t *reg;
    if (sluice_registry_create(&reg))
        return 1;
    if (sluice_registry_add(reg, &raw, &T_RAW) || sluice_registry_add(reg, &soa, &T_CLUSTERS)) {
        sluice_registry_destroy(reg);
        return 1;
    }
    *reg_p = reg;
    return 0;
}

/*
 * Controllers and sources of one context run the demo, then the two-sided
 * comparison (one pair in one job), and controller 0 prints the table and
 * the verdict. Collective over MPI_COMM_WORLD: in one job every process
 * calls it; a --connect controller is alone in its job.
 */
static int run_demo(sluice_context_t *ctx, int provided)
{
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* The two-sided comparison runs one MPI-calling thread per stream, one pair. */
    int compare = cfg.mode == DEMO_JOB && provided >= MPI_THREAD_MULTIPLE && size == 2;
    if (cfg.is_ctrl && cfg.me == 0) {
        if (cfg.mode == DEMO_CONNECT)
            printf("sluice demo: a controller of service \"%s\", %u events of %u KiB RAW on "
                   "%u streams\n",
                   cfg.service, cfg.events, cfg.raw_words / 256u, cfg.streams);
        else
            printf("sluice demo: %u controller(s) and %u source(s), %u events per controller "
                   "of %u KiB RAW on %u streams\n",
                   cfg.controllers, cfg.sources, cfg.events, cfg.raw_words / 256u, cfg.streams);
    }
    demo_result_t rs = { 0 }, rm = { 0 };
    int failed = run_sluice(ctx, &rs);
    MPI_Barrier(MPI_COMM_WORLD);
    if (!failed && compare) {
        if (cfg.is_ctrl)
            printf("  two-sided MPI, the same work ...\n");
        failed |= run_two_sided(ctx, &rm);
    } else if (!failed && cfg.is_ctrl && cfg.me == 0) {
        if (cfg.mode == DEMO_CONNECT)
            printf("  two-sided comparison skipped: it runs with the source in the same job\n");
        else if (size == 2)
            printf("  two-sided comparison skipped: it needs MPI_THREAD_MULTIPLE, MPI gave "
                   "level %d\n", provided);
        else
            printf("  two-sided comparison skipped: it runs with one controller and one "
                   "source\n");
    }
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    /* One table, a row per controller, printed in turn. */
    if (cfg.is_ctrl && cfg.me == 0)
        printf("\n  %-12s %8s %8s %10s %9s %9s %9s %10s\n", "transport", "events", "streams",
               "events/s", "p50 us", "p90 us", "p99 us", "MiB moved");
    for (uint32_t c = 0; c < cfg.controllers; c++) {
        if (cfg.is_ctrl && cfg.me == (int)c) {
            char row[32];
            snprintf(row, sizeof row, cfg.controllers > 1 ? "sluice c%u" : "sluice", c);
            print_row(row, &rs);
            fflush(stdout);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    if (cfg.is_ctrl && cfg.me == 0) {
        if (compare) {
            print_row("two-sided", &rm);
            printf("  sluice/two-sided: %.2fx the event rate, p50 latency %.2fx\n",
                   (rs.events / rs.seconds) / (rm.events / rm.seconds), rs.p50 / rm.p50);
        }
        printf("%s: every result checked against the controller's own reconstruction\n",
               any ? "FAILED" : "OK");
    }
    return any;
}

int main(int argc, char **argv)
{
    int bad_args = parse(argc, argv);
    int provided;
    MPI_Init_thread(&argc, &argv, cfg.mpi_threads, &provided);
    if (bad_args) {
        fprintf(stderr, "usage: sluice-demo controller|source [--events N] [--streams S] "
                        "[--raw-kib K] [--lumi-events L] [--sources N] [--controllers M] "
                        "[--dispatch rr|affine|least] [--mpi-threads multiple|serialized]\n"
                        "       sluice-demo --serve NAME [--clients N] [--streams S] "
                        "[--raw-kib K] [--mpi-threads ...]\n"
                        "       sluice-demo --connect NAME [--events N] [--streams S] "
                        "[--raw-kib K] [--lumi-events L] [--mpi-threads ...]\n");
        MPI_Finalize();
        return 2;
    }
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    cfg.me = cfg.mode != DEMO_JOB ? 0 : cfg.is_ctrl ? rank : rank - (int)cfg.controllers;
    if (cfg.mode != DEMO_JOB && size != 1) {
        fprintf(stderr, "sluice-demo: --serve and --connect run one process per job "
                        "(mpiexec -n 1); this job has %d\n", size);
        MPI_Finalize();
        return 2;
    }
    if (cfg.mode == DEMO_JOB && ((uint32_t)size != cfg.controllers + cfg.sources || cfg.me < 0 ||
                                 (cfg.is_ctrl && cfg.me >= (int)cfg.controllers))) {
        fprintf(stderr, "sluice-demo: the job needs --controllers (%u) controllers first, then "
                        "--sources (%u) sources; it has %d ranks\n",
                cfg.controllers, cfg.sources, size);
        MPI_Finalize();
        return 2;
    }
    const char *role = cfg.is_ctrl ? "controller" : "source";
    sluice_registry_t *reg;
    if (make_types(&reg)) {
        fprintf(stderr, "%s: set-up failed: %s\n", role, sluice_last_error());
        MPI_Finalize();
        return 1;
    }
    int failed;
    if (cfg.mode == DEMO_SERVE) {
        failed = serve();
    } else {
        /* A job's processes share one context; a --connect controller gets
         * its context from the service, with the source rank 1. */
        char name[32];
        snprintf(name, sizeof name, "%s-%d", role, cfg.me);
        sluice_context_t *ctx;
        int rc = cfg.mode == DEMO_CONNECT
                     ? sluice_service_connect(cfg.service, name, NULL, &ctx)
                     : sluice_context_create(MPI_COMM_WORLD, name, &ctx);
        if (rc != SLUICE_OK) {
            fprintf(stderr, "%s: %s failed: %s (%s)\n", role,
                    cfg.mode == DEMO_CONNECT ? "sluice_service_connect" : "sluice_context_create",
                    sluice_strerror(rc), sluice_last_error());
            failed = 1;
        } else {
            failed = run_demo(ctx, provided);
            sluice_context_destroy(ctx);
        }
    }
    sluice_registry_destroy(reg);
    MPI_Finalize();
    return failed;
}
