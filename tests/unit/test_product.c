/* SPDX-License-Identifier: MIT */
/* Products (product.c) over the loopback pair: the reservation queue, calls racing a finish on
 * another thread, and failed events. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loopback.h"

static int setup_ring64(void **state) { return pair_setup(state, 1, 64); }

/* ------------------------------------------------------------ helpers */

/* Reserve (non-blocking) `n` words first, first + 1, ... of `instance` and write them at once. */
static int reserve_run(sluice_token_t *t, uint32_t instance, uint64_t n, uint64_t first,
                       sluice_reservation_t *res)
{
    int rc = sluice_product_reserve(t, instance, n * sizeof(uint64_t), n, SLUICE_NONBLOCK, res);
    if (rc == SLUICE_OK) {
        uint64_t *w = res->data;
        for (uint64_t i = 0; i < n; i++)
            w[i] = first + i;
    }
    return rc;
}

static int send_run(sluice_token_t *t, uint32_t instance, uint64_t n, uint64_t first,
                    unsigned flags)
{
    uint64_t *w = malloc(n * sizeof *w);
    assert_non_null(w);
    for (uint64_t i = 0; i < n; i++)
        w[i] = first + i;
    int rc = sluice_product_send(t, instance, w, n * sizeof *w, n, flags);
    free(w);
    return rc;
}

/* The next product of `instance` is send_run(n, first); released afterwards. */
static void expect_run(sluice_token_t *t, uint32_t instance, uint64_t n, uint64_t first)
{
    sluice_view_t v;
    assert_ok(sluice_product_receive(t, instance, SLUICE_NONBLOCK, &v));
    assert_int_equal(v.bytes, n * sizeof(uint64_t));
    assert_int_equal(v.count, n);
    const uint64_t *w = v.data;
    for (uint64_t i = 0; i < n; i++)
        if (w[i] != first + i)
            fail_msg("word %llu of the product is %llu, expected %llu", (unsigned long long)i,
                     (unsigned long long)w[i], (unsigned long long)(first + i));
    assert_ok(sluice_view_release(t->channel, &v));
}

static void expect_absent(sluice_token_t *t, uint32_t instance)
{
    sluice_view_t v;
    assert_status(sluice_product_receive(t, instance, SLUICE_NONBLOCK, &v), SLUICE_ABSENT);
}

/* The arena tail the source published for stream 0, and the controller's arena head. */
static uint64_t src_tail(pair_t *p)
{
    sluice_channel_t *src = p->src.ch;
    return inbox_word(src, src->streams[0].rx.ctrl + SL_ARENA_TAIL_OFF);
}

static uint64_t ctl_head(pair_t *p) { return p->ctl.ch->streams[0].arena_head; }

/* ------------------------------------------------------------ the reservation queue */

static void a_commit_waits_for_every_older_reservation(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    sluice_reservation_t a, b, c;
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 100, &a));
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 200, &b));
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 300, &c));
    assert_true(a.handle != b.handle && b.handle != c.handle && a.handle != c.handle);

    assert_ok(sluice_product_commit(&ct, &c));
    assert_int_equal(ring_fill(p->src.ch, 0), 0);
    assert_ok(sluice_product_commit(&ct, &b));
    assert_int_equal(ring_fill(p->src.ch, 0), 0);
    assert_int_equal(stats(p->ctl.ch).products_sent, 0);
    sluice_view_t v;
    assert_status(sluice_product_receive(&sc, INST_BLOCK, SLUICE_NONBLOCK, &v), SLUICE_EAGAIN);

    /* The oldest goes away: both committed ones go out, in reservation order. */
    assert_ok(sluice_product_cancel(&ct, &a));
    assert_int_equal(ring_fill(p->src.ch, 0), 2);
    assert_int_equal(stats(p->ctl.ch).products_sent, 2);
    expect_words(&sc, INST_BLOCK, 200);
    expect_words(&sc, INST_BLOCK, 300);
    /* A's region is a gap the source's tail stepped over: every byte is back. */
    assert_int_equal(src_tail(p), ctl_head(p));
    assert_ok(sluice_event_finish(&ct));
    expect_absent(&sc, INST_BLOCK);
}

