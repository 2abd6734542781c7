/* SPDX-License-Identifier: MIT */
/* Run- and lumi-scoped products: sent with a begin or end transition, received with it, both ways. */
#include <stdbool.h>

#include "harness.h"

enum { SC_COND = 31, SC_LUMI = 32, SC_SUMMARY = 33, SC_EVENTS = 10, SC_COND_BYTES = 100000 };

static int sc_controller(sluice_channel_t *ch)
{
    static unsigned char cond[SC_COND_BYTES];
    h_fill(cond, sizeof cond, 77);
    sluice_token_t scope, tok;
    /* The run's conditions, with its begin; zero copy through a reservation. */
    sluice_transition_t t = h_transition(SLUICE_BEGIN_RUN, 5, 0, 0);
    H_OK(sluice_transition_send_scoped(ch, &t, 0, &scope));
    sluice_reservation_t res;
    H_OK(sluice_product_reserve(&scope, SC_COND, sizeof cond, sizeof cond, 0, &res));
    memcpy(res.data, cond, sizeof cond);
    H_OK(sluice_product_commit(&scope, &res));
    /* One scope at a time. */
    t = h_transition(SLUICE_BEGIN_LUMI, 5, 1, 0);
    H_STATUS(sluice_transition_send_scoped(ch, &t, 0, &tok), SLUICE_EBUSY);
    H_OK(sluice_event_finish(&scope));
    /* The lumi's information with its begin. */
    H_OK(sluice_transition_send_scoped(ch, &t, 0, &scope));
    uint64_t info = 5 * 1000 + 1;
    H_OK(sluice_product_send(&scope, SC_LUMI, &info, sizeof info, 8, 0));
    H_OK(sluice_event_finish(&scope));
    for (uint64_t e = 0; e < SC_EVENTS; e++) {
        sluice_transition_t ev = h_transition(SLUICE_EVENT, 5, 1, e);
        H_OK(sluice_event_send(ch, (uint32_t)(e % 2), &ev, 0, &tok));
        H_OK(sluice_event_finish(&tok));
    }
    /* The lumi's end: the source answers with its summary, in the scope. */
    t = h_transition(SLUICE_END_LUMI, 5, 1, 0);
    H_OK(sluice_transition_send_scoped(ch, &t, 0, &scope));
    sluice_view_t v;
    H_OK(sluice_product_receive(&scope, SC_SUMMARY, 0, &v));
    uint64_t seen;
    memcpy(&seen, v.data, sizeof seen);
    H_TRUE(seen == SC_EVENTS, "the source's summary says %llu events", (unsigned long long)seen);
    H_OK(sluice_view_release(ch, &v));
    /* End of job needs the scope finished. */
    H_OK(h_send_global(ch, SLUICE_END_RUN, 5, 0));
    sluice_transition_t end = h_transition(SLUICE_END_JOB, 0, 0, 0);
    H_STATUS(sluice_transition_send(ch, &end, 0), SLUICE_EBUSY);
    H_OK(sluice_event_finish(&scope));
    H_OK(sluice_transition_send(ch, &end, 0));
    return 0;
}

static int sc_source(sluice_channel_t *ch)
{
    static unsigned char cond[SC_COND_BYTES];
    h_fill(cond, sizeof cond, 77);
    uint64_t events = 0;
    int scopes = 0;
    for (;;) {
        sluice_item_t it;
        int rc = sluice_source_next(ch, 0, &it);
        if (rc == SLUICE_EOF)
            break;
        H_OK(rc);
        const sluice_transition_t *t = &it.transition;
        if (t->kind == SLUICE_EVENT) {
            H_TRUE(it.token.stream < 2, "event on stream %u", it.token.stream);
            events++;
            H_OK(sluice_event_finish(&it.token));
            continue;
        }
        sluice_token_t scope;
        int trc = sluice_transition_token(ch, &scope);
        bool scoped = t->kind != SLUICE_END_RUN && t->kind != SLUICE_END_JOB;
        H_TRUE(scoped == (it.token.channel != NULL), "kind %d: scope %s", t->kind,
               it.token.channel ? "present" : "missing");
        if (!scoped) {
            H_STATUS(trc, SLUICE_ENOTFOUND);
            continue;
        }
        H_OK(trc);
        H_TRUE(scope.seq == it.token.seq, "two scopes for one transition");
        sluice_view_t v;
        if (t->kind == SLUICE_BEGIN_RUN) {
            H_OK(sluice_product_receive(&it.token, SC_COND, 0, &v));
            H_TRUE(v.bytes == sizeof cond && memcmp(v.data, cond, sizeof cond) == 0,
                   "run conditions damaged (%zu bytes)", v.bytes);
            H_OK(sluice_view_release(ch, &v));
        } else if (t->kind == SLUICE_BEGIN_LUMI) {
            uint64_t info;
            H_OK(sluice_product_receive(&it.token, SC_LUMI, 0, &v));
            memcpy(&info, v.data, sizeof info);
            H_TRUE(info == t->run * 1000ull + t->lumi, "lumi information %llu",
                   (unsigned long long)info);
            H_OK(sluice_view_release(ch, &v));
            /* Nothing else comes in this scope. */
            H_STATUS(sluice_product_receive(&it.token, SC_LUMI, 0, &v), SLUICE_ABSENT);
        } else if (t->kind == SLUICE_END_LUMI) {
            H_TRUE(events == SC_EVENTS, "end of lumi after %llu events",
                   (unsigned long long)events);
            H_OK(sluice_product_send(&it.token, SC_SUMMARY, &events, sizeof events, 8, 0));
        }
        H_OK(sluice_event_finish(&it.token));
        scopes++;
    }
    H_TRUE(scopes == 3 && events == SC_EVENTS, "%d scopes, %llu events", scopes,
           (unsigned long long)events);
    return 0;
}

int case_scoped(void)
{
    sluice_endpoint_t eps[3] = { { SC_COND, h_dir(1), T_BYTES },
                                 { SC_LUMI, h_dir(1), T_BYTES },
                                 { SC_SUMMARY, h_dir(0), T_BYTES } };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_OK(h_open("scoped", 2, eps, 3, &o, &ch));
    int failed = h_is_ctrl ? sc_controller(ch) : sc_source(ch);
    H_OK(sluice_channel_close(ch));
    return failed;
}
