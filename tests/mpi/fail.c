/* SPDX-License-Identifier: MIT */
/* Failed events (sluice_event_fail): the peer's next call reports the status and message, what
 * was sent is released, and the stream goes on. */
#include <stdlib.h>

#include "harness.h"

/* Instances: a whole-arena product and a small one to the source, a result back. */
enum { F_BIG = 1, F_SMALL = 2, F_RESULT = 3 };

static int f_open(const char *name, sluice_channel_t **ch_p)
{
    sluice_endpoint_t eps[3] = { { F_BIG, h_dir(1), T_BYTES },
                                 { F_SMALL, h_dir(1), T_BYTES },
                                 { F_RESULT, h_dir(0), T_BYTES } };
    sluice_options_t o = h_options();
    H_OK(h_open(name, 1, eps, 3, &o, ch_p));
    H_DO(h_begin(*ch_p, 1));
    return 0;
}

/* An event that works: the controller sends `n` bytes of F_SMALL, the source answers their
 * checksum. */
static int f_echo(sluice_channel_t *ch, uint64_t ev, size_t n)
{
    sluice_token_t tok;
    sluice_view_t v;
    unsigned char buf[4096];
    H_TRUE(n <= sizeof buf, "echo of %zu bytes", n);
    h_fill(buf, n, ev);
    H_DO(h_start_event(ch, 0, 1, ev, &tok));
    if (h_is_ctrl) {
        H_OK(sluice_product_send(&tok, F_SMALL, buf, n, n, 0));
        H_OK(sluice_product_receive(&tok, F_RESULT, 0, &v));
        H_TRUE(v.bytes == 8 && *(const uint64_t *)v.data == h_checksum(buf, n),
               "event %llu: wrong answer", (unsigned long long)ev);
    } else {
        H_OK(sluice_product_receive(&tok, F_SMALL, 0, &v));
        H_TRUE(v.bytes == n && memcmp(v.data, buf, n) == 0, "event %llu: product damaged",
               (unsigned long long)ev);
        uint64_t sum = h_checksum(v.data, v.bytes);
        H_OK(sluice_product_send(&tok, F_RESULT, &sum, sizeof sum, sizeof sum, 0));
    }
    H_OK(sluice_view_release(ch, &v));
    H_OK(sluice_event_finish(&tok));
    return 0;
}

/*
 * A case with barriers between its steps: a failed step skips the steps
 * after it but not the barriers, so the peer never waits in one for ever
 * (its own sluice waits then end at their deadlines).
 */
#define F_STEP(failed, step) ((failed) = (failed) || (step))

typedef struct f_state {
    sluice_channel_t *ch;
    sluice_token_t tok;
    unsigned char *big;
    size_t cap;
    unsigned char small[1000];
} f_state_t;

/* Event 0, controller: a whole arena's product the source will not read. */
static int f0_send(f_state_t *f)
{
    H_DO(h_start_event(f->ch, 0, 1, 0, &f->tok));
    h_fill(f->big, f->cap, 0);
    H_OK(sluice_product_send(&f->tok, F_BIG, f->big, f->cap, f->cap, 0));
    return 0;
}

/* Event 0, source: fail it with its own status, the product unread. */
static int f0_fail(f_state_t *f)
{
    sluice_view_t v;
    sluice_channel_stats_t st;
    H_DO(h_start_event(f->ch, 0, 1, 0, &f->tok));
    H_OK(sluice_event_fail(&f->tok, -30, "source: bad calibration"));
    H_STATUS(sluice_event_finish(&f->tok), SLUICE_EALREADY); /* the fail finished it */
    H_STATUS(sluice_product_receive(&f->tok, F_BIG, 0, &v), SLUICE_EALREADY);
    sluice_channel_stats(f->ch, &st);
    H_TRUE(st.discarded == 1 && st.products_received == 0,
           "after the fail: %llu discarded, %llu received", (unsigned long long)st.discarded,
           (unsigned long long)st.products_received);
    return 0;
}

/* Event 0, controller: every call on it reports the source's status and message. */
static int f0_failed(f_state_t *f)
{
    sluice_view_t v;
    H_STATUS(sluice_product_receive(&f->tok, F_RESULT, 0, &v), -30);
    H_TRUE(strstr(sluice_last_error(), "the peer failed event") &&
               strstr(sluice_last_error(), "source: bad calibration"),
           "message: %s", sluice_last_error());
    H_STATUS(sluice_product_receive(&f->tok, F_RESULT, 0, &v), -30);
    H_STATUS(sluice_product_send(&f->tok, F_SMALL, f->small, sizeof f->small, sizeof f->small, 0),
             -30);
    H_OK(sluice_event_finish(&f->tok));
    return 0;
}

/* Event 1, controller: a whole arena at once, non-blocking, before the source takes the event:
 * only the source's fail can have released the arena. */
