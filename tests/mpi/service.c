/* SPDX-License-Identifier: MIT */
/*
 * Services between separately launched jobs (include/sluice/service.h,
 * docs/service.md): one process per mpiexec, found through the name server
 * (or a port file). tests/mpi/service-jobs starts the jobs of each case.
 *
 *   servicetest source NAME N [--expect-left A] [--expect-lost B] [--die-after K]
 *       Serve NAME until N controllers have come and gone: each accepted
 *       controller's channel joins one source group; every event's input is
 *       checked and answered with the oracle's result. A left (closed
 *       before its end of job) and B lost (dead) controllers are expected.
 *       --die-after K: SIGKILL itself with its K-th event in hand.
 *   servicetest controller NAME EVENTS [--id I] [--leave-after K] [--die-after K]
 *                                      [--pause-at K FILE] [--reconnect]
 *       Connect as "controller-I", run EVENTS events and check every result.
 *       --leave-after K: once K results are in, take those still in flight and
 *       close the channel (no end of job: the source sees SLUICE_EPEERCLOSED).
 *       --die-after K: SIGKILL itself once the K-th event's input is sent.
 *       --pause-at K FILE: after K results wait (bounded) until FILE exists.
 *       --reconnect: when the source dies, connect again (to the source
 *       started next under the same name) and send what was not answered.
 *   servicetest expect-open NAME STATUS
 *   servicetest expect-connect NAME STATUS TIMEOUT_MS
 *       The call ends with STATUS (EBUSY, ENOTFOUND, ...); a connect within
 *       its timeout.
 *   servicetest knock NAME hello|hello-go
 *       A stranger: looks NAME's record up on the name server and knocks
 *       with a secret one bit off the record's (hello; or hello and go at
 *       once). The source must hang up without a word.
 *   servicetest fake-source NAME
 *       A source that answers one controller's hello with a real MPI port
 *       but never acknowledges its go (nor accepts), then waits until that
 *       controller hangs up.
 *
 * knock and fake-source speak the knock's wire format themselves (src/service.c,
 * docs/service.md "Protocol"): they are what a peer that is not sluice may do.
 *
 * Every product is checked zero copy: the channel's transport is "shm" and
 * both the reservation a side writes and the view it reads lie in a mapping
 * of a /dev/shm segment (sluice's own, unlinked once both sides mapped it).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>
#include <sluice/group.h>
#include <sluice/service.h>
#include <sluice/sluice.h>

#include "harness.h"

#define STREAMS 4u
#define IN 1u                 /* controller -> source: the event's input */
#define OUT 2u                /* source -> controller: the oracle's result */
#define PAUSE_MS 60000        /* longest wait for a --pause-at file */
#define IDLE_MS 60000         /* longest a source waits with nobody connected */
#define ACCEPT_SLACK_MS 1500  /* an accept that took nobody may overrun its wait by this */
#define KNOCK_MAGIC "SLKNOCK2"
enum { KNOCK_CONNECT = 1, KNOCK_GO = 3 };
#define KNOCK_MSG_BYTES 28    /* magic[8], kind (u32, network order), secret[16] */

/* ------------------------------------------------------------ the oracle */

/* Input of event `ev` of controller `id`: 1 to 5 KB, bytes both sides rebuild. */
#define IN_MAX_BYTES (1024 + 4 * 1000)
static size_t in_bytes(uint64_t ev) { return 1024 + (size_t)(ev % 5) * 1000; }
static uint64_t in_seed(uint32_t id, uint64_t ev) { return ((uint64_t)id << 40) ^ ev; }
/* Result: 2 to 3 KB, seeded by a function of the controller, the event and its input. */
#define OUT_MAX_BYTES (2048 + 2 * 512)
static size_t out_bytes(uint64_t ev) { return 2048 + (size_t)(ev % 3) * 512; }
static uint64_t oracle(uint32_t id, uint64_t ev, uint64_t input_sum)
{
    return (input_sum ^ (ev * 0x9e3779b97f4a7c15ull)) + ((uint64_t)id << 52) + 7;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/*
 * Zero copy means the bytes are read and written where they lie in shared
 * memory: the mapping that holds `addr` must be a /dev/shm segment
 * (/proc/self/maps shows it "(deleted)" once sluice has unlinked it).
 */
static bool in_dev_shm(const void *addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path_at) < 2 || !path_at)
            continue;
        if ((uintptr_t)addr >= lo && (uintptr_t)addr < hi)
            found = strncmp(line + path_at, "/dev/shm/", 9) == 0;
    }
    fclose(f);
    return found;
}

/* The endpoints of a service channel, seen from `role`. */
static void endpoints(sluice_role_t role, sluice_endpoint_t eps[2])
{
    bool ctrl = role == SLUICE_CONTROLLER;
    eps[0] = (sluice_endpoint_t){ IN, ctrl ? SLUICE_SEND : SLUICE_RECEIVE, T_BYTES };
    eps[1] = (sluice_endpoint_t){ OUT, ctrl ? SLUICE_RECEIVE : SLUICE_SEND, T_BYTES };
}