static void committing_the_oldest_publishes_it_and_the_committed_ones_behind_it(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    sluice_reservation_t a, b, c;
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 100, &a));
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 200, &b));
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 300, &c));
    assert_ok(sluice_product_commit(&ct, &c));
    assert_ok(sluice_product_commit(&ct, &a));
    assert_int_equal(ring_fill(p->src.ch, 0), 1); /* A only: B is still open, C waits for it */
    assert_ok(sluice_product_commit(&ct, &b));
    assert_int_equal(ring_fill(p->src.ch, 0), 3);
    expect_words(&sc, INST_BLOCK, 100);
    expect_words(&sc, INST_BLOCK, 200);
    expect_words(&sc, INST_BLOCK, 300);
    /* A handle is good for one commit or cancel. */
    assert_status(sluice_product_commit(&ct, &b), SLUICE_EINVAL);
    assert_status(sluice_product_cancel(&ct, &a), SLUICE_EINVAL);
}

static void cancelling_the_newest_gives_its_arena_space_back(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    const uint64_t quarter = ARENA_BYTES / 4 / sizeof(uint64_t);
    const uint64_t rest = 3 * quarter; /* the capacity minus A */
    sluice_reservation_t a, b;
    assert_ok(reserve_run(&ct, INST_BLOCK, quarter, 100, &a));
    assert_ok(reserve_run(&ct, INST_BLOCK, quarter, 5000, &b));
    /* With B open, the rest of the arena after A is not free. */
    assert_status(send_run(&ct, INST_BLOCK, rest, 9000, SLUICE_NONBLOCK), SLUICE_EAGAIN);
    assert_ok(sluice_product_cancel(&ct, &b));
    assert_ok(send_run(&ct, INST_BLOCK, rest, 9000, SLUICE_NONBLOCK));
    assert_int_equal(ring_fill(p->src.ch, 0), 0); /* it waits for A */
    assert_ok(sluice_product_commit(&ct, &a));
    assert_int_equal(ring_fill(p->src.ch, 0), 2);
    expect_run(&sc, INST_BLOCK, quarter, 100);
    expect_run(&sc, INST_BLOCK, rest, 9000);
    assert_int_equal(src_tail(p), ctl_head(p));
}

static void cancelling_the_only_reservation_leaves_the_whole_arena_free(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    const uint64_t all = ARENA_BYTES / sizeof(uint64_t);
    sluice_reservation_t a;
    assert_ok(reserve_run(&ct, INST_BLOCK, all / 4, 100, &a));
    assert_ok(sluice_product_cancel(&ct, &a));
    assert_ok(send_run(&ct, INST_BLOCK, all, 7, SLUICE_NONBLOCK));
    expect_run(&sc, INST_BLOCK, all, 7);
}

/*
 * Regression test (failed at c832583, fixed since): cancelling A then B (reservation order)
 * leaves A's bytes counted as held. sl_resv_settle drops a cancelled A at the
 * old end as a "gap" the receiver's tail is to step over with the next region
 * it releases; when B, the newest, is then cancelled, the head goes back only
 * to B's head_before (A's end) and the tail stays at A's start. Nothing is held
 * and nothing will be released, yet a product of the arena's size no longer
 * fits: SLUICE_EAGAIN here, SLUICE_ETIMEDOUT when blocking, in this and every
 * later event, until some smaller product is sent and released.
 */
static void cancelling_every_reservation_oldest_first_leaves_the_whole_arena_free(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    const uint64_t all = ARENA_BYTES / sizeof(uint64_t);
    sluice_reservation_t a, b;
    assert_ok(reserve_run(&ct, INST_BLOCK, all / 4, 100, &a));
    assert_ok(reserve_run(&ct, INST_BLOCK, all / 4, 200, &b));
    assert_ok(sluice_product_cancel(&ct, &a));
    assert_ok(sluice_product_cancel(&ct, &b));
    int rc = send_run(&ct, INST_BLOCK, all, 7, SLUICE_NONBLOCK);
    if (rc != SLUICE_OK)
        fail_msg("a product of the whole arena after cancelling A then B: %d (%s); the "
                 "controller's head is %llu, its tail %llu, the source's tail %llu: A's %llu "
                 "bytes stay counted as held",
                 rc, sluice_strerror(rc), (unsigned long long)ctl_head(p),
                 (unsigned long long)p->ctl.ch->streams[0].arena_tail_cache,
                 (unsigned long long)src_tail(p), (unsigned long long)(all / 4 * 8));
    expect_run(&sc, INST_BLOCK, all, 7);
}

