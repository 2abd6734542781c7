/* SPDX-License-Identifier: MIT */
/* The next-item call (sluice_source_next): one source thread over many streams, checked by an oracle. */
#include <stdbool.h>
#include <stdlib.h>

#include "harness.h"

enum { ITEM_STREAMS = 16, ITEM_RUNS = 2, ITEM_LUMIS = 4, ITEM_EVENTS = 40, ITEM_HELD = 8 };

static uint64_t item_event_number(uint32_t run, uint32_t lumi, uint32_t i)
{
    return (uint64_t)run * 1000000u + (uint64_t)lumi * 1000u + i;
}

/*
 * Controller: per run, lumis in pairs open at once (l and l+1 begin, their
 * events alternate over all streams, then both end); every event goes to
 * the next stream in turn.
 */
static int items_controller(sluice_channel_t *ch)
{
    uint32_t k = 0;
    for (uint32_t run = 1; run <= ITEM_RUNS; run++) {
        H_OK(h_send_global(ch, SLUICE_BEGIN_RUN, run, 0));
        for (uint32_t l = 1; l <= ITEM_LUMIS; l += 2) {
            H_OK(h_send_global(ch, SLUICE_BEGIN_LUMI, run, l));
            H_OK(h_send_global(ch, SLUICE_BEGIN_LUMI, run, l + 1));
            for (uint32_t i = 0; i < 2 * ITEM_EVENTS; i++) {
                uint32_t lumi = l + i % 2;
                sluice_transition_t t =
                    h_transition(SLUICE_EVENT, run, lumi, item_event_number(run, lumi, i / 2));
                sluice_token_t tok;
                H_OK(sluice_event_send(ch, k++ % ITEM_STREAMS, &t, 0, &tok));
                H_OK(sluice_event_finish(&tok));
            }
            H_OK(h_send_global(ch, SLUICE_END_LUMI, run, l));
            H_OK(h_send_global(ch, SLUICE_END_LUMI, run, l + 1));
        }
        H_OK(h_send_global(ch, SLUICE_END_RUN, run, 0));
    }
    H_OK(h_send_global(ch, SLUICE_END_JOB, 0, 0));
    return 0;
}

/* What the source has seen so far, checked at every item. */
typedef struct items_oracle {
    uint32_t run;                       /* open run, 0 if none */
    bool lumi_open[ITEM_LUMIS + 1];
    uint32_t lumi_events[ITEM_LUMIS + 1];
    bool seen[ITEM_RUNS + 1][ITEM_LUMIS + 1][ITEM_EVENTS];
    uint64_t events;
    bool ended;
} items_oracle_t;