static int f1_send(f_state_t *f)
{
    H_DO(h_start_event(f->ch, 0, 1, 1, &f->tok));
    h_fill(f->big, f->cap, 1);
    H_OK(sluice_product_send(&f->tok, F_BIG, f->big, f->cap, f->cap, SLUICE_NONBLOCK));
    return 0;
}

static int f1_answer(f_state_t *f)
{
    sluice_view_t v;
    h_fill(f->big, f->cap, 1);
    if (h_is_ctrl) {
        H_OK(sluice_product_receive(&f->tok, F_RESULT, 0, &v));
        H_TRUE(v.bytes == 8 && *(const uint64_t *)v.data == h_checksum(f->big, f->cap),
               "the answer to the whole-arena product");
    } else {
        H_DO(h_start_event(f->ch, 0, 1, 1, &f->tok));
        H_OK(sluice_product_receive(&f->tok, F_BIG, 0, &v));
        H_TRUE(v.bytes == f->cap && memcmp(v.data, f->big, f->cap) == 0,
               "whole-arena product damaged");
        uint64_t sum = h_checksum(v.data, v.bytes);
        H_OK(sluice_product_send(&f->tok, F_RESULT, &sum, sizeof sum, sizeof sum, 0));
    }
    H_OK(sluice_view_release(f->ch, &v));
    H_OK(sluice_event_finish(&f->tok));
    return 0;
}

/* Event 2, controller: a product the source will not have taken, then the fail. */
static int f2_send(f_state_t *f)
{
    H_DO(h_start_event(f->ch, 0, 1, 2, &f->tok));
    H_OK(sluice_product_send(&f->tok, F_SMALL, f->small, sizeof f->small, sizeof f->small, 0));
    return 0;
}

static int f2_fail(f_state_t *f)
{
    H_OK(sluice_event_fail(&f->tok, SLUICE_EFAILED, "controller: run aborted"));
    H_STATUS(sluice_event_finish(&f->tok), SLUICE_EALREADY);
    return 0;
}

/* Event 2, source: its receives report the fail; the product sent before it was released,
 * not kept for its receive. */
static int f2_failed(f_state_t *f)
{
    sluice_view_t v;
    sluice_channel_stats_t st;
    H_STATUS(sluice_product_receive(&f->tok, F_BIG, 0, &v), SLUICE_EFAILED);
    H_TRUE(strstr(sluice_last_error(), "controller: run aborted"), "message: %s",
           sluice_last_error());
    H_STATUS(sluice_product_receive(&f->tok, F_SMALL, 0, &v), SLUICE_EFAILED);
    sluice_channel_stats(f->ch, &st);
    H_TRUE(st.discarded == 2 && st.products_received == 1,
           "after the second fail: %llu discarded, %llu received",
           (unsigned long long)st.discarded, (unsigned long long)st.products_received);
    H_OK(sluice_event_finish(&f->tok));
    return 0;
}

/*
 * The source fails event 0 with its own status (-30) while a whole arena's
 * product of it is still unread; the controller's receive reports -30 and the
 * message, its later calls too. Event 1 carries a whole arena at once,
 * non-blocking and before the source takes the event: only the fail can have
 * released the arena. Then the controller fails event 2 with SLUICE_EFAILED
 * after sending a product the source has not taken; the source's receives
 * report it, and event 3 works.
 */
int case_event_fail(void)
{
    f_state_t f = { .cap = h_options().arena_bytes };
    H_DO(f_open("fail", &f.ch));
    f.big = malloc(f.cap);
    H_TRUE(f.big != NULL, "malloc");
    h_fill(f.small, sizeof f.small, 2);
    int failed = 0;
    if (h_is_ctrl) {
        F_STEP(failed, f0_send(&f));
        h_sync(); /* the product is published */
        h_sync(); /* the source failed the event */
        F_STEP(failed, f0_failed(&f));
        F_STEP(failed, f1_send(&f));
        h_sync(); /* sent before the source takes event 1 */
        F_STEP(failed, f1_answer(&f));
        F_STEP(failed, f2_send(&f));
        h_sync(); /* the product is published */
        F_STEP(failed, f2_fail(&f));
        h_sync();
    } else {
        h_sync();
        F_STEP(failed, f0_fail(&f));
        h_sync();
        h_sync();
        F_STEP(failed, f1_answer(&f));
        F_STEP(failed, h_start_event(f.ch, 0, 1, 2, &f.tok));
        h_sync();
        h_sync(); /* the controller failed the event */
        F_STEP(failed, f2_failed(&f));
    }
    free(f.big);
    F_STEP(failed, f_echo(f.ch, 3, sizeof f.small));
    F_STEP(failed, h_end_job(f.ch, 1));
    H_OK(sluice_channel_close(f.ch));
    return failed;
}

/* Compare one call's status with the failed event's; print a mismatch. */
static int f_expect(const char *call, int got, int want)
{
    if (got == want)
        return 0;
    fprintf(stderr, "[%s] after the peer failed the event with %d, %s returned %d "
                    "(%s)\n",
            h_role, want, call, got, sluice_strerror(got));
    return 1;
}

