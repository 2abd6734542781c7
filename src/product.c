/* SPDX-License-Identifier: MIT */
/* Products: reserve/commit into the peer's arena, receive views, finish or fail events. */
#include <stdlib.h>
#include <string.h>

#include "../gpu/gpu.h"
#include "channel.h"

/*
 * Every call on an event takes its stream's lock for its whole length, except
 * while it waits (sl_stream_wait_step lets it go). sl_token_lock checks the
 * token under the lock; on success the caller holds it.
 */
static int sl_token_lock(const sluice_token_t *token, sl_stream_t **st_p)
{
    if (!token || !token->channel)
        return sl_fail(SLUICE_EINVAL, "token is NULL or was never started");
    sluice_channel_t *ch = token->channel;
    if (token->stream > SL_SCOPE(ch)) /* the scope stream's tokens come from transitions */
        return sl_fail(SLUICE_EINVAL, "token names stream %u of %u", token->stream,
                       ch->n_streams);
    sl_stream_t *st = &ch->streams[token->stream];
    pthread_mutex_lock(&st->lock);
    if (token->seq != st->token_seq || st->finishing ||
        !atomic_load_explicit(&st->token_open, memory_order_relaxed)) {
        pthread_mutex_unlock(&st->lock);
        return sl_fail(SLUICE_EALREADY, "stream %u: event %llu is finished (current %llu)",
                       token->stream, (unsigned long long)token->seq,
                       (unsigned long long)st->token_seq);
    }
    *st_p = st;
    return SLUICE_OK;
}

