/* SPDX-License-Identifier: MIT */
/* Per-stream core logic (pending list, drain, drops, ordering gates, end of job) between a
 * controller and a source in one process, over a loopback transport, without MPI. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loopback.h"

/* What a broken or hostile peer could write: one record on a stream ring. */
static void forge_record(side_t *from, uint32_t s, const sl_record_t *r)
{
    sl_stream_t *st = &from->ch->streams[s];
    assert_ok(sl_ring_tx_room(&st->tx, from->ch->tp, from->ch->link));
    assert_ok(sl_ring_tx_push(&st->tx, from->ch->tp, from->ch->link, r));
}

/* A product record with any count, placed in the arena as a correct producer
 * places it (sl_commit), so only the count is wrong. */
static void forge_product(side_t *from, uint32_t s, uint32_t instance, uint64_t fingerprint,
                          uint64_t count, uint64_t bytes)
{
    sluice_channel_t *ch = from->ch;
    sl_stream_t *st = &ch->streams[s];
    uint64_t pos;
    assert_ok(sl_arena_place(st->arena_head, st->arena_tail_cache, ch->geo.arena_bytes, bytes,
                             &pos));
    memset(lb_peer_ptr(ch->link, st->arena_off + sl_arena_offset(pos, ch->geo.arena_bytes)), 0xab,
           bytes);
    sl_record_t r = { .kind = SL_REC_PRODUCT, .seq = st->token_seq, .instance = instance,
                      .count = count, .fingerprint = fingerprint, .pos = pos, .bytes = bytes };
    forge_record(from, s, &r);
    if (st->arena_tail_cache == st->arena_head)
        st->arena_tail_cache = pos;
    st->arena_head = pos + sl_align_up(bytes, SL_ARENA_ALIGN);
}

static void forge_absent(side_t *from, uint32_t s, uint32_t instance, uint64_t fingerprint)
{
    sl_record_t r = { .kind = SL_REC_ABSENT, .seq = from->ch->streams[s].token_seq,
                      .instance = instance, .fingerprint = fingerprint };
    forge_record(from, s, &r);
}

/* ------------------------------------------------------------ pending list */

static void pump_queues_products_of_the_current_event_in_arrival_order(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(send_words(&ct, INST_SOA, 200, 0));
    assert_ok(send_words(&ct, INST_BLOCK, 300, 0));
    assert_ok(sluice_event_finish(&ct));

    sl_stream_t *st = &p->src.ch->streams[0];
    for (int i = 0; i < 3; i++)
        assert_ok(sl_stream_pump(p->src.ch, st));
    assert_int_equal(st->n_pending, 3);
    const uint32_t want[3] = { INST_BLOCK, INST_SOA, INST_BLOCK };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(st->pending[i].instance, want[i]);
        assert_int_equal(st->pending[i].status, SLUICE_OK);
        assert_int_equal(st->pending[i].bytes, PRODUCT_BYTES);
    }
    assert_true(st->pending[0].pos < st->pending[1].pos);
    assert_true(st->pending[1].pos < st->pending[2].pos);
    /* The end mark is taken too, but queues nothing: it ends the event. */
    assert_false(st->peer_ended);
    assert_ok(sl_stream_pump(p->src.ch, st));
    assert_true(st->peer_ended);
    assert_int_equal(st->n_pending, 3);
    assert_status(sl_stream_pump(p->src.ch, st), SLUICE_EAGAIN);
}

static void receive_picks_pending_products_by_instance_out_of_order(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(send_words(&ct, INST_SOA, 200, 0));
    assert_ok(send_words(&ct, INST_BLOCK, 300, 0));

    /* The SoA came second: a receive takes in everything that has come (a
     * fail mark behind would void it), so both block products wait. */
    expect_words(&sc, INST_SOA, 200);
    assert_int_equal(p->src.ch->streams[0].n_pending, 2);
    expect_words(&sc, INST_BLOCK, 100);
    expect_words(&sc, INST_BLOCK, 300);
    assert_int_equal(stats(p->src.ch).products_received, 3);
}

