/* SPDX-License-Identifier: MIT */
/*
 * Groups: C controllers and S sources in one MPMD job, every controller with
 * a channel to every source. Controllers dispatch events through a
 * controller group, sources take items through a source group; an oracle
 * checks that every event is answered exactly once, by a source, to the
 * controller that sent it, that each controller's transitions reach each
 * source in order, and what each case is named for (the policy's choice,
 * balance, cancellation counts, re-dispatch after a source is killed).
 *
 *   mpiexec -n C grouptest controller CASE C S : -n S grouptest source CASE C S
 *
 * SLUICE_TEST_MIXED=1: channels to source 0 use shared memory, the others
 * RMA (otherwise SLUICE_TRANSPORT or the default applies).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>
#include <sluice/group.h>
#include <sluice/sluice.h>

#define EVENTS_PER_LUMI 40u
#define IN 1u                 /* controller -> source: the event number */
#define OUT 2u                /* source -> controller: what the source made of it */

static const char *role = "?";
static int me;                /* index among the controllers or among the sources */
static int n_ctrl, n_src;
static const char *case_name;
static const sluice_type_t *T;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "[%s %d] %s:%d: ", role, me, __FILE__, __LINE__);                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        return 1;                                                                                  \
    } while (0)
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAIL(__VA_ARGS__);                                                                     \
    } while (0)
#define OK(expr)                                                                                   \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != SLUICE_OK)                                                                      \
            FAIL("%s = %s: %s", #expr, sluice_strerror(rc_), sluice_last_error());                 \
    } while (0)

/* What a case changes of the common run. */
typedef struct plan {
    sluice_dispatch_t dispatch;
    sluice_group_on_loss_t on_loss;
    uint32_t events;          /* per controller */
    uint32_t window;          /* events a controller keeps in flight (its own streams) */
    uint32_t src_streams;     /* streams of each channel */
    int slow;                 /* source that works 4x longer, or -1 */
    unsigned cancel_pct;      /* events cancelled, in percent */
    int victim;               /* source killed after `victim_after` events, or -1 */
    uint32_t victim_after;
    int victim_ctrl;          /* controller killed after `victim_after` events, or -1 */
    uint32_t threads;         /* controller sends from this many threads, blocking */
    int resume;               /* a transition is refused part-way and resumed */
    int stuck;                /* source that stops for 3 s on its 10th event, or -1 */
    uint32_t event_timeout_ms; /* the group's per-event deadline */
    int roles;                /* by role: source s serves instances 1 + 2s (in) and 2 + 2s (out) */
} plan_t;

static uint32_t in_of(const plan_t *p, int s) { return p->roles ? IN + 2u * (uint32_t)s : IN; }
static uint32_t out_of(const plan_t *p, int s) { return p->roles ? OUT + 2u * (uint32_t)s : OUT; }

/* Some rank of the job dies: no collective at the end. */
static int someone_dies(const plan_t *p) { return p->victim >= 0 || p->victim_ctrl >= 0; }

static int plan_for(const char *name, plan_t *p)
{
    *p = (plan_t){ .dispatch = SLUICE_DISPATCH_ROUND_ROBIN, .events = 240, .window = 8,
                   .src_streams = 4, .slow = -1, .victim = -1, .victim_ctrl = -1, .stuck = -1 };
    if (!strcmp(name, "round_robin") || !strcmp(name, "topology"))
        return 0;
    if (!strcmp(name, "stream_affine")) {
        p->dispatch = SLUICE_DISPATCH_STREAM_AFFINE;
        return 0;
    }
    if (!strcmp(name, "least_loaded")) {
        p->dispatch = SLUICE_DISPATCH_LEAST_LOADED;
        p->slow = n_src - 1;
        p->events = 300;
        p->window = 12;
        return 0;
    }
    if (!strcmp(name, "callback")) {
        p->dispatch = SLUICE_DISPATCH_CALLBACK;
        return 0;
    }
    if (!strcmp(name, "few_streams")) {
        p->dispatch = SLUICE_DISPATCH_LEAST_LOADED;
        p->window = 16;
        p->src_streams = 2;
        return 0;
    }
    if (!strcmp(name, "threads")) { /* 4 threads, blocking, fewer member streams than them */
        p->dispatch = SLUICE_DISPATCH_LEAST_LOADED;
        p->threads = 4;
        p->src_streams = 1;
        return 0;
    }
    if (!strcmp(name, "controller_lost")) {
        p->victim_ctrl = n_ctrl - 1;
        p->victim_after = 30;
        return 0;
    }
    if (!strcmp(name, "stuck")) {
        p->dispatch = SLUICE_DISPATCH_LEAST_LOADED;
        p->stuck = 1;
        p->event_timeout_ms = 1000;
        return 0;
    }
    if (!strcmp(name, "by_role")) {
        p->dispatch = SLUICE_DISPATCH_BY_ROLE;
        p->roles = 1;
        p->events = 120;
        return 0;
    }
    if (!strcmp(name, "resume")) {
        p->resume = 1;
        p->events = 0;
        return 0;
    }
    if (!strcmp(name, "cancel")) {
        p->cancel_pct = 10;
        p->events = 400;
        return 0;
    }
    if (!strcmp(name, "source_killed") || !strcmp(name, "source_killed_fail_back")) {
        p->dispatch = SLUICE_DISPATCH_LEAST_LOADED;
        p->on_loss = name[13] ? SLUICE_GROUP_FAIL_BACK : SLUICE_GROUP_REDISPATCH;
        p->victim = 1;
        p->victim_after = 30;
        return 0;
    }
    return -1;
}