static int sl_unlock(sl_stream_t *st, int rc)
{
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* The peer failed the event: every later call on it says so, with the peer's message. */
static int sl_failed_status(const sluice_channel_t *ch, const sl_stream_t *st)
{
    return sl_fail(st->peer_failed, "channel \"%s\": stream %u: the peer failed event %llu: %s",
                   ch->name, (unsigned)(st - ch->streams), (unsigned long long)st->token_seq,
                   st->peer_failed_msg);
}

/* ------------------------------------------------------------ receiver */

static int sl_receive(sluice_token_t *token, sl_stream_t *st, uint32_t instance, unsigned flags,
                      sl_pending_t *p_p)
{
    sluice_channel_t *ch = token->channel;
    sl_wait_t w;
    sl_wait_init(ch, &w);
    /* Whatever has come first: a fail mark behind a product voids it. */
    int trc = sl_stream_take_in(ch, st);
    if (trc)
        return trc;
    for (;;) {
        if (st->peer_failed)
            return sl_failed_status(ch, st);
        if (sl_stream_pending_take(st, instance, p_p))
            return SLUICE_OK;
        if (st->peer_ended)
            return SLUICE_ABSENT;
        int rc;
        for (;;) {
            size_t before = st->n_pending;
            if ((rc = sl_stream_pump(ch, st)) != SLUICE_OK)
                break;
            /* Only the record just taken in can be new for this instance:
             * no rescan of the whole list per record. */
            if (st->n_pending > before && st->pending[before].instance == instance &&
                sl_stream_pending_take(st, instance, p_p))
                return SLUICE_OK;
            if (st->peer_ended)
                break;
        }
        if (rc != SLUICE_OK && rc != SLUICE_EAGAIN)
            return rc;
        if (rc == SLUICE_EAGAIN &&
            (rc = sl_stream_wait_step(ch, st, &w, flags, "waiting for a product", token->seq,
                                      false)))
            return rc;
    }
}

int sluice_product_receive(sluice_token_t *token, uint32_t instance, unsigned flags,
                           sluice_view_t *view_p)
{
    if (!view_p)
        return sl_fail(SLUICE_EINVAL, "view_p is NULL");
    sl_stream_t *st = NULL;
    int rc = sl_token_lock(token, &st);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    const sluice_endpoint_t *e = sl_channel_endpoint(ch, instance, SLUICE_RECEIVE);
    if (!e)
        return sl_unlock(st, sl_fail(SLUICE_ENOTFOUND, "channel \"%s\": no receiver of instance "
                                                       "%u declared",
                                     ch->name, instance));
    sl_pending_t p;
    if ((rc = sl_receive(token, st, instance, flags, &p)))
        return sl_channel_result(ch, sl_unlock(st, rc));
    if (p.status != SLUICE_OK) {
        /* Absent, or refused when it was taken in: nothing to hand out. */
        if (p.id)
            sl_stream_release(ch, st, p.id);
        pthread_mutex_unlock(&st->lock);
        return p.status == SLUICE_ABSENT
                   ? SLUICE_ABSENT
                   : sl_channel_result(ch, sl_fail(p.status, "channel \"%s\": stream %u: product "
                                                             "of instance %u was refused when it "
                                                             "arrived (%s)",
                                                   ch->name, token->stream, instance,
                                                   sluice_strerror(p.status)));
    }
    pthread_mutex_unlock(&st->lock);
    uint64_t off = st->arena_off + sl_arena_offset(p.pos, ch->geo.arena_bytes);
    const void *data = ch->local + off;
    if (sl_endpoint_device(e)) {
        /* Staged: the bytes are in the host arena; the device arena's region
         * at the same offset is this view's until it is released, so the
         * copy runs outside the stream's lock. */
        data = sl_dev_local(ch, off);
        if (ch->dev_path == SLUICE_DEVICE_PATH_STAGED &&
            (rc = sl_gpu_copy(sl_dev_local(ch, off), ch->local + off, p.bytes))) {
            pthread_mutex_lock(&st->lock);
            sl_stream_release(ch, st, p.id);
            pthread_mutex_unlock(&st->lock);
            return sl_channel_result(ch, rc);
        }
    }
    *view_p = (sluice_view_t){
        .data = data,
        .bytes = p.bytes,
        .count = p.count,
        .type = e->type,
        .stream = token->stream,
        .handle = p.id,
    };
    sl_stat_add(&ch->stats->products_received, 1);
    sl_stat_add(&ch->stats->bytes_received, p.bytes);
    return SLUICE_OK;
}

int sluice_view_release(sluice_channel_t *ch, sluice_view_t *view)
{
    if (!ch || !view)
        return sl_fail(SLUICE_EINVAL, "channel and view must not be NULL");
    if (view->handle == 0)
        return sl_fail(SLUICE_EALREADY, "view already released");
    if (view->stream > SL_SCOPE(ch))
        return sl_fail(SLUICE_EINVAL, "view names stream %u of %u", view->stream, ch->n_streams);
    sl_stream_t *st = &ch->streams[view->stream];
    pthread_mutex_lock(&st->lock);
    int rc = sl_stream_release(ch, st, view->handle);
    pthread_mutex_unlock(&st->lock);
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

/* Token, lock and sender endpoint; on success the stream's lock is held. */
static int sl_sender_lock(sluice_token_t *token, uint32_t instance, sl_stream_t **st_p,
                          const sluice_endpoint_t **e_p)
{
    int rc = sl_token_lock(token, st_p);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    *e_p = sl_channel_endpoint(ch, instance, SLUICE_SEND);
    if (!*e_p)
        return sl_unlock(*st_p, sl_fail(SLUICE_ENOTFOUND, "channel \"%s\": no sender of instance "
                                                          "%u declared",
                                        ch->name, instance));
    /* A fail mark the peer sent is seen by the next call of either kind. */
    if ((rc = sl_stream_take_in(ch, *st_p)))
        return sl_unlock(*st_p, rc);
    if ((*st_p)->peer_failed)
        return sl_unlock(*st_p, sl_failed_status(ch, *st_p));
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
 * Find arena space, and ring slots for this product and every reservation
 * still open, waiting (bounded) for the consumer. SL_DROPPED if the
 * consumer finished the event meanwhile.
 */
static int sl_arena_wait(sluice_channel_t *ch, sl_stream_t *st, uint64_t seq, size_t bytes,
                         unsigned flags, uint64_t *pos_p)
{
    uint64_t cap = ch->geo.arena_bytes;
    sl_wait_t w;
    sl_wait_init(ch, &w);
    /* Once the head has moved `warm` bytes on since the last look at
     * the consumer's tail, look again: if the consumer has released
     * everything, sl_arena_place() restarts at offset 0, so a steady exchange
     * keeps reusing cache-warm memory instead of walking the whole arena. */
    if (st->arena_head >= st->arena_reload_at) { /* the cheap test first: the hot path */
        uint64_t warm = sl_arena_warm(ch);
        if (st->arena_head - st->arena_tail_cache >= warm) {
            int lrc = sl_arena_load_tail(ch, st);
            if (lrc)
                return lrc;
            st->arena_reload_at = st->arena_head + warm;
        }
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
            rc = sl_ring_tx_room_n(&st->tx, ch->tp, ch->link, sl_stream_owed(st) + 1);
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
        if ((rc = sl_stream_wait_step(ch, st, &w, flags, "receiver's arena or ring full", seq,
                                      false)))
            return rc;
    }
}

/* A 64-byte-aligned local buffer of at least `bytes`: the newest spare, grown if it is short. */
static int sl_resv_staging(sl_stream_t *st, sl_resv_t *r, size_t bytes)
{
    bool spare = !r->staging && st->n_spare;
    if (spare) {
        st->n_spare--;
        r->staging = st->spare[st->n_spare].buf;
        r->staging_bytes = st->spare[st->n_spare].bytes;
    }
    if (r->staging && bytes <= r->staging_bytes)
        return SLUICE_OK;
    size_t cap = sl_align_up(bytes ? bytes : 1, SL_ARENA_ALIGN);
    void *n = aligned_alloc(SL_ARENA_ALIGN, cap);
    if (!n) {
        if (spare) { /* back where it came from, not lost with this slot */
            st->n_spare++;
            r->staging = NULL;
            r->staging_bytes = 0;
        }
        return sl_fail(SLUICE_ENOMEM, "cannot allocate %zu staging bytes", cap);
    }
    free(r->staging);
    r->staging = n;
    r->staging_bytes = cap;
    return SLUICE_OK;
}

/*
 * A reservation leaves the queue: its staging buffer goes back on top of
 * the spares. Only once no put from it can be in flight: it was published
 * (the flush completed the put), cancelled or dropped before any put, or the
 * peer is gone.
 */
static void sl_resv_retire(sl_stream_t *st, sl_resv_t *r)
{
    if (r->staging)
        st->spare[st->n_spare++] = (struct sl_spare){ r->staging, r->staging_bytes };
    r->staging = NULL;
    r->staging_bytes = 0;
    r->src = NULL;
    r->state = 0;
}

static sl_resv_t *sl_resv_at(sl_stream_t *st, uint32_t i)
{
    return &st->resv[(st->resv_first + i) % SL_RESV_MAX];
}

static sl_resv_t *sl_resv_find(sl_stream_t *st, uint64_t handle)
{
    for (uint32_t i = 0; i < st->resv_n; i++) {
        sl_resv_t *r = sl_resv_at(st, i);
        if (r->handle == handle && r->state != SL_RESV_CANCELLED)
            return r;
    }
    return NULL;
}

/*
 * Settle the queue after a commit or cancel. Cancelled reservations at the
 * young end give their arena space back (the head goes back to where it
 * was); then, from the old end up to the first reservation still open, the
 * records of the committed ones are published together (one push: over
 * RMA one flush for all of them), and only then do they leave the queue.
 * The push is all or nothing, so a failure leaves every one of them for the
 * next settle to publish again. Cancelled ones leave a gap the receiver's
 * tail steps over with the next region it releases.
 */
_Static_assert(SL_RESV_MAX <= SL_RING_PUSH_MAX, "a settle publishes up to SL_RESV_MAX records");
static int sl_resv_settle(sluice_channel_t *ch, sl_stream_t *st)
{
    while (st->resv_n) {
        sl_resv_t *r = sl_resv_at(st, st->resv_n - 1);
        if (r->state != SL_RESV_CANCELLED)
            break;
        if (r->placed) {
            st->arena_head = r->head_before;
            st->arena_tail_cache = r->tail_before > st->arena_tail_cache ? st->arena_tail_cache
                                                                         : r->tail_before;
            if (st->arena_tail_cache < st->arena_tail_seen)
                st->arena_tail_cache = st->arena_tail_seen;
        }
        sl_resv_retire(st, r);
        st->resv_n--;
    }
    /* Records of the committed ones, alive until they are published (over
     * RMA, MPI reads them until then), and the caller's bytes that go with
     * one (sl_commit_locked). */
    sl_record_t recs[SL_RESV_MAX];
    sl_ring_payload_t pays[SL_RESV_MAX];
    uint32_t settled = 0, written = 0;
    for (; settled < st->resv_n; settled++) {
        sl_resv_t *r = sl_resv_at(st, settled);
        if (r->state == SL_RESV_OPEN || r->state == SL_RESV_COMMITTING)
            break;
        if (r->state != SL_RESV_COMMITTED || !r->placed)
            continue;
        const sluice_endpoint_t *e = sl_channel_endpoint(ch, r->instance, SLUICE_SEND);
        pays[written] = (sl_ring_payload_t){
            .off = st->arena_off + sl_arena_offset(r->pos, ch->geo.arena_bytes),
            .src = r->src,
            .len = r->src ? r->len : 0 };
        recs[written++] = (sl_record_t){ .kind = SL_REC_PRODUCT,
                                         .seq = st->token_seq,
                                         .instance = r->instance,
                                         .count = r->count,
                                         .fingerprint = sluice_type_fingerprint(e->type),
                                         .pos = r->pos,
                                         .bytes = r->len };
    }
    if (written) {
        /* Their slots were set aside at reserve (sl_stream_owed). */
        int rc = sl_ring_tx_push_payloads(&st->tx, ch->tp, ch->link, recs, pays, written);
        if (rc)
            return rc;
        sl_stat_add(&ch->stats->product_publications, 1);
        sl_mon_stream_tx(ch, st);
    }
    for (; settled; settled--) {
        sl_resv_t *r = sl_resv_at(st, 0);
        if (r->state == SL_RESV_COMMITTED && r->placed) {
            sl_stat_add(&ch->stats->products_sent, 1);
            sl_stat_add(&ch->stats->bytes_sent, r->len);
        }
        if (r->state == SL_RESV_CANCELLED && r->placed) {
            /* A gap: if everything after it is cancelled too, the head must
             * come back to its start, so the next placed one inherits it. */
            for (uint32_t i = 1; i < st->resv_n; i++) {
                sl_resv_t *next = sl_resv_at(st, i);
                if (next->placed) {
                    next->head_before = r->head_before;
                    next->tail_before = r->tail_before;
                    break;
                }
            }
        }
        sl_resv_retire(st, r);
        st->resv_first = (st->resv_first + 1) % SL_RESV_MAX;
        st->resv_n--;
    }
    return SLUICE_OK;
}

/*
 * Reserve arena space. Where the transport has no pointer into the peer's
 * arena, `stage` asks for a local staging buffer the caller fills; without
 * it the caller supplies the bytes at commit (sluice_product_send). A
 * reservation for an event the peer has finished goes nowhere: it gets a
 * staging buffer to fill (a device one, the stream's scratch, for a device
 * product), or no memory at all for a send. Called with the stream's lock
 * held.
 */
static int sl_reserve_locked(sluice_token_t *token, sl_stream_t *st, const sluice_endpoint_t *e,
                             size_t bytes, uint64_t count, unsigned flags, bool stage,
                             sluice_reservation_t *res_p)
{
    sluice_channel_t *ch = token->channel;
    /* One ring slot always stays for an absent or end mark. */
    if (st->resv_n == SL_RESV_MAX || sl_stream_owed(st) + 1 >= ch->geo.ring_depth)
        return sl_fail(SLUICE_ELIMIT, "stream %u: %u reservations are open (at most %u, and "
                                      "fewer than the ring depth %u)",
                       token->stream, st->resv_n, SL_RESV_MAX, ch->geo.ring_depth);
    int rc = sl_count_check(e, bytes, count);
    if (rc)
        return rc;
    uint64_t pos = 0;
    bool dropped = false;
    rc = sl_arena_wait(ch, st, token->seq, bytes, flags, &pos);
    if (rc == SL_DROPPED)
        dropped = true;
    else if (rc)
        return rc;
    /* The wait may have let other threads reserve: the queue may be full now. */
    if (st->resv_n == SL_RESV_MAX)
        return sl_fail(SLUICE_ELIMIT, "stream %u: %u reservations are open", token->stream,
                       SL_RESV_MAX);
    sl_resv_t *r = sl_resv_at(st, st->resv_n);
    *r = (sl_resv_t){ .handle = ++st->resv_handles,
                      .pos = pos,
                      .len = bytes,
                      .count = count,
                      .head_before = st->arena_head,
                      .tail_before = st->arena_tail_cache,
                      .instance = e->instance,
                      .state = SL_RESV_OPEN,
                      .placed = !dropped };
    void *data = NULL;
    uint64_t off = st->arena_off + sl_arena_offset(pos, ch->geo.arena_bytes);
    if (sl_endpoint_device(e)) {
        /* The device region at the same offset as the host one (docs/gpu.md). */
        if (!dropped)
            data = sl_dev_peer(ch, off);
        else if (!stage)
            data = NULL; /* a send: nothing will be written */
        else if (st->dev_scratch || !(rc = sl_gpu_alloc(ch->geo.arena_bytes, &st->dev_scratch)))
            data = st->dev_scratch;
        else
            return rc;
    } else if (!dropped && (ch->tp->caps & SL_CAP_PEER_POINTER)) {
        data = ch->tp->peer_ptr(ch->link, off);
    } else if (stage) {
        if ((rc = sl_resv_staging(st, r, bytes)))
            return rc;
        data = r->staging;
    }
    if (!dropped) {
        /* Everything before an empty restart counts as released (sl_arena_place). */
        if (st->arena_tail_cache == st->arena_head)
            st->arena_tail_cache = pos;
        st->arena_head = pos + sl_align_up(bytes, SL_ARENA_ALIGN);
        sl_mon_stream_tx(ch, st);
    }
    st->resv_n++;
    *res_p = (sluice_reservation_t){
        .data = data, .bytes = bytes, .instance = e->instance, .count = count, .handle = r->handle
    };
    return SLUICE_OK;
}

int sluice_product_reserve(sluice_token_t *token, uint32_t instance, size_t bytes, uint64_t count,
                           unsigned flags, sluice_reservation_t *res_p)
{
    if (!res_p)
        return sl_fail(SLUICE_EINVAL, "res_p is NULL");
    sl_stream_t *st = NULL;
    const sluice_endpoint_t *e;
    int rc = sl_sender_lock(token, instance, &st, &e);
    if (rc)
        return rc;
    return sl_channel_result(token->channel,
                             sl_unlock(st, sl_reserve_locked(token, st, e, bytes, count, flags,
                                                             true, res_p)));
}

/* The staged path's pipeline step over RMA (docs/gpu.md, "Pinned windows"). */
#define SL_DEVICE_CHUNK ((uint64_t)4 << 20)

/*
 * A device product's bytes, before its record may go out (docs/gpu.md,
 * "Completion"). They are complete already: sluice_product_commit waited for
 * the work that filled the reservation, and
 * sluice_product_send's copy (from `src`) is complete when it returns. The
 * staged path then copies the product, from `src` or from this side's device
 * staging, into the peer's host arena: through the peer pointer, or into a
 * local buffer that is put like a host product's. Nothing is published on
 * failure. Called with the stream's lock held.
 */
static int sl_device_commit(sluice_channel_t *ch, sl_stream_t *st, sl_resv_t *r, const void *src)
{
    if (ch->dev_path != SLUICE_DEVICE_PATH_STAGED || !r->len)
        return SLUICE_OK;
    uint64_t off = st->arena_off + sl_arena_offset(r->pos, ch->geo.arena_bytes);
    const void *from = src ? src : sl_dev_peer(ch, off);
    if (ch->tp->caps & SL_CAP_PEER_POINTER)
        return sl_gpu_copy(ch->tp->peer_ptr(ch->link, off), from, r->len);
    int rc = sl_resv_staging(st, r, r->len);
    /* In chunks: a put returns before its bytes have moved, so each chunk
     * crosses the network while the next one comes off the device. */
    uint64_t put = 0;  /* bytes whose put went out */
    bool tried = false; /* a put was issued, maybe in part */
    while (rc == SLUICE_OK && put < r->len) {
        size_t n = (size_t)(r->len - put < SL_DEVICE_CHUNK ? r->len - put : SL_DEVICE_CHUNK);
        char *stage = (char *)r->staging + put;
        if ((rc = sl_gpu_copy(stage, (const char *)from + put, n)) == SLUICE_OK) {
            tried = true;
            if ((rc = ch->tp->put(ch->link, off + put, stage, n)) == SLUICE_OK)
                put += n;
        }
    }
    /* Failed after some of it went: it completes at the peer now (an empty
     * publication flushes), so neither the staging buffer nor the region is
     * reused under it if the reservation is cancelled. If even that fails
     * after whole chunks went, the staging buffer is given up (leaked)
     * rather than reused while MPI may still read it (a failed put
     * completes its own pieces locally). */
    if (rc && tried && ch->tp->publish(ch->link, NULL, 0) != SLUICE_OK && put) {
        r->staging = NULL;
        r->staging_bytes = 0;
    }
    return rc;
}

/*
 * Commit: the record goes out once every older reservation is settled. The
 * payload, where the transport puts it (no peer pointer): from the staging
 * buffer now, or, for the caller's own bytes (`src`, sluice_product_send),
 * inside that publication when this is the oldest reservation, else copied
 * to staging first. Called with the stream's lock held.
 */
static int sl_commit_locked(sluice_token_t *token, sl_stream_t *st, sluice_reservation_t *res,
                            const void *src)
{
    sluice_channel_t *ch = token->channel;
    sl_resv_t *r = res ? sl_resv_find(st, res->handle) : NULL;
    if (!r || r->state != SL_RESV_OPEN || res->bytes != r->len || res->instance != r->instance)
        return sl_fail(SLUICE_EINVAL, "stream %u: no such open reservation", token->stream);
    const sluice_endpoint_t *e = sl_channel_endpoint(ch, r->instance, SLUICE_SEND);
    int rc = sl_count_check(e, r->len, res->count);
    if (rc)
        return rc;
    r->count = res->count;
    if (!r->placed) {
        /* The peer finished the event: it would discard the product unread. */
        sl_stat_add(&ch->stats->discarded, 1);
    } else if (sl_endpoint_device(e)) {
        if ((rc = sl_device_commit(ch, st, r, src)))
            return rc;
    } else if (!(ch->tp->caps & SL_CAP_PEER_POINTER) && r->len) {
        /* An older reservation is still open or unpublished: the record
         * (and the flush that completes this put) comes later, so the
         * caller's buffer may not be the put's origin. */
        if (src && r != sl_resv_at(st, 0)) {
            if ((rc = sl_resv_staging(st, r, r->len)))
                return rc;
            memcpy(r->staging, src, r->len);
            src = NULL;
        }
        /* The caller's bytes go out with the record, in one transport call
         * (the settle below): a failure then sends neither, and the caller
         * has its buffer back with nothing reading it. */
        if (src)
            r->src = src;
        else if ((rc = ch->tp->put(ch->link,
                                   st->arena_off + sl_arena_offset(r->pos, ch->geo.arena_bytes),
                                   r->staging, r->len)))
            return rc;
    }
    r->state = SL_RESV_COMMITTED;
    res->data = NULL;
    rc = sl_resv_settle(ch, st);
    if (rc && r->src) {
        /* Not published, so none of it went out: the product is not sent
         * (the caller hears why), and nothing keeps the caller's pointer.
         * r was the only reservation (the oldest, reserved in this call),
         * so this settle only gives its space back: it publishes nothing
         * and cannot fail. */
        r->src = NULL;
        r->state = SL_RESV_CANCELLED;
        sl_resv_settle(ch, st);
    }
    return rc;
}

static int sl_cancel_locked(sl_stream_t *st, sluice_channel_t *ch, sluice_reservation_t *res)
{
    sl_resv_t *r = res ? sl_resv_find(st, res->handle) : NULL;
    if (r && r->state == SL_RESV_COMMITTING)
        return sl_fail(SLUICE_EBUSY, "the reservation is being committed by another call");
    if (!r || r->state != SL_RESV_OPEN)
        return sl_fail(SLUICE_EINVAL, "no such open reservation");
    r->state = SL_RESV_CANCELLED;
    res->data = NULL;
    return sl_resv_settle(ch, st);
}

/*
 * Wait, without the stream's lock, for the device work that fills `r` (on
 * res->cuda_stream), so other threads of the stream go on meanwhile
 * (docs/gpu.md, "Completion"). The reservation is COMMITTING until then:
 * cancel refuses it and finish waits for it, so its region is not handed on
 * while that work may still write it. Returns with the lock held and the
 * reservation open again, or SLUICE_EDEVICE (it stays open: cancel it).
 */
static int sl_device_fill_wait(sl_stream_t *st, sl_resv_t *r, const sluice_reservation_t *res)
{
    uint64_t handle = r->handle;
    r->state = SL_RESV_COMMITTING;
    st->committing++;
    pthread_mutex_unlock(&st->lock);
    int rc = sl_gpu_wait(res->cuda_stream);
    pthread_mutex_lock(&st->lock);
    st->committing--;
    /* Nothing else ends a COMMITTING reservation, and it stays in the queue
     * (settle stops at it), so it is found where it was. */
    sl_resv_find(st, handle)->state = SL_RESV_OPEN;
    return rc;
}

int sluice_product_commit(sluice_token_t *token, sluice_reservation_t *res)
{
    sl_stream_t *st = NULL;
    int rc = sl_token_lock(token, &st);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    sl_resv_t *r = res ? sl_resv_find(st, res->handle) : NULL;
    if (r && r->state == SL_RESV_OPEN && r->len && res->bytes == r->len &&
        sl_endpoint_device(sl_channel_endpoint(ch, r->instance, SLUICE_SEND)) &&
        (rc = sl_device_fill_wait(st, r, res)))
        return sl_channel_result(ch, sl_unlock(st, rc));
    return sl_channel_result(ch, sl_unlock(st, sl_commit_locked(token, st, res, NULL)));
}

int sluice_product_cancel(sluice_token_t *token, sluice_reservation_t *res)
{
    sl_stream_t *st = NULL;
    int rc = sl_token_lock(token, &st);
    return rc ? rc : sl_unlock(st, sl_cancel_locked(st, token->channel, res));
}

/* Commit, or give the reservation up if that fails: the caller holds no handle to retry with. */
static int sl_commit_or_cancel(sluice_token_t *token, sl_stream_t *st, sluice_reservation_t *res,
                               const void *src)
{
    int rc = sl_commit_locked(token, st, res, src);
    sl_resv_t *r = sl_resv_find(st, res->handle);
    if (rc && r && r->state == SL_RESV_OPEN) /* the commit failed before it took effect */
        sl_cancel_locked(st, token->channel, res);
    return rc;
}

int sluice_product_send(sluice_token_t *token, uint32_t instance, const void *data, size_t bytes,
                        uint64_t count, unsigned flags)
{
    if (bytes && !data)
        return sl_fail(SLUICE_EINVAL, "data is NULL for a %zu-byte product", bytes);
    sl_stream_t *st = NULL;
    const sluice_endpoint_t *e;
    int rc = sl_sender_lock(token, instance, &st, &e);
    if (rc)
        return rc;
    /* With a pointer into the peer's arena: one memcpy there. Without one
     * (RMA): no staging copy, the transport puts straight from `data`. A
     * device product: one cudaMemcpy into the peer's device arena (ipc), or
     * into the host arena at commit (staged). */
    sluice_reservation_t res;
    if ((rc = sl_reserve_locked(token, st, e, bytes, count, flags, false, &res)))
        return sl_channel_result(token->channel, sl_unlock(st, rc));
    if (sl_endpoint_device(e)) {
        /* Staged, the commit copies from `data` itself. */
        if (token->channel->dev_path == SLUICE_DEVICE_PATH_IPC && bytes && res.data &&
            (rc = sl_gpu_copy(res.data, data, bytes))) {
            sl_cancel_locked(st, token->channel, &res);
            return sl_channel_result(token->channel, sl_unlock(st, rc));
        }
    } else if (res.data && bytes) {
        memcpy(res.data, data, bytes);
    }
    return sl_channel_result(token->channel,
                             sl_unlock(st, sl_commit_or_cancel(token, st, &res, data)));
}

int sluice_product_send_object(sluice_token_t *token, uint32_t instance, const void *object,
                               unsigned flags)
{
    sl_stream_t *st = NULL;
    const sluice_endpoint_t *e;
    int rc = sl_sender_lock(token, instance, &st, &e);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    const sluice_custom_ops_t *c = sl_type_custom(e->type);
    size_t bytes;
    if (!c)
        rc = sl_fail(SLUICE_EINVAL, "instance %u: type `%s` has no custom layout", instance,
                     sluice_type_name(e->type));
    else
        rc = c->size(object, &bytes, c->user);
    sluice_reservation_t res;
    if (rc || (rc = sl_reserve_locked(token, st, e, bytes, 1, flags, true, &res)))
        return sl_unlock(st, rc);
    if ((rc = c->serialise(object, res.data, bytes, c->user))) {
        sl_cancel_locked(st, ch, &res);
        return sl_unlock(st, rc);
    }
    return sl_channel_result(ch, sl_unlock(st, sl_commit_or_cancel(token, st, &res, NULL)));
}

int sluice_product_send_absent(sluice_token_t *token, uint32_t instance)
{
    sl_stream_t *st = NULL;
    const sluice_endpoint_t *e;
    int rc = sl_sender_lock(token, instance, &st, &e);
    if (rc)
        return rc;
    sluice_channel_t *ch = token->channel;
    rc = sl_ring_wait_room(ch, &st->tx, st, 0, "marking a product absent");
    if (rc == SL_DROPPED)
        return sl_unlock(st, SLUICE_OK); /* the peer finished the event: it asks for nothing more */
    if (rc)
        return sl_unlock(st, rc);
    sl_record_t r = { .kind = SL_REC_ABSENT,
                      .seq = st->token_seq,
                      .instance = instance,
                      .fingerprint = sluice_type_fingerprint(e->type) };
    rc = sl_ring_tx_push(&st->tx, ch->tp, ch->link, &r);
    sl_mon_stream_tx(ch, st);
    return sl_channel_result(ch, sl_unlock(st, rc));
}

/* ------------------------------------------------------------ finishing */

/*
 * End this side's part of the event: open reservations are cancelled (the
 * committed ones still go out), pending products released, and `rec` (an
 * end or fail mark) published, then what the peer sent meanwhile drained.
 * Called with the lock held and `finishing` set.
 */
static int sl_finish_locked(sluice_channel_t *ch, sl_stream_t *st, sl_record_t *rec)
{
    /* Commits waiting for device work (sl_device_fill_wait) end first: their
     * regions may still be written. Bounded by the channel's timeout; the
     * token stays open if it runs out. */
    sl_wait_t w;
    sl_wait_init(ch, &w);
    while (st->committing) {
        int rc = sl_stream_wait_step(ch, st, &w, 0, "finishing an event", 0, true);
        if (rc)
            return rc;
    }
    for (uint32_t i = 0; i < st->resv_n; i++)
        if (sl_resv_at(st, i)->state == SL_RESV_OPEN)
            sl_resv_at(st, i)->state = SL_RESV_CANCELLED;
    int rc = sl_resv_settle(ch, st);
    /* This side is done reading the event at once, whatever happens below:
     * what is pending is released, and while waiting for room the records
     * the peer still sends for it are discarded. */
    sl_stream_finish(ch, st);
    if (rc == SLUICE_OK)
        rc = sl_ring_wait_room(ch, &st->tx, st, 0, "finishing an event");
    if (rc == SLUICE_OK)
        rc = sl_ring_tx_push(&st->tx, ch->tp, ch->link, rec);
    else if (rc == SL_DROPPED)
        rc = SLUICE_OK; /* the peer finished it too: it needs no end mark */
    if (rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED) {
        /* Nobody will read the mark: the event ends here all the same. */
        for (uint32_t i = 0; i < st->resv_n; i++)
            sl_resv_retire(st, sl_resv_at(st, i));
        st->resv_n = 0;
        sl_mon_token(ch, st, false);
        atomic_store_explicit(&st->token_open, false, memory_order_release);
        return rc;
    }
    if (rc)
        return rc; /* the token stays open: finish may be called again */
    /* Drain what the peer sent for this event before it saw our end, so an
     * idle side does not keep it waiting for room. */
    if ((rc = sl_stream_drain(ch, st)))
        return rc;
    sl_mon_stream_tx(ch, st);
    sl_mon_token(ch, st, false);
    /* Release: pairs with end of job's acquire check under the global lock. */
    atomic_store_explicit(&st->token_open, false, memory_order_release);
    return SLUICE_OK;
}

static int sl_finish(sluice_token_t *token, sl_record_t *rec)
{
    sl_stream_t *st = NULL;
    int rc = sl_token_lock(token, &st);
    if (rc)
        return rc;
    st->finishing = true; /* other calls on the event now see it finished */
    rec->seq = st->token_seq;
    rc = sl_finish_locked(token->channel, st, rec);
    st->finishing = false;
    pthread_mutex_unlock(&st->lock);
    /* The stream is free: a source's next item may be ready now. */
    if (token->channel->role == SLUICE_SOURCE)
        sl_notify_poke(token->channel);
    return sl_channel_result(token->channel, rc);
}

int sluice_event_finish(sluice_token_t *token)
{
    sl_record_t r = { .kind = SL_REC_EVENT_END };
    return sl_finish(token, &r);
}

int sluice_event_fail(sluice_token_t *token, int status, const char *message)
{
    if (status >= 0)
        return sl_fail(SLUICE_EINVAL, "sluice_event_fail needs a negative status, not %d", status);
    sl_record_t r = { .kind = SL_REC_EVENT_FAIL, .count = (uint64_t)(int64_t)status };
    if (message) {
        size_t n = strnlen(message, SLUICE_AUX_MAX);
        memcpy(r.aux, message, n);
        r.aux_size = (uint32_t)n;
    }
    return sl_finish(token, &r);
}
