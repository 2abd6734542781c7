/* SPDX-License-Identifier: MIT */
/* The loopback transport and the controller/source pair of the core's unit tests (loopback.h). */
#include <stdlib.h>
#include <string.h>

#include "loopback.h"

/* ------------------------------------------------------------ loopback transport */

static int lb_open(const sl_link_params_t *params, sl_link_t **link_p, void **local_base_p)
{
    (void)params, (void)link_p, (void)local_base_p;
    return sl_fail(SLUICE_ENOTSUP, "loopback links are built by the test fixture");
}

static int lb_connect(sl_link_t *l, const sl_deadline_t *deadline, size_t *peer_bytes_p)
{
    (void)deadline;
    *peer_bytes_p = l->peer_bytes;
    return SLUICE_OK;
}

static int lb_close(sl_link_t *l, const sl_deadline_t *deadline)
{
    (void)l, (void)deadline;
    return SLUICE_OK;
}

static int lb_put(sl_link_t *l, size_t off, const void *src, size_t len)
{
    memcpy(l->peer + off, src, len);
    return SLUICE_OK;
}

void *lb_peer_ptr(sl_link_t *l, size_t off) { return l->peer + off; }

static int lb_store64(sl_link_t *l, size_t off, uint64_t value)
{
    /* Release: pairs with the owner's acquire load of its own inbox. */
    atomic_store_explicit((_Atomic uint64_t *)(void *)(l->peer + off), value, memory_order_release);
    return SLUICE_OK;
}

static int lb_publish(sl_link_t *l, const sl_stamped_t *recs, size_t n)
{
    return sl_publish_in_order(&lb_ops, l, recs, n);
}

static int lb_load64(sl_link_t *l, size_t off, uint64_t *value_p)
{
    /* Acquire: pairs with the owner's release store of its consumer counters. */
    *value_p = atomic_load_explicit((_Atomic uint64_t *)(void *)(l->peer + off),
                                    memory_order_acquire);
    return SLUICE_OK;
}

static int lb_get(sl_link_t *l, size_t off, void *dst, size_t len)
{
    memcpy(dst, l->peer + off, len);
    return SLUICE_OK;
}

static int lb_local_sync(sl_link_t *l)
{
    (void)l;
    return SLUICE_OK;
}
static void lb_progress(sl_link_t *l) { (void)l; }

/* lb_put_ops: the same copies, but the core puts (as over RMA), and publish can be made to fail. */
_Atomic int lb_publish_failures;
static int lb_put_publish(sl_link_t *l, const sl_stamped_t *recs, size_t n)
{
    int left = atomic_load(&lb_publish_failures);
    while (left > 0 && !atomic_compare_exchange_weak(&lb_publish_failures, &left, left - 1))
        ;
    if (left > 0)
        return sl_fail(SLUICE_ETIMEDOUT, "loopback: publication refused (as when the MPI guard "
                                         "stays held)");
    return sl_publish_in_order(&lb_put_ops, l, recs, n);
}

const sl_transport_ops_t lb_ops = {
    .size = sizeof(sl_transport_ops_t),
    .name = "loopback",
    .caps = SL_CAP_PEER_POINTER, /* no SL_CAP_NEEDS_PROGRESS: waits never call progress */
    .open = lb_open,
    .connect = lb_connect,
    .close = lb_close,
    .put = lb_put,
    .peer_ptr = lb_peer_ptr,
    .store64 = lb_store64,
    .publish = lb_publish,
    .load64 = lb_load64,
    .get = lb_get,
    .local_sync = lb_local_sync,
    .progress = lb_progress,
};

const sl_transport_ops_t lb_put_ops = {
    .size = sizeof(sl_transport_ops_t),
    .name = "loopback-put",
    .caps = 0,
    .open = lb_open,
    .connect = lb_connect,
    .close = lb_close,
    .put = lb_put,
    .peer_ptr = lb_peer_ptr,
    .store64 = lb_store64,
    .publish = lb_put_publish,
    .load64 = lb_load64,
    .get = lb_get,
    .local_sync = lb_local_sync,
    .progress = lb_progress,
};

