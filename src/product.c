/* SPDX-License-Identifier: MIT */
/* Products: reserve/commit into the peer's arena, receive views, finish events. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"

int sl_token_stream(const sluice_token_t *token, sl_stream_t **st_p)
{
    if (!token || !token->channel)
        return sl_fail(SLUICE_EINVAL, "token is NULL or was never started");
    sluice_channel_t *ch = token->channel;
    if (token->stream >= ch->n_streams)
        return sl_fail(SLUICE_EINVAL, "token names stream %u of %u", token->stream,
                       ch->n_streams);
    sl_stream_t *st = &ch->streams[token->stream];
    if (token->seq != st->token_seq || !atomic_load_explicit(&st->token_open, memory_order_relaxed))
        return sl_fail(SLUICE_EALREADY, "stream %u: event %llu is finished (current %llu)",
                       token->stream, (unsigned long long)token->seq,
                       (unsigned long long)st->token_seq);
    *st_p = st;
    return SLUICE_OK;
}

/* ------------------------------------------------------------ consumer helpers */

void sl_stream_publish_arena_tail(sluice_channel_t *ch, sl_stream_t *st)
{
    /* Release: pairs with the producer's acquire load64 of the arena tail;
     * our reads of the released regions are done before it reuses them. */
    _Atomic uint64_t *tail =
        (_Atomic uint64_t *)(void *)(ch->local + st->rx.ctrl + SL_ARENA_TAIL_OFF);
    atomic_store_explicit(tail, st->arx.tail, memory_order_release);
}

static void sl_stream_release_id(sluice_channel_t *ch, sl_stream_t *st, uint64_t id)
{
    bool advanced;
    if (sl_arena_rx_release(&st->arx, id, &advanced) == SLUICE_OK && advanced)
        sl_stream_publish_arena_tail(ch, st);
}

int sl_stream_discard(sluice_channel_t *ch, sl_stream_t *st, const sl_record_t *rec)
{
    if (rec->kind == SL_REC_PRODUCT) {
        uint64_t id;
        int rc = sl_arena_rx_accept(&st->arx, rec->pos, rec->bytes, &id);
        if (rc)
            return rc;
        sl_stream_release_id(ch, st, id);
        sl_stat_add(&ch->stats.discarded, 1);
    } else if (rec->kind != SL_REC_ABSENT && rec->kind != SL_REC_EVENT_END) {
        return sl_fail(SLUICE_ECORRUPT, "stream record of unknown kind %u", rec->kind);
    }
    sl_ring_rx_consume(&st->rx);
    return SLUICE_OK;
}

int sl_stream_drain(sluice_channel_t *ch, sl_stream_t *st)
{
    sl_record_t r;
    for (;;) {
        int rc = sl_ring_rx_peek(&st->rx, &r);
        if (rc == SLUICE_EAGAIN)
            return SLUICE_OK;
        if (rc)
            return rc;
        if (r.kind == SLUICE_EVENT || r.kind == SL_REC_STREAM_END || r.seq > st->done_seq)
            return SLUICE_OK;
        if ((rc = sl_stream_discard(ch, st, &r)))
            return rc;
    }
}

void sl_stream_drop_pending(sluice_channel_t *ch, sl_stream_t *st)
{
    for (size_t i = 0; i < st->n_pending; i++) {
        if (!st->pending[i].absent) {
            sl_stream_release_id(ch, st, st->pending[i].id);
            sl_stat_add(&ch->stats.discarded, 1);
        }
    }
    st->n_pending = 0;
}

static int sl_pending_push(sl_stream_t *st, const sl_pending_t *p)
{
    if (st->n_pending == st->pending_room) {
        size_t room = st->pending_room ? st->pending_room * 2 : 8;
        sl_pending_t *n = realloc(st->pending, room * sizeof *n);
        if (!n)
            return sl_fail(SLUICE_ENOMEM, "cannot grow the pending product list to %zu", room);
        st->pending = n;
        st->pending_room = room;
    }
    st->pending[st->n_pending++] = *p;
    return SLUICE_OK;
}

/*
 * Take one record for the current event off the stream ring. SLUICE_EAGAIN
 * if the ring is empty. Records of older events are discarded; a record that
 * starts another event (or the stream's end) means the peer is done with
 * this one.
 */