/* The answer a source gives for an event of controller `c`. */
static uint64_t answer(int c, uint64_t ev) { return (ev * 2654435761u) ^ ((uint64_t)c << 48); }

static int open_channel(sluice_context_t *ctx, int c, int s, const plan_t *p,
                        sluice_channel_t **ch_p)
{
    sluice_endpoint_t ctrl_eps[2], src_eps[2];
    ctrl_eps[0] = (sluice_endpoint_t){ in_of(p, s), SLUICE_SEND, T };
    ctrl_eps[1] = (sluice_endpoint_t){ out_of(p, s), SLUICE_RECEIVE, T };
    src_eps[0] = (sluice_endpoint_t){ in_of(p, s), SLUICE_RECEIVE, T };
    src_eps[1] = (sluice_endpoint_t){ out_of(p, s), SLUICE_SEND, T };
    char name[64], ctrl[32], src[32];
    snprintf(name, sizeof name, "group-c%d-s%d", c, s);
    snprintf(ctrl, sizeof ctrl, "controller-%d", c);
    snprintf(src, sizeof src, "source-%d", s);
    sluice_options_t o;
    sluice_options_init(&o);
    o.timeout_ms = 20000;
    o.arena_bytes = 1u << 16;
    o.max_sleep_us = 100;
    if (sluice_options_from_env(&o) != SLUICE_OK)
        FAIL("bad SLUICE_* environment: %s", sluice_last_error());
    if (p->resume && s == 1)
        o.global_depth = 4; /* fills up first: the transition stops part-way */
    const char *mixed = getenv("SLUICE_TEST_MIXED");
    if (mixed && *mixed == '1')
        o.transport = s == 0 ? SLUICE_TRANSPORT_SHM : SLUICE_TRANSPORT_RMA;
    int ctrl_side = strcmp(role, "controller") == 0;
    sluice_channel_desc_t d = { .size = sizeof d, .name = name,
                                .role = ctrl_side ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = ctrl_side ? src : ctrl, .streams = p->src_streams,
                                .endpoints = ctrl_side ? ctrl_eps : src_eps, .n_endpoints = 2,
                                .options = &o };
    OK(sluice_channel_open(ctx, &d, ch_p));
    return 0;
}

/*
 * Counts of both sides, summed over the job (outside sluice) and checked by
 * everyone: every event a controller sent was taken by exactly one source;
 * each taken event was answered or seen cancelled; every answer a controller
 * read was sent; a cancelled event was seen cancelled or answered too late.
 */
enum { SENT, READ, CANCELLED, TAKEN, ANSWERED, SEEN_CANCELLED, N_COUNTS };