static void the_seventeenth_open_reservation_is_refused_with_elimit(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    sluice_reservation_t r[17];
    for (uint64_t i = 0; i < 16; i++)
        assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 100 * i, &r[i]));
    assert_status(reserve_run(&ct, INST_BLOCK, WORDS, 1600, &r[16]), SLUICE_ELIMIT);
    assert_non_null(strstr(sluice_last_error(), "16"));
    /* A send needs a reservation too. */
    assert_status(send_words(&ct, INST_SPARE, 0, SLUICE_NONBLOCK), SLUICE_ELIMIT);
    assert_int_equal(ring_fill(p->src.ch, 0), 0);
    assert_int_equal(p->ctl.ch->streams[0].resv_n, 16);

    /* One out (published), one more in. */
    assert_ok(sluice_product_commit(&ct, &r[0]));
    assert_int_equal(ring_fill(p->src.ch, 0), 1);
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 1600, &r[16]));
    assert_status(send_words(&ct, INST_SPARE, 0, SLUICE_NONBLOCK), SLUICE_ELIMIT);
    for (int i = 16; i >= 1; i--)
        assert_ok(sluice_product_commit(&ct, &r[i]));
    assert_int_equal(ring_fill(p->src.ch, 0), 17);
    for (uint64_t i = 0; i < 17; i++)
        expect_words(&sc, INST_BLOCK, 100 * i);
    assert_int_equal(src_tail(p), ctl_head(p));
}

/*
 * Regression test (failed at c832583, fixed since): sluice.h says fewer reservations than the
 * ring depth may be open, but sl_reserve_locked refuses only when
 * owed + 1 > ring_depth, so a ring of 8 takes an 8th. With 8 open,
 * sluice_product_send_absent needs owed + 1 = 9 free slots of 8
 * (sl_ring_wait_room): it can never succeed and waits out its deadline.
 */
static void fewer_reservations_than_the_ring_depth_stay_open(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    const uint32_t depth = p->ctl.ch->geo.ring_depth;
    sluice_reservation_t r[8];
    assert_int_equal(depth, 8);
    for (uint64_t i = 0; i < depth - 1; i++)
        assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 100 * i, &r[i]));
    int rc = reserve_run(&ct, INST_BLOCK, WORDS, 700, &r[depth - 1]);
    if (rc == SLUICE_OK) {
        int arc = sluice_product_send_absent(&ct, INST_SPARE);
        fail_msg("reservation %u on a ring of %u was accepted; with them open "
                 "sluice_product_send_absent returned %d (%s: %s)",
                 depth, depth, arc, sluice_strerror(arc), sluice_last_error());
    }
    assert_status(rc, SLUICE_ELIMIT);
}

/*
 * Over a transport without a pointer into the peer's arena (RMA), a send
 * puts the caller's bytes with the record, in one publication: when that
 * fails, nothing of the product went out, the send says so, and the
 * caller's buffer is its own again. The product is never delivered later,
 * its arena space is free, and the next send arrives alone and intact.
 * (Before, the payload was put first: a publication that then failed left
 * a committed product that the next settle delivered, read from a buffer
 * the caller had been told was free.)
 */