static void receive_is_absent_only_after_the_peers_event_end(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    sluice_view_t v;
    /* Not sent yet, but the event is still open: it may come. */
    assert_status(sluice_product_receive(&sc, INST_SOA, SLUICE_NONBLOCK, &v), SLUICE_EAGAIN);
    assert_ok(sluice_event_finish(&ct));
    assert_status(sluice_product_receive(&sc, INST_SOA, SLUICE_NONBLOCK, &v), SLUICE_ABSENT);
    /* What came before the end is still there; after it, nothing more. */
    expect_words(&sc, INST_BLOCK, 100);
    assert_status(sluice_product_receive(&sc, INST_BLOCK, SLUICE_NONBLOCK, &v), SLUICE_ABSENT);
}

/* ------------------------------------------------------------ drain and drops */

static void drain_discards_finished_events_and_releases_their_arena(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    /* The source is done with the event before the controller sends anything:
     * the ring has room, so the controller publishes regardless. */
    assert_ok(sluice_event_finish(&sc));
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(send_words(&ct, INST_SOA, 200, 0));
    assert_ok(sluice_event_finish(&ct));
    sluice_token_t ct2;
    assert_ok(ctl_event(p, 0, 1, 1001, &ct2));

    sluice_channel_t *src = p->src.ch;
    sl_stream_t *st = &src->streams[0];
    uint64_t tail_off = st->rx.ctrl + SL_ARENA_TAIL_OFF;
    assert_int_equal(inbox_word(src, tail_off), 0);
    assert_int_equal(ring_fill(src, 0), 4); /* two products, end mark, next event */
    assert_ok(sl_stream_drain(src, st));

    assert_int_equal(stats(src).discarded, 2);
    assert_int_equal(st->arx.n, 0);
    /* Every byte the controller placed is released and published. */
    assert_int_equal(inbox_word(src, tail_off), p->ctl.ch->streams[0].arena_head);
    assert_true(inbox_word(src, tail_off) >= 2 * PRODUCT_BYTES);
    /* Drain stops at the next event, which is left for event_next. */
    assert_int_equal(ring_fill(src, 0), 1);
    sluice_token_t sc2;
    src_event(p, 0, 1001, &sc2);
}

static void drain_leaves_records_of_a_later_event_in_the_ring(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(sluice_event_finish(&sc));
    assert_ok(sluice_event_finish(&ct));
    sluice_token_t ct2, sc2;
    assert_ok(ctl_event(p, 0, 1, 1001, &ct2));
    src_event(p, 0, 1001, &sc2);
    assert_ok(send_words(&ct2, INST_BLOCK, 100, 0));

    /* Only event 1 is finished here: the product of event 2 is not drain's to take. */
    sluice_channel_t *src = p->src.ch;
    assert_ok(sl_stream_drain(src, &src->streams[0]));
    assert_int_equal(ring_fill(src, 0), 1);
    assert_int_equal(stats(src).discarded, 0);
    expect_words(&sc2, INST_BLOCK, 100);
}

/* One side of an exchange in which both send `n` products, then receive the peer's. */
typedef struct flow {
    sluice_token_t *tok;
    uint32_t out, in;
    uint64_t sent, got, full;
} flow_t;

/*
 * Send without blocking until the ring is full or all is sent; once all is
 * sent, receive what has come. Returns how many products moved, so a round
 * in which neither side moves anything is a deadlock.
 */
static uint64_t flow_step(flow_t *f, uint64_t n)
{
    uint64_t moved = 0;
    while (f->sent < n) {
        int rc = send_words(f->tok, f->out, 1000 * f->sent, SLUICE_NONBLOCK);
        if (rc == SLUICE_EAGAIN) {
            f->full++;
            /* While it found no room it took in all the peer had sent it. */
            assert_int_equal(ring_fill(f->tok->channel, f->tok->stream), 0);
            return moved;
        }
        assert_ok(rc);
        f->sent++, moved++;
    }
    for (;;) {
        sluice_view_t v;
        int rc = sluice_product_receive(f->tok, f->in, SLUICE_NONBLOCK, &v);
        if (rc == SLUICE_EAGAIN)
            return moved;
        assert_ok(rc);
        assert_int_equal(((const uint64_t *)v.data)[0], 1000 * f->got);
        assert_ok(sluice_view_release(f->tok->channel, &v));
        f->got++, moved++;
    }
}

