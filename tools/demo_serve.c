/* SPDX-License-Identifier: MIT */
/*
 * The demo's --serve mode: a source that controllers of other jobs connect
 * to by name (docs/service.md). Each controller that comes is one more
 * member of the source's group; one that ends, closes or dies leaves it,
 * and the others are served on.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/service.h>

#include "demo.h"

typedef struct demo_client {
    sluice_context_t *ctx; /* NULL: no controller at this member index */
    sluice_channel_t *ch;
    uint32_t number;     /* 1, 2, ... in the order they came */
    int pid;
    uint64_t events;     /* served */
} demo_client_t;

typedef struct demo_service {
    sluice_service_t *svc;
    sluice_group_t *group;
    demo_client_t *client; /* by member index (indices are reused) */
    size_t n_client;
    uint32_t came, gone, ok, live;
    uint64_t events;
} demo_service_t;

#define DEMO_KNOCK_S 0.05     /* how often a busy source looks for a controller at the door */
#define DEMO_IDLE_MS 200u     /* how long an idle one waits for one, between signal checks */

static volatile sig_atomic_t stop_serving;
static void on_stop(int sig) { (void)sig, stop_serving = 1; }

/* Member `m` leaves: out of the group, its channel closed (which tells its
 * controller, if still there) and its context destroyed. `v` is what the
 * controller said at its end of job; NULL: it left before, for `why`. */
static void serve_leave(demo_service_t *sv, size_t m, const demo_verdict_t *v, const char *why)
{
    demo_client_t *c = &sv->client[m];
    sluice_group_remove(sv->group, c->ch);
    sluice_channel_close(c->ch);
    sluice_context_destroy(c->ctx);
    /* Every event served came back checked: the two sides agree on the count. */
    int ok = v && v->checked == c->events;
    if (v)
        printf("  controller %u (pid %d) done: %llu events served, %llu results checked by it: "
               "%s\n", c->number, c->pid, (unsigned long long)c->events,
               (unsigned long long)v->checked, ok ? "OK" : "FAILED");
    else
        printf("  controller %u (pid %d) left after %llu events: %s\n", c->number, c->pid,
               (unsigned long long)c->events, why);
    fflush(stdout);
    sv->ok += (uint32_t)ok;
    sv->gone++;
    sv->live--;
    sv->events += c->events;
    *c = (demo_client_t){ 0 };
}

/* Let in the controller at the door, if one knocks within `wait_ms`: its
 * context, its channel, a member of the group. 0 also when none came or
 * its channel did not open (it was told, and left); 1 if the service broke. */
static int serve_admit(demo_service_t *sv, uint32_t wait_ms)
{
    sluice_context_t *ctx;
    int rc = sluice_service_accept(sv->svc, "source-0", wait_ms, &ctx);
    if (rc == SLUICE_ETIMEDOUT || rc == SLUICE_EAGAIN)
        return 0;
    if (rc != SLUICE_OK) {
        fprintf(stderr, "source: sluice_service_accept failed: %s (%s)\n", sluice_strerror(rc),
                sluice_last_error());
        return 1;
    }
    sluice_peer_info_t peer = { 0 };
    sluice_context_peer(ctx, 0, &peer); /* the controller is rank 0 */
    uint32_t number = ++sv->came;
    sluice_channel_t *ch;
    size_t m;
    if (open_channels(ctx, &ch, 1)) { /* it said why (a --streams that differs, say) */
        sluice_context_destroy(ctx);
        sv->gone++;
        printf("  controller %u (pid %d) could not open its channel: sent away\n", number,
               peer.pid);
        return 0;
    }
    if ((rc = sluice_group_add(sv->group, ch, &m)) != SLUICE_OK) {
        fprintf(stderr, "source: sluice_group_add failed: %s (%s)\n", sluice_strerror(rc),
                sluice_last_error());
        sluice_channel_close(ch);
        sluice_context_destroy(ctx);
        sv->gone++;
        return 0;
    }
    if (m >= sv->n_client) {
        demo_client_t *more = realloc(sv->client, (m + 1) * sizeof *more);
        if (!more) {
            sluice_group_remove(sv->group, ch);
            sluice_channel_close(ch);
            sluice_context_destroy(ctx);
            sv->gone++;
            return 1;
        }
        memset(more + sv->n_client, 0, (m + 1 - sv->n_client) * sizeof *more);
        sv->client = more;
        sv->n_client = m + 1;
    }
    sv->client[m] = (demo_client_t){ .ctx = ctx, .ch = ch, .number = number, .pid = peer.pid };
    sv->live++;
    printf("  controller %u (pid %d) connected; channel transport: %s (path %s)\n", number,
           peer.pid, sluice_channel_transport(ch), sluice_channel_path(ch));
    fflush(stdout);
    return 0;
}