/* Open the channel of a service connection and check it is shared memory. */
static int open_service_channel(sluice_context_t *ctx, sluice_role_t role, const char *peer,
                                sluice_channel_t **ch_p)
{
    sluice_endpoint_t eps[2];
    endpoints(role, eps);
    sluice_options_t o = h_options();
    sluice_channel_desc_t d = { .size = sizeof d, .name = "service", .role = role, .peer = peer,
                                .streams = STREAMS, .endpoints = eps, .n_endpoints = 2,
                                .options = &o };
    H_OK(sluice_channel_open(ctx, &d, ch_p));
    const char *tp = sluice_channel_transport(*ch_p);
    if (strcmp(tp, "shm") != 0) {
        sluice_channel_close(*ch_p);
        H_FAIL("two jobs on one node use transport %s, not shm", tp);
    }
    return 0;
}

static bool is_loss(int rc) { return rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED; }

static const struct {
    const char *name;
    int code;
} statuses[] = {
    { "OK", SLUICE_OK },
    { "EOF", SLUICE_EOF },
    { "EBUSY", SLUICE_EBUSY },
    { "ENOTFOUND", SLUICE_ENOTFOUND },
    { "ETIMEDOUT", SLUICE_ETIMEDOUT },
    { "EINVAL", SLUICE_EINVAL },
    { "EPEERCLOSED", SLUICE_EPEERCLOSED },
    { "EPEERDEAD", SLUICE_EPEERDEAD },
};

/* The code of a status name ("EBUSY" or "SLUICE_EBUSY"), or 1 (no status) if unknown. */
static int status_named(const char *s)
{
    if (!strncmp(s, "SLUICE_", 7))
        s += 7;
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (!strcmp(s, statuses[i].name))
            return statuses[i].code;
    return 1;
}

/* "SLUICE_EBUSY" for SLUICE_EBUSY: the lines the driver looks for name the status. */
static const char *status_name(int code)
{
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i].code == code)
            return statuses[i].name;
    return "?";
}

/* ------------------------------------------------------------ source */

typedef struct member {
    sluice_context_t *ctx;
    sluice_channel_t *ch;
    uint32_t id;              /* the controller's, from its process name */
    int state;                /* 0 connected, 1 run open, 2 lumi open, 3 lumi ended, 4 run ended */
    uint64_t events;
    bool zero_copy_checked;
} member_t;

typedef struct source_args {
    const char *name;
    int n;                    /* controllers to serve */
    int expect_left, expect_lost;
    uint64_t die_after;
} source_args_t;

typedef struct source {
    sluice_service_t *svc;
    sluice_group_t *g;
    member_t m[64];           /* by member index */
    int active, most_active;
    int served, left, lost;
    uint64_t events;
    unsigned char *want;      /* an expected input, rebuilt */
} source_t;

static int admit(source_t *s, sluice_context_t *ctx)
{
    sluice_peer_info_t peer;
    H_OK(sluice_context_peer(ctx, 0, &peer));
    unsigned id;
    H_TRUE(sscanf(peer.name, "controller-%u", &id) == 1, "a peer named \"%s\"", peer.name);
    H_TRUE(sluice_context_size(ctx) == 2 && sluice_context_rank(ctx) == 1,
           "a service context of %d ranks, source rank %d", sluice_context_size(ctx),
           sluice_context_rank(ctx));
    sluice_channel_t *ch;
    H_DO(open_service_channel(ctx, SLUICE_SOURCE, peer.name, &ch));
    size_t i;
    H_OK(sluice_group_add(s->g, ch, &i));
    H_TRUE(i < sizeof s->m / sizeof s->m[0] && !s->m[i].ch, "member index %zu", i);
    s->m[i] = (member_t){ .ctx = ctx, .ch = ch, .id = id };
    s->active++;
    if (s->active > s->most_active)
        s->most_active = s->active;
    printf("source: controller-%u joined (pid %d) with %d other(s) connected\n", id, peer.pid,
           s->active - 1);
    fflush(stdout);
    return 0;
}

/* The member's controller went: closed after its end of job, left early, or died. */
static int dismiss(source_t *s, size_t i, int why)
{
    member_t *m = &s->m[i];
    H_OK(sluice_group_remove(s->g, m->ch));
    int rc = sluice_channel_close(m->ch);
    H_TRUE(rc == SLUICE_OK || why == SLUICE_EPEERDEAD, "close: %s", sluice_strerror(rc));
    sluice_context_destroy(m->ctx);
    const char *how = why == SLUICE_EOF ? "done" : why == SLUICE_EPEERCLOSED ? "left early"
                                                                            : "dead";
    printf("source: controller-%u %s after %llu events (%s%s)\n", m->id, how,
           (unsigned long long)m->events, why == SLUICE_EOF ? "end of job" : "SLUICE_",
           why == SLUICE_EOF ? "" : status_name(why));
    fflush(stdout);
    s->left += why == SLUICE_EPEERCLOSED;
    s->lost += why == SLUICE_EPEERDEAD;
    s->served++;
    s->active--;
    *m = (member_t){ 0 };
    return 0;
}