static void a_send_whose_publication_fails_sends_nothing(void **state)
{
    pair_t *p = *state;
    p->ctl.ch->tp = &lb_put_ops;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    uint64_t head = ctl_head(p), w[WORDS];
    for (uint64_t i = 0; i < WORDS; i++)
        w[i] = 500 + i;
    atomic_store(&lb_publish_failures, 1);
    assert_status(sluice_product_send(&ct, INST_BLOCK, w, sizeof w, WORDS, 0), SLUICE_ETIMEDOUT);
    memset(w, 0xee, sizeof w); /* the send returned: the buffer is the caller's */
    assert_int_equal(ctl_head(p), head);
    assert_int_equal(p->ctl.ch->streams[0].resv_n, 0);
    assert_int_equal(ring_fill(p->src.ch, 0), 0);
    assert_ok(send_run(&ct, INST_BLOCK, WORDS, 700, 0));
    assert_int_equal(stats(p->ctl.ch).products_sent, 1);
    expect_run(&sc, INST_BLOCK, WORDS, 700);
    assert_ok(sluice_event_finish(&ct));
    expect_absent(&sc, INST_BLOCK);
    assert_ok(sluice_event_finish(&sc));
}

static void finish_cancels_open_reservations_and_publishes_committed_ones(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    sluice_reservation_t a, b, c;
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 100, &a));
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 200, &b));
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 300, &c));
    assert_ok(sluice_product_commit(&ct, &b));
    assert_int_equal(ring_fill(p->src.ch, 0), 0);
    assert_ok(sluice_event_finish(&ct));
    assert_int_equal(ring_fill(p->src.ch, 0), 2); /* B and the end mark */
    assert_int_equal(stats(p->ctl.ch).products_sent, 1);
    assert_int_equal(p->ctl.ch->streams[0].resv_n, 0);
    assert_status(sluice_product_commit(&ct, &a), SLUICE_EALREADY);
    assert_status(sluice_product_cancel(&ct, &c), SLUICE_EALREADY);
    expect_words(&sc, INST_BLOCK, 200);
    expect_absent(&sc, INST_BLOCK);
    assert_ok(sluice_event_finish(&sc));

    /* Nothing of A or C is held: the next event has the whole arena. */
    const uint64_t all = ARENA_BYTES / sizeof(uint64_t);
    sluice_token_t ct2, sc2;
    assert_ok(ctl_event(p, 0, 1, 1001, &ct2));
    src_event(p, 0, 1001, &sc2);
    assert_ok(send_run(&ct2, INST_BLOCK, all, 11, SLUICE_NONBLOCK));
    expect_run(&sc2, INST_BLOCK, all, 11);
}

/* ------------------------------------------------------------ calls racing a finish */

/*
 * A thread is parked where a waiting call has let the stream's lock go: the
 * transport's progress hook, which sl_wait_step calls (unlocked) first in
 * every round when the transport asks for progress. Only a thread that armed
 * its gate parks, once; the test decides when it goes on.
 */
typedef struct gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool parked, open, done;
} gate_t;

static _Thread_local gate_t *park_here;

static void park_progress(sl_link_t *l)
{
    (void)l;
    gate_t *g = park_here;
    if (!g)
        return;
    park_here = NULL;
    pthread_mutex_lock(&g->m);
    g->parked = true;
    pthread_cond_broadcast(&g->c);
    while (!g->open)
        pthread_cond_wait(&g->c, &g->m);
    pthread_mutex_unlock(&g->m);
}

static sl_transport_ops_t parking_ops;

static void use_parking(side_t *s)
{
    parking_ops = lb_ops;
    parking_ops.caps |= SL_CAP_NEEDS_PROGRESS;
    parking_ops.progress = park_progress;
    s->ch->tp = &parking_ops;
}

/* One call on its own thread, parked at its first wait. */
typedef struct call {
    gate_t gate;
    pthread_t th;
    int (*fn)(struct call *);
    sluice_token_t *tok;
    uint32_t instance;
    sluice_reservation_t res;
    int rc;
    char error[512]; /* sluice_last_error() of that thread after the call */
} call_t;

static void *call_main(void *arg)
{
    call_t *c = arg;
    park_here = &c->gate;
    c->rc = c->fn(c);
    snprintf(c->error, sizeof c->error, "%s", sluice_last_error());
    park_here = NULL;
    pthread_mutex_lock(&c->gate.m);
    c->gate.done = true;
    pthread_cond_broadcast(&c->gate.c);
    pthread_mutex_unlock(&c->gate.m);
    return NULL;
}