static void both_sides_sending_past_the_ring_depth_never_deadlock(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    const uint64_t n = 3 * p->ctl.ch->geo.ring_depth;
    flow_t c = { &ct, INST_BLOCK, INST_BACK, 0, 0, 0 }, s = { &sc, INST_BACK, INST_BLOCK, 0, 0, 0 };
    /* Both send everything before receiving anything: without taking in the
     * peer's records while full (review H4), both rings stay full. */
    while (c.got < n || s.got < n) {
        uint64_t moved = flow_step(&c, n);
        moved += flow_step(&s, n);
        if (!moved)
            fail_msg("deadlock: controller sent %llu got %llu, source sent %llu got %llu",
                     (unsigned long long)c.sent, (unsigned long long)c.got,
                     (unsigned long long)s.sent, (unsigned long long)s.got);
    }
    assert_true(c.full > 0 && s.full > 0); /* both rings really were full */
    assert_ok(sluice_event_finish(&ct));
    assert_ok(sluice_event_finish(&sc));
}

static void sends_after_the_peer_finished_the_event_are_dropped(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(sluice_event_finish(&ct));
    const uint64_t depth = p->src.ch->geo.ring_depth, n = 2 * depth + 3;
    /* Non-blocking: a send that found the ring full and did not drop would
     * say SLUICE_EAGAIN instead. */
    for (uint64_t i = 0; i < n; i++)
        assert_ok(send_words(&sc, INST_BACK, i, SLUICE_NONBLOCK));
    sluice_channel_stats_t s = stats(p->src.ch);
    assert_int_equal(s.products_sent, depth);
    assert_int_equal(s.discarded, n - depth);
    /* Finishing needs no end mark either: it neither waits nor publishes one. */
    assert_ok(sluice_event_finish(&sc));
    assert_int_equal(ring_fill(p->ctl.ch, 0), depth);
}

/* ------------------------------------------------------------ checks of what the peer wrote */

static void a_flood_of_unclaimed_records_gives_elimit_not_unbounded_memory(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    sluice_channel_t *src = p->src.ch;
    sl_stream_t *st = &src->streams[0];
    const uint64_t fp = sluice_type_fingerprint(p->block);
    const uint32_t depth = src->geo.ring_depth;
    /* The ring holds fewer than the bound: fill it, take it in, again. */
    for (uint32_t round = 0; round < SL_PENDING_MAX / depth; round++) {
        for (uint32_t i = 0; i < depth; i++)
            forge_absent(&p->ctl, 0, INST_BLOCK, fp);
        int rc;
        while ((rc = sl_stream_pump(src, st)) == SLUICE_OK)
            ;
        assert_status(rc, SLUICE_EAGAIN);
    }
    assert_int_equal(st->n_pending, SL_PENDING_MAX);
    forge_absent(&p->ctl, 0, INST_BLOCK, fp);
    sluice_view_t v;
    assert_status(sluice_product_receive(&sc, INST_SPARE, SLUICE_NONBLOCK, &v), SLUICE_ELIMIT);
    assert_int_equal(st->n_pending, SL_PENDING_MAX);
    assert_true(st->pending_room <= SL_PENDING_MAX);
    assert_int_equal(ring_fill(src, 0), 1); /* the record past the bound stays in the ring */
}

static void the_sender_refuses_a_count_its_bytes_cannot_hold(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    uint64_t w[WORDS] = { 0 };
    assert_status(sluice_product_send(&ct, INST_SOA, w, sizeof w, WORDS + 1, 0), SLUICE_EINVAL);
    assert_status(sluice_product_send(&ct, INST_BLOCK, w, sizeof w, WORDS + 1, 0), SLUICE_EINVAL);
    assert_int_equal(ring_fill(p->src.ch, 0), 0);
    assert_int_equal(stats(p->ctl.ch).products_sent, 0);
}

static void a_count_that_overflows_its_bytes_fails_only_that_receive(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    /* 9 elements need 72 bytes of either type; the regions hold 64. */
    forge_product(&p->ctl, 0, INST_SOA, sluice_type_fingerprint(p->soa), WORDS + 1, PRODUCT_BYTES);
    forge_product(&p->ctl, 0, INST_SPARE, sluice_type_fingerprint(p->block), WORDS + 1,
                  PRODUCT_BYTES);
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(sluice_event_finish(&ct));

    expect_words(&sc, INST_BLOCK, 100);
    sluice_view_t v;
    assert_status(sluice_product_receive(&sc, INST_SOA, SLUICE_NONBLOCK, &v), SLUICE_ECORRUPT);
    assert_status(sluice_product_receive(&sc, INST_SPARE, SLUICE_NONBLOCK, &v), SLUICE_ECORRUPT);
    /* The refused regions went back to the sender with the good one. */
    sl_stream_t *st = &p->src.ch->streams[0];
    assert_int_equal(st->arx.n, 0);
    assert_int_equal(st->arx.tail, p->ctl.ch->streams[0].arena_head);
    assert_int_equal(stats(p->src.ch).products_received, 1);
}