/* One event of member `i`: check its input, answer with the oracle's result. */
static int serve_event(source_t *s, const source_args_t *a, size_t i, sluice_item_t *it)
{
    member_t *m = &s->m[i];
    uint64_t ev = it->transition.event;
    H_TRUE(m->state == 2 && it->transition.run == m->id && it->transition.lumi == 1,
           "controller-%u: event %llu of run %u lumi %u in state %d", m->id,
           (unsigned long long)ev, it->transition.run, it->transition.lumi, m->state);
    m->events++;
    s->events++;
    sluice_view_t v;
    int rc = sluice_product_receive(&it->token, IN, 0, &v);
    if (is_loss(rc)) { /* the group reports the member next */
        sluice_event_finish(&it->token);
        return 0;
    }
    H_OK(rc);
    if (a->die_after && s->events == a->die_after) {
        printf("source: killing myself with event %llu of controller-%u in hand\n",
               (unsigned long long)ev, m->id);
        fflush(stdout);
        raise(SIGKILL);
    }
    size_t n = in_bytes(ev);
    H_TRUE(v.bytes == n, "controller-%u event %llu: input of %zu bytes, want %zu", m->id,
           (unsigned long long)ev, v.bytes, n);
    h_fill(s->want, n, in_seed(m->id, ev));
    H_TRUE(memcmp(v.data, s->want, n) == 0, "controller-%u event %llu: input damaged", m->id,
           (unsigned long long)ev);
    uint64_t sum = h_checksum(v.data, n);
    bool check = !m->zero_copy_checked;
    if (check)
        H_TRUE(in_dev_shm(v.data), "controller-%u: the input view is not in a /dev/shm mapping",
               m->id);
    H_OK(sluice_view_release(m->ch, &v));
    sluice_reservation_t r;
    rc = sluice_product_reserve(&it->token, OUT, out_bytes(ev), out_bytes(ev), 0, &r);
    if (rc == SLUICE_OK) {
        if (check)
            H_TRUE(in_dev_shm(r.data), "controller-%u: the result is not reserved in a /dev/shm "
                   "mapping", m->id);
        m->zero_copy_checked = true;
        h_fill(r.data, r.bytes, oracle(m->id, ev, sum));
        rc = sluice_product_commit(&it->token, &r);
    }
    if (!is_loss(rc))
        H_OK(rc);
    rc = sluice_event_finish(&it->token);
    H_TRUE(rc == SLUICE_OK || is_loss(rc), "finish: %s", sluice_strerror(rc));
    return 0;
}

/* A transition of member `i`, in the order one controller's run must have. */
static int serve_transition(source_t *s, size_t i, const sluice_transition_t *t)
{
    member_t *m = &s->m[i];
    static const int from[] = { [SLUICE_BEGIN_RUN] = 0, [SLUICE_BEGIN_LUMI] = 1,
                                [SLUICE_END_LUMI] = 2, [SLUICE_END_RUN] = 3, [SLUICE_END_JOB] = 4 };
    H_TRUE(t->kind >= SLUICE_BEGIN_RUN && t->kind <= SLUICE_END_JOB && t->kind != SLUICE_EVENT,
           "kind %d", t->kind);
    H_TRUE(m->state == from[t->kind], "controller-%u: transition %d in state %d", m->id, t->kind,
           m->state);
    H_TRUE(t->kind == SLUICE_END_JOB || t->run == m->id, "controller-%u: run %u", m->id, t->run);
    m->state++;
    if (t->kind == SLUICE_END_RUN) {
        uint64_t sent;
        H_TRUE(t->aux_size == sizeof sent, "END_RUN without the event count");
        memcpy(&sent, t->aux, sizeof sent);
        H_TRUE(sent == m->events, "controller-%u sent %llu events, %llu came", m->id,
               (unsigned long long)sent, (unsigned long long)m->events);
    }
    if (t->kind == SLUICE_END_JOB)
        return dismiss(s, i, SLUICE_EOF);
    return 0;
}