static int sl_stream_pump(sluice_channel_t *ch, sl_stream_t *st)
{
    sl_record_t r;
    int rc = sl_ring_rx_peek(&st->rx, &r);
    if (rc)
        return rc;
    if (r.kind == SLUICE_EVENT || r.kind == SL_REC_STREAM_END) {
        st->peer_ended = true; /* left in the ring for event_next */
        return SLUICE_OK;
    }
    if (r.seq < st->token_seq)
        return sl_stream_discard(ch, st, &r);
    if (r.seq > st->token_seq)
        return sl_fail(SLUICE_ECORRUPT, "stream record for event %llu while event %llu is "
                                        "current",
                       (unsigned long long)r.seq, (unsigned long long)st->token_seq);
    sl_pending_t p = { .instance = r.instance, .count = r.count };
    switch (r.kind) {
    case SL_REC_EVENT_END:
        st->peer_ended = true;
        sl_ring_rx_consume(&st->rx);
        return SLUICE_OK;
    case SL_REC_ABSENT:
        p.absent = true;
        break;
    case SL_REC_PRODUCT: {
        const sluice_endpoint_t *e = sl_channel_endpoint(ch, r.instance, SLUICE_RECEIVE);
        if ((rc = sl_arena_rx_accept(&st->arx, r.pos, r.bytes, &p.id)))
            return rc;
        if (!e || sluice_type_fingerprint(e->type) != r.fingerprint) {
            sl_stream_release_id(ch, st, p.id);
            sl_ring_rx_consume(&st->rx);
            return sl_fail(SLUICE_ETYPE, "product of instance %u with fingerprint 0x%016llx: this "
                                         "side %s",
                           r.instance, (unsigned long long)r.fingerprint,
                           e ? "expects another type" : "has no receiver for it");
        }
        p.pos = r.pos;
        p.bytes = r.bytes;
        break;
    }
    default:
        return sl_fail(SLUICE_ECORRUPT, "stream record of unknown kind %u", r.kind);
    }
    if ((rc = sl_pending_push(st, &p)))
        return rc;
    sl_ring_rx_consume(&st->rx);
    return SLUICE_OK;
}

int sluice_product_receive(sluice_token_t *token, uint32_t instance, unsigned flags,
                           sluice_view_t *view_p)
{
    sl_stream_t *st;
    int rc = sl_token_stream(token, &st);
    if (rc)
        return rc;
    if (!view_p)
        return sl_fail(SLUICE_EINVAL, "view_p is NULL");
    sluice_channel_t *ch = token->channel;
    const sluice_endpoint_t *e = sl_channel_endpoint(ch, instance, SLUICE_RECEIVE);
    if (!e)
        return sl_fail(SLUICE_ENOTFOUND, "channel \"%s\": no receiver of instance %u declared",
                       ch->name, instance);
    sl_wait_t w;
    sl_wait_init(ch, &w);
    for (;;) {
        for (size_t i = 0; i < st->n_pending; i++) {
            if (st->pending[i].instance != instance)
                continue;
            sl_pending_t p = st->pending[i];
            memmove(&st->pending[i], &st->pending[i + 1],
                    (st->n_pending - i - 1) * sizeof *st->pending);
            st->n_pending--;
            if (p.absent)
                return SLUICE_ABSENT;
            *view_p = (sluice_view_t){
                .data = ch->local + st->arena_off + sl_arena_offset(p.pos, ch->geo.arena_bytes),
                .bytes = p.bytes,
                .count = p.count,
                .type = e->type,
                .stream = token->stream,
                .handle = p.id,
            };
            sl_stat_add(&ch->stats.products_received, 1);
            sl_stat_add(&ch->stats.bytes_received, p.bytes);
            return SLUICE_OK;
        }
        if (st->peer_ended)
            return SLUICE_ABSENT;
        rc = sl_stream_pump(ch, st);
        if (rc == SLUICE_OK)
            continue;
        if (rc != SLUICE_EAGAIN)
            return rc;
        if ((rc = sl_wait_step(ch, &w, flags, "waiting for a product")))
            return rc;
    }
}

