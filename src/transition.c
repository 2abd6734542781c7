/* SPDX-License-Identifier: MIT */
/* Transitions: the controller's ordering rules and the source's ordered replay. */
#include <string.h>

#include "channel.h"

/* Who a timed wait for the channel's locks says holds them. */
#define SL_GLOBAL_HELD "the channel's global lock stayed held (by a publish, inside MPI)"
#define SL_SOURCE_HELD "the channel's source lock stayed held (by a reader, inside a stream)"

static void sl_record_from_transition(sl_record_t *r, const sluice_transition_t *t)
{
    memset(r, 0, sizeof *r);
    r->kind = (uint32_t)t->kind;
    r->run = t->run;
    r->lumi = t->lumi;
    r->event = t->event;
    r->timestamp = t->timestamp;
    memcpy(r->history, t->history, sizeof r->history);
    r->aux_size = t->aux_size;
    memcpy(r->aux, t->aux, t->aux_size);
}

static void sl_transition_from_record(sluice_transition_t *t, const sl_record_t *r)
{
    memset(t, 0, sizeof *t);
    t->kind = (sluice_transition_kind_t)r->kind;
    t->run = r->run;
    t->lumi = r->lumi;
    t->event = r->event;
    t->timestamp = r->timestamp;
    memcpy(t->history, r->history, sizeof t->history);
    t->aux_size = r->aux_size;
    memcpy(t->aux, r->aux, r->aux_size);
}

static int sl_check_transition(const sluice_channel_t *ch, const sluice_transition_t *t,
                               sluice_role_t want)
{
    if (!t)
        return sl_fail(SLUICE_EINVAL, "transition is NULL");
    if (ch->role != want)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": only the %s may do this", ch->name,
                       want == SLUICE_CONTROLLER ? "controller" : "source");
    if (t->aux_size > SLUICE_AUX_MAX)
        return sl_fail(SLUICE_ERANGE, "transition aux_size %u exceeds %d", t->aux_size,
                       SLUICE_AUX_MAX);
    return SLUICE_OK;
}

/* ------------------------------------------------------------ controller */

static sl_run_slot_t *sl_find_run(sluice_channel_t *ch, uint32_t run)
{
    for (uint32_t i = 0; i < ch->opt.max_open_lumis; i++)
        if (ch->runs[i].open && ch->runs[i].run == run)
            return &ch->runs[i];
    return NULL;
}

static sl_lumi_slot_t *sl_find_lumi(sluice_channel_t *ch, uint32_t run, uint32_t lumi)
{
    for (uint32_t i = 0; i < ch->opt.max_open_lumis; i++)
        if (ch->lumis[i].open && ch->lumis[i].run == run && ch->lumis[i].lumi == lumi)
            return &ch->lumis[i];
    return NULL;
}

/*
 * Check `t` against the open runs and lumis and fill the record's slot,
 * count and sequence. Changes nothing: sl_global_apply() does, after the
 * record is published. Called with global_lock held.
 */