static int run_source(const source_args_t *a)
{
    source_t s = { 0 };
    s.want = malloc(IN_MAX_BYTES);
    H_TRUE(s.want, "malloc");
    H_OK(sluice_service_open(a->name, NULL, &s.svc));
    printf("source: serving %s\n", a->name);
    fflush(stdout);
    sluice_group_desc_t d = { .size = sizeof d, .role = SLUICE_SOURCE };
    H_OK(sluice_group_create(&d, &s.g));
    uint64_t idle_since = now_ms();
    while (s.served < a->n) {
        sluice_item_t it;
        size_t i = SIZE_MAX;
        int rc = s.active ? sluice_group_next(s.g, SLUICE_NONBLOCK, &it, &i) : SLUICE_EOF;
        /* Controllers may knock at any time: look at the door between items,
         * and wait there a little when no member has anything. */
        bool idle = rc == SLUICE_EAGAIN || rc == SLUICE_EOF;
        sluice_context_t *ctx;
        uint32_t wait_ms = idle ? (s.active ? 1 : 100) : 0;
        uint64_t t0 = now_ms();
        int arc = sluice_service_accept(s.svc, "source", wait_ms, &ctx);
        /* No controller taken: back within the wait, however strangers
         * knocked (one that says nothing gets at most a quarter second). */
        uint64_t took = now_ms() - t0;
        H_TRUE(arc == SLUICE_OK || took <= (wait_ms > 250 ? wait_ms : 250) + ACCEPT_SLACK_MS,
               "accept(%u ms) took %llu ms and took no controller (%s)", wait_ms,
               (unsigned long long)took, sluice_strerror(arc));
        if (arc == SLUICE_OK)
            H_DO(admit(&s, ctx));
        else if (arc != SLUICE_EAGAIN && arc != SLUICE_ETIMEDOUT)
            H_OK(arc);
        if (s.active || arc == SLUICE_OK)
            idle_since = now_ms();
        H_TRUE(now_ms() - idle_since < IDLE_MS, "no controller came for %d s", IDLE_MS / 1000);
        if (idle)
            continue;
        if (!is_loss(rc))
            H_OK(rc);
        H_TRUE(i < sizeof s.m / sizeof s.m[0] && s.m[i].ch, "an item of member %zu", i);
        if (is_loss(rc)) {
            H_DO(dismiss(&s, i, rc));
            continue;
        }
        if (it.transition.kind == SLUICE_EVENT)
            H_DO(serve_event(&s, a, i, &it));
        else
            H_DO(serve_transition(&s, i, &it.transition));
    }
    sluice_service_close(s.svc);
    sluice_group_destroy(s.g);
    free(s.want);
    H_TRUE(s.left == a->expect_left && s.lost == a->expect_lost,
           "%d controllers left early and %d died, expected %d and %d", s.left, s.lost,
           a->expect_left, a->expect_lost);
    printf("source: served %d controllers (%d left early, %d dead), %llu events, at most %d at "
           "once, transport shm, zero copy\n",
           s.served, s.left, s.lost, (unsigned long long)s.events, s.most_active);
    return 0;
}

/* ------------------------------------------------------------ controller */

typedef struct controller_args {
    const char *name;
    uint64_t events;
    uint32_t id;
    uint64_t leave_after, die_after, pause_at;
    const char *pause_file;
    bool reconnect;
} controller_args_t;

typedef struct slot {
    bool busy;
    uint64_t ev;
    uint64_t sum;             /* checksum of the input sent */
    sluice_token_t tok;
} slot_t;

typedef struct controller {
    const controller_args_t *a;
    unsigned char *done;      /* per event: its result was checked */
    uint64_t checked, sent_total;
    bool zero_copy_send, zero_copy_receive, paused;
} controller_t;

enum { RUN_DONE, RUN_LEFT, RUN_LOST };

static int send_global(sluice_channel_t *ch, sluice_transition_kind_t k, uint32_t run,
                       uint64_t count, int *lost_p)
{
    sluice_transition_t t = { .kind = k, .run = run };
    if (k == SLUICE_BEGIN_LUMI || k == SLUICE_END_LUMI)
        t.lumi = 1; /* one lumi per run */
    if (k == SLUICE_END_RUN) {
        t.aux_size = sizeof count;
        memcpy(t.aux, &count, sizeof count);
    }
    int rc = sluice_transition_send(ch, &t, 0);
    if (is_loss(rc)) {
        *lost_p = rc;
        return 0;
    }
    H_OK(rc);
    return 0;
}

