/* SPDX-License-Identifier: MIT */
/* Bounded waits of a channel: back-off, deadline, the peer's close, and waiting for ring room. */
#include "channel.h"
#include "liveness.h"

/*
 * A peer on another node: its heartbeat word must have moved within the
 * liveness period. One thread reads it at a time (the others go on); the
 * read itself never waits (watch64).
 */
static int sl_peer_heartbeat(sluice_channel_t *ch, uint64_t now, bool *dead_p)
{
    if (!ch->tp->watch64 || atomic_flag_test_and_set_explicit(&ch->hb_busy, memory_order_acquire))
        return SLUICE_OK;
    uint64_t beat;
    int rc = ch->tp->watch64(ch->link, offsetof(sl_inbox_header_t, heartbeat), &beat);
    if (rc == SLUICE_OK && beat != ch->hb_value) {
        ch->hb_value = beat;
        ch->hb_moved_ns = now;
    }
    /* SLUICE_EBUSY: this process's MPI guard was busy, nothing was looked
     * at, so no verdict (the beats wait in MPI and count next time). */
    *dead_p = rc == SLUICE_EPEERDEAD ||
              ((rc == SLUICE_OK || rc == SLUICE_EAGAIN) &&
               now - ch->hb_moved_ns > ch->opt.liveness_ms * 1000000ull);
    atomic_flag_clear_explicit(&ch->hb_busy, memory_order_release);
    return rc == SLUICE_EAGAIN || rc == SLUICE_EPEERDEAD || rc == SLUICE_EBUSY ? SLUICE_OK : rc;
}

/*
 * Is the peer still alive? A peer on this node is checked directly (its pid
 * and start time), one elsewhere by its heartbeat, at most every tenth of
 * the liveness period, so a death is seen well within it. Once seen it is
 * sticky: every later wait returns SLUICE_EPEERDEAD at once.
 */
static int sl_peer_check(sluice_channel_t *ch, const char *what)
{
    if (!atomic_load_explicit(&ch->peer_dead, memory_order_relaxed)) {
        uint64_t now = sl_now_ns();
        uint64_t next = atomic_load_explicit(&ch->live_next_ns, memory_order_relaxed);
        if (now < next)
            return SLUICE_OK;
        atomic_store_explicit(&ch->live_next_ns, now + ch->opt.liveness_ms * 100000ull,
                              memory_order_relaxed);
        bool dead = false;
        if (ch->peer_local) {
            dead = !sl_proc_alive(ch->peer_pid, ch->peer_start);
        } else {
            int rc = sl_peer_heartbeat(ch, now, &dead);
            if (rc)
                return rc;
        }
        if (!dead)
            return SLUICE_OK;
        atomic_store_explicit(&ch->peer_dead, true, memory_order_relaxed);
        sl_mon_peer(ch->mon, SLUICE_MONITOR_PEER_DEAD);
        /* As its shared memory: the survivor removes what the dead left
         * (on this node; sl_mon_forget checks). */
        sl_mon_forget(ch->peer_pid, ch->peer_start);
    }
    return sl_fail(SLUICE_EPEERDEAD, "channel \"%s\": %s: the peer process (pid %lld) died",
                   ch->name, what, (long long)ch->peer_pid);
}

bool sl_peer_gone(sluice_channel_t *ch)
{
    if (atomic_load_explicit(&ch->header->peer_closed, memory_order_acquire)) {
        sl_mon_peer(ch->mon, SLUICE_MONITOR_PEER_CLOSED);
        return true;
    }
    return sl_peer_check(ch, "progress") != SLUICE_OK;
}

void sl_wait_init(const sluice_channel_t *ch, sl_wait_t *w)
{
    sl_backoff_init(&w->backoff, ch->opt.spin, ch->opt.max_sleep_us);
    /* The deadline starts at the first failed poll (sl_wait_step), so calls
     * that never wait never read the clock. */
    w->deadline.at_ns = 0;
    w->closed_seen = false;
}