/* ------------------------------------------------------------ fixture */

static const sluice_column_t soa_cols[] = { { "energy", 4, 4 }, { "detid", 4, 4 } };

/* One side's channel, built by the core's own sl_channel_alloc and sl_channel_wire, minus MPI. */
static sluice_channel_t *side_build(sluice_role_t role, const sluice_options_t *o, uint32_t streams,
                                    const sluice_endpoint_t *eps, size_t n_eps, side_t *side)
{
    sluice_channel_desc_t d = { .size = sizeof d,
                                .name = role == SLUICE_CONTROLLER ? "loop/controller"
                                                                  : "loop/source",
                                .role = role, .peer = "loop", .streams = streams,
                                .endpoints = eps, .n_endpoints = n_eps, .options = o };
    sluice_channel_t *ch = NULL;
    /* nothing on the paths tested reads the context */
    assert_ok(sl_channel_alloc(NULL, &d, o, &ch));
    ch->tp = &lb_ops;
    ch->link = &side->link;
    assert_ok(sl_channel_geometry(ch, &ch->geo));
    /* A fresh shm segment reads as zeros; so does this one. */
    ch->local = aligned_alloc(4096, ch->geo.inbox_bytes);
    assert_non_null(ch->local);
    memset(ch->local, 0, ch->geo.inbox_bytes);
    ch->header = (sl_inbox_header_t *)(void *)ch->local;
    sl_inbox_init(ch->local, &ch->geo, 0, NULL);
    sl_channel_wire(ch);
    side->ch = ch;
    return ch;
}

static void side_free(side_t *side)
{
    sluice_channel_t *ch = side->ch;
    if (!ch)
        return;
    free(ch->local);
    sl_channel_free(ch);
    side->ch = NULL;
}

/* Small rings and arena, so "full" is a few products away; short deadline, so a
 * wait that should not happen fails the test quickly instead of hanging it. */
static void small_options(sluice_options_t *o, uint32_t ring_depth)
{
    sluice_options_init(o);
    o->ring_depth = ring_depth;
    o->global_depth = 8;
    o->arena_bytes = ARENA_BYTES;
    o->max_open_lumis = 2;
    o->timeout_ms = 200;
    o->spin = 0;
    o->max_sleep_us = 100;
    assert_ok(sluice_options_validate(o));
}

int pair_setup(void **state, uint32_t streams, uint32_t ring_depth)
{
    pair_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    assert_ok(sluice_registry_create(&p->reg));
    sluice_type_desc_t bd = { .size = sizeof bd, .name = "test::Digi",
                              .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 8, .align = 8 };
    sluice_type_desc_t sd = { .size = sizeof sd, .name = "test::HitSoA",
                              .layout = SLUICE_LAYOUT_SOA, .columns = soa_cols, .n_columns = 2 };
    assert_ok(sluice_registry_add(p->reg, &bd, &p->block));
    assert_ok(sluice_registry_add(p->reg, &sd, &p->soa));
    const sluice_endpoint_t ctl_eps[] = {
        { INST_BLOCK, SLUICE_SEND, p->block },    { INST_SOA, SLUICE_SEND, p->soa },
        { INST_SPARE, SLUICE_SEND, p->block },    { INST_BACK, SLUICE_RECEIVE, p->block },
    };
    const sluice_endpoint_t src_eps[] = {
        { INST_BLOCK, SLUICE_RECEIVE, p->block }, { INST_SOA, SLUICE_RECEIVE, p->soa },
        { INST_SPARE, SLUICE_RECEIVE, p->block }, { INST_BACK, SLUICE_SEND, p->block },
    };
    sluice_options_t o;
    small_options(&o, ring_depth);
    side_build(SLUICE_CONTROLLER, &o, streams, ctl_eps, 4, &p->ctl);
    side_build(SLUICE_SOURCE, &o, streams, src_eps, 4, &p->src);
    p->ctl.link = (struct sl_link){ p->src.ch->local, p->src.ch->geo.inbox_bytes };
    p->src.link = (struct sl_link){ p->ctl.ch->local, p->ctl.ch->geo.inbox_bytes };
    *state = p;
    return 0;
}