/* Send event `ev` on `stream` with its input, written in place. */
static int send_event(controller_t *c, sluice_channel_t *ch, uint32_t stream, slot_t *sl,
                      uint64_t ev, int *lost_p)
{
    sluice_transition_t t = { .kind = SLUICE_EVENT, .run = c->a->id, .lumi = 1, .event = ev };
    int rc = sluice_event_send(ch, stream, &t, 0, &sl->tok);
    if (is_loss(rc)) {
        *lost_p = rc;
        return 0;
    }
    H_OK(rc);
    sl->busy = true;
    sl->ev = ev;
    sluice_reservation_t r;
    rc = sluice_product_reserve(&sl->tok, IN, in_bytes(ev), in_bytes(ev), 0, &r);
    if (rc == SLUICE_OK) {
        if (!c->zero_copy_send)
            H_TRUE(in_dev_shm(r.data), "the input is not reserved in a /dev/shm mapping");
        c->zero_copy_send = true;
        h_fill(r.data, r.bytes, in_seed(c->a->id, ev));
        sl->sum = h_checksum(r.data, r.bytes);
        rc = sluice_product_commit(&sl->tok, &r);
    }
    if (is_loss(rc)) {
        *lost_p = rc;
        return 0;
    }
    H_OK(rc);
    c->sent_total++;
    if (c->a->die_after && c->sent_total == c->a->die_after) {
        printf("controller-%u: killing myself with event %llu in flight\n", c->a->id,
               (unsigned long long)ev);
        fflush(stdout);
        raise(SIGKILL);
    }
    return 0;
}

/* Wait for the result of `sl`'s event and check it against the oracle, read in place. */
static int take_result(controller_t *c, slot_t *sl, unsigned char *want, int *lost_p)
{
    sluice_view_t v;
    int rc = sluice_product_receive(&sl->tok, OUT, 0, &v);
    if (is_loss(rc)) {
        *lost_p = rc;
        return 0;
    }
    H_OK(rc);
    size_t n = out_bytes(sl->ev);
    H_TRUE(v.bytes == n, "event %llu: result of %zu bytes, want %zu", (unsigned long long)sl->ev,
           v.bytes, n);
    h_fill(want, n, oracle(c->a->id, sl->ev, sl->sum));
    H_TRUE(memcmp(v.data, want, n) == 0, "event %llu: the result is not the oracle's",
           (unsigned long long)sl->ev);
    if (!c->zero_copy_receive)
        H_TRUE(in_dev_shm(v.data), "the result view is not in a /dev/shm mapping");
    c->zero_copy_receive = true;
    H_OK(sluice_view_release(sl->tok.channel, &v));
    rc = sluice_event_finish(&sl->tok);
    if (is_loss(rc)) {
        *lost_p = rc;
        return 0;
    }
    H_OK(rc);
    H_TRUE(!c->done[sl->ev], "event %llu answered twice", (unsigned long long)sl->ev);
    c->done[sl->ev] = 1;
    c->checked++;
    sl->busy = false;
    return 0;
}

static int pause_until_file(controller_t *c)
{
    printf("controller-%u: paused after %llu results, waiting for %s\n", c->a->id,
           (unsigned long long)c->checked, c->a->pause_file);
    fflush(stdout);
    uint64_t until = now_ms() + PAUSE_MS;
    while (access(c->a->pause_file, F_OK) != 0) {
        H_TRUE(now_ms() < until, "%s did not appear in %d s", c->a->pause_file, PAUSE_MS / 1000);
        usleep(10000);
    }
    c->paused = true;
    return 0;
}

/*
 * One connection: connect, open, run the events that have no checked result
 * yet. `*outcome_p`: RUN_DONE (end of job sent), RUN_LEFT (closed early on
 * purpose) or RUN_LOST (the source closed or died; `*why_p` says which).
 */