static void an_absent_mark_with_another_fingerprint_is_refused_with_etype(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    forge_absent(&p->ctl, 0, INST_SOA, sluice_type_fingerprint(p->block));
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(sluice_event_finish(&ct));

    expect_words(&sc, INST_BLOCK, 100);
    sluice_view_t v;
    assert_status(sluice_product_receive(&sc, INST_SOA, SLUICE_NONBLOCK, &v), SLUICE_ETYPE);
    assert_status(sluice_product_receive(&sc, INST_SOA, SLUICE_NONBLOCK, &v), SLUICE_ABSENT);
}

static void an_absent_mark_for_an_undeclared_instance_does_not_break_the_stream(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    forge_absent(&p->ctl, 0, INST_UNKNOWN, sluice_type_fingerprint(p->block));
    assert_ok(send_words(&ct, INST_BLOCK, 100, 0));
    assert_ok(sluice_event_finish(&ct));

    expect_words(&sc, INST_BLOCK, 100);
    /* Taken in and refused: nobody here receives instance 99. */
    sl_stream_t *st = &p->src.ch->streams[0];
    assert_int_equal(st->n_pending, 1);
    assert_int_equal(st->pending[0].instance, INST_UNKNOWN);
    assert_int_equal(st->pending[0].status, SLUICE_ETYPE);
    sluice_view_t v;
    assert_status(sluice_product_receive(&sc, INST_UNKNOWN, SLUICE_NONBLOCK, &v),
                  SLUICE_ENOTFOUND);
    assert_ok(sluice_event_finish(&sc));
    /* The next event goes through as if nothing happened. */
    sluice_token_t ct2, sc2;
    assert_ok(ctl_event(p, 0, 1, 1001, &ct2));
    src_event(p, 0, 1001, &sc2);
    assert_ok(send_words(&ct2, INST_BLOCK, 500, 0));
    expect_words(&sc2, INST_BLOCK, 500);
}

static void an_event_record_in_the_controllers_inbox_is_corrupt(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    sl_record_t r = { .kind = SLUICE_EVENT, .seq = sc.seq, .dep = 2 };
    forge_record(&p->src, 0, &r);
    sluice_view_t v;
    assert_status(sluice_product_receive(&ct, INST_BACK, SLUICE_NONBLOCK, &v), SLUICE_ECORRUPT);
}

static void a_stream_end_in_the_controllers_inbox_fails_the_next_event_unclaimed(void **state)
{
    pair_t *p = *state;
    sluice_token_t ct, sc;
    start_event(p, &ct, &sc);
    assert_ok(sluice_event_finish(&ct));
    assert_ok(sluice_event_finish(&sc));
    sl_record_t r = { .kind = SL_REC_STREAM_END };
    forge_record(&p->src, 0, &r);
    sluice_token_t ct2;
    assert_status(ctl_event(p, 0, 1, 1001, &ct2), SLUICE_ECORRUPT);
    assert_int_equal(p->ctl.ch->lumis[0].events, 1);
    assert_false(atomic_load(&p->ctl.ch->streams[0].token_open));
}

/* ------------------------------------------------------------ ordering gates */

static void an_event_waits_until_its_lumis_begin_is_delivered(void **state)
{
    pair_t *p = *state;
    ctl_global(p, SLUICE_BEGIN_RUN, 1, 0);
    ctl_global(p, SLUICE_BEGIN_LUMI, 1, 1);
    sluice_token_t ct, sc;
    assert_ok(ctl_event(p, 0, 1, 1000, &ct));
    sluice_transition_t ev;
    assert_status(sluice_event_next(p->src.ch, 0, &ev, SLUICE_NONBLOCK, &sc), SLUICE_EAGAIN);
    src_expect_global(p, SLUICE_BEGIN_RUN);
    assert_status(sluice_event_next(p->src.ch, 0, &ev, SLUICE_NONBLOCK, &sc), SLUICE_EAGAIN);
    assert_int_equal(ring_fill(p->src.ch, 0), 1); /* held, not lost */
    src_expect_global(p, SLUICE_BEGIN_LUMI);
    src_event(p, 0, 1000, &sc);
}

