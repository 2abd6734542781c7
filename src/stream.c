/* SPDX-License-Identifier: MIT */
/* Per-stream consumer state: pump, drain, discard and the pending list of one stream. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"

static _Atomic uint64_t *sl_stream_word(sluice_channel_t *ch, sl_stream_t *st, uint64_t off)
{
    return (_Atomic uint64_t *)(void *)(ch->local + st->rx.ctrl + off);
}

uint32_t sl_stream_owed(const sl_stream_t *st)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < st->resv_n; i++) {
        const sl_resv_t *r = &st->resv[(st->resv_first + i) % SL_RESV_MAX];
        n += r->placed && r->state != SL_RESV_CANCELLED;
    }
    return n;
}

void sl_stream_consume(sluice_channel_t *ch, sl_stream_t *st)
{
    /* A producer that may wait for this slot is woken now, not at the end
     * of its progress engine's sleep (review M1). */
    if (sl_ring_rx_consume(&st->rx) && ch->tp->wake)
        ch->tp->wake(ch->link);
    sl_mon_stream_rx(ch, st);
}

int sl_stream_release(sluice_channel_t *ch, sl_stream_t *st, uint64_t id)
{
    bool advanced;
    int rc = sl_arena_rx_release(&st->arx, id, &advanced);
    /* Release: pairs with the producer's acquire load64 of the arena tail;
     * our reads of the released regions are done before it reuses them. */
    if (rc == SLUICE_OK && advanced)
        atomic_store_explicit(sl_stream_word(ch, st, SL_ARENA_TAIL_OFF), st->arx.tail,
                              memory_order_release);
    if (rc == SLUICE_OK)
        sl_mon_stream_rx(ch, st);
    return rc;
}

int sl_stream_discard(sluice_channel_t *ch, sl_stream_t *st, const sl_record_t *rec)
{
    if (rec->kind == SL_REC_PRODUCT) {
        uint64_t id;
        int rc = sl_arena_rx_accept(&st->arx, rec->pos, rec->bytes, &id);
        if (rc)
            return rc;
        sl_stream_release(ch, st, id);
        sl_stat_add(&ch->stats->discarded, 1);
    } else if (rec->kind != SL_REC_ABSENT && rec->kind != SL_REC_EVENT_END &&
               rec->kind != SL_REC_EVENT_FAIL) {
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": stream record of unknown kind %u",
                       ch->name, rec->kind);
    }
    sl_stream_consume(ch, st);
    return SLUICE_OK;
}

/* An EVENT or STREAM_END record: only a controller writes them, only a source reads them. */
static bool sl_is_event_boundary(const sl_record_t *r)
{
    return r->kind == SLUICE_EVENT || r->kind == SL_REC_STREAM_END;
}

static int sl_boundary_check(const sluice_channel_t *ch, const sl_record_t *r)
{
    if (ch->role == SLUICE_CONTROLLER)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": the source wrote a record of kind %u, "
                                        "which only a controller sends",
                       ch->name, r->kind);
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
        if (sl_is_event_boundary(&r))
            return sl_boundary_check(ch, &r);
        if (r.seq > st->done_seq)
            return SLUICE_OK;
        if ((rc = sl_stream_discard(ch, st, &r)))
            return rc;
    }
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

bool sl_stream_pending_take(sl_stream_t *st, uint32_t instance, sl_pending_t *p_p)
{
    for (size_t i = 0; i < st->n_pending; i++) {
        if (st->pending[i].instance != instance)
            continue;
        *p_p = st->pending[i];
        memmove(&st->pending[i], &st->pending[i + 1],
                (st->n_pending - i - 1) * sizeof *st->pending);
        st->n_pending--;
        return true;
    }
    return false;
}

/*
 * Check a PRODUCT or ABSENT record of the current event against this side's
 * receivers, and for block and SoA types its count against its bytes: a
 * receiver locates columns from `count`, so a count the bytes cannot hold
 * would send it past the region. A failure becomes the pending entry's
 * status; the receive of that instance returns it.
 */
static int sl_record_verdict(const sluice_channel_t *ch, const sl_record_t *r)
{
    const sluice_endpoint_t *e = sl_channel_endpoint(ch, r->instance, SLUICE_RECEIVE);
    if (!e || sluice_type_fingerprint(e->type) != r->fingerprint)
        return sl_fail(SLUICE_ETYPE, "channel \"%s\": %s of instance %u with fingerprint "
                                     "0x%016llx: this side %s",
                       ch->name, r->kind == SL_REC_ABSENT ? "absent mark" : "product",
                       r->instance, (unsigned long long)r->fingerprint,
                       e ? "expects another type" : "has no receiver for it");
    if (r->kind != SL_REC_PRODUCT || sluice_type_layout(e->type) == SLUICE_LAYOUT_CUSTOM)
        return SLUICE_OK;
    size_t need;
    if (sluice_type_bytes(e->type, r->count, &need) != SLUICE_OK || need > r->bytes)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": product of instance %u claims %llu "
                                        "elements of `%s`, more than its %llu bytes hold",
                       ch->name, r->instance, (unsigned long long)r->count,
                       sluice_type_name(e->type), (unsigned long long)r->bytes);
    return SLUICE_OK;
}