static int run_connection(controller_t *c, int *outcome_p, int *why_p)
{
    const controller_args_t *a = c->a;
    char me[32];
    snprintf(me, sizeof me, "controller-%u", a->id);
    sluice_context_t *ctx;
    H_OK(sluice_service_connect(a->name, me, NULL, &ctx));
    H_TRUE(sluice_context_size(ctx) == 2 && sluice_context_rank(ctx) == 0,
           "a service context of %d ranks, controller rank %d", sluice_context_size(ctx),
           sluice_context_rank(ctx));
    sluice_channel_t *ch;
    H_DO(open_service_channel(ctx, SLUICE_CONTROLLER, "source", &ch));
    printf("%s: connected to %s, transport %s\n", me, a->name, sluice_channel_transport(ch));
    fflush(stdout);
    slot_t sl[STREAMS] = { 0 };
    unsigned char *want = malloc(OUT_MAX_BYTES);
    H_TRUE(want, "malloc");
    int lost = 0;
    uint64_t sent = 0, next = 1;
    H_DO(send_global(ch, SLUICE_BEGIN_RUN, a->id, 0, &lost));
    if (!lost)
        H_DO(send_global(ch, SLUICE_BEGIN_LUMI, a->id, 0, &lost));
    for (;;) {
        if (lost)
            break;
        if (a->leave_after && c->checked >= a->leave_after)
            break;
        if (a->pause_at && !c->paused && c->checked >= a->pause_at)
            H_DO(pause_until_file(c));
        /* Every free stream gets the next event without a checked result. */
        for (uint32_t k = 0; k < STREAMS && !lost; k++) {
            while (next <= a->events && c->done[next])
                next++;
            if (sl[k].busy || next > a->events)
                continue;
            H_DO(send_event(c, ch, k, &sl[k], next++, &lost));
            sent += !lost;
        }
        /* Then the oldest result. */
        slot_t *oldest = NULL;
        for (uint32_t k = 0; k < STREAMS; k++)
            if (sl[k].busy && (!oldest || sl[k].ev < oldest->ev))
                oldest = &sl[k];
        if (!oldest || lost)
            break; /* nothing in flight and nothing to send: all done */
        H_DO(take_result(c, oldest, want, &lost));
    }
    *why_p = lost;
    if (lost) {
        *outcome_p = RUN_LOST;
        for (uint32_t k = 0; k < STREAMS; k++)
            if (sl[k].busy)
                sluice_event_finish(&sl[k].tok); /* the peer is gone: finished here all the same */
    } else if (a->leave_after && c->checked >= a->leave_after) {
        *outcome_p = RUN_LEFT; /* every event in flight was answered first */
        for (uint32_t k = 0; k < STREAMS; k++)
            while (sl[k].busy && !lost)
                H_DO(take_result(c, &sl[k], want, &lost));
        H_TRUE(!lost, "the source went while this controller was leaving");
    } else {
        *outcome_p = RUN_DONE;
        H_DO(send_global(ch, SLUICE_END_LUMI, a->id, 0, &lost));
        if (!lost)
            H_DO(send_global(ch, SLUICE_END_RUN, a->id, sent, &lost));
        if (!lost)
            H_DO(send_global(ch, SLUICE_END_JOB, 0, 0, &lost));
        if (lost) { /* the source went before the end of job: all checked, still lost */
            *outcome_p = RUN_LOST;
            *why_p = lost;
        }
    }
    free(want);
    int rc = sluice_channel_close(ch);
    sluice_context_destroy(ctx);
    H_TRUE(rc == SLUICE_OK || *outcome_p == RUN_LOST, "close: %s", sluice_strerror(rc));
    return 0;
}

static int run_controller(const controller_args_t *a)
{
    controller_t c = { .a = a, .done = calloc(a->events + 1, 1) };
    H_TRUE(c.done, "calloc");
    int reconnects = 0;
    for (;;) {
        int outcome, why;
        H_DO(run_connection(&c, &outcome, &why));
        if (outcome == RUN_LEFT) {
            printf("controller-%u: left after %llu results, all checked, transport shm, zero "
                   "copy\n",
                   a->id, (unsigned long long)c.checked);
            break;
        }
        if (outcome == RUN_DONE) {
            H_TRUE(c.checked == a->events, "%llu of %llu results checked",
                   (unsigned long long)c.checked, (unsigned long long)a->events);
            printf("controller-%u: all %llu results checked, transport shm, zero copy, "
                   "reconnected %d times\n",
                   a->id, (unsigned long long)a->events, reconnects);
            break;
        }
        printf("controller-%u: source lost (SLUICE_%s) after %llu results\n", a->id,
               status_name(why), (unsigned long long)c.checked);
        fflush(stdout);
        H_TRUE(a->reconnect && reconnects < 3, "the source went (%s)", sluice_strerror(why));
        reconnects++;
    }
    H_TRUE(c.zero_copy_send && c.zero_copy_receive, "no product went both ways");
    free(c.done);
    return 0;
}

/* ------------------------------------------------------------ expected failures */

static int expect_open(const char *name, int want)
{
    sluice_service_t *svc = NULL;
    int rc = sluice_service_open(name, NULL, &svc);
    if (rc == SLUICE_OK)
        sluice_service_close(svc);
    H_STATUS(rc, want);
    printf("expect-open: SLUICE_%s as expected: %s\n", status_name(rc), sluice_last_error());
    return 0;
}

static int expect_connect(const char *name, int want, uint32_t timeout_ms)
{
    sluice_service_options_t o = { .size = sizeof o, .timeout_ms = timeout_ms };
    sluice_context_t *ctx = NULL;
    uint64_t t0 = now_ms();
    int rc = sluice_service_connect(name, "controller-0", &o, &ctx);
    uint64_t took = now_ms() - t0;
    if (rc == SLUICE_OK)
        sluice_context_destroy(ctx);
    H_STATUS(rc, want);
    /* Bounded: no sooner than the deadline (it retries while the name may
     * still appear), and not much later. */
    H_TRUE(took + 50 >= timeout_ms && took <= timeout_ms + 2000,
           "gave up after %llu ms with a timeout of %u ms", (unsigned long long)took, timeout_ms);
    printf("expect-connect: SLUICE_%s after %llu ms (timeout %u ms): %s\n", status_name(rc),
           (unsigned long long)took, timeout_ms, sluice_last_error());
    return 0;
}

/* ------------------------------------------------------------ peers that are not sluice */

/* Errors of the name service come on MPI_COMM_WORLD or MPI_COMM_SELF. */
static void quiet_mpi(void)
{
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
}