static void end_lumi_waits_until_its_events_were_taken_on_every_stream(void **state)
{
    pair_t *p = *state;
    open_lumi(p);
    sluice_token_t ct0, ct1, sc0, sc1;
    assert_ok(ctl_event(p, 0, 1, 1000, &ct0));
    assert_ok(ctl_event(p, 1, 1, 1001, &ct1));
    ctl_global(p, SLUICE_END_LUMI, 1, 1);
    sluice_transition_t t;
    assert_status(sluice_transition_next(p->src.ch, &t, SLUICE_NONBLOCK), SLUICE_EAGAIN);
    src_event(p, 1, 1001, &sc1);
    assert_status(sluice_transition_next(p->src.ch, &t, SLUICE_NONBLOCK), SLUICE_EAGAIN);
    src_event(p, 0, 1000, &sc0);
    src_expect_global(p, SLUICE_END_LUMI);
}

/* Controller: events on `stream`, each finished at once, until its ring is full. */
static uint64_t fill_stream_with_events(pair_t *p, uint32_t stream)
{
    uint64_t n = 0;
    for (;;) {
        sluice_token_t t;
        int rc = ctl_event(p, stream, 1, 1000 + n, &t);
        if (rc == SLUICE_EAGAIN)
            return n;
        assert_ok(rc);
        assert_ok(sluice_event_finish(&t));
        n++;
        assert_true(n <= p->ctl.ch->geo.ring_depth);
    }
}

/* Source: take the events of `stream` and finish each one. */
static void src_take_events(pair_t *p, uint32_t stream, uint64_t first, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        sluice_token_t t;
        src_event(p, stream, first + i, &t);
        assert_ok(sluice_event_finish(&t));
    }
}

static void end_of_job_with_a_full_stream_ring_publishes_nothing(void **state)
{
    pair_t *p = *state;
    sluice_channel_t *ctl = p->ctl.ch, *src = p->src.ch;
    open_lumi(p);
    uint64_t n = fill_stream_with_events(p, 1);
    assert_true(n > 0);
    ctl_global(p, SLUICE_END_LUMI, 1, 1);
    ctl_global(p, SLUICE_END_RUN, 1, 0);

    uint64_t gheads[2] = { ctl->gtx.head, sl_ring_rx_published(&src->grx) };
    uint64_t sheads[2] = { ring_fill(src, 0), ring_fill(src, 1) };
    sluice_transition_t end = transition(SLUICE_END_JOB, 0, 0, 0);
    assert_status(sluice_transition_send(ctl, &end, SLUICE_NONBLOCK), SLUICE_EAGAIN);
    assert_int_equal(ctl->gtx.head, gheads[0]);
    assert_int_equal(sl_ring_rx_published(&src->grx), gheads[1]);
    assert_int_equal(ring_fill(src, 0), sheads[0]);
    assert_int_equal(ring_fill(src, 1), sheads[1]);
    assert_false(ctl->job_ended);
    assert_false(ctl->job_ending);

    /* One event taken makes room for the stream's end: now it all goes. */
    src_take_events(p, 1, 1000, 1);
    assert_ok(sluice_transition_send(ctl, &end, SLUICE_NONBLOCK));
    assert_true(ctl->job_ended);
    src_take_events(p, 1, 1001, n - 1);
    sluice_transition_t ev;
    sluice_token_t t;
    assert_status(sluice_event_next(src, 1, &ev, SLUICE_NONBLOCK, &t), SLUICE_EOF);
    assert_status(sluice_event_next(src, 0, &ev, SLUICE_NONBLOCK, &t), SLUICE_EOF);
    src_expect_global(p, SLUICE_END_LUMI);
    src_expect_global(p, SLUICE_END_RUN);
    src_expect_global(p, SLUICE_END_JOB);
    assert_status(sluice_transition_next(src, &ev, SLUICE_NONBLOCK), SLUICE_EOF);
}