int sluice_view_release(sluice_channel_t *ch, sluice_view_t *view)
{
    if (!ch || !view)
        return sl_fail(SLUICE_EINVAL, "channel and view must not be NULL");
    if (view->handle == 0)
        return sl_fail(SLUICE_EALREADY, "view already released");
    if (view->stream >= ch->n_streams)
        return sl_fail(SLUICE_EINVAL, "view names stream %u of %u", view->stream, ch->n_streams);
    sl_stream_t *st = &ch->streams[view->stream];
    bool advanced;
    int rc = sl_arena_rx_release(&st->arx, view->handle, &advanced);
    if (rc)
        return rc;
    if (advanced)
        sl_stream_publish_arena_tail(ch, st);
    view->handle = 0;
    view->data = NULL;
    return SLUICE_OK;
}

int sluice_view_deserialise(const sluice_view_t *view, void *object)
{
    if (!view || !view->type || !object)
        return sl_fail(SLUICE_EINVAL, "view, its type and object must not be NULL");
    const sluice_custom_ops_t *c = sl_type_custom(view->type);
    if (!c)
        return sl_fail(SLUICE_EINVAL, "type `%s` has no custom layout to deserialise",
                       sluice_type_name(view->type));
    return c->deserialise(view->data, view->bytes, object, c->user);
}

/* ------------------------------------------------------------ producer */

static int sl_sender_check(sluice_token_t *token, uint32_t instance, sl_stream_t **st_p,
                           const sluice_endpoint_t **e_p)
{
    int rc = sl_token_stream(token, st_p);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    *e_p = sl_channel_endpoint(ch, instance, SLUICE_SEND);
    if (!*e_p)
        return sl_fail(SLUICE_ENOTFOUND, "channel \"%s\": no sender of instance %u declared",
                       ch->name, instance);
    if ((*st_p)->reserved)
        return sl_fail(SLUICE_EBUSY, "stream %u: a reservation is still open", token->stream);
    return SLUICE_OK;
}

/* Read the consumer's arena tail (acquire: pairs with sl_stream_publish_arena_tail). */
static int sl_arena_load_tail(sluice_channel_t *ch, sl_stream_t *st, uint64_t *tail_p)
{
    int rc = ch->tp->load64(ch->link, st->tx.ctrl + SL_ARENA_TAIL_OFF, tail_p);
    if (rc)
        return rc;
    /* The consumer's tail only moves forward, and never past our head. */
    if (*tail_p > st->arena_head || *tail_p < st->arena_tail_cache)
        return sl_fail(SLUICE_ECORRUPT, "arena tail %llu is outside [%llu, head=%llu]",
                       (unsigned long long)*tail_p, (unsigned long long)st->arena_tail_cache,
                       (unsigned long long)st->arena_head);
    return SLUICE_OK;
}

/* Find arena space and one ring slot, waiting (bounded) for the consumer. */
static int sl_arena_wait(sluice_channel_t *ch, sl_stream_t *st, size_t bytes, unsigned flags,
                         uint64_t *pos_p)
{
    uint64_t cap = ch->geo.arena_bytes;
    sl_wait_t w;
    sl_wait_init(ch, &w);
    /* Once the head has moved SL_ARENA_WARM bytes on since the last look at
     * the consumer's tail, look again: if the consumer has released
     * everything, sl_arena_place() restarts at offset 0, so a steady exchange
     * keeps reusing cache-warm memory instead of walking the whole arena. */
    if (st->arena_head - st->arena_tail_cache >= SL_ARENA_WARM &&
        st->arena_head >= st->arena_reload_at) {
        uint64_t tail;
        int lrc = sl_arena_load_tail(ch, st, &tail);
        if (lrc)
            return lrc;
        st->arena_tail_cache = tail;
        st->arena_reload_at = st->arena_head + SL_ARENA_WARM;
    }
    for (;;) {
        int rc = sl_arena_place(st->arena_head, st->arena_tail_cache, cap, bytes, pos_p);
        if (rc == SLUICE_ETOOBIG)
            return sl_fail(SLUICE_ETOOBIG, "channel \"%s\": a product of %zu bytes can never fit "
                                           "in the receiver's arena of %llu bytes (raise "
                                           "arena_bytes / SLUICE_ARENA_BYTES)",
                           ch->name, bytes, (unsigned long long)cap);
        if (rc == SLUICE_EAGAIN) {
            /* Short of space: only now read the consumer's tail (acquire). */
            uint64_t tail;
            int lrc = sl_arena_load_tail(ch, st, &tail);
            if (lrc)
                return lrc;
            if (tail != st->arena_tail_cache) {
                st->arena_tail_cache = tail;
                continue;
            }
        }
        if (rc == SLUICE_OK)
            rc = sl_ring_tx_room(&st->tx, ch->tp, ch->link);
        if (rc == SLUICE_OK)
            return SLUICE_OK;
        if (rc != SLUICE_EAGAIN)
            return rc;
        if ((rc = sl_stream_drain(ch, st)))
            return rc;
        if ((rc = sl_wait_step(ch, &w, flags, "receiver's arena or ring full")))
            return rc;
    }
}

