/* SPDX-License-Identifier: MIT */
/* Notifications: one-shot readiness callbacks and an eventfd, driven by a progress engine. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"

/*
 * Armed notifications live in a list under notify_lock until a progress
 * round finds them ready; then they leave the list and fire once, outside
 * every lock (docs/design.md, "Notifications"). A round checks each one the
 * way the matching call would, without waiting: it may take stream records
 * in (under the stream's lock) and peek the source's rings (under the
 * source lock), just as that call would.
 */
/* Most progress rounds spun before the engine sleeps on its doorbell. */
#define SL_PROGRESS_SPIN 16u

typedef enum sl_note_kind { SL_NOTE_PRODUCT = 1, SL_NOTE_ITEM, SL_NOTE_ROOM } sl_note_kind_t;

struct sl_note {
    sl_note_kind_t kind;
    uint32_t stream;
    uint32_t instance;
    uint64_t seq;             /* PRODUCT: the event */
    sluice_notify_fn fn;
    void *arg;
};

int sl_notify_init(sluice_channel_t *ch)
{
    pthread_mutex_init(&ch->notify_lock, NULL);
    ch->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ch->efd < 0)
        return sl_fail(SLUICE_ESYS, "channel \"%s\": eventfd failed", ch->name);
    return SLUICE_OK;
}

void sl_notify_fini(sluice_channel_t *ch)
{
    sluice_progress_stop(ch);
    free(ch->notes);
    if (ch->efd >= 0)
        close(ch->efd);
    pthread_mutex_destroy(&ch->notify_lock);
}

static _Atomic uint32_t *sl_doorbell(sluice_channel_t *ch) { return &ch->header->doorbell; }

