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

/* ------------------------------------------------------------ receiver */

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
    sl_pending_t p;
    bool found = sl_stream_pending_take(st, instance, &p);
    while (!found) {
        if (st->peer_ended)
            return SLUICE_ABSENT;
        size_t before = st->n_pending;
        rc = sl_stream_pump(ch, st);
        if (rc == SLUICE_OK) {
            /* Only the record just taken in can be new for this instance:
             * no rescan of the whole list per record. */
            found = st->n_pending > before && st->pending[before].instance == instance &&
                    sl_stream_pending_take(st, instance, &p);
            continue;
        }
        if (rc != SLUICE_EAGAIN)
            return rc;
        if ((rc = sl_wait_step(ch, &w, flags, "waiting for a product")))
            return rc;
    }
    if (p.status != SLUICE_OK) {
        /* Absent, or refused when it was taken in: nothing to hand out. */
        if (p.id)
            sl_stream_release(ch, st, p.id);
        return p.status == SLUICE_ABSENT
                   ? SLUICE_ABSENT
                   : sl_fail(p.status, "channel \"%s\": stream %u: product of instance %u was "
                                       "refused when it arrived (%s)",
                             ch->name, token->stream, instance, sluice_strerror(p.status));
    }
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

int sluice_view_release(sluice_channel_t *ch, sluice_view_t *view)
{
    if (!ch || !view)
        return sl_fail(SLUICE_EINVAL, "channel and view must not be NULL");
    if (view->handle == 0)
        return sl_fail(SLUICE_EALREADY, "view already released");
    if (view->stream >= ch->n_streams)
        return sl_fail(SLUICE_EINVAL, "view names stream %u of %u", view->stream, ch->n_streams);
    int rc = sl_stream_release(ch, &ch->streams[view->stream], view->handle);
    if (rc)
        return rc;
    view->handle = 0;
    view->data = NULL;
    return SLUICE_OK;
}

int sluice_view_deserialise(const sluice_view_t *view, void *object)
{
    if (!view || !view->type || !object)
        return sl_fail(SLUICE_EINVAL, "view, its type and object must not be NULL");
    if (view->handle == 0 || (!view->data && view->bytes))
        return sl_fail(SLUICE_EALREADY, "the view was released");
    const sluice_custom_ops_t *c = sl_type_custom(view->type);
    if (!c)
        return sl_fail(SLUICE_EINVAL, "type `%s` has no custom layout to deserialise",
                       sluice_type_name(view->type));
    return c->deserialise(view->data, view->bytes, object, c->user);
}

/* ------------------------------------------------------------ sender */

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

/* Block and SoA products carry their element count: it must fit in their bytes. */
static int sl_count_check(const sluice_endpoint_t *e, size_t bytes, uint64_t count)
{
    if (sluice_type_layout(e->type) == SLUICE_LAYOUT_CUSTOM)
        return SLUICE_OK;
    size_t need;
    if (sluice_type_bytes(e->type, count, &need) != SLUICE_OK || need > bytes)
        return sl_fail(SLUICE_EINVAL, "instance %u: %llu elements of `%s` do not fit in %zu bytes",
                       e->instance, (unsigned long long)count, sluice_type_name(e->type), bytes);
    return SLUICE_OK;
}

/* Read the consumer's arena tail (acquire: pairs with sl_stream_release). */
static int sl_arena_load_tail(sluice_channel_t *ch, sl_stream_t *st)
{
    uint64_t tail;
    int rc = ch->tp->load64(ch->link, st->tx.ctrl + SL_ARENA_TAIL_OFF, &tail);
    if (rc)
        return rc;
    /* The consumer's tail only moves forward, and never past our head. */
    if (tail > st->arena_head || tail < st->arena_tail_seen)
        return sl_fail(SLUICE_ECORRUPT, "arena tail %llu is outside [%llu, head=%llu]",
                       (unsigned long long)tail, (unsigned long long)st->arena_tail_seen,
                       (unsigned long long)st->arena_head);
    st->arena_tail_seen = tail;
    /* Our own view may be ahead of what the consumer published: after an
     * empty restart both sides count the skipped bytes as released. */
    if (tail > st->arena_tail_cache)
        st->arena_tail_cache = tail;
    return SLUICE_OK;
}

/*
 * Find arena space and one ring slot, waiting (bounded) for the consumer.
 * SL_DROPPED if the consumer finished the event meanwhile.
 */
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
        int lrc = sl_arena_load_tail(ch, st);
        if (lrc)
            return lrc;
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
            uint64_t before = st->arena_tail_cache;
            int lrc = sl_arena_load_tail(ch, st);
            if (lrc)
                return lrc;
            if (st->arena_tail_cache != before)
                continue;
        }
        if (rc == SLUICE_OK)
            rc = sl_ring_tx_room(&st->tx, ch->tp, ch->link);
        if (rc == SLUICE_OK)
            return SLUICE_OK;
        if (rc != SLUICE_EAGAIN)
            return rc;
        /* Full: take in what the peer sent us, so it can go on too; and stop
         * if the peer has finished this event already. */
        bool done;
        if ((rc = sl_stream_take_in(ch, st)) || (rc = sl_stream_peer_done(ch, st, &done)))
            return rc;
        if (done)
            return SL_DROPPED;
        if ((rc = sl_wait_step(ch, &w, flags, "receiver's arena or ring full")))
            return rc;
    }
}