/*
 * Reserve arena space. Where the transport has no pointer into the peer's
 * arena, `stage` asks for a local staging buffer the caller fills; without
 * it the caller supplies the bytes at commit (sluice_product_send).
 */
static int sl_reserve(sluice_token_t *token, uint32_t instance, size_t bytes, uint64_t count,
                      unsigned flags, bool stage, sluice_reservation_t *res_p)
{
    sl_stream_t *st;
    const sluice_endpoint_t *e;
    int rc = sl_sender_check(token, instance, &st, &e);
    if (rc)
        return rc;
    if (!res_p)
        return sl_fail(SLUICE_EINVAL, "res_p is NULL");
    sluice_channel_t *ch = token->channel;
    uint64_t pos;
    if ((rc = sl_arena_wait(ch, st, bytes, flags, &pos)))
        return rc;
    void *data = NULL;
    if (ch->tp->caps & SL_CAP_PEER_POINTER) {
        data = ch->tp->peer_ptr(ch->link, st->arena_off + sl_arena_offset(pos, ch->geo.arena_bytes));
    } else if (stage) {
        if (bytes > st->staging_bytes || !st->staging) {
            /* Reservations are 64-byte aligned on every transport. */
            size_t cap = sl_align_up(bytes ? bytes : 1, SL_ARENA_ALIGN);
            void *n = aligned_alloc(SL_ARENA_ALIGN, cap);
            if (!n)
                return sl_fail(SLUICE_ENOMEM, "cannot allocate %zu staging bytes", cap);
            free(st->staging);
            st->staging = n;
            st->staging_bytes = cap;
        }
        data = st->staging;
    }
    st->reserved = true;
    st->res_pos = pos;
    st->res_len = bytes;
    *res_p = (sluice_reservation_t){ data, bytes, instance, count };
    return SLUICE_OK;
}

int sluice_product_reserve(sluice_token_t *token, uint32_t instance, size_t bytes, uint64_t count,
                           unsigned flags, sluice_reservation_t *res_p)
{
    return sl_reserve(token, instance, bytes, count, flags, true, res_p);
}

/* Publish a reservation; `src` holds its bytes where the transport must put them. */
static int sl_commit(sluice_token_t *token, sluice_reservation_t *res, const void *src)
{
    sl_stream_t *st;
    int rc = sl_token_stream(token, &st);
    if (rc)
        return rc;
    if (!res || !st->reserved || res->bytes != st->res_len)
        return sl_fail(SLUICE_EINVAL, "stream %u: no such open reservation", token->stream);
    sluice_channel_t *ch = token->channel;
    const sluice_endpoint_t *e = sl_channel_endpoint(ch, res->instance, SLUICE_SEND);
    if (!e)
        return sl_fail(SLUICE_EINVAL, "reservation names instance %u, which has no sender",
                       res->instance);
    if (!(ch->tp->caps & SL_CAP_PEER_POINTER) && res->bytes &&
        (rc = ch->tp->put(ch->link, st->arena_off + sl_arena_offset(st->res_pos,
                                                                    ch->geo.arena_bytes),
                          src, res->bytes)))
        return rc;
    sl_record_t r = { .kind = SL_REC_PRODUCT,
                      .seq = st->token_seq,
                      .instance = res->instance,
                      .count = res->count,
                      .fingerprint = sluice_type_fingerprint(e->type),
                      .pos = st->res_pos,
                      .bytes = res->bytes };
    /* Room was secured by reserve; nothing else pushes on this stream since. */
    if ((rc = sl_ring_tx_push(&st->tx, ch->tp, ch->link, &r)))
        return rc;
    st->arena_head = st->res_pos + sl_align_up(res->bytes, SL_ARENA_ALIGN);
    st->reserved = false;
    res->data = NULL;
    sl_stat_add(&ch->stats.products_sent, 1);
    sl_stat_add(&ch->stats.bytes_sent, res->bytes);
    return SLUICE_OK;
}