static int cross_check(uint64_t v[N_COUNTS])
{
    MPI_Allreduce(MPI_IN_PLACE, v, N_COUNTS, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    CHECK(v[TAKEN] == v[SENT] && v[ANSWERED] + v[SEEN_CANCELLED] == v[TAKEN] &&
              v[READ] <= v[ANSWERED] && v[SEEN_CANCELLED] <= v[CANCELLED] &&
              v[READ] + v[CANCELLED] == v[SENT],
          "sent %llu taken %llu answered %llu read %llu cancelled %llu seen cancelled %llu",
          (unsigned long long)v[SENT], (unsigned long long)v[TAKEN],
          (unsigned long long)v[ANSWERED], (unsigned long long)v[READ],
          (unsigned long long)v[CANCELLED], (unsigned long long)v[SEEN_CANCELLED]);
    return 0;
}

/* ------------------------------------------------------------ controller */

static int pick_last_free(void *arg, uint32_t stream, const sluice_transition_t *ev,
                          const sluice_member_load_t *m, size_t n)
{
    (void)stream;
    (void)arg;
    /* Odd events to the last live member, even ones to the first: a choice no
     * built-in policy makes, so the oracle can tell the callback decided. */
    size_t want = (ev->event & 1) ? n - 1 : 0;
    return m[want].alive ? (int)want : SLUICE_EAGAIN;
}

typedef struct slot {
    bool busy;
    uint64_t ev;
    sluice_token_t tok;
} slot_t;

typedef struct tally {
    uint32_t *answers;        /* per event: answers received */
    int *by;                  /* per event: the member that answered */
    uint64_t done, cancelled, local, redispatched, given_up;
} tally_t;

static int send_input(sluice_token_t *tok, uint64_t ev)
{
    return sluice_product_send(tok, IN, &ev, sizeof ev, sizeof ev, 0);
}

/* The event of `sl` was lost with its member: re-dispatch it or run it here. */
static int lost_event(sluice_group_t *g, slot_t *sl, const plan_t *p, tally_t *t)
{
    sluice_token_t fresh;
    int rc = sluice_group_redispatch(g, &sl->tok, 0, &fresh);
    if (p->on_loss == SLUICE_GROUP_FAIL_BACK) {
        CHECK(rc == SLUICE_EPEERDEAD, "fail-back re-dispatch returned %s", sluice_strerror(rc));
        t->answers[sl->ev]++; /* run locally */
        t->by[sl->ev] = -1;
        t->local++;
        t->done++;
        sl->busy = false;
        return 0;
    }
    OK(rc);
    t->redispatched++;
    sl->tok = fresh;
    rc = send_input(&sl->tok, sl->ev);
    if (rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED)
        return lost_event(g, sl, p, t);
    OK(rc);
    return 0;
}

static int take_answer(sluice_group_t *g, slot_t *sl, const plan_t *p, tally_t *t, bool *moved)
{
    sluice_view_t v;
    int rc = sluice_product_receive(&sl->tok, OUT, SLUICE_NONBLOCK, &v);
    if (rc == SLUICE_EAGAIN && p->event_timeout_ms && sluice_group_overdue(g, &sl->tok) == 1) {
        /* Its source is alive but stuck on it: run it elsewhere. */
        sluice_token_t fresh;
        size_t stuck_on;
        OK(sluice_group_member_of(g, sl->tok.channel, &stuck_on));
        OK(sluice_group_give_up(g, &sl->tok, 0, &fresh));
        size_t now_on;
        OK(sluice_group_member_of(g, fresh.channel, &now_on));
        CHECK(now_on != stuck_on, "event %llu given up on member %zu went back to it",
              (unsigned long long)sl->ev, stuck_on);
        CHECK(sluice_group_give_up(g, &sl->tok, 0, &fresh) == SLUICE_EINVAL,
              "the old token of a moved event was given up twice");
        t->given_up++;
        sl->tok = fresh;
        OK(send_input(&sl->tok, sl->ev));
        *moved = true;
        return 0;
    }
    if (rc == SLUICE_EAGAIN)
        return 0;
    *moved = true;
    if (rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED) {
        CHECK(p->victim >= 0, "event %llu: %s although no source was killed",
              (unsigned long long)sl->ev, sluice_strerror(rc));
        return lost_event(g, sl, p, t);
    }
    OK(rc);
    uint64_t got[3];
    CHECK(v.bytes == sizeof got, "answer of %zu bytes", v.bytes);
    memcpy(got, v.data, sizeof got);
    OK(sluice_view_release(sl->tok.channel, &v));
    size_t member;
    OK(sluice_group_member_of(g, sl->tok.channel, &member));
    CHECK(got[0] == sl->ev && got[1] == answer(me, sl->ev) && got[2] == member,
          "event %llu: answer (%llu, %llx, source %llu) is not ours (member %zu)",
          (unsigned long long)sl->ev, (unsigned long long)got[0], (unsigned long long)got[1],
          (unsigned long long)got[2], member);
    rc = sluice_event_finish(&sl->tok);
    CHECK(rc == SLUICE_OK || (p->victim >= 0 && (rc == SLUICE_EPEERDEAD)),
          "finish: %s", sluice_strerror(rc));
    t->answers[sl->ev]++;
    t->by[sl->ev] = (int)member;
    t->done++;
    sl->busy = false;
    return 0;
}

static int check_choice(const plan_t *p, uint64_t ev, uint32_t stream, int member)
{
    if (p->dispatch == SLUICE_DISPATCH_ROUND_ROBIN)
        CHECK(member == (int)((ev - 1) % (uint64_t)n_src),
              "round robin sent event %llu to member %d", (unsigned long long)ev, member);
    if (p->dispatch == SLUICE_DISPATCH_STREAM_AFFINE)
        CHECK(member == (int)(stream % (uint32_t)n_src),
              "stream-affine sent stream %u's event to member %d", stream, member);
    if (p->dispatch == SLUICE_DISPATCH_CALLBACK)
        CHECK(member == ((ev & 1) ? n_src - 1 : 0), "the callback's choice was not followed");
    return 0;
}

static int controller(sluice_context_t *ctx, const plan_t *p)
{
    sluice_channel_t **ch = calloc((size_t)n_src, sizeof *ch);
    for (int s = 0; s < n_src; s++)
        if (open_channel(ctx, me, s, p, &ch[s]))
            return 1;
    sluice_group_desc_t d = { .size = sizeof d, .members = ch, .n_members = (size_t)n_src,
                              .dispatch = p->dispatch, .fn = pick_last_free,
                              .on_loss = p->on_loss, .timeout_ms = 20000,
                              .event_timeout_ms = p->event_timeout_ms };
    sluice_group_t *g;
    OK(sluice_group_create(&d, &g));
    CHECK(sluice_group_create(&d, &g) == SLUICE_EBUSY, "a channel joined two groups");

    tally_t t = { .answers = calloc(p->events + 1, sizeof(uint32_t)),
                  .by = calloc(p->events + 1, sizeof(int)) };
    slot_t *slot = calloc(p->window, sizeof *slot);
    unsigned seed = 12345u + (unsigned)me;
    sluice_transition_t tr = { .kind = SLUICE_BEGIN_RUN, .run = 1 };
    OK(sluice_group_transition_send(g, &tr, 0));
    uint32_t lumi = 0, ended = 0; /* lumis begun, lumis ended */
    uint64_t held_back = 0;       /* END_LUMIs the group held back */
    uint64_t next = 1;
    while (t.done + t.cancelled < p->events) {
        bool moved = false;
        /* A lumi ends once its events are done: the group holds the END_LUMI
         * back until then, so try it without waiting. */
        while (ended + 1 < lumi) {
            tr = (sluice_transition_t){ .kind = SLUICE_END_LUMI, .run = 1, .lumi = ended + 1 };
            int rc = sluice_group_transition_send(g, &tr, SLUICE_NONBLOCK);
            if (rc == SLUICE_EAGAIN) {
                held_back++;
                break;
            }
            OK(rc);
            ended++;
            /* Held back until then: none of the lumi's events is in flight. */
            for (uint32_t k = 0; k < p->window; k++)
                CHECK(!slot[k].busy || (slot[k].ev - 1) / EVENTS_PER_LUMI + 1 != ended,
                      "lumi %u ended while its event %llu is in flight", ended,
                      (unsigned long long)slot[k].ev);
        }
        for (uint32_t k = 0; k < p->window && next <= p->events; k++) {
            slot_t *sl = &slot[k];
            if (sl->busy)
                continue;
            uint32_t want_lumi = (uint32_t)((next - 1) / EVENTS_PER_LUMI) + 1;
            if (want_lumi != lumi) {
                if (lumi > ended + 1)
                    break; /* two lumis open at most: wait for the older one to end */
                lumi = want_lumi;
                tr = (sluice_transition_t){ .kind = SLUICE_BEGIN_LUMI, .run = 1, .lumi = lumi };
                OK(sluice_group_transition_send(g, &tr, 0));
            }
            sluice_transition_t ev = { .kind = SLUICE_EVENT, .run = 1, .lumi = lumi,
                                       .event = next };
            int rc = sluice_group_event_send(g, k, &ev, SLUICE_NONBLOCK, &sl->tok);
            if (rc == SLUICE_EAGAIN)
                break; /* no member stream free (or the callback's member is busy) */
            OK(rc);
            size_t member;
            OK(sluice_group_member_of(g, sl->tok.channel, &member));
            if (p->victim < 0 && check_choice(p, next, k, (int)member))
                return 1;
            sl->busy = true;
            sl->ev = next++;
            moved = true;
            bool cancel_now = p->cancel_pct && (unsigned)rand_r(&seed) % 100 < p->cancel_pct / 2;
            if (cancel_now) { /* before its input went out */
                OK(sluice_group_cancel(g, &sl->tok));
                sl->busy = false;
                t.cancelled++;
                continue;
            }
            if (me == p->victim_ctrl && sl->ev == p->victim_after)
                raise(SIGKILL);
            rc = send_input(&sl->tok, sl->ev);
            if (rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED) {
                if (lost_event(g, sl, p, &t))
                    return 1;
                continue;
            }
            OK(rc);
        }
        for (uint32_t k = 0; k < p->window; k++) {
            slot_t *sl = &slot[k];
            if (!sl->busy)
                continue;
            if (p->cancel_pct && (unsigned)rand_r(&seed) % 1000 < 2) {
                /* Later in its life: at the source, or answered but not read. */
                int rc = sluice_group_cancel(g, &sl->tok);
                CHECK(rc == SLUICE_OK, "cancel: %s", sluice_strerror(rc));
                sl->busy = false;
                t.cancelled++;
                moved = true;
                continue;
            }
            if (take_answer(g, sl, p, &t, &moved))
                return 1;
        }
        if (!moved)
            usleep(20);
    }
    for (; ended < lumi; ended++) {
        tr = (sluice_transition_t){ .kind = SLUICE_END_LUMI, .run = 1, .lumi = ended + 1 };
        OK(sluice_group_transition_send(g, &tr, 0));
    }
    tr = (sluice_transition_t){ .kind = SLUICE_END_RUN, .run = 1 };
    OK(sluice_group_transition_send(g, &tr, 0));
    tr = (sluice_transition_t){ .kind = SLUICE_END_JOB };
    /* End of job needs every member stream finished: no stream stayed busy. */
    OK(sluice_group_transition_send(g, &tr, 0));

    sluice_group_stats_t gs;
    uint64_t *per = calloc((size_t)n_src, sizeof *per);
    sluice_group_stats(g, &gs, per, (size_t)n_src);
    uint64_t answered = 0;
    for (uint64_t ev = 1; ev <= p->events; ev++) {
        CHECK(t.answers[ev] <= 1, "event %llu answered %u times", (unsigned long long)ev,
              t.answers[ev]);
        answered += t.answers[ev];
    }
    CHECK(answered == t.done && t.done + t.cancelled == p->events,
          "answered %llu, done %llu, cancelled %llu of %u", (unsigned long long)answered,
          (unsigned long long)t.done, (unsigned long long)t.cancelled, p->events);
    CHECK(gs.cancelled == t.cancelled && gs.redispatched == t.redispatched + t.given_up &&
              gs.failed_back == t.local && gs.given_up == t.given_up,
          "group counts cancelled %llu redispatched %llu failed back %llu, ours %llu %llu %llu",
          (unsigned long long)gs.cancelled, (unsigned long long)gs.redispatched,
          (unsigned long long)gs.failed_back, (unsigned long long)t.cancelled,
          (unsigned long long)t.redispatched, (unsigned long long)t.local);
    CHECK(gs.events == p->events + t.redispatched + t.given_up, "group sent %llu events",
          (unsigned long long)gs.events);
    printf("[controller %d] %s: done %llu cancelled %llu re-dispatched %llu local %llu, "
           "END_LUMI held back %llu times; per source:",
           me, case_name, (unsigned long long)t.done, (unsigned long long)t.cancelled,
           (unsigned long long)t.redispatched, (unsigned long long)t.local,
           (unsigned long long)held_back);
    for (int s = 0; s < n_src; s++)
        printf(" %llu", (unsigned long long)per[s]);
    printf("; transports:");
    for (int s = 0; s < n_src; s++)
        printf(" %s", sluice_channel_transport(ch[s]));
    printf("\n");
    if (p->slow >= 0) {
        /* Round-robin would give it exactly a third. */
        CHECK(per[p->slow] * 3 < gs.events, "the 4x slower source got %llu of %llu events",
              (unsigned long long)per[p->slow], (unsigned long long)gs.events);
        for (int s = 0; s < n_src; s++) /* and fewer than every faster source */
            CHECK(s == p->slow || per[s] > per[p->slow],
                  "source %d got %llu events, the slow one %llu", s,
                  (unsigned long long)per[s], (unsigned long long)per[p->slow]);
    }
    if (p->victim >= 0) {
        CHECK(gs.members_lost == 1, "%u members lost", gs.members_lost);
        CHECK(t.redispatched + t.local > 0, "no event of the killed source was re-run");
        /* It answered the events it took before the one it died on, no more. */
        uint64_t by_victim = 0;
        for (uint64_t ev = 1; ev <= p->events; ev++)
            by_victim += t.by[ev] == p->victim;
        CHECK(by_victim < p->victim_after, "the killed source answered %llu events",
              (unsigned long long)by_victim);
    }
    if (p->stuck >= 0)
        CHECK(t.given_up > 0, "the stuck source's event was never given up");
    /* An event given up is cancelled on its first source. */
    uint64_t v[N_COUNTS] = { [SENT] = gs.events, [READ] = t.done - t.local,
                             [CANCELLED] = t.cancelled + t.given_up };
    if (!someone_dies(p) && cross_check(v))
        return 1;
    sluice_group_destroy(g);
    for (int s = 0; s < n_src; s++) {
        int rc = sluice_channel_close(ch[s]);
        CHECK(rc == SLUICE_OK || (s == p->victim && rc != SLUICE_OK), "close: %s",
              sluice_strerror(rc));
    }
    free(per);
    free(slot);
    free(t.answers);
    free(t.by);
    free(ch);
    printf("[controller %d] %s: ok\n", me, case_name);
    return 0;
}

/* Open the channels to every source and make the controller group. */
static int ctrl_setup(sluice_context_t *ctx, const plan_t *p, sluice_channel_t ***ch_p,
                      sluice_group_t **g_p)
{
    sluice_channel_t **ch = calloc((size_t)n_src, sizeof *ch);
    for (int s = 0; s < n_src; s++)
        if (open_channel(ctx, me, s, p, &ch[s]))
            return 1;
    sluice_group_desc_t d = { .size = sizeof d, .members = ch, .n_members = (size_t)n_src,
                              .dispatch = p->dispatch, .timeout_ms = 20000 };
    OK(sluice_group_create(&d, g_p));
    *ch_p = ch;
    return 0;
}

static int ctrl_global(sluice_group_t *g, sluice_transition_kind_t k, uint32_t run, uint32_t lumi,
                       unsigned flags)
{
    sluice_transition_t t = { .kind = k, .run = run, .lumi = lumi };
    return sluice_group_transition_send(g, &t, flags);
}

/* End of job, then the job-wide count check (the sources make it after their end of job). */
static int ctrl_teardown(sluice_group_t *g, sluice_channel_t **ch, uint64_t v[N_COUNTS])
{
    OK(ctrl_global(g, SLUICE_END_JOB, 0, 0, 0));
    if (cross_check(v))
        return 1;
    sluice_group_destroy(g);
    for (int s = 0; s < n_src; s++)
        OK(sluice_channel_close(ch[s]));
    free(ch);
    printf("[controller %d] %s: ok\n", me, case_name);
    return 0;
}

/* Several threads send at once, blocking, on more caller streams than member streams. */
typedef struct sender {
    sluice_group_t *g;
    uint32_t id;
    _Atomic uint64_t *next;
    uint64_t last;
    _Atomic uint32_t *answers;
    int failed;
} sender_t;

static int send_events(sender_t *t)
{
    for (;;) {
        uint64_t ev = atomic_fetch_add(t->next, 1);
        if (ev > t->last)
            return 0;
        sluice_transition_t e = { .kind = SLUICE_EVENT, .run = 1, .lumi = 1, .event = ev };
        sluice_token_t tok;
        OK(sluice_group_event_send(t->g, t->id, &e, 0, &tok)); /* waits for a free stream */
        OK(send_input(&tok, ev));
        sluice_view_t v;
        OK(sluice_product_receive(&tok, OUT, 0, &v));
        uint64_t got[3];
        CHECK(v.bytes == sizeof got, "answer of %zu bytes", v.bytes);
        memcpy(got, v.data, sizeof got);
        size_t member;
        OK(sluice_group_member_of(t->g, tok.channel, &member));
        CHECK(got[0] == ev && got[1] == answer(me, ev) && got[2] == member,
              "event %llu: answer is not ours", (unsigned long long)ev);
        OK(sluice_view_release(tok.channel, &v));
        OK(sluice_event_finish(&tok));
        atomic_fetch_add(&t->answers[ev], 1);
    }
}

static void *sender_main(void *arg)
{
    sender_t *t = arg;
    t->failed = send_events(t);
    return NULL;
}

static int controller_threads(sluice_context_t *ctx, const plan_t *p)
{
    sluice_channel_t **ch;
    sluice_group_t *g;
    if (ctrl_setup(ctx, p, &ch, &g))
        return 1;
    OK(ctrl_global(g, SLUICE_BEGIN_RUN, 1, 0, 0));
    OK(ctrl_global(g, SLUICE_BEGIN_LUMI, 1, 1, 0));
    _Atomic uint64_t next = 1;
    _Atomic uint32_t *answers = calloc(p->events + 1, sizeof *answers);
    sender_t t[16];
    pthread_t th[16];
    for (uint32_t i = 0; i < p->threads; i++) {
        t[i] = (sender_t){ .g = g, .id = i, .next = &next, .last = p->events, .answers = answers };
        pthread_create(&th[i], NULL, sender_main, &t[i]);
    }
    int failed = 0;
    for (uint32_t i = 0; i < p->threads; i++) {
        pthread_join(th[i], NULL);
        failed |= t[i].failed;
    }
    CHECK(!failed, "a sending thread failed");
    for (uint64_t ev = 1; ev <= p->events; ev++)
        CHECK(answers[ev] == 1, "event %llu answered %u times", (unsigned long long)ev,
              (unsigned)answers[ev]);
    free(answers);
    OK(ctrl_global(g, SLUICE_END_LUMI, 1, 1, 0));
    OK(ctrl_global(g, SLUICE_END_RUN, 1, 0, 0));
    sluice_group_stats_t gs;
    sluice_group_stats(g, &gs, NULL, 0);
    CHECK(gs.events == p->events, "group sent %llu events", (unsigned long long)gs.events);
    uint64_t v[N_COUNTS] = { [SENT] = p->events, [READ] = p->events };
    return ctrl_teardown(g, ch, v);
}

/*
 * A transition stopped part-way: the channel to source 1 has a global ring
 * of 4 and no source reads yet, so a lumi's begin or end is taken by source
 * 0 and refused by source 1. Another transition is then SLUICE_EBUSY; the
 * same one, once the sources read, goes on from source 1. The sources check
 * that each saw every transition once, in order.
 */
static int controller_resume(sluice_context_t *ctx, const plan_t *p)
{
    sluice_channel_t **ch;
    sluice_group_t *g;
    if (ctrl_setup(ctx, p, &ch, &g))
        return 1;
    OK(ctrl_global(g, SLUICE_BEGIN_RUN, 1, 0, 0));
    uint32_t lumi = 1;
    sluice_transition_kind_t k = SLUICE_BEGIN_LUMI;
    int rc;
    for (;;) {
        rc = ctrl_global(g, k, 1, lumi, SLUICE_NONBLOCK);
        if (rc != SLUICE_OK)
            break;
        if (k == SLUICE_END_LUMI)
            lumi++;
        k = k == SLUICE_BEGIN_LUMI ? SLUICE_END_LUMI : SLUICE_BEGIN_LUMI;
        CHECK(lumi < 100, "the small ring never filled up");
    }
    CHECK(rc == SLUICE_EAGAIN, "stuck with %s, not SLUICE_EAGAIN", sluice_strerror(rc));
    CHECK(ctrl_global(g, SLUICE_END_RUN, 1, 0, SLUICE_NONBLOCK) == SLUICE_EBUSY,
          "another transition was accepted while one is half sent");
    MPI_Barrier(MPI_COMM_WORLD); /* the sources may read now */
    OK(ctrl_global(g, k, 1, lumi, 0)); /* the same one again: resumed */
    if (k == SLUICE_BEGIN_LUMI)
        OK(ctrl_global(g, SLUICE_END_LUMI, 1, lumi, 0));
    OK(ctrl_global(g, SLUICE_END_RUN, 1, 0, 0));
    sluice_group_stats_t gs;
    sluice_group_stats(g, &gs, NULL, 0);
    CHECK(gs.members_lost == 0, "a member was dropped");
    printf("[controller %d] resume: stopped part-way at %s of lumi %u\n", me,
           k == SLUICE_BEGIN_LUMI ? "the begin" : "the end", lumi);
    uint64_t v[N_COUNTS] = { 0 };
    return ctrl_teardown(g, ch, v);
}

/*
 * By role: every event goes to every source, each for its own instances;
 * the answers of all of them make the event.
 */
static int controller_roles(sluice_context_t *ctx, const plan_t *p)
{
    sluice_channel_t **ch;
    sluice_group_t *g;
    if (ctrl_setup(ctx, p, &ch, &g))
        return 1;
    sluice_transition_t e = { .kind = SLUICE_EVENT, .run = 1, .lumi = 1 };
    sluice_token_t tok;
    CHECK(sluice_group_event_send(g, 0, &e, 0, &tok) == SLUICE_EINVAL,
          "a by-role group sent an event to one member");
    OK(ctrl_global(g, SLUICE_BEGIN_RUN, 1, 0, 0));
    OK(ctrl_global(g, SLUICE_BEGIN_LUMI, 1, 1, 0));
    sluice_token_t *tokens = calloc((size_t)n_src, sizeof *tokens);
    for (uint64_t ev = 1; ev <= p->events; ev++) {
        e.event = ev;
        OK(sluice_group_event_send_roles(g, (uint32_t)ev, &e, 0, tokens));
        for (int s = 0; s < n_src; s++) {
            sluice_token_t *t = sluice_group_token_for(g, tokens, in_of(p, s));
            CHECK(t && t->channel == ch[s], "no token for source %d's input", s);
            OK(sluice_product_send(t, in_of(p, s), &ev, sizeof ev, sizeof ev, 0));
        }
        for (int s = 0; s < n_src; s++) {
            sluice_token_t *t = sluice_group_token_for(g, tokens, out_of(p, s));
            sluice_view_t v;
            OK(sluice_product_receive(t, out_of(p, s), 0, &v));
            uint64_t got[3];
            CHECK(v.bytes == sizeof got, "answer of %zu bytes", v.bytes);
            memcpy(got, v.data, sizeof got);
            CHECK(got[0] == ev && got[1] == answer(me, ev) && got[2] == (uint64_t)s,
                  "event %llu: source %d's part is not its own", (unsigned long long)ev, s);
            OK(sluice_view_release(t->channel, &v));
            OK(sluice_event_finish(t));
        }
    }
    free(tokens);
    OK(ctrl_global(g, SLUICE_END_LUMI, 1, 1, 0));
    OK(ctrl_global(g, SLUICE_END_RUN, 1, 0, 0));
    uint64_t per[8] = { 0 };
    sluice_group_stats(g, NULL, per, 8);
    for (int s = 0; s < n_src && s < 8; s++)
        CHECK(per[s] == p->events, "source %d got %llu events", s, (unsigned long long)per[s]);
    uint64_t n = (uint64_t)p->events * (uint64_t)n_src;
    uint64_t v[N_COUNTS] = { [SENT] = n, [READ] = n };
    return ctrl_teardown(g, ch, v);
}

/* ------------------------------------------------------------ source */

/* One controller's transitions as a source saw them; lumis (ended, begun] are open. */
typedef struct order {
    int state;                /* 0 none, 1 run open, 3 run ended, 4 job ended */
    uint32_t begun, ended;
    int lost;                 /* the group reported this controller lost */
} order_t;

static int source(sluice_context_t *ctx, const plan_t *p)
{
    sluice_channel_t **ch = calloc((size_t)n_ctrl, sizeof *ch);
    for (int c = 0; c < n_ctrl; c++)
        if (open_channel(ctx, c, me, p, &ch[c]))
            return 1;
    sluice_group_desc_t d = { .size = sizeof d, .members = ch, .n_members = (size_t)n_ctrl };
    sluice_group_t *g;
    OK(sluice_group_create(&d, &g));
    order_t *ord = calloc((size_t)n_ctrl, sizeof *ord);
    uint64_t taken = 0, answered = 0, cancelled = 0;
    if (p->resume)
        MPI_Barrier(MPI_COMM_WORLD); /* read nothing until the controller got stuck */
    useconds_t work = me == p->slow ? 800 : 200;
    for (;;) {
        sluice_item_t it;
        size_t c;
        int rc = sluice_group_next(g, 0, &it, &c);
        if (rc == SLUICE_EOF)
            break;
        if ((rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED) && (int)c == p->victim_ctrl) {
            CHECK(!ord[c].lost, "controller %zu reported lost twice", c);
            ord[c].lost = 1;
            continue;
        }
        OK(rc);
        order_t *o = &ord[c];
        const sluice_transition_t *tr = &it.transition;
        switch (tr->kind) {
        case SLUICE_BEGIN_RUN:
            CHECK(o->state == 0, "controller %zu: BEGIN_RUN in state %d", c, o->state);
            o->state = 1;
            break;
        case SLUICE_BEGIN_LUMI:
            CHECK(o->state == 1 && tr->lumi == o->begun + 1,
                  "controller %zu: BEGIN_LUMI %u in state %d after lumi %u", c, tr->lumi,
                  o->state, o->begun);
            o->begun = tr->lumi;
            break;
        case SLUICE_END_LUMI:
            CHECK(o->state == 1 && tr->lumi == o->ended + 1 && tr->lumi <= o->begun,
                  "controller %zu: END_LUMI %u (begun %u, ended %u)", c, tr->lumi, o->begun,
                  o->ended);
            o->ended = tr->lumi;
            break;
        case SLUICE_END_RUN:
            CHECK(o->state == 1 && o->ended == o->begun, "controller %zu: END_RUN in state %d "
                  "with lumis %u..%u open", c, o->state, o->ended + 1, o->begun);
            o->state = 3;
            break;
        case SLUICE_END_JOB:
            CHECK(o->state == 3, "controller %zu: END_JOB in state %d", c, o->state);
            o->state = 4;
            break;
        case SLUICE_EVENT: {
            CHECK(o->state == 1 && tr->lumi > o->ended && tr->lumi <= o->begun,
                  "controller %zu: event %llu of lumi %u while lumis %u..%u are open", c,
                  (unsigned long long)tr->event, tr->lumi, o->ended + 1, o->begun);
            taken++;
            if (me == p->victim && taken == p->victim_after)
                raise(SIGKILL);
            sluice_view_t v;
            rc = sluice_product_receive(&it.token, in_of(p, me), 0, &v);
            if (rc == SLUICE_OK) {
                uint64_t ev;
                CHECK(v.bytes == sizeof ev, "input of %zu bytes", v.bytes);
                memcpy(&ev, v.data, sizeof ev);
                OK(sluice_view_release(it.token.channel, &v));
                CHECK(ev == tr->event, "input %llu for event %llu", (unsigned long long)ev,
                      (unsigned long long)tr->event);
                usleep(work);
                if (me == p->stuck && taken == 10)
                    sleep(3); /* alive, but stuck: the controller gives up on it */
                uint64_t out[3] = { ev, answer((int)c, ev), (uint64_t)me };
                rc = sluice_product_send(&it.token, out_of(p, me), out, sizeof out, sizeof out, 0);
            }
            if (rc == SLUICE_ECANCELED)
                cancelled++;
            else if (rc == SLUICE_OK)
                answered++;
            else if ((rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED) &&
                     (int)c == p->victim_ctrl)
                ; /* its controller died while we worked on it */
            else
                FAIL("event %llu: %s: %s", (unsigned long long)tr->event, sluice_strerror(rc),
                     sluice_last_error());
            rc = sluice_event_finish(&it.token);
            CHECK(rc == SLUICE_OK || rc == SLUICE_EALREADY ||
                      ((int)c == p->victim_ctrl && (rc == SLUICE_EPEERDEAD)),
                  "finish: %s", sluice_strerror(rc));
            break;
        }
        }
    }
    for (int c = 0; c < n_ctrl; c++)
        CHECK(c == p->victim_ctrl ? ord[c].lost && ord[c].state != 4 : ord[c].state == 4,
              "controller %d ended in state %d (reported lost: %d)", c, ord[c].state,
              ord[c].lost);
    printf("[source %d] %s: took %llu, answered %llu, saw %llu cancelled\n", me, case_name,
           (unsigned long long)taken, (unsigned long long)answered,
           (unsigned long long)cancelled);
    uint64_t v[N_COUNTS] = { [TAKEN] = taken, [ANSWERED] = answered, [SEEN_CANCELLED] = cancelled };
    if (!someone_dies(p) && cross_check(v))
        return 1;
    sluice_group_destroy(g);
    for (int c = 0; c < n_ctrl; c++) {
        int rc = sluice_channel_close(ch[c]);
        CHECK(rc == SLUICE_OK || c == p->victim_ctrl, "close: %s", sluice_strerror(rc));
    }
    free(ord);
    free(ch);
    printf("[source %d] %s: ok\n", me, case_name);
    return 0;
}

/*
 * After a rank of this job was killed, Open MPI 4.1's MPI_Finalize may wait
 * in its PMIx fence for the dead rank and never return (docs/design.md,
 * "Liveness"): MPI's, not sluice's. The survivors say so and leave.
 */
static void *watchdog(void *arg)
{
    (void)arg;
    struct timespec t = { 3, 0 }; /* the verdict is printed by then */
    nanosleep(&t, NULL);
    printf("[%s %d] MPI_Finalize did not return within 3 s after a death; leaving\n", role, me);
    fflush(stdout);
    _exit(0);
    return NULL;
}

static void finalize_watchdog(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, watchdog, NULL) == 0)
        pthread_detach(th);
}