/* Start `fn` and return once it waits (parked); a call that returns without waiting fails. */
static void call_start(call_t *c, int (*fn)(call_t *), sluice_token_t *tok, uint32_t instance)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->gate.m, NULL);
    pthread_cond_init(&c->gate.c, NULL);
    c->fn = fn;
    c->tok = tok;
    c->instance = instance;
    assert_int_equal(pthread_create(&c->th, NULL, call_main, c), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&c->gate.m);
    int rc = 0;
    while (!c->gate.parked && !c->gate.done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->gate.c, &c->gate.m, &until);
    bool parked = c->gate.parked, done = c->gate.done;
    pthread_mutex_unlock(&c->gate.m);
    if (!parked)
        fail_msg("the call on the other thread %s instead of waiting",
                 done ? "returned" : "did not reach a wait in 5 s");
}

/* Let it go on, and wait for its result. */
static int call_finish(call_t *c)
{
    pthread_mutex_lock(&c->gate.m);
    c->gate.open = true;
    pthread_cond_broadcast(&c->gate.c);
    pthread_mutex_unlock(&c->gate.m);
    pthread_join(c->th, NULL);
    pthread_cond_destroy(&c->gate.c);
    pthread_mutex_destroy(&c->gate.m);
    return c->rc;
}

/* The call's status must be `want`; on mismatch print the call thread's own message. */
static void assert_call(const call_t *c, int want)
{
    if (c->rc != want)
        fail_msg("the call on the other thread returned %d (%s: %s), expected %d (%s)", c->rc,
                 sluice_strerror(c->rc), c->error, want, sluice_strerror(want));
}

static int do_reserve(call_t *c)
{
    return sluice_product_reserve(c->tok, c->instance, PRODUCT_BYTES, WORDS, 0, &c->res);
}

static int do_receive(call_t *c)
{
    sluice_view_t v;
    int rc = sluice_product_receive(c->tok, c->instance, 0, &v);
    if (rc == SLUICE_OK)
        sluice_view_release(c->tok->channel, &v);
    return rc;
}

static int do_finish(call_t *c) { return sluice_event_finish(c->tok); }

static int do_absent(call_t *c) { return sluice_product_send_absent(c->tok, c->instance); }

/* Fill the ring from `tok`'s side with `n` products of `instance` (0, 100, 200, ...). */
static void fill_ring(sluice_token_t *tok, uint32_t instance, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        assert_ok(send_words(tok, instance, 100 * i, SLUICE_NONBLOCK));
    assert_status(send_words(tok, instance, 100 * n, SLUICE_NONBLOCK), SLUICE_EAGAIN);
}

/*
 * Regression test (failed at c832583, fixed since): a reservation waiting for ring room while
 * another thread's sluice_event_finish also waits (its end mark needs room)
 * is handed out anyway. sl_stream_wait_step checks the token's sequence and
 * token_open, not `finishing`, so once room comes the reserve returns
 * SLUICE_OK on an event being finished; its commit then says SLUICE_EALREADY,
 * and the reservation stays OPEN in the stream's queue for good: every
 * product of every later event on the stream queues behind it and is never
 * published. sluice.h: "A call on an event that another thread finishes
 * meanwhile returns SLUICE_EALREADY."
 */
static void a_reservation_waiting_while_another_thread_finishes_gets_ealready(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    fill_ring(&ct, INST_BLOCK, p->ctl.ch->geo.ring_depth);
    use_parking(&p->ctl);
    call_t r, f;
    call_start(&r, do_reserve, &ct, INST_SPARE); /* waits for ring room */
    call_start(&f, do_finish, &ct, 0);           /* its end mark waits for room too */
    expect_words(&sc, INST_BLOCK, 0);            /* two slots free up */
    expect_words(&sc, INST_BLOCK, 100);
    int rc_r = call_finish(&r);
    call_finish(&f);
    assert_call(&f, SLUICE_OK);
    if (rc_r == SLUICE_OK) {
        /* What it leaves behind: a product of the next event is never published. */
        int crc = sluice_product_commit(&ct, &r.res);
        uint32_t left = p->ctl.ch->streams[0].resv_n;
        assert_ok(sluice_event_finish(&sc));
        sluice_token_t ct2, sc2;
        assert_ok(ctl_event(p, 0, 1, 1001, &ct2));
        src_event(p, 0, 1001, &sc2);
        int src = send_words(&ct2, INST_BLOCK, 500, SLUICE_NONBLOCK);
        sluice_view_t v;
        int rrc = sluice_product_receive(&sc2, INST_BLOCK, SLUICE_NONBLOCK, &v);
        fail_msg("a reserve that waited while another thread finished the event returned "
                 "SLUICE_OK; its commit returned %d (%s), %u reservation(s) stay queued; in the "
                 "next event a send returned %d (%s) and the receive of it %d (%s)",
                 crc, sluice_strerror(crc), left, src, sluice_strerror(src), rrc,
                 sluice_strerror(rrc));
    }
    assert_call(&r, SLUICE_EALREADY);
    assert_int_equal(p->ctl.ch->streams[0].resv_n, 0);
}