static int items_check(items_oracle_t *o, const sluice_item_t *it)
{
    const sluice_transition_t *t = &it->transition;
    H_TRUE(!o->ended, "an item after END_JOB");
    H_TRUE(h_transition_intact(t), "item of kind %d damaged", t->kind);
    H_TRUE((t->kind == SLUICE_EVENT) == (it->stream != UINT32_MAX),
           "kind %d with stream %u", t->kind, it->stream);
    switch (t->kind) {
    case SLUICE_BEGIN_RUN:
        H_TRUE(o->run == 0, "run %u begins inside run %u", t->run, o->run);
        o->run = t->run;
        break;
    case SLUICE_BEGIN_LUMI:
        H_TRUE(t->run == o->run && t->lumi >= 1 && t->lumi <= ITEM_LUMIS && !o->lumi_open[t->lumi],
               "lumi %u:%u begins out of place (run %u)", t->run, t->lumi, o->run);
        o->lumi_open[t->lumi] = true;
        o->lumi_events[t->lumi] = 0;
        break;
    case SLUICE_EVENT: {
        H_TRUE(t->run == o->run && t->lumi >= 1 && t->lumi <= ITEM_LUMIS && o->lumi_open[t->lumi],
               "event %llu of lumi %u:%u, which is not open", (unsigned long long)t->event, t->run,
               t->lumi);
        uint64_t i = t->event - item_event_number(t->run, t->lumi, 0);
        H_TRUE(i < ITEM_EVENTS && !o->seen[t->run][t->lumi][i], "event %llu unknown or twice",
               (unsigned long long)t->event);
        H_TRUE(it->stream < ITEM_STREAMS && it->token.stream == it->stream,
               "event on stream %u with a token of stream %u", it->stream, it->token.stream);
        o->seen[t->run][t->lumi][i] = true;
        o->lumi_events[t->lumi]++;
        o->events++;
        break;
    }
    case SLUICE_END_LUMI:
        H_TRUE(t->run == o->run && o->lumi_open[t->lumi], "lumi %u:%u ends but is not open",
               t->run, t->lumi);
        H_TRUE(o->lumi_events[t->lumi] == ITEM_EVENTS,
               "lumi %u:%u ends after %u of its %u events", t->run, t->lumi,
               o->lumi_events[t->lumi], ITEM_EVENTS);
        o->lumi_open[t->lumi] = false;
        break;
    case SLUICE_END_RUN:
        H_TRUE(t->run == o->run, "run %u ends, open is %u", t->run, o->run);
        for (uint32_t l = 1; l <= ITEM_LUMIS; l++)
            H_TRUE(!o->lumi_open[l], "run %u ends with lumi %u open", t->run, l);
        o->run = 0;
        break;
    case SLUICE_END_JOB:
        H_TRUE(o->run == 0, "job ends inside run %u", o->run);
        o->ended = true;
        break;
    default:
        H_FAIL("unknown kind %d", t->kind);
    }
    return 0;
}

/*
 * Source: one thread, only sluice_source_next. Like a framework that
 * processes events asynchronously, it keeps up to ITEM_HELD tokens open and
 * finishes the oldest when the call has nothing for it now (NONBLOCK) or it
 * holds too many; the END_LUMI of a lumi whose last event sits behind a
 * held token must then still come, never a deadlock.
 */
static int items_source(sluice_channel_t *ch)
{
    items_oracle_t *o = calloc(1, sizeof *o);
    sluice_token_t held[ITEM_HELD];
    size_t n_held = 0, first = 0;
    int failed = 0;
    for (;;) {
        sluice_item_t it;
        int rc = sluice_source_next(ch, n_held ? SLUICE_NONBLOCK : 0, &it);
        if (rc == SLUICE_EAGAIN || (rc == SLUICE_OK && n_held == ITEM_HELD)) {
            /* Finish the oldest held event (before taking this one in). */
            H_OK(sluice_event_finish(&held[first]));
            first = (first + 1) % ITEM_HELD;
            n_held--;
        }
        if (rc == SLUICE_EAGAIN)
            continue;
        if (rc == SLUICE_EOF)
            break;
        H_OK(rc);
        if ((failed = items_check(o, &it)))
            break;
        if (it.transition.kind == SLUICE_EVENT)
            held[(first + n_held++) % ITEM_HELD] = it.token;
    }
    while (!failed && n_held) {
        H_OK(sluice_event_finish(&held[first]));
        first = (first + 1) % ITEM_HELD;
        n_held--;
    }
    if (!failed) {
        H_TRUE(o->ended, "EOF before END_JOB");
        H_TRUE(o->events == (uint64_t)ITEM_RUNS * ITEM_LUMIS * ITEM_EVENTS,
               "%llu events delivered", (unsigned long long)o->events);
        sluice_item_t it;
        H_STATUS(sluice_source_next(ch, 0, &it), SLUICE_EOF);
    }
    free(o);
    return failed;
}

int case_next_item(void)
{
    sluice_options_t o = h_options();
    o.ring_depth = 8; /* a stream ring fills: the controller waits for the source */
    sluice_channel_t *ch;
    H_OK(h_open("items", ITEM_STREAMS, NULL, 0, &o, &ch));
    int failed = h_is_ctrl ? items_controller(ch) : items_source(ch);
    H_OK(sluice_channel_close(ch));
    return failed;
}
