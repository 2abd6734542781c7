/* SPDX-License-Identifier: MIT */
/* The HLT demonstrator's server (docs/hlt.md): one thread taking every client's items, workers
 * doing the offloaded part of each event, and the fault mode's death. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "hlt.h"

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

int server_run(sluice_channel_t **ch, hlt_report_t *r)
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