int sluice_product_commit(sluice_token_t *token, sluice_reservation_t *res)
{
    sl_stream_t *st;
    int rc = sl_token_stream(token, &st);
    return rc ? rc : sl_commit(token, res, st->staging);
}

int sluice_product_cancel(sluice_token_t *token, sluice_reservation_t *res)
{
    sl_stream_t *st;
    int rc = sl_token_stream(token, &st);
    if (rc)
        return rc;
    if (!res || !st->reserved)
        return sl_fail(SLUICE_EINVAL, "stream %u: no open reservation", token->stream);
    st->reserved = false; /* head never moved: the space is simply not used */
    res->data = NULL;
    return SLUICE_OK;
}

int sluice_product_send(sluice_token_t *token, uint32_t instance, const void *data, size_t bytes,
                        uint64_t count, unsigned flags)
{
    if (bytes && !data)
        return sl_fail(SLUICE_EINVAL, "data is NULL for a %zu-byte product", bytes);
    /* With a pointer into the peer's arena: one memcpy there. Without one
     * (RMA): no staging copy, the transport puts straight from `data`. */
    sluice_reservation_t res;
    int rc = sl_reserve(token, instance, bytes, count, flags, false, &res);
    if (rc)
        return rc;
    if (res.data && bytes)
        memcpy(res.data, data, bytes);
    return sl_commit(token, &res, data);
}

int sluice_product_send_object(sluice_token_t *token, uint32_t instance, const void *object,
                               unsigned flags)
{
    sl_stream_t *st;
    const sluice_endpoint_t *e;
    int rc = sl_sender_check(token, instance, &st, &e);
    if (rc)
        return rc;
    const sluice_custom_ops_t *c = sl_type_custom(e->type);
    if (!c)
        return sl_fail(SLUICE_EINVAL, "instance %u: type `%s` has no custom layout", instance,
                       sluice_type_name(e->type));
    size_t bytes;
    if ((rc = c->size(object, &bytes, c->user)))
        return rc;
    sluice_reservation_t res;
    if ((rc = sluice_product_reserve(token, instance, bytes, 1, flags, &res)))
        return rc;
    if ((rc = c->serialise(object, res.data, bytes, c->user))) {
        sluice_product_cancel(token, &res);
        return rc;
    }
    return sluice_product_commit(token, &res);
}

int sluice_product_send_absent(sluice_token_t *token, uint32_t instance)
{
    sl_stream_t *st;
    const sluice_endpoint_t *e;
    int rc = sl_sender_check(token, instance, &st, &e);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    if ((rc = sl_ring_wait_room(ch, &st->tx, st, 0, "marking a product absent")))
        return rc;
    sl_record_t r = { .kind = SL_REC_ABSENT,
                      .seq = st->token_seq,
                      .instance = instance,
                      .fingerprint = sluice_type_fingerprint(e->type) };
    return sl_ring_tx_push(&st->tx, ch->tp, ch->link, &r);
}

int sluice_event_finish(sluice_token_t *token)
{
    sl_stream_t *st;
    int rc = sl_token_stream(token, &st);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    st->reserved = false;
    if ((rc = sl_ring_wait_room(ch, &st->tx, st, 0, "finishing an event")))
        return rc;
    sl_record_t r = { .kind = SL_REC_EVENT_END, .seq = st->token_seq };
    if ((rc = sl_ring_tx_push(&st->tx, ch->tp, ch->link, &r)))
        return rc;
    sl_stream_drop_pending(ch, st);
    st->done_seq = st->token_seq;
    /* Release: pairs with end of job's acquire check under the global lock. */
    atomic_store_explicit(&st->token_open, false, memory_order_release);
    return SLUICE_OK;
}