static int sl_global_check(sluice_channel_t *ch, const sluice_transition_t *t, sl_record_t *r)
{
    uint32_t max = ch->opt.max_open_lumis;
    if (ch->job_ended)
        return sl_fail(SLUICE_EORDER, "channel \"%s\": the job has ended", ch->name);
    if (ch->job_ending)
        return sl_fail(SLUICE_EBUSY, "channel \"%s\": another thread is ending the job",
                       ch->name);
    sl_run_slot_t *run = sl_find_run(ch, t->run);
    switch (t->kind) {
    case SLUICE_BEGIN_RUN:
        if (run)
            return sl_fail(SLUICE_EORDER, "begin of run %u: it is already open", t->run);
        for (uint32_t i = 0; i < max; i++)
            if (!ch->runs[i].open)
                return SLUICE_OK;
        return sl_fail(SLUICE_ELIMIT, "begin of run %u: %u runs are open already (max_open_lumis)",
                       t->run, max);
    case SLUICE_BEGIN_LUMI:
        if (!run)
            return sl_fail(SLUICE_EORDER, "begin of lumi %u: run %u is not open", t->lumi, t->run);
        if (sl_find_lumi(ch, t->run, t->lumi))
            return sl_fail(SLUICE_EORDER, "begin of lumi %u of run %u: it is already open",
                           t->lumi, t->run);
        for (uint32_t i = 0; i < max; i++) {
            if (!ch->lumis[i].open) {
                r->slot = i;
                return SLUICE_OK;
            }
        }
        return sl_fail(SLUICE_ELIMIT, "begin of lumi %u of run %u: %u lumis are open already",
                       t->lumi, t->run, max);
    case SLUICE_END_LUMI: {
        sl_lumi_slot_t *l = sl_find_lumi(ch, t->run, t->lumi);
        if (!l)
            return sl_fail(SLUICE_EORDER, "end of lumi %u of run %u: it is not open", t->lumi,
                           t->run);
        /* Events of this lumi counted but not yet published: the end must
         * follow them on their streams. They are at most one ring wait away. */
        if (l->inflight)
            return SLUICE_EAGAIN;
        r->slot = (uint32_t)(l - ch->lumis);
        r->count = l->events;
        return SLUICE_OK;
    }
    case SLUICE_END_RUN:
        if (!run)
            return sl_fail(SLUICE_EORDER, "end of run %u: it is not open", t->run);
        if (run->open_lumis)
            return sl_fail(SLUICE_EORDER, "end of run %u: %u of its lumis are still open", t->run,
                           run->open_lumis);
        return SLUICE_OK;
    case SLUICE_END_JOB:
        for (uint32_t i = 0; i < max; i++)
            if (ch->runs[i].open)
                return sl_fail(SLUICE_EORDER, "end of job: run %u is still open", ch->runs[i].run);
        for (uint32_t s = 0; s <= SL_SCOPE(ch); s++)
            if (atomic_load_explicit(&ch->streams[s].token_open, memory_order_acquire))
                return sl_fail(SLUICE_EBUSY, "end of job: %s %u has an unfinished event",
                               s == SL_SCOPE(ch) ? "the run/lumi scope of transition"
                                                 : "stream",
                               s == SL_SCOPE(ch) ? (unsigned)ch->streams[s].token_seq : s);
        return SLUICE_OK;
    case SLUICE_EVENT:
        return sl_fail(SLUICE_EINVAL, "events go through sluice_event_send, not the global ring");
    }
    return sl_fail(SLUICE_EINVAL, "unknown transition kind %d", (int)t->kind);
}

static void sl_global_apply(sluice_channel_t *ch, const sluice_transition_t *t,
                            const sl_record_t *r)
{
    sl_run_slot_t *run = sl_find_run(ch, t->run);
    switch (t->kind) {
    case SLUICE_BEGIN_RUN:
        for (uint32_t i = 0; i < ch->opt.max_open_lumis; i++) {
            if (!ch->runs[i].open) {
                ch->runs[i] = (sl_run_slot_t){ true, t->run, 0 };
                break;
            }
        }
        break;
    case SLUICE_BEGIN_LUMI:
        ch->lumis[r->slot] = (sl_lumi_slot_t){ true, t->run, t->lumi, r->seq, 0, 0 };
        run->open_lumis++;
        break;
    case SLUICE_END_LUMI:
        ch->lumis[r->slot].open = false;
        run->open_lumis--;
        break;
    case SLUICE_END_RUN:
        run->open = false;
        break;
    case SLUICE_END_JOB:
        ch->job_ended = true;
        break;
    case SLUICE_EVENT:
        break;
    }
    /* The status page, under the global lock (its one writer). */
    sl_mon_transition(ch->mon, (uint32_t)t->kind, t->run, t->lumi);
    sl_mon_set(&ch->mon->global_head, ch->gtx.head);
    sl_mon_set(&ch->mon->global_seen, ch->gtx.tail_cache);
}

/* Room for one record on a stream's ring, looked at under the stream's lock. */
static int sl_end_job_room(sluice_channel_t *ch, sl_stream_t *st, unsigned flags)
{
    sl_wait_t w;
    sl_wait_init(ch, &w);
    for (;;) {
        pthread_mutex_lock(&st->lock);
        int rc = sl_ring_tx_room(&st->tx, ch->tp, ch->link);
        pthread_mutex_unlock(&st->lock);
        if (rc != SLUICE_EAGAIN)
            return rc;
        if ((rc = sl_wait_step(ch, &w, flags, "end of job: stream ring full")))
            return rc;
    }
}

/*
 * End of job: one STREAM_END on every stream, then the global END_JOB
 * record. Room on every ring is secured first, with no event able to start
 * meanwhile (job_ending), then the STREAM_ENDs are published, each under its
 * stream's lock, and END_JOB under the global lock. A failed wait publishes
 * nothing and may be retried.
 */