int setup_one_stream(void **state) { return pair_setup(state, 1, 8); }
int setup_two_streams(void **state) { return pair_setup(state, 2, 8); }
int setup_deep_ring(void **state) { return pair_setup(state, 1, 1024); }

int teardown(void **state)
{
    pair_t *p = *state;
    side_free(&p->ctl);
    side_free(&p->src);
    sluice_registry_destroy(p->reg);
    free(p);
    return 0;
}

/* ------------------------------------------------------------ helpers */

sluice_transition_t transition(sluice_transition_kind_t kind, uint32_t run, uint32_t lumi,
                               uint64_t event)
{
    return (sluice_transition_t){ .kind = kind, .run = run, .lumi = lumi, .event = event };
}

void ctl_global(pair_t *p, sluice_transition_kind_t kind, uint32_t run, uint32_t lumi)
{
    sluice_transition_t t = transition(kind, run, lumi, 0);
    assert_ok(sluice_transition_send(p->ctl.ch, &t, SLUICE_NONBLOCK));
}

void src_expect_global(pair_t *p, sluice_transition_kind_t kind)
{
    sluice_transition_t t;
    assert_ok(sluice_transition_next(p->src.ch, &t, SLUICE_NONBLOCK));
    assert_int_equal(t.kind, kind);
}

void open_lumi(pair_t *p)
{
    ctl_global(p, SLUICE_BEGIN_RUN, 1, 0);
    ctl_global(p, SLUICE_BEGIN_LUMI, 1, 1);
    src_expect_global(p, SLUICE_BEGIN_RUN);
    src_expect_global(p, SLUICE_BEGIN_LUMI);
}

int ctl_event(pair_t *p, uint32_t stream, uint32_t lumi, uint64_t event, sluice_token_t *t)
{
    sluice_transition_t ev = transition(SLUICE_EVENT, 1, lumi, event);
    return sluice_event_send(p->ctl.ch, stream, &ev, SLUICE_NONBLOCK, t);
}

void src_event(pair_t *p, uint32_t stream, uint64_t event, sluice_token_t *t)
{
    sluice_transition_t ev;
    assert_ok(sluice_event_next(p->src.ch, stream, &ev, SLUICE_NONBLOCK, t));
    assert_int_equal(ev.kind, SLUICE_EVENT);
    assert_int_equal(ev.event, event);
}

void start_event(pair_t *p, sluice_token_t *ct, sluice_token_t *sc)
{
    open_lumi(p);
    assert_ok(ctl_event(p, 0, 1, 1000, ct));
    src_event(p, 0, 1000, sc);
}

int send_words(sluice_token_t *t, uint32_t instance, uint64_t first, unsigned flags)
{
    uint64_t w[WORDS];
    for (unsigned i = 0; i < WORDS; i++)
        w[i] = first + i;
    return sluice_product_send(t, instance, w, sizeof w, WORDS, flags);
}

void expect_words(sluice_token_t *t, uint32_t instance, uint64_t first)
{
    sluice_view_t v;
    assert_ok(sluice_product_receive(t, instance, SLUICE_NONBLOCK, &v));
    assert_int_equal(v.bytes, PRODUCT_BYTES);
    assert_int_equal(v.count, WORDS);
    const uint64_t *w = v.data;
    for (unsigned i = 0; i < WORDS; i++)
        assert_int_equal(w[i], first + i);
    assert_ok(sluice_view_release(t->channel, &v));
}

uint64_t inbox_word(const sluice_channel_t *ch, uint64_t off)
{
    return atomic_load_explicit((_Atomic uint64_t *)(void *)(ch->local + off),
                                memory_order_acquire);
}

uint64_t ring_fill(const sluice_channel_t *ch, uint32_t s)
{
    const sl_stream_t *st = &ch->streams[s];
    return sl_ring_rx_published(&st->rx);
}

sluice_channel_stats_t stats(const sluice_channel_t *ch)
{
    sluice_channel_stats_t s;
    sluice_channel_stats(ch, &s);
    return s;
}