/*
 * Regression test (failed at c832583, fixed since), the receive side of the one above: a
 * receive waiting for a product while another thread's finish waits for
 * ring room goes on waiting (sl_stream_wait_step does not look at
 * `finishing`) and ends at its deadline, SLUICE_ETIMEDOUT, not
 * SLUICE_EALREADY.
 */
static void a_receive_waiting_while_another_thread_finishes_gets_ealready(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    fill_ring(&sc, INST_BACK, p->src.ch->geo.ring_depth);
    use_parking(&p->src);
    call_t r, f;
    call_start(&r, do_receive, &sc, INST_BLOCK); /* nothing comes */
    call_start(&f, do_finish, &sc, 0);           /* the ring back is full */
    call_finish(&r);
    expect_words(&ct, INST_BACK, 0);
    call_finish(&f);
    assert_call(&f, SLUICE_OK);
    assert_call(&r, SLUICE_EALREADY);
}

/*
 * Regression test (failed at c832583, fixed since): sl_ring_wait_room computes the slots it
 * needs (owed + 1) once, before it waits. An absent mark that waits for room
 * while another thread reserves takes, when one slot frees up, the slot the
 * new reservation owns; the reservation's commit then pushes into a full
 * ring (sl_ring_tx_push does not check), overwriting a record the source has
 * not read: 9 records in 8 slots, and the source's next receive fails with
 * SLUICE_ECORRUPT.
 */
static void an_absent_mark_waiting_for_room_never_takes_a_reserved_slot(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    const uint32_t depth = p->ctl.ch->geo.ring_depth;
    fill_ring(&ct, INST_BLOCK, depth);
    use_parking(&p->ctl);
    call_t a;
    call_start(&a, do_absent, &ct, INST_SPARE);
    expect_words(&sc, INST_BLOCK, 0); /* one slot frees up ... */
    sluice_reservation_t r;           /* ... and this reservation owns it */
    assert_ok(reserve_run(&ct, INST_BLOCK, WORDS, 5000, &r));
    /* A receive takes in everything that has come, so more slots may free
     * up than the reservation owns: the mark may then go out, or time out;
     * what it may never do is take the reserved slot (checked below). */
    int rc_a = call_finish(&a);
    assert_ok(sluice_product_commit(&ct, &r));
    uint64_t fill = ring_fill(p->src.ch, 0);
    if (fill > depth) {
        sluice_view_t v;
        int rrc = sluice_product_receive(&sc, INST_BLOCK, SLUICE_NONBLOCK, &v);
        fail_msg("the waiting absent mark returned %d (%s) and took the reserved slot: after the "
                 "reservation's commit the ring holds %llu records in %u slots; the source's "
                 "next receive: %d (%s)",
                 rc_a, sluice_strerror(rc_a), (unsigned long long)fill, depth, rrc,
                 sluice_strerror(rrc));
    }
    if (rc_a != SLUICE_OK)
        assert_call(&a, SLUICE_ETIMEDOUT);
    for (uint32_t i = 1; i < depth; i++)
        expect_words(&sc, INST_BLOCK, 100 * i);
    expect_words(&sc, INST_BLOCK, 5000);
}

/* ------------------------------------------------------------ failed events */