static int sl_end_job(sluice_channel_t *ch, const sluice_transition_t *t, sl_record_t *r,
                      unsigned flags)
{
    /* Its holders publish (MPI calls on RMA): waited for until the timeout. */
    sl_deadline_t dl = sl_deadline_in(ch->opt.timeout_ms);
    int rc = sl_mutex_lock_until(&ch->global_lock, &dl, "end of job", SL_GLOBAL_HELD);
    if (rc)
        return rc;
    rc = sl_global_check(ch, t, r);
    if (rc == SLUICE_OK)
        ch->job_ending = true;
    pthread_mutex_unlock(&ch->global_lock);
    if (rc)
        return rc;
    /* No stream has an open event (checked above) and none can start one
     * (job_ending): this thread is the only producer on every ring now. A
     * progress round still looks at a stream ring's room (a room
     * notification), which updates its cached tail: each stream ring is
     * looked at and pushed to under its stream's lock, never under the
     * global lock (streams before global is the lock order). */
    rc = sl_ring_wait_room(ch, &ch->gtx, NULL, flags, "end of job: global ring full");
    for (uint32_t s = 0; s < ch->n_streams && rc == SLUICE_OK; s++)
        rc = sl_end_job_room(ch, &ch->streams[s], flags);
    sl_record_t end = { .kind = SL_REC_STREAM_END };
    for (uint32_t s = 0; s < ch->n_streams && rc == SLUICE_OK; s++) {
        pthread_mutex_lock(&ch->streams[s].lock);
        rc = sl_ring_tx_push(&ch->streams[s].tx, ch->tp, ch->link, &end);
        pthread_mutex_unlock(&ch->streams[s].lock);
    }
    pthread_mutex_lock(&ch->global_lock);
    if (rc == SLUICE_OK) {
        r->seq = ch->gtx.head + 1;
        rc = sl_ring_tx_push(&ch->gtx, ch->tp, ch->link, r);
        if (rc == SLUICE_OK)
            sl_global_apply(ch, t, r);
    }
    ch->job_ending = false;
    pthread_mutex_unlock(&ch->global_lock);
    return rc;
}

/*
 * One global transition; with `scope` (the scope stream, its lock held),
 * also the event on the scope stream that carries its products: that event
 * is published first, so a source that sees the transition sees its scope.
 */
static int sl_global_publish(sluice_channel_t *ch, const sluice_transition_t *t, sl_record_t *r,
                             sl_stream_t *scope, unsigned flags)
{
    sl_wait_t w;
    sl_wait_init(ch, &w);
    sl_record_t ev;
    sl_record_from_transition(&ev, t);
    ev.kind = SLUICE_EVENT;
    int rc;
    sl_deadline_t dl = sl_deadline_in(ch->opt.timeout_ms);
    for (;;) {
        /* Nothing is changed before the lock is held: giving up is clean. */
        if ((rc = sl_mutex_lock_until(&ch->global_lock, &dl, "global transition",
                                      SL_GLOBAL_HELD)))
            return rc;
        rc = sl_global_check(ch, t, r);
        if (rc == SLUICE_OK)
            rc = sl_ring_tx_room(&ch->gtx, ch->tp, ch->link);
        if (rc == SLUICE_OK && scope)
            rc = sl_ring_tx_room(&scope->tx, ch->tp, ch->link);
        if (rc == SLUICE_OK && scope) {
            ev.seq = scope->next_seq + 1;
            ev.slot = 0;
            ev.dep = 0; /* delivered with its transition, never before */
            if ((rc = sl_ring_tx_push(&scope->tx, ch->tp, ch->link, &ev)) == SLUICE_OK) {
                scope->next_seq = ev.seq;
                r->instance = SL_GLOBAL_SCOPED;
                r->dep = ev.seq;
            }
        }
        if (rc == SLUICE_OK) {
            r->seq = ch->gtx.head + 1;
            rc = sl_ring_tx_push(&ch->gtx, ch->tp, ch->link, r);
            if (rc == SLUICE_OK)
                sl_global_apply(ch, t, r);
        }
        pthread_mutex_unlock(&ch->global_lock);
        if (rc != SLUICE_EAGAIN)
            return rc;
        /* Wait without the lock, so event senders on other streams go on. */
        const char *what = "global ring full or events of the lumi in flight";
        rc = scope ? sl_stream_wait_step(ch, scope, &w, flags, what, 0, false)
                   : sl_wait_step(ch, &w, flags, what);
        if (rc)
            return rc;
    }
}

int sluice_transition_send(sluice_channel_t *ch, const sluice_transition_t *t, unsigned flags)
{
    if (!ch)
        return sl_fail(SLUICE_EINVAL, "channel is NULL");
    int rc = sl_check_transition(ch, t, SLUICE_CONTROLLER);
    if (rc)
        return rc;
    sl_record_t r;
    sl_record_from_transition(&r, t);
    rc = t->kind == SLUICE_END_JOB ? sl_end_job(ch, t, &r, flags)
                                   : sl_global_publish(ch, t, &r, NULL, flags);
    if (rc == SLUICE_OK)
        sl_stat_add(&ch->stats->transitions_sent, 1);
    return sl_channel_result(ch, rc);
}