static int register_type(sluice_registry_t **reg)
{
    sluice_type_desc_t d = { .size = sizeof d, .name = "grouptest::Bytes",
                             .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1, .align = 1 };
    OK(sluice_registry_create(reg));
    OK(sluice_registry_add(*reg, &d, &T));
    return 0;
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("SLUICE_TEST_MPI_THREADS");
    int want = lvl && !strcmp(lvl, "serialized") ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE;
    int provided, rank;
    MPI_Init_thread(&argc, &argv, want, &provided);
    if (argc < 5) {
        fprintf(stderr, "usage: grouptest controller|source CASE CONTROLLERS SOURCES\n");
        MPI_Finalize();
        return 2;
    }
    role = argv[1];
    case_name = argv[2];
    n_ctrl = atoi(argv[3]);
    n_src = atoi(argv[4]);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int is_ctrl = strcmp(role, "controller") == 0;
    me = is_ctrl ? rank : rank - n_ctrl;
    plan_t p;
    if (plan_for(case_name, &p) || n_ctrl < 1 || n_src < 1) {
        fprintf(stderr, "grouptest: unknown case %s or bad counts\n", case_name);
        MPI_Finalize();
        return 2;
    }
    char name[32];
    snprintf(name, sizeof name, "%s-%d", role, me);
    sluice_context_t *ctx;
    sluice_registry_t *reg = NULL;
    int rc = 1;
    if (sluice_context_create(MPI_COMM_WORLD, name, &ctx) != SLUICE_OK) {
        fprintf(stderr, "[%s] context: %s\n", name, sluice_last_error());
    } else {
        if (register_type(&reg) == 0)
            rc = !is_ctrl   ? source(ctx, &p)
                 : p.threads ? controller_threads(ctx, &p)
                 : p.resume  ? controller_resume(ctx, &p)
                 : p.roles   ? controller_roles(ctx, &p)
                             : controller(ctx, &p);
        sluice_registry_destroy(reg);
        sluice_context_destroy(ctx);
    }
    if (rc)
        MPI_Abort(MPI_COMM_WORLD, 1);
    if (someone_dies(&p))
        finalize_watchdog();
    MPI_Finalize();
    return rc;
}