static void a_failed_event_send_leaves_nothing_half_applied(void **state)
{
    pair_t *p = *state;
    sluice_channel_t *ctl = p->ctl.ch, *src = p->src.ch;
    open_lumi(p);
    uint64_t n = fill_stream_with_events(p, 0);
    assert_true(n > 0);
    sluice_token_t t = { NULL, 77, 77 };
    assert_status(ctl_event(p, 0, 1, 1000 + n, &t), SLUICE_EAGAIN);

    /* Written only on success; the lumi counts only what was published. */
    assert_null(t.channel);
    assert_int_equal(t.seq, 77);
    sl_stream_t *st = &ctl->streams[0];
    assert_false(atomic_load(&st->token_open));
    assert_int_equal(st->next_seq, n);
    assert_int_equal(st->token_seq, n);
    assert_int_equal(ctl->lumis[0].events, n);
    assert_int_equal(ctl->lumis[0].inflight, 0);

    /* The lumi can end at once (nothing in flight), and says n events. */
    ctl_global(p, SLUICE_END_LUMI, 1, 1);
    sl_record_t r;
    assert_ok(sl_ring_rx_peek(&src->grx, &r));
    assert_int_equal(r.kind, SLUICE_END_LUMI);
    assert_int_equal(r.count, n);
    src_take_events(p, 0, 1000, n);
    src_expect_global(p, SLUICE_END_LUMI);

    /* The next event gets the sequence number the failed one did not use. */
    ctl_global(p, SLUICE_BEGIN_LUMI, 1, 2);
    src_expect_global(p, SLUICE_BEGIN_LUMI);
    assert_ok(ctl_event(p, 0, 2, 2000, &t));
    assert_int_equal(t.seq, n + 1);
    sluice_token_t sc;
    src_event(p, 0, 2000, &sc);
    assert_int_equal(sc.seq, n + 1);
}

static void a_done_mark_for_an_event_never_sent_fails_the_send_with_a_status(void **state)
{
    pair_t *p = *state;
    sluice_channel_t *ctl = p->ctl.ch, *src = p->src.ch;
    open_lumi(p);
    uint64_t n = fill_stream_with_events(p, 0);
    /* A broken source claims to have finished events it was never sent; the
     * controller reads the word only when it finds the ring full. */
    atomic_store_explicit((_Atomic uint64_t *)(void *)(src->local + src->streams[0].rx.ctrl +
                                                       SL_RING_DONE_OFF),
                          UINT64_MAX, memory_order_release);
    sluice_token_t t;
    int rc = ctl_event(p, 0, 1, 1000 + n, &t);
    /* Whatever it returns must be a failure the caller can name, not the
     * core's internal "dropped" result (SL_DROPPED) leaking out. */
    if (rc >= 0 || strcmp(sluice_strerror(rc), "unknown status") == 0)
        fail_msg("sluice_event_send on a full ring with the peer's done mark at UINT64_MAX "
                 "returned %d (%s), not a failure status",
                 rc, sluice_strerror(rc));
    assert_false(atomic_load(&ctl->streams[0].token_open));
    assert_int_equal(ctl->lumis[0].events, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define ONE(f) cmocka_unit_test_setup_teardown(f, setup_one_stream, teardown)
#define TWO(f) cmocka_unit_test_setup_teardown(f, setup_two_streams, teardown)
        ONE(pump_queues_products_of_the_current_event_in_arrival_order),
        ONE(receive_picks_pending_products_by_instance_out_of_order),
        ONE(receive_is_absent_only_after_the_peers_event_end),
        ONE(drain_discards_finished_events_and_releases_their_arena),
        ONE(drain_leaves_records_of_a_later_event_in_the_ring),
        ONE(both_sides_sending_past_the_ring_depth_never_deadlock),
        ONE(sends_after_the_peer_finished_the_event_are_dropped),
        cmocka_unit_test_setup_teardown(
            a_flood_of_unclaimed_records_gives_elimit_not_unbounded_memory, setup_deep_ring,
            teardown),
        ONE(the_sender_refuses_a_count_its_bytes_cannot_hold),
        ONE(a_count_that_overflows_its_bytes_fails_only_that_receive),
        ONE(an_absent_mark_with_another_fingerprint_is_refused_with_etype),
        ONE(an_absent_mark_for_an_undeclared_instance_does_not_break_the_stream),
        ONE(an_event_record_in_the_controllers_inbox_is_corrupt),
        ONE(a_stream_end_in_the_controllers_inbox_fails_the_next_event_unclaimed),
        ONE(an_event_waits_until_its_lumis_begin_is_delivered),
        TWO(end_lumi_waits_until_its_events_were_taken_on_every_stream),
        TWO(end_of_job_with_a_full_stream_ring_publishes_nothing),
        ONE(a_failed_event_send_leaves_nothing_half_applied),
        ONE(a_done_mark_for_an_event_never_sent_fails_the_send_with_a_status),
#undef ONE
#undef TWO
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