int sluice_transition_send_scoped(sluice_channel_t *ch, const sluice_transition_t *t,
                                  unsigned flags, sluice_token_t *token_p)
{
    if (!ch || !token_p)
        return sl_fail(SLUICE_EINVAL, "channel and token_p must not be NULL");
    int rc = sl_check_transition(ch, t, SLUICE_CONTROLLER);
    if (rc)
        return rc;
    if (t->kind == SLUICE_END_JOB)
        return sl_fail(SLUICE_EINVAL, "end of job carries no products");
    sl_stream_t *scope = &ch->streams[SL_SCOPE(ch)];
    pthread_mutex_lock(&scope->lock);
    /* `finishing` doubles as "a scoped send is under way" while no scope
     * is open: the publish below may let the lock go while it waits. */
    if (atomic_load_explicit(&scope->token_open, memory_order_relaxed) || scope->finishing) {
        pthread_mutex_unlock(&scope->lock);
        return sl_fail(SLUICE_EBUSY, "finish the products of the previous scoped transition "
                                     "first");
    }
    scope->finishing = true;
    /* What the source sent back for earlier scopes goes first. */
    sl_record_t r;
    sl_record_from_transition(&r, t);
    if ((rc = sl_stream_drain(ch, scope)) == SLUICE_OK &&
        (rc = sl_global_publish(ch, t, &r, scope, flags)) == SLUICE_OK) {
        scope->token_seq = r.dep;
        scope->peer_ended = false;
        scope->peer_failed = 0;
        atomic_store_explicit(&scope->token_open, true, memory_order_release); /* no event */
        *token_p = (sluice_token_t){ ch, SL_SCOPE(ch), r.dep };
        sl_stat_add(&ch->stats->transitions_sent, 1);
    }
    scope->finishing = false;
    pthread_mutex_unlock(&scope->lock);
    return sl_channel_result(ch, rc);
}

/*
 * Claim the stream for a new event of an open lumi, under the lock: the
 * lumi counts it (as in flight until published), the stream's token opens.
 * Nothing is published yet; sl_event_unclaim() undoes it all.
 */
static int sl_event_claim(sluice_channel_t *ch, sl_stream_t *st, const sluice_transition_t *ev,
                          sl_record_t *r)
{
    sl_deadline_t dl = sl_deadline_in(ch->opt.timeout_ms);
    int rc = sl_mutex_lock_until(&ch->global_lock, &dl, "event send", SL_GLOBAL_HELD);
    if (rc)
        return rc;
    sl_lumi_slot_t *l = sl_find_lumi(ch, ev->run, ev->lumi);
    if (ch->job_ended || ch->job_ending)
        rc = sl_fail(SLUICE_EORDER, "event %llu: the job has ended",
                     (unsigned long long)ev->event);
    else if (!l)
        rc = sl_fail(SLUICE_EORDER, "event %llu: lumi %u of run %u is not open",
                     (unsigned long long)ev->event, ev->lumi, ev->run);
    if (rc == SLUICE_OK) {
        l->events++;
        l->inflight++;
        r->slot = (uint32_t)(l - ch->lumis);
        r->dep = l->begin_seq;
        r->seq = ++st->next_seq;
        st->token_seq = r->seq;
        st->peer_ended = false;
        st->peer_failed = 0;
        /* Under the lock: end of job reads it under the same lock. */
        sl_mon_token(ch, st, true);
        atomic_store_explicit(&st->token_open, true, memory_order_release);
    }
    pthread_mutex_unlock(&ch->global_lock);
    return rc;
}

/*
 * The event is published (`ok`) or given up: its lumi stops waiting for it.
 * This must happen, so it waits for the lock without a deadline: as long as
 * the longest holder, a publish (docs/design.md, "Threads and locks").
 */
static void sl_event_settle(sluice_channel_t *ch, sl_stream_t *st, const sl_record_t *r, bool ok)
{
    pthread_mutex_lock(&ch->global_lock);
    sl_lumi_slot_t *l = &ch->lumis[r->slot];
    l->inflight--;
    if (!ok) {
        l->events--;
        st->next_seq--;
        st->token_seq = st->done_seq;
        sl_mon_token(ch, st, false);
        atomic_store_explicit(&st->token_open, false, memory_order_release);
    }
    pthread_mutex_unlock(&ch->global_lock);
}

static int sl_event_send_locked(sluice_channel_t *ch, sl_stream_t *st,
                                const sluice_transition_t *event, unsigned flags,
                                sluice_token_t *token_p);