static void knock_msg(unsigned char out[KNOCK_MSG_BYTES], uint32_t kind,
                      const unsigned char secret[16])
{
    uint32_t k = htonl(kind);
    memcpy(out, KNOCK_MAGIC, 8);
    memcpy(out + 8, &k, 4);
    memcpy(out + 12, secret, 16);
}

/* All of `len` bytes, waiting at most `ms` in all: 0, or -1. */
static int read_all(int fd, void *buf, size_t len, int ms)
{
    uint64_t until = now_ms() + (uint64_t)ms;
    char *p = buf;
    while (len) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        uint64_t now = now_ms();
        if (now >= until || poll(&pf, 1, (int)(until - now)) <= 0)
            return -1;
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* What the peer does within `ms`: >0 bytes it sent, 0 it hung up, -1 nothing. */
static ssize_t peer_does(int fd, int ms)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    if (poll(&pf, 1, ms) <= 0)
        return -1;
    char c[64];
    ssize_t n = recv(fd, c, sizeof c, 0);
    return n < 0 && errno == ECONNRESET ? 0 : n < 0 ? -1 : n;
}

/* A stranger that knows the name but not the secret (it is one bit off). */
static int knock_stranger(const char *name, bool with_go)
{
    quiet_mpi();
    char rec[MPI_MAX_PORT_NAME];
    H_TRUE(MPI_Lookup_name(name, MPI_INFO_NULL, rec) == MPI_SUCCESS, "%s is not published", name);
    unsigned version, port;
    char addrs[256], hex[40];
    H_TRUE(sscanf(rec, "sluice-service %u %*d %*s %*s %u %255s %39s", &version, &port, addrs,
                  hex) == 4 && version == 2 && strlen(hex) == 32,
           "a record of version 2: \"%s\"", rec);
    unsigned char secret[16];
    for (int i = 0; i < 16; i++)
        H_TRUE(sscanf(hex + 2 * i, "%2hhx", &secret[i]) == 1, "secret \"%s\"", hex);
    secret[15] ^= 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    addrs[strcspn(addrs, ",")] = '\0';
    H_TRUE(inet_pton(AF_INET, addrs, &sa.sin_addr) == 1, "address %s", addrs);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    H_TRUE(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to %s:%u: %s",
           addrs, port, strerror(errno));
    unsigned char m[2 * KNOCK_MSG_BYTES];
    knock_msg(m, KNOCK_CONNECT, secret);
    knock_msg(m + KNOCK_MSG_BYTES, KNOCK_GO, secret);
    size_t len = with_go ? 2 * KNOCK_MSG_BYTES : KNOCK_MSG_BYTES;
    H_TRUE(send(fd, m, len, MSG_NOSIGNAL) == (ssize_t)len, "send: %s", strerror(errno));
    uint64_t t0 = now_ms();
    ssize_t n = peer_does(fd, 5000);
    close(fd);
    H_TRUE(n <= 0, "the source answered a wrong secret (%zd bytes)", n);
    H_TRUE(n == 0, "the source neither answered nor hung up in 5 s");
    printf("knock: %s with a wrong secret: dropped without a word after %llu ms\n",
           with_go ? "hello and go" : "hello", (unsigned long long)(now_ms() - t0));
    return 0;
}

/* A source that takes one controller's go and never acknowledges it. */
static int fake_source(const char *name)
{
    quiet_mpi();
    char mpi_port[MPI_MAX_PORT_NAME];
    H_TRUE(MPI_Open_port(MPI_INFO_NULL, mpi_port) == MPI_SUCCESS, "MPI_Open_port");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    H_TRUE(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(l, 4) == 0 &&
               getsockname(l, (struct sockaddr *)&sa, &sl) == 0,
           "listen: %s", strerror(errno));
    unsigned char secret[16] = { 0x5a, 1, 2, 3 };
    char rec[256];
    snprintf(rec, sizeof rec, "sluice-service 2 %d 0 fake %u 127.0.0.1 5a010203%024x",
             (int)getpid(), (unsigned)ntohs(sa.sin_port), 0);
    H_TRUE(MPI_Publish_name(name, MPI_INFO_NULL, rec) == MPI_SUCCESS, "MPI_Publish_name");
    printf("fake-source: serving %s\n", name);
    fflush(stdout);
    struct pollfd pf = { .fd = l, .events = POLLIN };
    H_TRUE(poll(&pf, 1, 30000) == 1, "no controller knocked in 30 s");
    int fd = accept(l, NULL, NULL);
    H_TRUE(fd >= 0, "accept: %s", strerror(errno));
    unsigned char m[KNOCK_MSG_BYTES], want[KNOCK_MSG_BYTES];
    knock_msg(want, KNOCK_CONNECT, secret);
    H_TRUE(read_all(fd, m, sizeof m, 5000) == 0 && !memcmp(m, want, sizeof m), "a hello");
    uint32_t len = (uint32_t)strlen(mpi_port) + 1, nlen = htonl(len);
    unsigned char reply[12];
    memcpy(reply, KNOCK_MAGIC, 8);
    memcpy(reply + 8, &nlen, 4);
    H_TRUE(send(fd, reply, sizeof reply, MSG_NOSIGNAL) == (ssize_t)sizeof reply &&
               send(fd, mpi_port, len, MSG_NOSIGNAL) == (ssize_t)len,
           "reply: %s", strerror(errno));
    knock_msg(want, KNOCK_GO, secret);
    H_TRUE(read_all(fd, m, sizeof m, 5000) == 0 && !memcmp(m, want, sizeof m), "a go");
    uint64_t t0 = now_ms();
    ssize_t n = peer_does(fd, 30000);
    H_TRUE(n == 0, "the controller did not hang up in 30 s (%zd)", n);
    printf("fake-source: go received, not acknowledged; the controller hung up after %llu ms\n",
           (unsigned long long)(now_ms() - t0));
    close(fd);
    close(l);
    MPI_Unpublish_name(name, MPI_INFO_NULL, rec);
    MPI_Close_port(mpi_port);
    return 0;
}