/* One item of any member: its event served, or the member gone. 1 if the group broke. */
static int serve_item(demo_service_t *sv)
{
    sluice_item_t it;
    size_t m;
    int rc = sluice_group_next(sv->group, 0, &it, &m);
    if (rc == SLUICE_ETIMEDOUT)
        return 0; /* nothing within the group's short timeout: look at the door again */
    if (rc == SLUICE_EPEERCLOSED || rc == SLUICE_EPEERDEAD) {
        serve_leave(sv, m, NULL, rc == SLUICE_EPEERDEAD ? "it died" : "it closed its channel");
        return 0;
    }
    if (rc != SLUICE_OK) { /* SLUICE_EOF too: a member that ended leaves at its END_JOB */
        fprintf(stderr, "source: sluice_group_next failed: %s (%s)\n", sluice_strerror(rc),
                sluice_last_error());
        return 1;
    }
    uint64_t bytes = 0;
    if (it.transition.kind == SLUICE_EVENT) {
        if (src_event(it.token.channel, &it.token, &bytes))
            serve_leave(sv, m, NULL, "serving its event failed");
        else
            sv->client[m].events++;
    } else if (it.transition.kind == SLUICE_END_JOB) {
        demo_verdict_t v;
        if (it.transition.aux_size == sizeof v) {
            memcpy(&v, it.transition.aux, sizeof v);
            serve_leave(sv, m, &v, NULL);
        } else {
            serve_leave(sv, m, NULL, "it ended without saying what it checked");
        }
    }
    return 0; /* runs and lumis: nothing to do in this demo */
}

int serve(void)
{
    struct sigaction sa = { .sa_handler = on_stop }; /* no SA_RESTART: waits end early */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    demo_service_t sv = { 0 };
    DEMO_CHECK(sluice_service_open(cfg.service, NULL, &sv.svc));
    /* A short group timeout: an idle source looks at the door every 50 ms. */
    sluice_group_desc_t gd = { .size = sizeof gd, .role = SLUICE_SOURCE,
                               .timeout_ms = (uint32_t)(DEMO_KNOCK_S * 1000) };
    int rc = sluice_group_create(&gd, &sv.group);
    if (rc != SLUICE_OK) {
        fprintf(stderr, "source: sluice_group_create failed: %s (%s)\n", sluice_strerror(rc),
                sluice_last_error());
        sluice_service_close(sv.svc);
        return 1;
    }
    char host[MPI_MAX_PROCESSOR_NAME];
    int hn;
    MPI_Get_processor_name(host, &hn);
    printf("sluice demo: serving \"%s\" on %s (pid %d), %u streams of %u KiB RAW; ",
           cfg.service, host, (int)getpid(), cfg.streams, cfg.raw_words / 256u);
    if (cfg.clients)
        printf("stops after %u controller(s)\n", cfg.clients);
    else
        printf("until interrupted\n");
    fflush(stdout);
    int failed = 0;
    double knock_at = 0;
    while (!stop_serving && !failed && !(cfg.clients && sv.gone >= cfg.clients)) {
        if ((!cfg.clients || sv.came < cfg.clients) && (sv.live == 0 || now_s() >= knock_at)) {
            failed = serve_admit(&sv, sv.live ? 0 : DEMO_IDLE_MS);
            knock_at = now_s() + DEMO_KNOCK_S;
        } else if (sv.live) {
            failed = serve_item(&sv);
        }
    }
    /* The name first, so that no controller knocks at a door closing. */
    sluice_service_close(sv.svc);
    for (size_t m = 0; m < sv.n_client; m++)
        if (sv.client[m].ctx)
            serve_leave(&sv, m, NULL, stop_serving ? "the service was interrupted"
                                                    : "the service failed");
    sluice_group_destroy(sv.group);
    free(sv.client);
    failed |= sv.ok != sv.gone;
    if (sv.gone)
        printf("%s: every result checked against the controller's own reconstruction "
               "(%u of %u controller(s) OK, %llu events served)\n",
               failed ? "FAILED" : "OK", sv.ok, sv.gone, (unsigned long long)sv.events);
    else
        printf("%s: no controller came\n", failed ? "FAILED" : "done");
    return failed;
}