int sluice_event_send(sluice_channel_t *ch, uint32_t stream, const sluice_transition_t *event,
                      unsigned flags, sluice_token_t *token_p)
{
    if (!ch || !token_p)
        return sl_fail(SLUICE_EINVAL, "channel and token_p must not be NULL");
    int rc = sl_check_transition(ch, event, SLUICE_CONTROLLER);
    if (rc)
        return rc;
    if (event->kind != SLUICE_EVENT)
        return sl_fail(SLUICE_EINVAL, "sluice_event_send needs an SLUICE_EVENT transition");
    if (stream >= ch->n_streams)
        return sl_fail(SLUICE_EINVAL, "stream %u out of range (channel has %u)", stream,
                       ch->n_streams);
    sl_stream_t *st = &ch->streams[stream];
    pthread_mutex_lock(&st->lock);
    rc = sl_event_send_locked(ch, st, event, flags, token_p);
    pthread_mutex_unlock(&st->lock);
    return sl_channel_result(ch, rc);
}

/* The stream's lock is held (it is let go only while waiting for room). */
static int sl_event_send_locked(sluice_channel_t *ch, sl_stream_t *st,
                                const sluice_transition_t *event, unsigned flags,
                                sluice_token_t *token_p)
{
    uint32_t stream = (uint32_t)(st - ch->streams);
    if (atomic_load_explicit(&st->token_open, memory_order_relaxed))
        return sl_fail(SLUICE_EBUSY, "stream %u: finish event %llu before sending another", stream,
                       (unsigned long long)st->token_seq);
    /* Once per event, clear what the peer sent for events we already finished
     * (a controller otherwise never reads its inbox between events). */
    int rc = sl_stream_drain(ch, st);
    if (rc)
        return rc;
    sl_record_t r;
    sl_record_from_transition(&r, event);
    /* Order first (a user error costs no wait), then room: this thread is
     * the stream's only producer, and the claim keeps end of job away. */
    if ((rc = sl_event_claim(ch, st, event, &r)))
        return rc;
    rc = sl_ring_wait_room(ch, &st->tx, st, flags, "stream ring full");
    if (rc == SL_DROPPED) /* the peer cannot have finished an event not sent yet */
        rc = sl_fail(SLUICE_ECORRUPT, "channel \"%s\": stream %u: the peer says it finished "
                                      "event %llu before it was sent",
                     ch->name, stream, (unsigned long long)r.seq);
    if (rc == SLUICE_OK)
        rc = sl_ring_tx_push(&st->tx, ch->tp, ch->link, &r);
    sl_event_settle(ch, st, &r, rc == SLUICE_OK);
    if (rc)
        return rc; /* nothing was published and nothing counted */
    sl_mon_stream_tx(ch, st);
    sl_stat_add(&ch->stats->transitions_sent, 1);
    *token_p = (sluice_token_t){ ch, stream, r.seq };
    return SLUICE_OK;
}

/* ------------------------------------------------------------ source */

/*
 * The source reads two kinds of ring: the global one (runs and lumis) and
 * one per stream (events). Each has a peek, which says whether its next
 * item may be delivered now, and a take, which delivers it. The three
 * public calls below are compositions of these.
 */

/*
 * The next global transition, if it may be delivered: SLUICE_OK with it in
 * *r; SLUICE_EAGAIN when there is none yet, or (*gate) when it is an
 * END_LUMI whose events have not all been taken yet.
 */
static int sl_global_peek(sluice_channel_t *ch, sl_record_t *r, bool *gate)
{
    *gate = false;
    /* What the controller still sends into scopes this side finished is
     * dropped here: nothing else reads the scope stream between scopes. */
    sl_stream_t *scope = &ch->streams[SL_SCOPE(ch)];
    pthread_mutex_lock(&scope->lock);
    int drc = atomic_load_explicit(&scope->token_open, memory_order_relaxed)
                  ? SLUICE_OK
                  : sl_stream_drain(ch, scope);
    pthread_mutex_unlock(&scope->lock);
    if (drc)
        return drc;
    int rc = sl_ring_rx_peek(&ch->grx, r);
    if (rc == SLUICE_OK && r->kind == SLUICE_END_LUMI && r->slot < ch->opt.max_open_lumis) {
        /* Acquire: pairs with the stream readers' release increments, so
         * the events counted were taken before the end is delivered. */
        uint64_t got = atomic_load_explicit(&ch->slot_events[r->slot], memory_order_acquire);
        if (got > r->count)
            return sl_fail(SLUICE_ECORRUPT, "end of lumi %u: %llu events delivered, record says "
                                            "%llu",
                           r->lumi, (unsigned long long)got, (unsigned long long)r->count);
        if (got < r->count)
            rc = SLUICE_EAGAIN, *gate = true;
    }
    if (rc == SLUICE_OK && (r->instance & SL_GLOBAL_SCOPED) &&
        atomic_load_explicit(&ch->streams[SL_SCOPE(ch)].token_open, memory_order_acquire))
        rc = SLUICE_EAGAIN, *gate = true; /* the previous scope is still open here */
    return rc;
}