static void fail_needs_a_negative_status_and_leaves_the_event_open(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_status(sluice_event_fail(&ct, SLUICE_OK, "zero"), SLUICE_EINVAL);
    assert_status(sluice_event_fail(&ct, SLUICE_ABSENT, "positive"), SLUICE_EINVAL);
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(sluice_event_finish(&ct));
    expect_words(&sc, INST_BLOCK, 100);
    expect_absent(&sc, INST_BLOCK); /* ended, not failed */
}

static void the_peer_sees_the_fail_status_and_message_on_its_next_receive(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(sluice_event_fail(&sc, -30, "calibration missing"));
    assert_status(sluice_event_finish(&sc), SLUICE_EALREADY); /* the fail finished it */
    sluice_view_t v;
    assert_status(sluice_product_receive(&ct, INST_BACK, SLUICE_NONBLOCK, &v), -30);
    assert_non_null(strstr(sluice_last_error(), "the peer failed event"));
    assert_non_null(strstr(sluice_last_error(), "calibration missing"));
    /* Every later call on the event says so. */
    assert_status(sluice_product_receive(&ct, INST_BACK, SLUICE_NONBLOCK, &v), -30);
    assert_status(send_words(&ct, INST_BLOCK, 1, SLUICE_NONBLOCK), -30);
    sluice_reservation_t r;
    assert_status(reserve_run(&ct, INST_BLOCK, WORDS, 1, &r), -30);
    assert_ok(sluice_event_finish(&ct));

    /* The stream goes on. */
    sluice_token_t ct2, sc2;
    assert_ok(ctl_event(p, 0, 1, 1001, &ct2));
    src_event(p, 0, 1001, &sc2);
    assert_ok(send_words(&ct2, INST_BLOCK, 100, 0));
    expect_words(&sc2, INST_BLOCK, 100);
    assert_ok(send_words(&sc2, INST_BACK, 200, 0));
    expect_words(&ct2, INST_BACK, 200);
}

static void a_controller_fail_reaches_the_source_as_efailed(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(sluice_event_fail(&ct, SLUICE_EFAILED, "run aborted"));
    sluice_view_t v;
    assert_status(sluice_product_receive(&sc, INST_SOA, SLUICE_NONBLOCK, &v), SLUICE_EFAILED);
    assert_non_null(strstr(sluice_last_error(), "run aborted"));
    assert_status(sluice_product_receive(&sc, INST_BLOCK, SLUICE_NONBLOCK, &v), SLUICE_EFAILED);
    assert_ok(sluice_event_finish(&sc));
}

static void the_failing_side_releases_what_it_had_not_received(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(send_words(&ct, INST_SOA, 200, 0));
    assert_ok(sluice_event_fail(&sc, SLUICE_EFAILED, "no"));
    assert_int_equal(stats(p->src.ch).discarded, 2);
    assert_int_equal(stats(p->src.ch).products_received, 0);
    assert_int_equal(p->src.ch->streams[0].arx.n, 0);
    assert_int_equal(src_tail(p), ctl_head(p));
    sluice_view_t v;
    assert_status(sluice_product_receive(&ct, INST_BACK, SLUICE_NONBLOCK, &v), SLUICE_EFAILED);
    assert_ok(sluice_event_finish(&ct));

    /* The whole arena is free for the next event, without waiting. */
    const uint64_t all = ARENA_BYTES / sizeof(uint64_t);
    sluice_token_t ct2, sc2;
    assert_ok(ctl_event(p, 0, 1, 1001, &ct2));
    src_event(p, 0, 1001, &sc2);
    assert_ok(send_run(&ct2, INST_BLOCK, all, 3, SLUICE_NONBLOCK));
    expect_run(&sc2, INST_BLOCK, all, 3);
}

static void a_fail_message_is_cut_at_aux_max(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    char msg[300], kept[SLUICE_AUX_MAX + 1], one_more[SLUICE_AUX_MAX + 2];
    for (size_t i = 0; i < sizeof msg - 1; i++)
        msg[i] = (char)('a' + i % 26);
    msg[sizeof msg - 1] = '\0';
    memcpy(kept, msg, SLUICE_AUX_MAX);
    kept[SLUICE_AUX_MAX] = '\0';
    memcpy(one_more, msg, SLUICE_AUX_MAX + 1);
    one_more[SLUICE_AUX_MAX + 1] = '\0';
    assert_ok(sluice_event_fail(&ct, SLUICE_EFAILED, msg));
    sluice_view_t v;
    assert_status(sluice_product_receive(&sc, INST_BLOCK, SLUICE_NONBLOCK, &v), SLUICE_EFAILED);
    assert_non_null(strstr(sluice_last_error(), kept));
    assert_null(strstr(sluice_last_error(), one_more));
}