/* Wake this side's own progress engine if it sleeps (something local changed). */
void sl_notify_poke(sluice_channel_t *ch)
{
    if (!ch->header)
        return;
    sl_full_fence();
    if (!atomic_load_explicit(&ch->header->sleeping, memory_order_relaxed))
        return;
    atomic_fetch_add_explicit(sl_doorbell(ch), 1, memory_order_release);
    syscall(SYS_futex, sl_doorbell(ch), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static bool sl_product_ready(sluice_channel_t *ch, const struct sl_note *n);
static bool sl_item_ready(sluice_channel_t *ch);
static bool sl_room_ready(sluice_channel_t *ch, const struct sl_note *n);

static int sl_arm(sluice_channel_t *ch, const struct sl_note *n)
{
    pthread_mutex_lock(&ch->notify_lock);
    if (ch->n_notes == ch->notes_room) {
        size_t room = ch->notes_room ? 2 * ch->notes_room : 16;
        struct sl_note *g = realloc(ch->notes, room * sizeof *g);
        if (!g) {
            pthread_mutex_unlock(&ch->notify_lock);
            return sl_fail(SLUICE_ENOMEM, "cannot grow the notification list to %zu", room);
        }
        ch->notes = g;
        ch->notes_room = room;
    }
    ch->notes[ch->n_notes++] = *n;
    pthread_mutex_unlock(&ch->notify_lock);
    /* A sleeping engine needs waking only if the note is ready already:
     * anything that arrives from now on rings the doorbell itself (the note
     * is in the list before this look). */
    bool ready = n->kind == SL_NOTE_PRODUCT ? sl_product_ready(ch, n)
                 : n->kind == SL_NOTE_ITEM  ? sl_item_ready(ch)
                                            : sl_room_ready(ch, n);
    if (ready)
        sl_notify_poke(ch);
    return SLUICE_OK;
}

int sluice_notify_product(const sluice_token_t *token, uint32_t instance, sluice_notify_fn fn,
                          void *arg)
{
    if (!token || !token->channel || token->stream > SL_SCOPE(token->channel))
        return sl_fail(SLUICE_EINVAL, "token is NULL, unstarted or names no stream");
    sluice_channel_t *ch = token->channel;
    if (!sl_channel_endpoint(ch, instance, SLUICE_RECEIVE))
        return sl_fail(SLUICE_ENOTFOUND, "channel \"%s\": no receiver of instance %u declared",
                       ch->name, instance);
    struct sl_note n = { SL_NOTE_PRODUCT, token->stream, instance, token->seq, fn, arg };
    return sl_arm(ch, &n);
}

int sluice_notify_item(sluice_channel_t *ch, sluice_notify_fn fn, void *arg)
{
    if (!ch || ch->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_EINVAL, "only a source channel has items to wait for");
    struct sl_note n = { SL_NOTE_ITEM, 0, 0, 0, fn, arg };
    return sl_arm(ch, &n);
}

int sluice_notify_room(sluice_channel_t *ch, uint32_t stream, sluice_notify_fn fn, void *arg)
{
    if (!ch || stream >= ch->n_streams)
        return sl_fail(SLUICE_EINVAL, "channel is NULL or has no stream %u", stream);
    struct sl_note n = { SL_NOTE_ROOM, stream, 0, 0, fn, arg };
    return sl_arm(ch, &n);
}

int sluice_channel_fd(const sluice_channel_t *ch) { return ch ? ch->efd : -1; }

/* Would a receive of the note's product return without waiting? */
static bool sl_product_ready(sluice_channel_t *ch, const struct sl_note *n)
{
    sl_stream_t *st = &ch->streams[n->stream];
    pthread_mutex_lock(&st->lock);
    bool ready = st->token_seq != n->seq || st->finishing ||
                 !atomic_load_explicit(&st->token_open, memory_order_relaxed);
    while (!ready) {
        for (size_t i = 0; i < st->n_pending && !ready; i++)
            ready = st->pending[i].instance == n->instance;
        if (ready || st->peer_ended || st->peer_failed) {
            ready = true;
            break;
        }
        int rc = sl_stream_pump(ch, st);
        if (rc == SLUICE_EAGAIN)
            break;
        ready = rc != SLUICE_OK; /* a failure: the receive will report it */
    }
    pthread_mutex_unlock(&st->lock);
    return ready;
}

/* Would sluice_source_next return without waiting? */
static bool sl_item_ready(sluice_channel_t *ch)
{
    if (ch->global_eof)
        return true;
    pthread_mutex_lock(&ch->source_lock);
    bool ready = sl_source_ready(ch);
    pthread_mutex_unlock(&ch->source_lock);
    return ready;
}

static bool sl_room_ready(sluice_channel_t *ch, const struct sl_note *n)
{
    sl_stream_t *st = &ch->streams[n->stream];
    pthread_mutex_lock(&st->lock);
    int rc = sl_ring_tx_room_n(&st->tx, ch->tp, ch->link, sl_stream_owed(st) + 1);
    pthread_mutex_unlock(&st->lock);
    return rc != SLUICE_EAGAIN;
}

/* One round: fire every armed notification that is ready. Returns how many fired. */
static int sl_progress_round(sluice_channel_t *ch)
{
    if (ch->tp->caps & SL_CAP_NEEDS_PROGRESS) {
        ch->tp->progress(ch->link);
        /* The MPI guard stayed held for a liveness period: nothing is
         * known to be newer, so nothing fires this round. */
        if (ch->tp->local_sync(ch->link) != SLUICE_OK)
            return 0;
    }
    /* A closed or dead peer makes every wait end: everything fires. */
    bool gone = atomic_load_explicit(&ch->header->peer_closed, memory_order_acquire) ||
                sl_peer_gone(ch);
    struct sl_note fired[16];
    int n_fired = 0;
    pthread_mutex_lock(&ch->notify_lock);
    for (size_t i = 0; i < ch->n_notes && n_fired < 16;) {
        struct sl_note *n = &ch->notes[i];
        bool ready = gone || (n->kind == SL_NOTE_PRODUCT ? sl_product_ready(ch, n)
                              : n->kind == SL_NOTE_ITEM  ? sl_item_ready(ch)
                                                         : sl_room_ready(ch, n));
        if (!ready) {
            i++;
            continue;
        }
        fired[n_fired++] = *n;
        ch->notes[i] = ch->notes[--ch->n_notes]; /* order among ready ones does not matter */
    }
    pthread_mutex_unlock(&ch->notify_lock);
    for (int i = 0; i < n_fired; i++)
        if (fired[i].fn)
            fired[i].fn(fired[i].arg);
    if (n_fired) {
        uint64_t one = (uint64_t)n_fired;
        ssize_t w = write(ch->efd, &one, sizeof one);
        (void)w; /* a full counter (2^64 - 2) still reads as readable */
    }
    return n_fired;
}

/* The channel whose progress thread this is (NULL on every other thread). */
static _Thread_local const sluice_channel_t *sl_progress_of;

/* On the channel's progress thread, once sluice_progress_stop asked it to end. */
static bool sl_progress_stopping(const sluice_channel_t *ch)
{
    return sl_progress_of == ch && !atomic_load_explicit(&ch->progress_run, memory_order_acquire);
}

/*
 * Sleep until the doorbell rings (a peer on this node published, or this
 * side poked), at most `ns`. Where the peer cannot ring it (RMA), a plain
 * short sleep: that engine polls.
 */
static void sl_progress_park(sluice_channel_t *ch, uint64_t ns, bool *fired_p, int *n_p)
{
    if (!ch->tp->wake) {
        struct timespec ts = { 0, (long)(ns < 200000 ? ns : 200000) };
        nanosleep(&ts, NULL);
        return;
    }
    sl_inbox_header_t *h = ch->header;
    atomic_fetch_add_explicit(&h->sleeping, 1, memory_order_relaxed);
    sl_full_fence();
    uint32_t ring = atomic_load_explicit(&h->doorbell, memory_order_acquire);
    /* Look once more after announcing the sleep: a record published before
     * the announcement was missed by the waker, not by this look. */
    int n = sl_progress_round(ch);
    /* A stop that rang before the doorbell was read would not wake this sleep. */
    if (n == 0 && !sl_progress_stopping(ch)) {
        struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
        syscall(SYS_futex, &h->doorbell, FUTEX_WAIT, ring, &ts, NULL, 0);
    }
    atomic_fetch_sub_explicit(&h->sleeping, 1, memory_order_relaxed);
    *fired_p = n != 0;
    *n_p = n;
}

int sluice_progress(sluice_channel_t *ch, uint32_t wait_us)
{
    if (!ch)
        return sl_fail(SLUICE_EINVAL, "channel is NULL");
    int n = sl_progress_round(ch);
    if (n || !wait_us)
        return n;
    uint64_t deadline = sl_now_ns() + (uint64_t)wait_us * 1000u;
    /* Spin a little first: a reply that is about to land costs no sleep.
     * A round costs far more than a blocking wait's poll (it walks every
     * armed notification), so the engine spins at most SL_PROGRESS_SPIN
     * rounds: it exists to save the CPU a blocking wait burns. */
    uint32_t spin = ch->opt.spin < SL_PROGRESS_SPIN ? ch->opt.spin : SL_PROGRESS_SPIN;
    for (uint32_t i = 0; i < spin; i++)
        if ((n = sl_progress_round(ch)))
            return n;
    for (;;) {
        uint64_t now = sl_now_ns();
        if (now >= deadline || sl_progress_stopping(ch))
            return 0;
        /* Wake at least every tenth of the liveness period to look at the peer. */
        uint64_t slice = (uint64_t)ch->opt.liveness_ms * 100000ull;
        uint64_t ns = deadline - now < slice ? deadline - now : slice;
        bool fired = false;
        sl_progress_park(ch, ns, &fired, &n);
        if (fired)
            return n;
        if ((n = sl_progress_round(ch)))
            return n;
    }
}

static void *sl_progress_main(void *arg)
{
    sluice_channel_t *ch = arg;
    sl_progress_of = ch;
    while (atomic_load_explicit(&ch->progress_run, memory_order_acquire))
        sluice_progress(ch, 100000);
    return NULL;
}

/* Whether the calling thread is the channel's own progress thread (in a callback). */
bool sl_on_progress_thread(const sluice_channel_t *ch) { return sl_progress_of == ch; }

int sluice_progress_start(sluice_channel_t *ch)
{
    if (!ch)
        return sl_fail(SLUICE_EINVAL, "channel is NULL");
    if (ch->progress_started)
        return sl_fail(SLUICE_EALREADY, "channel \"%s\": its progress thread runs already",
                       ch->name);
    atomic_store_explicit(&ch->progress_run, true, memory_order_release);
    if (pthread_create(&ch->progress_thread, NULL, sl_progress_main, ch) != 0) {
        atomic_store_explicit(&ch->progress_run, false, memory_order_relaxed);
        return sl_fail(SLUICE_ESYS, "channel \"%s\": cannot start a progress thread", ch->name);
    }
    atomic_store_explicit(&ch->progress_started, true, memory_order_release);
    return SLUICE_OK;
}

int sluice_progress_stop(sluice_channel_t *ch)
{
    if (!ch || !atomic_load_explicit(&ch->progress_started, memory_order_acquire))
        return SLUICE_OK;
    /* A callback on the thread would join itself and leave it running. */
    if (sl_on_progress_thread(ch))
        return sl_fail(SLUICE_EBUSY, "channel \"%s\": a notification callback cannot stop the "
                                     "progress thread it runs on", ch->name);
    atomic_store_explicit(&ch->progress_run, false, memory_order_release);
    /* Ring our own doorbell so that a sleeping thread sees the stop now. */
    if (ch->header) {
        atomic_fetch_add_explicit(sl_doorbell(ch), 1, memory_order_release);
        syscall(SYS_futex, sl_doorbell(ch), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }
    pthread_join(ch->progress_thread, NULL);
    atomic_store_explicit(&ch->progress_started, false, memory_order_release);
    return SLUICE_OK;
}