static int sl_event_peek(sluice_channel_t *ch, sl_stream_t *st, sl_record_t *r, bool *gate);
static void sl_event_take(sluice_channel_t *ch, sl_stream_t *st, const sl_record_t *r,
                          sluice_transition_t *event_p, sluice_token_t *token_p);

/* A scoped transition: open its scope, whose event was published before it. */
static int sl_scope_take(sluice_channel_t *ch, const sl_record_t *r)
{
    sl_stream_t *scope = &ch->streams[SL_SCOPE(ch)];
    pthread_mutex_lock(&scope->lock);
    sl_record_t ev;
    bool gate;
    int rc = sl_event_peek(ch, scope, &ev, &gate);
    if (rc == SLUICE_OK && ev.seq == r->dep) {
        sluice_transition_t ignored;
        sl_event_take(ch, scope, &ev, &ignored, &ch->scope_token);
    } else if (rc == SLUICE_OK || rc == SLUICE_EAGAIN || rc == SLUICE_EOF) {
        rc = sl_fail(SLUICE_ECORRUPT, "channel \"%s\": transition %llu names products in scope "
                                      "%llu, which is not there",
                     ch->name, (unsigned long long)r->seq, (unsigned long long)r->dep);
    }
    pthread_mutex_unlock(&scope->lock);
    return rc;
}

/* Deliver the transition sl_global_peek found. */
static int sl_global_take(sluice_channel_t *ch, const sl_record_t *r, sluice_transition_t *t_p)
{
    if (r->kind < SLUICE_BEGIN_RUN || r->kind > SLUICE_END_JOB || r->kind == SLUICE_EVENT ||
        r->aux_size > SLUICE_AUX_MAX || r->slot >= ch->opt.max_open_lumis ||
        r->seq != ch->grx.tail + 1)
        return sl_fail(SLUICE_ECORRUPT, "global record %llu: kind %u, slot %u, aux %u, seq %llu "
                                        "is not a valid transition",
                       (unsigned long long)ch->grx.tail, r->kind, r->slot, r->aux_size,
                       (unsigned long long)r->seq);
    ch->scope_token = (sluice_token_t){ 0 };
    if ((r->instance & SL_GLOBAL_SCOPED)) {
        int rc = sl_scope_take(ch, r);
        if (rc)
            return rc;
    }
    if (sl_ring_rx_consume(&ch->grx) && ch->tp->wake)
        ch->tp->wake(ch->link); /* as sl_stream_consume */
    if (r->kind == SLUICE_BEGIN_LUMI)
        atomic_store_explicit(&ch->slot_events[r->slot], 0, memory_order_relaxed);
    /* Release: pairs with the stream readers' acquire load in event_next; the
     * slot reset above is visible before they count events of this lumi. */
    atomic_store_explicit(&ch->delivered_global, r->seq, memory_order_release);
    if (r->kind == SLUICE_END_JOB)
        ch->global_eof = true;
    sl_transition_from_record(t_p, r);
    sl_stat_add(&ch->stats->transitions_received, 1);
    /* The status page, under the source lock (its one writer). */
    sl_mon_transition(ch->mon, r->kind, r->run, r->lumi);
    sl_mon_set(&ch->mon->global_tail, ch->grx.tail);
    return SLUICE_OK;
}

/*
 * The stream's next event, if it may be delivered (its lock held, its token
 * finished): SLUICE_OK with it in *r; SLUICE_EAGAIN when there is none yet,
 * or (*gate) when its lumi's begin has not been delivered; SLUICE_EOF at end
 * of job. Leftovers of the previous event are discarded on the way.
 */
static int sl_event_peek(sluice_channel_t *ch, sl_stream_t *st, sl_record_t *r, bool *gate)
{
    *gate = false;
    if (st->eof)
        return SLUICE_EOF;
    for (;;) {
        int rc = sl_ring_rx_peek(&st->rx, r);
        if (rc)
            return rc;
        if (r->kind == SL_REC_STREAM_END) {
            sl_stream_consume(ch, st);
            st->eof = true;
            return SLUICE_EOF;
        }
        if (r->kind == SLUICE_EVENT)
            break;
        /* Leftovers of the previous event that this side did not claim. */
        if ((rc = sl_stream_discard(ch, st, r)))
            return rc;
    }
    if (r->slot >= ch->opt.max_open_lumis || r->aux_size > SLUICE_AUX_MAX ||
        r->seq <= st->token_seq)
        return sl_fail(SLUICE_ECORRUPT, "stream %u: event record with slot %u, aux %u, seq %llu "
                                        "after %llu",
                       (unsigned)(st - ch->streams), r->slot, r->aux_size,
                       (unsigned long long)r->seq, (unsigned long long)st->token_seq);
    /* Acquire: pairs with the release store in sl_global_take. */
    if (atomic_load_explicit(&ch->delivered_global, memory_order_acquire) >= r->dep)
        return SLUICE_OK;
    *gate = true;
    return SLUICE_EAGAIN;
}