/*
 * Regression test (failed at c832583, fixed since): sluice.h says the peer's next call on a
 * failed event, "a receive, a send, a reservation", returns the status. Only
 * sl_stream_pump notices the fail record, and a send or reservation that
 * finds room never pumps: it returns SLUICE_OK and publishes a product the
 * failed side discards.
 */
static void after_a_fail_the_peers_next_send_or_reservation_returns_the_status(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(sluice_event_fail(&ct, -31, "controller gave up"));
    int rc_send = send_words(&sc, INST_BACK, 1, SLUICE_NONBLOCK);
    sluice_reservation_t r;
    int rc_res = sluice_product_reserve(&sc, INST_BACK, PRODUCT_BYTES, WORDS, SLUICE_NONBLOCK, &r);
    if (rc_send != -31 || rc_res != -31)
        fail_msg("after the controller failed the event (-31), the source's send returned %d "
                 "(%s) and its reservation %d (%s)",
                 rc_send, sluice_strerror(rc_send), rc_res, sluice_strerror(rc_res));
}

/*
 * Regression test (failed at c832583, fixed since): a product sent before the fail is handed
 * out by the peer's next receive of its instance (sl_receive takes records
 * in ring order and returns the first that matches, before it reaches the
 * fail record), where sluice.h says that receive returns the status and what
 * the peer had received of the event is released. A receive of any other
 * instance does release it.
 */
static void after_a_fail_the_peers_next_receive_returns_the_status_not_an_older_product(
    void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(sluice_event_fail(&ct, -32, "controller gave up"));
    sluice_view_t v;
    int rc = sluice_product_receive(&sc, INST_BLOCK, SLUICE_NONBLOCK, &v);
    if (rc == SLUICE_OK) {
        sluice_view_release(p->src.ch, &v);
        fail_msg("after the controller failed the event (-32), the source's next receive "
                 "returned the product sent before the fail");
    }
    assert_status(rc, -32);
    assert_int_equal(stats(p->src.ch).discarded, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define ONE(f) cmocka_unit_test_setup_teardown(f, setup_one_stream, teardown)
        ONE(a_commit_waits_for_every_older_reservation),
        ONE(committing_the_oldest_publishes_it_and_the_committed_ones_behind_it),
        ONE(cancelling_the_newest_gives_its_arena_space_back),
        ONE(cancelling_the_only_reservation_leaves_the_whole_arena_free),
        ONE(cancelling_every_reservation_oldest_first_leaves_the_whole_arena_free),
        cmocka_unit_test_setup_teardown(the_seventeenth_open_reservation_is_refused_with_elimit,
                                        setup_ring64, teardown),
        ONE(fewer_reservations_than_the_ring_depth_stay_open),
        ONE(finish_cancels_open_reservations_and_publishes_committed_ones),
        ONE(a_send_whose_publication_fails_sends_nothing),
        ONE(a_reservation_waiting_while_another_thread_finishes_gets_ealready),
        ONE(a_receive_waiting_while_another_thread_finishes_gets_ealready),
        ONE(an_absent_mark_waiting_for_room_never_takes_a_reserved_slot),
        ONE(fail_needs_a_negative_status_and_leaves_the_event_open),
        ONE(the_peer_sees_the_fail_status_and_message_on_its_next_receive),
        ONE(a_controller_fail_reaches_the_source_as_efailed),
        ONE(the_failing_side_releases_what_it_had_not_received),
        ONE(a_fail_message_is_cut_at_aux_max),
        ONE(after_a_fail_the_peers_next_send_or_reservation_returns_the_status),
        ONE(after_a_fail_the_peers_next_receive_returns_the_status_not_an_older_product),
#undef ONE
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