/* ------------------------------------------------------------ main */

static int usage(void)
{
    fprintf(stderr, "usage: servicetest source NAME N [--expect-left A] [--expect-lost B] "
                    "[--die-after K]\n"
                    "       servicetest controller NAME EVENTS [--id I] [--leave-after K] "
                    "[--die-after K] [--pause-at K FILE] [--reconnect]\n"
                    "       servicetest expect-open NAME STATUS\n"
                    "       servicetest expect-connect NAME STATUS TIMEOUT_MS\n"
                    "       servicetest knock NAME hello|hello-go\n"
                    "       servicetest fake-source NAME\n");
    return 2;
}

static int run(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "fake-source"))
        return fake_source(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "knock") &&
        (!strcmp(argv[3], "hello") || !strcmp(argv[3], "hello-go")))
        return knock_stranger(argv[2], argv[3][5] == '-');
    if (argc < 4)
        return usage();
    const char *mode = argv[1], *name = argv[2];
    if (!strcmp(mode, "expect-open") || !strcmp(mode, "expect-connect")) {
        int want = status_named(argv[3]);
        if (want > 0 || (mode[7] == 'c' && argc < 5))
            return usage();
        return mode[7] == 'o' ? expect_open(name, want)
                              : expect_connect(name, want, (uint32_t)strtoul(argv[4], NULL, 10));
    }
    if (!strcmp(mode, "source")) {
        source_args_t a = { .name = name, .n = atoi(argv[3]) };
        for (int i = 4; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "--expect-left"))
                a.expect_left = atoi(argv[i + 1]);
            else if (!strcmp(argv[i], "--expect-lost"))
                a.expect_lost = atoi(argv[i + 1]);
            else if (!strcmp(argv[i], "--die-after"))
                a.die_after = strtoull(argv[i + 1], NULL, 10);
            else
                return usage();
        }
        return a.n > 0 ? run_source(&a) : usage();
    }
    if (!strcmp(mode, "controller")) {
        controller_args_t a = { .name = name, .events = strtoull(argv[3], NULL, 10) };
        for (int i = 4; i < argc; i++) {
            bool has = i + 1 < argc;
            if (!strcmp(argv[i], "--reconnect"))
                a.reconnect = true;
            else if (has && !strcmp(argv[i], "--id"))
                a.id = (uint32_t)strtoul(argv[++i], NULL, 10);
            else if (has && !strcmp(argv[i], "--leave-after"))
                a.leave_after = strtoull(argv[++i], NULL, 10);
            else if (has && !strcmp(argv[i], "--die-after"))
                a.die_after = strtoull(argv[++i], NULL, 10);
            else if (i + 2 < argc && !strcmp(argv[i], "--pause-at")) {
                a.pause_at = strtoull(argv[++i], NULL, 10);
                a.pause_file = argv[++i];
            } else
                return usage();
        }
        return a.events > 0 ? run_controller(&a) : usage();
    }
    return usage();
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("SLUICE_TEST_MPI_THREADS");
    int want = lvl && !strcmp(lvl, "serialized") ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE;
    int provided;
    MPI_Init_thread(&argc, &argv, want, &provided);
    h_role = argc > 1 ? argv[1] : "?";
    h_is_ctrl = argc > 1 && !strcmp(argv[1], "controller");
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The driver attributes /dev/shm segments (named after their owner's pid) by it. */
    printf("servicetest %s: pid %d\n", h_role, (int)getpid());
    int rc = h_types() ? 1 : run(argc, argv);
    sluice_registry_destroy(h_reg);
    MPI_Finalize();
    return rc;
}