/* Deliver the event sl_event_peek found: its token opens. */
static void sl_event_take(sluice_channel_t *ch, sl_stream_t *st, const sl_record_t *r,
                          sluice_transition_t *event_p, sluice_token_t *token_p)
{
    sl_stream_consume(ch, st);
    /* Release: pairs with the acquire load before an END_LUMI is delivered.
     * A scope is no event of a lumi. */
    if (st != &ch->streams[SL_SCOPE(ch)])
        atomic_fetch_add_explicit(&ch->slot_events[r->slot], 1, memory_order_release);
    st->token_seq = r->seq;
    st->peer_ended = false;
    st->peer_failed = 0;
    sl_mon_token(ch, st, true);
    atomic_store_explicit(&st->token_open, true, memory_order_relaxed);
    sl_transition_from_record(event_p, r);
    sl_stat_add(&ch->stats->transitions_received, 1);
    *token_p = (sluice_token_t){ ch, (uint32_t)(st - ch->streams), r->seq };
}

static int sl_source_check(const sluice_channel_t *ch, const void *out, const char *what)
{
    if (!ch || !out)
        return sl_fail(SLUICE_EINVAL, "channel and its output must not be NULL");
    if (ch->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": only the source takes %s", ch->name, what);
    return SLUICE_OK;
}

int sluice_transition_token(sluice_channel_t *ch, sluice_token_t *token_p)
{
    int rc = sl_source_check(ch, token_p, "transitions");
    if (rc)
        return rc;
    sl_deadline_t dl = sl_deadline_in(ch->opt.timeout_ms);
    if ((rc = sl_mutex_lock_until(&ch->source_lock, &dl, "transition token", SL_SOURCE_HELD)))
        return rc;
    *token_p = ch->scope_token;
    pthread_mutex_unlock(&ch->source_lock);
    return token_p->channel ? SLUICE_OK : SLUICE_ENOTFOUND;
}

int sluice_transition_next(sluice_channel_t *ch, sluice_transition_t *t_p, unsigned flags)
{
    int rc = sl_source_check(ch, t_p, "transitions");
    if (rc)
        return rc;
    if (ch->global_eof)
        return SLUICE_EOF;
    sl_wait_t w;
    sl_wait_init(ch, &w);
    sl_record_t r;
    bool gate; /* waiting on our own stream threads, not on the peer */
    sl_deadline_t dl = sl_deadline_in(ch->opt.timeout_ms);
    if ((rc = sl_mutex_lock_until(&ch->source_lock, &dl, "next transition", SL_SOURCE_HELD)))
        return rc;
    while ((rc = sl_global_peek(ch, &r, &gate)) == SLUICE_EAGAIN) {
        pthread_mutex_unlock(&ch->source_lock);
        rc = gate ? sl_wait_step_local(ch, &w, flags, "end of lumi waiting for its events")
                  : sl_wait_step(ch, &w, flags, "waiting for a global transition");
        if (rc)
            return sl_channel_result(ch, rc);
        if ((rc = sl_mutex_lock_until(&ch->source_lock, &dl, "next transition",
                                      SL_SOURCE_HELD)))
            return sl_channel_result(ch, rc);
    }
    if (rc == SLUICE_OK)
        rc = sl_global_take(ch, &r, t_p);
    pthread_mutex_unlock(&ch->source_lock);
    return sl_channel_result(ch, rc);
}

int sluice_event_next(sluice_channel_t *ch, uint32_t stream, sluice_transition_t *event_p,
                      unsigned flags, sluice_token_t *token_p)
{
    int rc = sl_source_check(ch, event_p, "events");
    if (rc)
        return rc;
    if (!token_p)
        return sl_fail(SLUICE_EINVAL, "token_p must not be NULL");
    if (stream >= ch->n_streams)
        return sl_fail(SLUICE_EINVAL, "stream %u out of range (channel has %u)", stream,
                       ch->n_streams);
    sl_stream_t *st = &ch->streams[stream];
    pthread_mutex_lock(&st->lock);
    if (atomic_load_explicit(&st->token_open, memory_order_relaxed)) {
        pthread_mutex_unlock(&st->lock);
        return sl_fail(SLUICE_EBUSY, "stream %u: finish event %llu before taking another", stream,
                       (unsigned long long)st->token_seq);
    }
    sl_wait_t w;
    sl_wait_init(ch, &w);
    sl_record_t r;
    bool gate; /* waiting on our own global reader, not on the peer */
    while ((rc = sl_event_peek(ch, st, &r, &gate)) == SLUICE_EAGAIN &&
           (rc = sl_stream_wait_step(ch, st, &w, flags,
                                     gate ? "event waiting for its lumi's begin"
                                          : "waiting for an event",
                                     0, gate)) == SLUICE_OK) {
    }
    if (rc == SLUICE_OK)
        sl_event_take(ch, st, &r, event_p, token_p);
    pthread_mutex_unlock(&st->lock);
    return sl_channel_result(ch, rc);
}