/* Event 0, source, after the controller failed it (-31): its send and reservation. */
static int fn0_source(sluice_token_t *tok, int *bugs)
{
    uint64_t word = 7;
    sluice_reservation_t res;
    sluice_view_t v;
    *bugs += f_expect("the source's send",
                      sluice_product_send(tok, F_RESULT, &word, 8, 8, SLUICE_NONBLOCK), -31);
    *bugs += f_expect("the source's reservation",
                      sluice_product_reserve(tok, F_RESULT, 8, 8, SLUICE_NONBLOCK, &res), -31);
    H_STATUS(sluice_product_receive(tok, F_BIG, 0, &v), -31);
    H_OK(sluice_event_finish(tok));
    return 0;
}

/* Event 1, controller: a product, then the fail (-32). */
static int fn1_controller(sluice_channel_t *ch, sluice_token_t *tok)
{
    uint64_t word = 7;
    H_DO(h_start_event(ch, 0, 1, 1, tok));
    H_OK(sluice_product_send(tok, F_SMALL, &word, 8, 8, 0));
    H_OK(sluice_event_fail(tok, -32, "controller gave up again"));
    return 0;
}

/* Event 1, source: its receive of the product sent before the fail. */
static int fn1_source(sluice_channel_t *ch, sluice_token_t *tok, int *bugs)
{
    sluice_view_t v;
    H_DO(h_start_event(ch, 0, 1, 1, tok));
    int rc = sluice_product_receive(tok, F_SMALL, 0, &v);
    *bugs += f_expect("the source's receive of a product sent before the fail", rc, -32);
    if (rc == SLUICE_OK)
        H_OK(sluice_view_release(ch, &v));
    H_OK(sluice_event_finish(tok));
    return 0;
}

/* Event 2, controller, after the source failed it (-33): its reservation and send. */
static int fn2_controller(sluice_token_t *tok, int *bugs)
{
    uint64_t word = 7;
    sluice_reservation_t res;
    sluice_view_t v;
    *bugs += f_expect("the controller's reservation",
                      sluice_product_reserve(tok, F_SMALL, 8, 8, SLUICE_NONBLOCK, &res), -33);
    *bugs += f_expect("the controller's send",
                      sluice_product_send(tok, F_SMALL, &word, 8, 8, SLUICE_NONBLOCK), -33);
    H_STATUS(sluice_product_receive(tok, F_RESULT, 0, &v), -33);
    H_OK(sluice_event_finish(tok));
    return 0;
}

/*
 * Regression test (failed at c832583, fixed since): sluice.h says the peer's next call on a
 * failed event, "a receive, a send, a reservation", returns its status. Only
 * the pump of a receive (or of a wait for room) notices the fail record:
 *   - event 0: after the controller failed it (-31), the source's next send
 *     and reservation return SLUICE_OK (and publish a product nobody reads);
 *   - event 1: a product sent before the fail (-32) is handed out by the
 *     source's next receive of its instance;
 *   - event 2: after the source failed it (-33), the controller's next
 *     reservation and send return SLUICE_OK.
 * Each event is checked and reported; then event 3 must work.
 */
int case_event_fail_next_call(void)
{
    sluice_channel_t *ch;
    H_DO(f_open("fail_next", &ch));
    sluice_token_t tok;
    int bugs = 0, failed = 0;
    if (h_is_ctrl) {
        F_STEP(failed, h_start_event(ch, 0, 1, 0, &tok));
        F_STEP(failed, sluice_event_fail(&tok, -31, "controller gave up") != SLUICE_OK);
        h_sync();
        F_STEP(failed, fn1_controller(ch, &tok));
        h_sync();
        F_STEP(failed, h_start_event(ch, 0, 1, 2, &tok));
        h_sync(); /* the source failed the event */
        F_STEP(failed, fn2_controller(&tok, &bugs));
    } else {
        F_STEP(failed, h_start_event(ch, 0, 1, 0, &tok));
        h_sync(); /* the controller failed the event */
        F_STEP(failed, fn0_source(&tok, &bugs));
        h_sync(); /* the controller sent a product and failed event 1 */
        F_STEP(failed, fn1_source(ch, &tok, &bugs));
        F_STEP(failed, h_start_event(ch, 0, 1, 2, &tok));
        F_STEP(failed, sluice_event_fail(&tok, -33, "source gave up") != SLUICE_OK);
        h_sync();
    }
    F_STEP(failed, f_echo(ch, 3, 100));
    F_STEP(failed, h_end_job(ch, 1));
    H_OK(sluice_channel_close(ch));
    H_TRUE(!failed, "the exchange failed (above)");
    H_TRUE(bugs == 0, "%d calls after a fail did not report it (above)", bugs);
    return 0;
}