int sl_stream_pump(sluice_channel_t *ch, sl_stream_t *st)
{
    sl_record_t r;
    int rc = sl_ring_rx_peek(&st->rx, &r);
    if (rc)
        return rc;
    if (sl_is_event_boundary(&r)) {
        if ((rc = sl_boundary_check(ch, &r)))
            return rc;
        st->peer_ended = true; /* left in the ring for event_next */
        return SLUICE_OK;
    }
    if (r.seq < st->token_seq || r.seq <= st->done_seq)
        return sl_stream_discard(ch, st, &r);
    if (r.seq > st->token_seq)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": stream record for event %llu while event "
                                        "%llu is current",
                       ch->name, (unsigned long long)r.seq, (unsigned long long)st->token_seq);
    if (r.kind == SL_REC_EVENT_END) {
        st->peer_ended = true;
        sl_stream_consume(ch, st);
        return SLUICE_OK;
    }
    if (r.kind == SL_REC_EVENT_FAIL) {
        /* The peer failed the event: what it sent is of no use any more. */
        int64_t status = (int64_t)r.count;
        st->peer_failed = status < 0 && status > -1000 ? (int)status : SLUICE_EFAILED;
        memcpy(st->peer_failed_msg, r.aux, r.aux_size);
        st->peer_failed_msg[r.aux_size] = '\0';
        st->peer_ended = true;
        sl_stream_consume(ch, st);
        sl_stream_drop_pending(ch, st);
        return SLUICE_OK;
    }
    if (r.kind != SL_REC_PRODUCT && r.kind != SL_REC_ABSENT)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": stream record of unknown kind %u",
                       ch->name, r.kind);
    if (st->n_pending >= SL_PENDING_MAX)
        return sl_fail(SLUICE_ELIMIT, "channel \"%s\": stream %u: %u products of event %llu are "
                                      "unclaimed; the peer floods the stream",
                       ch->name, (unsigned)(st - ch->streams), SL_PENDING_MAX,
                       (unsigned long long)st->token_seq);
    sl_pending_t p = { .instance = r.instance, .count = r.count, .pos = r.pos, .bytes = r.bytes };
    if (r.kind == SL_REC_PRODUCT && (rc = sl_arena_rx_accept(&st->arx, r.pos, r.bytes, &p.id)))
        return rc;
    p.status = sl_record_verdict(ch, &r);
    if (p.status == SLUICE_OK && r.kind == SL_REC_ABSENT)
        p.status = SLUICE_ABSENT;
    if ((rc = sl_pending_push(st, &p))) {
        if (p.id)
            sl_stream_release(ch, st, p.id);
        return rc;
    }
    sl_stream_consume(ch, st);
    return SLUICE_OK;
}

int sl_stream_take_in(sluice_channel_t *ch, sl_stream_t *st)
{
    /* With no event open, only records of finished events can be taken. */
    if (!atomic_load_explicit(&st->token_open, memory_order_relaxed))
        return sl_stream_drain(ch, st);
    while (!st->peer_ended && st->n_pending < SL_PENDING_MAX) {
        int rc = sl_stream_pump(ch, st);
        if (rc == SLUICE_EAGAIN)
            return SLUICE_OK;
        if (rc)
            return rc;
    }
    return SLUICE_OK;
}

void sl_stream_drop_pending(sluice_channel_t *ch, sl_stream_t *st)
{
    for (size_t i = 0; i < st->n_pending; i++) {
        if (st->pending[i].id) {
            sl_stream_release(ch, st, st->pending[i].id);
            sl_stat_add(&ch->stats->discarded, 1);
        }
    }
    st->n_pending = 0;
}

void sl_stream_finish(sluice_channel_t *ch, sl_stream_t *st)
{
    sl_stream_drop_pending(ch, st);
    st->done_seq = st->token_seq;
    /* Release: pairs with the peer's acquire load64 of this word before it
     * drops a product of this event (sl_stream_peer_done). */
    atomic_store_explicit(sl_stream_word(ch, st, SL_RING_DONE_OFF), st->done_seq,
                          memory_order_release);
}