/*
 * One stream's next event for the next-item call, if it is ready and the
 * stream is free (its previous token finished). SLUICE_EAGAIN otherwise;
 * an end of job on the stream is not an item (the global END_JOB is).
 */
static int sl_source_try_stream(sluice_channel_t *ch, sl_stream_t *st, sluice_item_t *item_p)
{
    pthread_mutex_lock(&st->lock);
    int rc = SLUICE_EAGAIN;
    if (!atomic_load_explicit(&st->token_open, memory_order_relaxed)) {
        sl_record_t r;
        bool gate;
        rc = sl_event_peek(ch, st, &r, &gate);
        if (rc == SLUICE_OK) {
            sl_event_take(ch, st, &r, &item_p->transition, &item_p->token);
            item_p->stream = item_p->token.stream;
        } else if (rc == SLUICE_EOF) {
            rc = SLUICE_EAGAIN;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

bool sl_source_ready(sluice_channel_t *ch)
{
    sl_record_t r;
    bool gate;
    if (ch->global_eof || sl_global_peek(ch, &r, &gate) != SLUICE_EAGAIN)
        return true;
    for (uint32_t s = 0; s < ch->n_streams; s++) {
        sl_stream_t *st = &ch->streams[s];
        pthread_mutex_lock(&st->lock);
        int rc = atomic_load_explicit(&st->token_open, memory_order_relaxed)
                     ? SLUICE_EAGAIN
                     : sl_event_peek(ch, st, &r, &gate);
        pthread_mutex_unlock(&st->lock);
        if (rc != SLUICE_EAGAIN && rc != SLUICE_EOF)
            return true;
    }
    return false;
}

static int sl_source_next_locked(sluice_channel_t *ch, unsigned flags, sluice_item_t *item_p);

int sluice_source_next(sluice_channel_t *ch, unsigned flags, sluice_item_t *item_p)
{
    int rc = sl_source_check(ch, item_p, "items");
    if (rc)
        return rc;
    sl_deadline_t dl = sl_deadline_in(ch->opt.timeout_ms);
    if ((rc = sl_mutex_lock_until(&ch->source_lock, &dl, "next item", SL_SOURCE_HELD)))
        return rc;
    rc = sl_source_next_locked(ch, flags, item_p);
    pthread_mutex_unlock(&ch->source_lock);
    return sl_channel_result(ch, rc);
}

/* The source lock is held, and let go only while waiting. */
static int sl_source_next_locked(sluice_channel_t *ch, unsigned flags, sluice_item_t *item_p)
{
    int rc;
    sl_wait_t w;
    sl_wait_init(ch, &w);
    for (;;) {
        if (ch->global_eof)
            return SLUICE_EOF;
        /* Runs and lumis first, so that events never wait on a begin that
         * could be delivered; an END_LUMI waits for its events, which the
         * scan below delivers (nothing here waits on something only a
         * later call of this same thread would do). */
        sl_record_t r;
        bool gate;
        if ((rc = sl_global_peek(ch, &r, &gate)) == SLUICE_OK) {
            *item_p = (sluice_item_t){ .stream = UINT32_MAX };
            if ((rc = sl_global_take(ch, &r, &item_p->transition)) == SLUICE_OK)
                item_p->token = ch->scope_token;
            return rc;
        }
        if (rc != SLUICE_EAGAIN)
            return rc;
        /* Then one event, from the streams in turn so none starves. */
        for (uint32_t i = 0; i < ch->n_streams; i++) {
            uint32_t s = (ch->next_stream + i) % ch->n_streams;
            rc = sl_source_try_stream(ch, &ch->streams[s], item_p);
            if (rc == SLUICE_OK) {
                ch->next_stream = (s + 1) % ch->n_streams;
                return SLUICE_OK;
            }
            if (rc != SLUICE_EAGAIN)
                return rc;
        }
        /* Nothing ready. A gated END_LUMI waits for events this side holds
         * (tokens not finished yet): that is a wait on our own threads. */
        pthread_mutex_unlock(&ch->source_lock);
        rc = gate ? sl_wait_step_local(ch, &w, flags, "end of lumi waiting for its events")
                  : sl_wait_step(ch, &w, flags, "waiting for the next item");
        pthread_mutex_lock(&ch->source_lock);
        if (rc)
            return rc;
    }
}