/* A local buffer of at least `bytes`, 64-byte aligned like arena regions. */
static int sl_staging(sl_stream_t *st, size_t bytes, void **data_p)
{
    if (bytes > st->staging_bytes || !st->staging) {
        size_t cap = sl_align_up(bytes ? bytes : 1, SL_ARENA_ALIGN);
        void *n = aligned_alloc(SL_ARENA_ALIGN, cap);
        if (!n)
            return sl_fail(SLUICE_ENOMEM, "cannot allocate %zu staging bytes", cap);
        free(st->staging);
        st->staging = n;
        st->staging_bytes = cap;
    }
    *data_p = st->staging;
    return SLUICE_OK;
}

/*
 * Reserve arena space. Where the transport has no pointer into the peer's
 * arena, `stage` asks for a local staging buffer the caller fills; without
 * it the caller supplies the bytes at commit (sluice_product_send). A
 * reservation for an event the peer has finished gets a staging buffer and
 * goes nowhere.
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
    if ((rc = sl_count_check(e, bytes, count)))
        return rc;
    sluice_channel_t *ch = token->channel;
    uint64_t pos = 0;
    bool dropped = false;
    rc = sl_arena_wait(ch, st, bytes, flags, &pos);
    if (rc == SL_DROPPED)
        dropped = true;
    else if (rc)
        return rc;
    void *data = NULL;
    if (!dropped && (ch->tp->caps & SL_CAP_PEER_POINTER))
        data = ch->tp->peer_ptr(ch->link, st->arena_off + sl_arena_offset(pos, ch->geo.arena_bytes));
    else if (stage && (rc = sl_staging(st, bytes, &data)))
        return rc;
    st->reserved = true;
    st->res_dropped = dropped;
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

static void sl_reservation_close(sl_stream_t *st, sluice_reservation_t *res)
{
    st->reserved = false; /* the head never moved: unused space is simply not used */
    st->res_dropped = false;
    res->data = NULL;
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
    if ((rc = sl_count_check(e, res->bytes, res->count)))
        return rc;
    if (st->res_dropped) {
        /* The peer finished the event: it would discard the product unread. */
        sl_reservation_close(st, res);
        sl_stat_add(&ch->stats.discarded, 1);
        return SLUICE_OK;
    }
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
    /* Everything before an empty restart counts as released (sl_arena_place). */
    if (st->arena_tail_cache == st->arena_head)
        st->arena_tail_cache = st->res_pos;
    st->arena_head = st->res_pos + sl_align_up(res->bytes, SL_ARENA_ALIGN);
    sl_reservation_close(st, res);
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
    sl_reservation_close(st, res);
    return SLUICE_OK;
}

/* Commit, or give the reservation up if that fails: the caller holds no handle to retry with. */
static int sl_commit_or_cancel(sluice_token_t *token, sluice_reservation_t *res, const void *src)
{
    int rc = sl_commit(token, res, src);
    if (rc) {
        sl_stream_t *st;
        if (sl_token_stream(token, &st) == SLUICE_OK && st->reserved)
            sl_reservation_close(st, res);
    }
    return rc;
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
    return sl_commit_or_cancel(token, &res, data);
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
    return sl_commit_or_cancel(token, &res, st->staging);
}

int sluice_product_send_absent(sluice_token_t *token, uint32_t instance)
{
    sl_stream_t *st;
    const sluice_endpoint_t *e;
    int rc = sl_sender_check(token, instance, &st, &e);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    rc = sl_ring_wait_room(ch, &st->tx, st, 0, "marking a product absent");
    if (rc == SL_DROPPED)
        return SLUICE_OK; /* the peer finished the event: it asks for nothing more */
    if (rc)
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
    st->res_dropped = false;
    /* This side is done reading the event at once, whatever happens below:
     * what is pending is released, and while waiting for room the records
     * the peer still sends for it are discarded. */
    sl_stream_finish(ch, st);
    rc = sl_ring_wait_room(ch, &st->tx, st, 0, "finishing an event");
    if (rc == SLUICE_OK) {
        sl_record_t r = { .kind = SL_REC_EVENT_END, .seq = st->token_seq };
        rc = sl_ring_tx_push(&st->tx, ch->tp, ch->link, &r);
    } else if (rc == SL_DROPPED) {
        rc = SLUICE_OK; /* the peer finished it too: it needs no end mark */
    }
    if (rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED) {
        /* Nobody will read the end mark: the event ends here all the same. */
        atomic_store_explicit(&st->token_open, false, memory_order_release);
        return rc;
    }
    if (rc)
        return rc; /* the token stays open: finish may be called again */
    /* Drain what the peer sent for this event before it saw our end, so an
     * idle side does not keep it waiting for room. */
    if ((rc = sl_stream_drain(ch, st)))
        return rc;
    /* Release: pairs with end of job's acquire check under the global lock. */
    atomic_store_explicit(&st->token_open, false, memory_order_release);
    return SLUICE_OK;
}
