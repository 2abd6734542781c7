/* SPDX-License-Identifier: MIT */
/* The HLT demonstrator's client (docs/hlt.md): stream threads offloading events through a group,
 * the early filter, the checks of every returned collection, and the lumi driver. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hlt.h"

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

int client_run(sluice_channel_t **ch, hlt_report_t *r)
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