int sl_wait_step(sluice_channel_t *ch, sl_wait_t *w, unsigned flags, const char *what)
{
    if (w->closed_seen)
        return sl_fail(SLUICE_EPEERCLOSED, "channel \"%s\": %s: the peer closed the channel",
                       ch->name, what);
    /* Emulated RMA moves the peer's data only while we are in MPI: a
     * polling (non-blocking) caller must drive it too. */
    int rc;
    if (ch->tp->caps & SL_CAP_NEEDS_PROGRESS) {
        ch->tp->progress(ch->link);
        if ((rc = ch->tp->local_sync(ch->link)))
            return rc;
    }
    /* Acquire: pairs with the peer's release store64 at close, so the poll
     * after this one sees everything the peer published before closing. A
     * non-blocking caller learns of the close too, after that last poll. */
    if (atomic_load_explicit(&ch->header->peer_closed, memory_order_acquire)) {
        w->closed_seen = true;
        sl_mon_peer(ch->mon, SLUICE_MONITOR_PEER_CLOSED);
        return ch->tp->local_sync(ch->link);
    }
    /* Not closed: a peer that is gone without closing died. */
    rc = sl_peer_check(ch, what);
    if (rc)
        return rc;
    if ((rc = sl_wait_step_local(ch, w, flags, what)))
        return rc;
    return ch->tp->local_sync(ch->link);
}

int sl_wait_step_local(sluice_channel_t *ch, sl_wait_t *w, unsigned flags, const char *what)
{
    if (flags & SLUICE_NONBLOCK)
        return SLUICE_EAGAIN;
    if (SL_UNLIKELY(w->deadline.at_ns == 0))
        w->deadline = sl_deadline_in(ch->opt.timeout_ms);
    if (sl_backoff_pause(&w->backoff, &w->deadline) == SLUICE_ETIMEDOUT)
        return sl_fail(SLUICE_ETIMEDOUT, "channel \"%s\": %s: no progress within %u ms", ch->name,
                       what, ch->opt.timeout_ms);
    return SLUICE_OK;
}

int sl_stream_peer_done(sluice_channel_t *ch, sl_stream_t *st, bool *done_p)
{
    uint64_t done;
    /* Acquire: pairs with the peer's release store in sl_stream_finish. */
    int rc = ch->tp->load64(ch->link, st->tx.ctrl + SL_RING_DONE_OFF, &done);
    if (rc)
        return rc;
    /* A correct source finishes only events the controller gave it. (A
     * controller may well be ahead of its source.) */
    if (ch->role == SLUICE_CONTROLLER && done > st->next_seq)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": the peer says it finished event %llu, "
                                        "newer than any on the stream (%llu)",
                       ch->name, (unsigned long long)done, (unsigned long long)st->token_seq);
    *done_p = atomic_load_explicit(&st->token_open, memory_order_relaxed) &&
              done >= st->token_seq;
    return SLUICE_OK;
}

int sl_stream_wait_step(sluice_channel_t *ch, sl_stream_t *st, sl_wait_t *w, unsigned flags,
                        const char *what, uint64_t seq, bool local)
{
    pthread_mutex_unlock(&st->lock);
    int rc = local ? sl_wait_step_local(ch, w, flags, what) : sl_wait_step(ch, w, flags, what);
    pthread_mutex_lock(&st->lock);
    if (rc == SLUICE_OK && seq &&
        (st->token_seq != seq || st->finishing ||
         !atomic_load_explicit(&st->token_open, memory_order_relaxed)))
        return sl_fail(SLUICE_EALREADY, "channel \"%s\": stream %u: event %llu was finished by "
                                        "another thread while this call waited",
                       ch->name, (unsigned)(st - ch->streams), (unsigned long long)seq);
    return rc;
}

int sl_ring_wait_room(sluice_channel_t *ch, sl_ring_tx_t *tx, sl_stream_t *st, unsigned flags,
                      const char *what)
{
    sl_wait_t w;
    sl_wait_init(ch, &w);
    /* The finisher itself waits here with `finishing` set: no token check. */
    uint64_t seq = st && !st->finishing &&
                           atomic_load_explicit(&st->token_open, memory_order_relaxed)
                       ? st->token_seq
                       : 0;
    for (;;) {
        /* Open reservations own a slot each (their records come later);
         * counted anew after every wait, other threads may have reserved. */
        uint64_t need = st ? sl_stream_owed(st) + 1 : 1;
        int rc = sl_ring_tx_room_n(tx, ch->tp, ch->link, need);
        if (rc != SLUICE_EAGAIN)
            return rc;
        if (!st) {
            if ((rc = sl_wait_step(ch, &w, flags, what)))
                return rc;
            continue;
        }
        /* Full: take in what the peer sent us, so it can go on too; and
         * stop if the peer has finished this event already. */
        bool done;
        if ((rc = sl_stream_take_in(ch, st)) || (rc = sl_stream_peer_done(ch, st, &done)))
            return rc;
        if (done)
            return SL_DROPPED;
        if ((rc = sl_stream_wait_step(ch, st, &w, flags, what, seq, false)))
            return rc;
    }
}
