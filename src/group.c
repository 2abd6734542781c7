/* SPDX-License-Identifier: MIT */
/* Groups of channels: dispatch to several sources, items from several controllers (docs/design.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/group.h>

#include "channel.h"
#include "internal.h"

#define SL_GROUP_MAX_MEMBERS 1024u
#define SL_GROUP_TIMEOUT_MS 30000u

/* Controller: one stream of a member, as the group uses it. */
typedef struct sl_slot {
    bool claimed;             /* a send is under way on it */
    bool moving;              /* its event is being moved to another member (sl_move) */
    bool owed;                /* its event did not complete here and has not moved yet: the
                                 member was lost with it open, or it was given up on */
    uint64_t seq;             /* token seq of the event sent there (0: none) */
    uint32_t caller;          /* the caller's stream it was sent for */
    uint64_t sent_ns;         /* when (sl_now_ns), for the per-event deadline */
    sluice_transition_t ev;   /* the event, kept for a re-dispatch */
} sl_slot_t;

/* One member channel, as the group keeps it. Fields under the group's lock. */
typedef struct sl_member {
    sluice_channel_t *ch;
    uint32_t streams;
    bool lost;                /* died or closed: never chosen again */
    bool done;                /* source: end of job delivered, or the loss reported */
    sl_slot_t *slot;          /* controller: per stream */
    uint64_t events;
} sl_member_t;

struct sluice_group {
    pthread_mutex_t lock;     /* the bookkeeping below; never held across a channel call */
    sluice_role_t role;
    sluice_dispatch_t dispatch;
    sluice_dispatch_fn fn;
    void *arg;
    sluice_group_on_loss_t on_loss;
    uint32_t timeout_ms;
    uint32_t event_timeout_ms; /* 0: events have no deadline */
    uint32_t spin, max_sleep_us; /* back-off of the group's waits (the first member's) */
    size_t n;
    sl_member_t *m;
    size_t next;              /* round-robin turn; source: whom to ask first */
    size_t last;              /* controller: the member chosen last (least-loaded ties go there) */
    /* Controller: the global transition under way, kept while a call to
     * publish it on every member has not finished (it is resumed). */
    pthread_mutex_t tx_lock;  /* one transition_send at a time (taken with a deadline) */
    bool tx_open;
    sluice_transition_t tx;
    size_t tx_next;           /* first member that does not have it yet */
    bool tx_taken;            /* some member took it */
    sluice_group_stats_t stats;
};

/* ------------------------------------------------------------ set-up */

static void sl_group_free(sluice_group_t *g)
{
    for (size_t i = 0; g->m && i < g->n; i++) {
        free(g->m[i].slot);
        if (g->m[i].ch)
            atomic_store_explicit(&g->m[i].ch->grouped, false, memory_order_release);
    }
    free(g->m);
    pthread_mutex_destroy(&g->tx_lock);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static int sl_group_check_desc(const sluice_group_desc_t *d)
{
    size_t least = d->role == SLUICE_SOURCE ? 0 : 1;
    if (d->n_members < least || d->n_members > SL_GROUP_MAX_MEMBERS ||
        (d->n_members && !d->members))
        return sl_fail(SLUICE_EINVAL, "a group needs %zu to %u members, got %zu", least,
                       SL_GROUP_MAX_MEMBERS, d->n_members);
    if (d->role != 0 && d->role != SLUICE_SOURCE && d->role != SLUICE_CONTROLLER)
        return sl_fail(SLUICE_EINVAL, "unknown group role %d", (int)d->role);
    sluice_role_t role = d->role;
    for (size_t i = 0; i < d->n_members; i++) {
        if (!d->members[i])
            return sl_fail(SLUICE_EINVAL, "group member %zu is NULL", i);
        if (role == 0)
            role = d->members[i]->role;
        else if (d->members[i]->role != role)
            return sl_fail(SLUICE_EINVAL, "group members must have one role: member %zu differs",
                           i);
        for (size_t j = 0; j < i; j++)
            if (d->members[j] == d->members[i])
                return sl_fail(SLUICE_EINVAL, "channel \"%s\" is in the group twice",
                               d->members[i]->name);
    }
    if (role == SLUICE_CONTROLLER) {
        if (d->dispatch < SLUICE_DISPATCH_ROUND_ROBIN || d->dispatch > SLUICE_DISPATCH_BY_ROLE)
            return sl_fail(SLUICE_EINVAL, "unknown dispatch policy %d", (int)d->dispatch);
        if (d->dispatch == SLUICE_DISPATCH_CALLBACK && !d->fn)
            return sl_fail(SLUICE_EINVAL, "SLUICE_DISPATCH_CALLBACK needs a function");
    }
    if (d->on_loss != 0 && d->on_loss != SLUICE_GROUP_REDISPATCH &&
        d->on_loss != SLUICE_GROUP_FAIL_BACK)
        return sl_fail(SLUICE_EINVAL, "unknown on_loss mode %d", (int)d->on_loss);
    return SLUICE_OK;
}

int sluice_group_create(const sluice_group_desc_t *desc, sluice_group_t **group_p)
{
    if (!desc || !group_p)
        return sl_fail(SLUICE_EINVAL, "desc and group_p must not be NULL");
    if (desc->size < offsetof(sluice_group_desc_t, timeout_ms))
        return sl_fail(SLUICE_EINVAL, "sluice_group_desc_t.size %zu is too small", desc->size);
    /* Fields past the caller's size keep their defaults (zero). */
    sluice_group_desc_t d = { 0 };
    memcpy(&d, desc, desc->size < sizeof d ? desc->size : sizeof d);
    int rc = sl_group_check_desc(&d);
    if (rc)
        return rc;

    sluice_group_t *g = calloc(1, sizeof *g);
    if (!g)
        return sl_fail(SLUICE_ENOMEM, "group");
    pthread_mutex_init(&g->lock, NULL);
    pthread_mutex_init(&g->tx_lock, NULL);
    g->role = d.role ? d.role : d.members[0]->role;
    g->dispatch = d.dispatch;
    g->fn = d.fn;
    g->arg = d.arg;
    g->on_loss = d.on_loss ? d.on_loss : SLUICE_GROUP_REDISPATCH;
    g->timeout_ms = d.timeout_ms ? d.timeout_ms : SL_GROUP_TIMEOUT_MS;
    g->event_timeout_ms = d.event_timeout_ms;
    sluice_options_t o;
    sluice_options_init(&o);
    sluice_options_from_env(&o); /* a bad override fails every channel open: not ours to say */
    g->spin = d.n_members ? d.members[0]->opt.spin : o.spin;
    g->max_sleep_us = d.n_members ? d.members[0]->opt.max_sleep_us : o.max_sleep_us;
    g->n = d.n_members;
    if (g->n && !(g->m = calloc(g->n, sizeof *g->m))) {
        sl_group_free(g);
        return sl_fail(SLUICE_ENOMEM, "group members");
    }
    for (size_t i = 0; i < g->n; i++) {
        sl_member_t *m = &g->m[i];
        sluice_channel_t *ch = d.members[i];
        if (atomic_exchange_explicit(&ch->grouped, true, memory_order_acq_rel)) {
            sl_group_free(g);
            return sl_fail(SLUICE_EBUSY, "channel \"%s\" is already in a group", ch->name);
        }
        m->ch = ch;
        m->streams = ch->n_streams;
        if (g->role == SLUICE_CONTROLLER && !(m->slot = calloc(m->streams, sizeof *m->slot))) {
            sl_group_free(g);
            return sl_fail(SLUICE_ENOMEM, "group member %zu", i);
        }
    }
    *group_p = g;
    return SLUICE_OK;
}

void sluice_group_destroy(sluice_group_t *group)
{
    if (group)
        sl_group_free(group);
}

int sluice_group_add(sluice_group_t *g, sluice_channel_t *ch, size_t *member_p)
{
    if (!g || !ch)
        return sl_fail(SLUICE_EINVAL, "group and channel must not be NULL");
    if (g->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_ENOTSUP, "only source groups take members after creation");
    if (ch->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\" is not a source channel", ch->name);
    size_t i = 0;
    while (i < g->n && g->m[i].ch)
        i++;
    if (i == g->n && g->n == SL_GROUP_MAX_MEMBERS)
        return sl_fail(SLUICE_ELIMIT, "a group has at most %u members", SL_GROUP_MAX_MEMBERS);
    if (atomic_exchange_explicit(&ch->grouped, true, memory_order_acq_rel))
        return sl_fail(SLUICE_EBUSY, "channel \"%s\" is already in a group", ch->name);
    pthread_mutex_lock(&g->lock);
    if (i == g->n) {
        sl_member_t *m = realloc(g->m, (g->n + 1) * sizeof *m);
        if (!m) {
            pthread_mutex_unlock(&g->lock);
            atomic_store_explicit(&ch->grouped, false, memory_order_release);
            return sl_fail(SLUICE_ENOMEM, "group member %zu", i);
        }
        g->m = m;
        g->n++;
    }
    g->m[i] = (sl_member_t){ .ch = ch, .streams = ch->n_streams };
    pthread_mutex_unlock(&g->lock);
    if (member_p)
        *member_p = i;
    return SLUICE_OK;
}

int sluice_group_remove(sluice_group_t *g, sluice_channel_t *ch)
{
    if (!g || !ch)
        return sl_fail(SLUICE_EINVAL, "group and channel must not be NULL");
    if (g->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_ENOTSUP, "only source groups let members go");
    size_t i;
    int rc = sluice_group_member_of(g, ch, &i);
    if (rc)
        return rc;
    pthread_mutex_lock(&g->lock);
    g->m[i] = (sl_member_t){ .done = true }; /* no channel: skipped, free for the next add */
    pthread_mutex_unlock(&g->lock);
    atomic_store_explicit(&ch->grouped, false, memory_order_release);
    return SLUICE_OK;
}

int sluice_group_member_of(const sluice_group_t *g, const sluice_channel_t *ch, size_t *member_p)
{
    if (!g || !member_p)
        return sl_fail(SLUICE_EINVAL, "group and member_p must not be NULL");
    for (size_t i = 0; ch && i < g->n; i++)
        if (g->m[i].ch == ch) {
            *member_p = i;
            return SLUICE_OK;
        }
    return sl_fail(SLUICE_ENOTFOUND, "the channel is not a member of the group");
}

void sluice_group_stats(const sluice_group_t *g, sluice_group_stats_t *stats_p,
                        uint64_t *per_member, size_t n)
{
    if (!g)
        return;
    sluice_group_t *mg = (sluice_group_t *)g; /* the lock only */
    pthread_mutex_lock(&mg->lock);
    if (stats_p)
        *stats_p = g->stats;
    for (size_t i = 0; per_member && i < n && i < g->n; i++)
        per_member[i] = g->m[i].events;
    pthread_mutex_unlock(&mg->lock);
}

/* ------------------------------------------------------------ helpers */

static bool sl_is_loss(int rc) { return rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED; }

/*
 * With the lock held. `dead`: the member's process died or closed, so the
 * events whose tokens are open now will not complete there; they are owed
 * (they hold their lumi's end back, sl_lumi_busy) until re-dispatched or
 * handed back. A member dropped for refusing a transition is alive: its
 * open events complete as usual.
 */
static void sl_member_lose(sluice_group_t *g, sl_member_t *m, bool dead)
{
    if (!m->lost) {
        m->lost = true;
        g->stats.members_lost++;
    }
    for (uint32_t s = 0; dead && m->slot && s < m->streams; s++)
        if (m->slot[s].seq &&
            atomic_load_explicit(&m->ch->streams[s].token_open, memory_order_acquire))
            m->slot[s].owed = true;
}

static bool sl_same_transition(const sluice_transition_t *a, const sluice_transition_t *b)
{
    return a->kind == b->kind && a->run == b->run && a->lumi == b->lumi &&
           a->event == b->event && a->timestamp == b->timestamp &&
           memcmp(a->history, b->history, sizeof a->history) == 0 && a->aux_size == b->aux_size &&
           a->aux_size <= SLUICE_AUX_MAX && memcmp(a->aux, b->aux, a->aux_size) == 0;
}

/* Take `mu` by `deadline` (absolute, sl_now_ns clock) without ever blocking past it. */
static int sl_group_timedlock(sluice_group_t *g, pthread_mutex_t *mu, const sl_deadline_t *dl,
                              unsigned flags)
{
    sl_backoff_t b;
    sl_backoff_init(&b, g->spin, g->max_sleep_us);
    while (pthread_mutex_trylock(mu) != 0) {
        if (flags & SLUICE_NONBLOCK)
            return sl_fail(SLUICE_EAGAIN, "group: another thread is sending a transition");
        if (sl_backoff_pause(&b, dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "group: another thread's transition send did not "
                                             "end in time");
    }
    return SLUICE_OK;
}

/* ------------------------------------------------------------ transitions */

/* With the lock held: is an event of lumi (run, lumi) sent through the group still open? */
static bool sl_lumi_busy(const sluice_group_t *g, uint32_t run, uint32_t lumi)
{
    for (size_t i = 0; i < g->n; i++)
        for (uint32_t s = 0; s < g->m[i].streams; s++) {
            const sl_slot_t *slot = &g->m[i].slot[s];
            /* An owed event stays the group's until it moved or was handed
             * back, even after its token was finished. */
            if ((slot->claimed || slot->seq) && slot->ev.run == run && slot->ev.lumi == lumi &&
                (slot->claimed || slot->moving || slot->owed ||
                 atomic_load_explicit(&g->m[i].ch->streams[s].token_open, memory_order_acquire)))
                return true;
        }
    return false;
}

/*
 * A lumi ends on the members only once every event of it sent through the
 * group is finished, so that an event re-dispatched from a lost member still
 * finds its lumi open on the others.
 */
static int sl_wait_lumi_idle(sluice_group_t *g, const sluice_transition_t *t, unsigned flags,
                             const sl_deadline_t *dl)
{
    sl_backoff_t b;
    sl_backoff_init(&b, g->spin, g->max_sleep_us);
    for (;;) {
        pthread_mutex_lock(&g->lock);
        bool busy = sl_lumi_busy(g, t->run, t->lumi);
        pthread_mutex_unlock(&g->lock);
        if (!busy)
            return SLUICE_OK;
        if (flags & SLUICE_NONBLOCK)
            return sl_fail(SLUICE_EAGAIN, "group: lumi %u of run %u still has events in flight",
                           t->lumi, t->run);
        if (sl_backoff_pause(&b, dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "group: lumi %u of run %u still had events in "
                                             "flight after %u ms", t->lumi, t->run, g->timeout_ms);
    }
}

int sluice_group_transition_send(sluice_group_t *g, const sluice_transition_t *t, unsigned flags)
{
    if (!g || !t)
        return sl_fail(SLUICE_EINVAL, "group and transition must not be NULL");
    if (g->role != SLUICE_CONTROLLER)
        return sl_fail(SLUICE_EINVAL, "sluice_group_transition_send needs a controller group");
    sl_deadline_t dl = sl_deadline_in(g->timeout_ms);
    int rc = sl_group_timedlock(g, &g->tx_lock, &dl, flags);
    if (rc)
        return rc;
    if (g->tx_open && !sl_same_transition(&g->tx, t)) {
        pthread_mutex_unlock(&g->tx_lock);
        return sl_fail(SLUICE_EBUSY, "group: finish sending the previous transition (kind %d, "
                                     "run %u, lumi %u) first",
                       (int)g->tx.kind, g->tx.run, g->tx.lumi);
    }
    if (!g->tx_open && t->kind == SLUICE_END_LUMI &&
        (rc = sl_wait_lumi_idle(g, t, flags, &dl))) {
        pthread_mutex_unlock(&g->tx_lock);
        return rc;
    }
    if (!g->tx_open) {
        g->tx = *t;
        g->tx_next = 0;
        g->tx_taken = false;
        g->tx_open = true;
    }
    rc = SLUICE_OK;
    for (; g->tx_next < g->n; g->tx_next++) {
        sl_member_t *m = &g->m[g->tx_next];
        pthread_mutex_lock(&g->lock);
        bool lost = m->lost;
        pthread_mutex_unlock(&g->lock);
        if (lost)
            continue;
        rc = sluice_transition_send(m->ch, t, flags);
        if (sl_is_loss(rc)) {
            pthread_mutex_lock(&g->lock);
            sl_member_lose(g, m, true);
            pthread_mutex_unlock(&g->lock);
            rc = SLUICE_OK;
            continue;
        }
        if (rc == SLUICE_EAGAIN || rc == SLUICE_ETIMEDOUT)
            break; /* the next call resumes here */
        if (rc && !g->tx_taken) {
            g->tx_open = false; /* refused outright: nothing was sent, nothing to resume */
            break;
        }
        if (rc) {
            /* Refused what the members before it took: its channel no longer
             * matches the others (other options, or it failed), so it leaves
             * the group rather than stop every later transition. */
            pthread_mutex_lock(&g->lock);
            sl_member_lose(g, m, false);
            pthread_mutex_unlock(&g->lock);
            rc = SLUICE_OK;
            continue;
        }
        g->tx_taken = true;
    }
    if (g->tx_next == g->n) {
        g->tx_open = false;
        pthread_mutex_lock(&g->lock);
        bool any = false;
        for (size_t i = 0; i < g->n; i++)
            any = any || !g->m[i].lost;
        pthread_mutex_unlock(&g->lock);
        if (!any)
            rc = sl_fail(SLUICE_EPEERDEAD, "group: every member was lost");
    }
    pthread_mutex_unlock(&g->tx_lock);
    return rc;
}

/* ------------------------------------------------------------ dispatch */

/* With the lock held: a free stream of `m`, or UINT32_MAX. */
static uint32_t sl_member_free_stream(const sl_member_t *m, uint32_t *n_free_p)
{
    uint32_t first = UINT32_MAX, n = 0;
    for (uint32_t s = 0; s < m->streams; s++)
        if (!m->slot[s].claimed && !m->slot[s].moving && !m->slot[s].owed &&
            !atomic_load_explicit(&m->ch->streams[s].token_open, memory_order_acquire)) {
            if (first == UINT32_MAX)
                first = s;
            n++;
        }
    if (n_free_p)
        *n_free_p = n;
    return first;
}

/* With the lock held: may member `i` get an event (alive, and not the one a move comes from)? */
static bool sl_eligible(const sluice_group_t *g, size_t i, size_t exclude)
{
    return !g->m[i].lost && i != exclude;
}

/* With the lock held: the first eligible member at or after `from` (cyclic), or g->n. */
static size_t sl_next_live(const sluice_group_t *g, size_t from, size_t exclude)
{
    for (size_t k = 0; k < g->n; k++) {
        size_t i = (from + k) % g->n;
        if (sl_eligible(g, i, exclude))
            return i;
    }
    return g->n;
}

/*
 * With the lock held: the member the policy gives this event, or g->n when
 * the policy must look again later (least-loaded with nothing free).
 * The rotation moves on only when a stream is claimed (sl_claim), so a
 * call that returns SLUICE_EAGAIN leaves the turn where it was.
 */
static int sl_choose(sluice_group_t *g, uint32_t stream, const sluice_transition_t *ev,
                     size_t exclude, size_t *member_p)
{
    size_t live = 0;
    for (size_t i = 0; i < g->n; i++)
        live += sl_eligible(g, i, exclude);
    if (!live)
        return sl_fail(SLUICE_EPEERDEAD, exclude < g->n ? "group: no other member is left"
                                                        : "group: every member was lost");
    switch (g->dispatch) {
    case SLUICE_DISPATCH_ROUND_ROBIN:
        *member_p = sl_next_live(g, g->next, exclude);
        return SLUICE_OK;
    case SLUICE_DISPATCH_STREAM_AFFINE: {
        size_t want = stream % live;
        for (size_t i = 0; i < g->n; i++)
            if (sl_eligible(g, i, exclude) && want-- == 0)
                *member_p = i;
        return SLUICE_OK;
    }
    case SLUICE_DISPATCH_LEAST_LOADED: {
        size_t best = g->n;
        uint32_t best_free = 0;
        /* Ties go to the member chosen last: with few events in flight the
         * same source stays busy (and awake) instead of each one in turn
         * falling asleep between its events. */
        for (size_t k = 0; k < g->n; k++) {
            size_t i = (g->last + k) % g->n;
            uint32_t n_free;
            if (!sl_eligible(g, i, exclude))
                continue;
            sl_member_free_stream(&g->m[i], &n_free);
            if (n_free > best_free) {
                best = i;
                best_free = n_free;
            }
        }
        *member_p = best;
        return SLUICE_OK;
    }
    case SLUICE_DISPATCH_BY_ROLE:
        return sl_fail(SLUICE_EINVAL, "a by-role group sends each event to every member: "
                                      "sluice_group_event_send_roles");
    case SLUICE_DISPATCH_CALLBACK:
        break;
    }
    /* The callback runs without the lock, on a snapshot of the loads. */
    sluice_member_load_t *loads = calloc(g->n, sizeof *loads);
    if (!loads)
        return sl_fail(SLUICE_ENOMEM, "group: member loads");
    for (size_t i = 0; i < g->n; i++) {
        loads[i].streams = g->m[i].streams;
        sl_member_free_stream(&g->m[i], &loads[i].free);
        loads[i].alive = sl_eligible(g, i, exclude);
    }
    pthread_mutex_unlock(&g->lock);
    int pick = g->fn(g->arg, stream, ev, loads, g->n);
    free(loads);
    pthread_mutex_lock(&g->lock);
    if (pick < 0)
        return pick;
    if ((size_t)pick >= g->n || !sl_eligible(g, (size_t)pick, exclude))
        return sl_fail(SLUICE_EINVAL, "group: the dispatch callback chose member %d, which is %s",
                       pick, (size_t)pick >= g->n ? "out of range" : "not alive (or the one "
                                                                    "the event moves from)");
    *member_p = (size_t)pick;
    return SLUICE_OK;
}

/*
 * Without the lock: has the member's peer gone? Looked at while waiting on
 * it, so that a dead member's busy streams do not hold the group until the
 * deadline, and before a re-dispatch. The look does not wait.
 */
static bool sl_member_check(sluice_group_t *g, sl_member_t *m)
{
    bool gone = sl_peer_gone(m->ch);
    pthread_mutex_lock(&g->lock);
    if (gone)
        sl_member_lose(g, m, true);
    gone = m->lost;
    pthread_mutex_unlock(&g->lock);
    return gone;
}

/*
 * Pick a member by the policy and claim one of its free streams, waiting
 * (bounded) for one. The claim keeps other threads off the stream until the
 * send below settles.
 */
static int sl_claim(sluice_group_t *g, uint32_t stream, const sluice_transition_t *ev,
                    size_t exclude, unsigned flags, const sl_deadline_t *dl, size_t *member_p,
                    uint32_t *s_p)
{
    sl_backoff_t b;
    sl_backoff_init(&b, g->spin, g->max_sleep_us);
    size_t target = g->n;
    int rc = SLUICE_OK;
    pthread_mutex_lock(&g->lock);
    for (;;) {
        /* Chosen afresh every round: another thread's claim moved the turn,
         * or a member was lost, meanwhile. */
        if ((rc = sl_choose(g, stream, ev, exclude, &target)))
            break;
        if (target < g->n) {
            uint32_t s = sl_member_free_stream(&g->m[target], NULL);
            if (s != UINT32_MAX) {
                g->m[target].slot[s].claimed = true;
                g->m[target].slot[s].ev = *ev; /* its lumi is busy from now on */
                g->next = (target + 1) % g->n;
                g->last = target;
                *member_p = target;
                *s_p = s;
                rc = SLUICE_OK;
                break;
            }
        }
        pthread_mutex_unlock(&g->lock);
        /* A dead member's busy streams must not hold the wait to its deadline. */
        for (size_t i = 0; i < g->n; i++)
            if (target == g->n || i == target)
                sl_member_check(g, &g->m[i]);
        if (flags & SLUICE_NONBLOCK)
            return sl_fail(SLUICE_EAGAIN, "group: no member stream is free");
        if (sl_backoff_pause(&b, dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "group: no member stream came free in %u ms",
                           g->timeout_ms);
        pthread_mutex_lock(&g->lock);
    }
    pthread_mutex_unlock(&g->lock);
    return rc;
}

/* Send `ev` to a member the policy chooses, never to `exclude` (g->n: any). */
static int sl_group_send(sluice_group_t *g, uint32_t stream, const sluice_transition_t *ev,
                         size_t exclude, unsigned flags, sluice_token_t *token_p)
{
    sl_deadline_t dl = sl_deadline_in(g->timeout_ms);
    for (;;) {
        size_t i = 0;
        uint32_t s = 0;
        int rc = sl_claim(g, stream, ev, exclude, flags, &dl, &i, &s);
        if (rc)
            return rc;
        sl_member_t *m = &g->m[i];
        sluice_token_t tok;
        rc = sluice_event_send(m->ch, s, ev, flags, &tok);
        pthread_mutex_lock(&g->lock);
        m->slot[s].claimed = false;
        if (rc == SLUICE_OK) {
            m->slot[s].ev = *ev;
            m->slot[s].seq = tok.seq;
            m->slot[s].caller = stream;
            m->slot[s].sent_ns = sl_now_ns();
            m->events++;
            g->stats.events++;
        } else if (sl_is_loss(rc)) {
            sl_member_lose(g, m, true);
        } else if (g->dispatch == SLUICE_DISPATCH_ROUND_ROBIN && g->next == (i + 1) % g->n) {
            g->next = i; /* not sent: the turn stays with this member */
        }
        pthread_mutex_unlock(&g->lock);
        if (rc == SLUICE_OK)
            *token_p = tok;
        if (!sl_is_loss(rc))
            return rc;
        /* That member is gone: the event goes to another one. */
    }
}

/*
 * By role: the event goes to every live member at once. A free stream is
 * claimed on each first (waiting, bounded), so that either every live
 * member gets the event or none does.
 */
int sluice_group_event_send_roles(sluice_group_t *g, uint32_t stream,
                                  const sluice_transition_t *event, unsigned flags,
                                  sluice_token_t *tokens)
{
    if (!g || !event || !tokens)
        return sl_fail(SLUICE_EINVAL, "group, event and tokens must not be NULL");
    if (g->role != SLUICE_CONTROLLER || g->dispatch != SLUICE_DISPATCH_BY_ROLE)
        return sl_fail(SLUICE_EINVAL, "sluice_group_event_send_roles needs a by-role "
                                      "controller group");
    if (event->kind != SLUICE_EVENT)
        return sl_fail(SLUICE_EINVAL, "sluice_group_event_send_roles needs an SLUICE_EVENT");
    uint32_t *claim = calloc(g->n, sizeof *claim);
    if (!claim)
        return sl_fail(SLUICE_ENOMEM, "group: claims");
    sl_deadline_t dl = sl_deadline_in(g->timeout_ms);
    sl_backoff_t b;
    sl_backoff_init(&b, g->spin, g->max_sleep_us);
    int rc = SLUICE_OK;
    for (;;) {
        pthread_mutex_lock(&g->lock);
        bool all = true, any = false;
        for (size_t i = 0; i < g->n; i++) {
            claim[i] = UINT32_MAX;
            if (g->m[i].lost)
                continue;
            any = true;
            if ((claim[i] = sl_member_free_stream(&g->m[i], NULL)) == UINT32_MAX)
                all = false;
        }
        if (all && any)
            for (size_t i = 0; i < g->n; i++)
                if (claim[i] != UINT32_MAX) {
                    g->m[i].slot[claim[i]].claimed = true;
                    g->m[i].slot[claim[i]].ev = *event;
                }
        pthread_mutex_unlock(&g->lock);
        if (!any) {
            rc = sl_fail(SLUICE_EPEERDEAD, "group: every member was lost");
            break;
        }
        if (all)
            break;
        for (size_t i = 0; i < g->n; i++)
            sl_member_check(g, &g->m[i]);
        if (flags & SLUICE_NONBLOCK) {
            rc = sl_fail(SLUICE_EAGAIN, "group: not every member has a free stream");
            break;
        }
        if (sl_backoff_pause(&b, &dl) != SLUICE_OK) {
            rc = sl_fail(SLUICE_ETIMEDOUT, "group: not every member had a free stream in %u ms",
                         g->timeout_ms);
            break;
        }
    }
    if (rc) {
        free(claim);
        return rc;
    }
    size_t sent = 0;
    for (size_t i = 0; i < g->n; i++) {
        tokens[i] = (sluice_token_t){ 0 };
        if (claim[i] == UINT32_MAX)
            continue;
        sl_member_t *m = &g->m[i];
        uint32_t s = claim[i];
        int src = rc ? SLUICE_ECANCELED : sluice_event_send(m->ch, s, event, flags, &tokens[i]);
        pthread_mutex_lock(&g->lock);
        m->slot[s].claimed = false;
        if (src == SLUICE_OK) {
            m->slot[s].seq = tokens[i].seq;
            m->slot[s].caller = stream;
            m->slot[s].sent_ns = sl_now_ns();
            m->events++;
            sent++;
        } else if (sl_is_loss(src)) {
            sl_member_lose(g, m, true);
        } else if (!rc) {
            rc = src; /* the others sent so far are cancelled below */
        }
        pthread_mutex_unlock(&g->lock);
        if (src != SLUICE_OK)
            tokens[i] = (sluice_token_t){ 0 };
    }
    if (rc) {
        /* Take back what went out: all or none. An entry left with its
         * channel is one that could not be cancelled; the caller finishes it. */
        for (size_t i = 0; i < g->n; i++) {
            if (!tokens[i].channel ||
                sluice_event_fail(&tokens[i], SLUICE_ECANCELED,
                                  "the event could not reach every role") != SLUICE_OK)
                continue;
            pthread_mutex_lock(&g->lock);
            g->m[i].events--;
            g->m[i].slot[tokens[i].stream].seq = 0;
            pthread_mutex_unlock(&g->lock);
            tokens[i] = (sluice_token_t){ 0 };
        }
    } else if (!sent) {
        rc = sl_fail(SLUICE_EPEERDEAD, "group: every member was lost");
    } else {
        pthread_mutex_lock(&g->lock);
        g->stats.events++;
        pthread_mutex_unlock(&g->lock);
    }
    free(claim);
    return rc;
}

sluice_token_t *sluice_group_token_for(const sluice_group_t *g, sluice_token_t *tokens,
                                       uint32_t instance)
{
    if (!g || !tokens)
        return NULL;
    for (size_t i = 0; i < g->n; i++) {
        const sluice_channel_t *ch = g->m[i].ch;
        if (tokens[i].channel != ch)
            continue;
        for (size_t e = 0; e < ch->n_endpoints; e++)
            if (ch->endpoints[e].instance == instance)
                return &tokens[i];
    }
    return NULL;
}

int sluice_group_event_send(sluice_group_t *g, uint32_t stream, const sluice_transition_t *event,
                            unsigned flags, sluice_token_t *token_p)
{
    if (!g || !event || !token_p)
        return sl_fail(SLUICE_EINVAL, "group, event and token_p must not be NULL");
    if (g->role != SLUICE_CONTROLLER)
        return sl_fail(SLUICE_EINVAL, "sluice_group_event_send needs a controller group");
    if (event->kind != SLUICE_EVENT)
        return sl_fail(SLUICE_EINVAL, "sluice_group_event_send needs an SLUICE_EVENT transition");
    return sl_group_send(g, stream, event, g->n, flags, token_p);
}

/*
 * Take the event of `tok` off its member and send it to another (or hand it
 * back). `stuck`: an overdue event of a live member, cancelled there first
 * (the member stays); otherwise the member was lost. Until the event has
 * moved or was handed back it is owed: its stream is not reused and its
 * lumi cannot end, so a move that fails (no stream free yet) can simply be
 * called again.
 */
static int sl_move(sluice_group_t *g, const sluice_token_t *tok, bool stuck, unsigned flags,
                   sluice_token_t *token_p)
{
    if (!g || !tok || !token_p)
        return sl_fail(SLUICE_EINVAL, "group, token and token_p must not be NULL");
    size_t i;
    if (sluice_group_member_of(g, tok->channel, &i) || g->role != SLUICE_CONTROLLER)
        return sl_fail(SLUICE_EINVAL, "the token does not belong to this controller group");
    sl_member_t *m = &g->m[i];
    if (tok->stream >= m->streams)
        return sl_fail(SLUICE_EINVAL, "token stream %u out of range", tok->stream);
    sl_slot_t *slot = &m->slot[tok->stream];
    pthread_mutex_lock(&g->lock);
    bool open = atomic_load_explicit(&m->ch->streams[tok->stream].token_open,
                                     memory_order_acquire);
    /* The group's event on that stream, not finished there, or owed already. */
    bool ours = slot->seq == tok->seq && tok->seq != 0 && !slot->moving && (open || slot->owed);
    bool overdue = ours && g->event_timeout_ms &&
                   sl_now_ns() - slot->sent_ns >= (uint64_t)g->event_timeout_ms * 1000000u;
    sluice_transition_t ev = slot->ev;
    uint32_t caller = slot->caller;
    bool was_owed = slot->owed;
    if (ours && (!stuck || overdue || was_owed)) {
        slot->moving = true; /* one move at a time */
        /* The caller saw the loss on the token (the transport's own verdict,
         * which the channel's throttled liveness check may not show yet). */
        if (!stuck)
            sl_member_lose(g, m, true);
    }
    pthread_mutex_unlock(&g->lock);
    if (!ours)
        return sl_fail(SLUICE_EINVAL, "group: the token is not an event in flight of this group "
                                      "(finished, cancelled or already moved)");
    if (stuck && !overdue && !was_owed)
        return sl_fail(SLUICE_EINVAL, "group: event %llu is not overdue (event_timeout_ms %u)",
                       (unsigned long long)ev.event, g->event_timeout_ms);
    int rc = SLUICE_OK;
    if (open) {
        sluice_token_t t = *tok;
        if (stuck && !was_owed) /* the source sees it on its next call for the event */
            rc = sluice_event_fail(&t, SLUICE_ECANCELED,
                                   "the controller gave up on this event (overdue)");
        else /* after a loss it is finished here all the same */
            (void)sluice_event_finish(&t);
    }
    pthread_mutex_lock(&g->lock);
    if (rc) {
        /* Not given up: finished by its owner meanwhile (SLUICE_EALREADY), or
         * the cancellation could not be published yet. Nothing changed. */
        slot->moving = false;
        pthread_mutex_unlock(&g->lock);
        return rc;
    }
    slot->owed = true;
    bool hand_back = g->on_loss == SLUICE_GROUP_FAIL_BACK || g->dispatch == SLUICE_DISPATCH_BY_ROLE;
    pthread_mutex_unlock(&g->lock);
    /* By role, no other member serves this one's endpoints. A stuck event
     * goes to another member, never back to the one stuck on it. */
    if (!hand_back) {
        rc = sl_group_send(g, caller, &ev, stuck ? i : g->n, flags, token_p);
        if (rc == SLUICE_EPEERDEAD)
            hand_back = true; /* no member left to take it */
    }
    pthread_mutex_lock(&g->lock);
    if (hand_back || rc == SLUICE_OK) {
        if (hand_back)
            g->stats.failed_back++;
        else
            g->stats.redispatched++;
        g->stats.given_up += stuck;
        slot->owed = false;
        slot->seq = 0; /* the event lives elsewhere now */
    }
    slot->moving = false; /* not sent: still owed, call again */
    pthread_mutex_unlock(&g->lock);
    if (hand_back)
        return sl_fail(stuck ? SLUICE_ECANCELED : SLUICE_EPEERDEAD,
                       "group: event %llu of member %zu is handed back: run it here",
                       (unsigned long long)ev.event, i);
    return rc;
}

int sluice_group_redispatch(sluice_group_t *g, const sluice_token_t *lost, unsigned flags,
                            sluice_token_t *token_p)
{
    return sl_move(g, lost, false, flags, token_p);
}

int sluice_group_give_up(sluice_group_t *g, const sluice_token_t *stuck, unsigned flags,
                         sluice_token_t *token_p)
{
    return sl_move(g, stuck, true, flags, token_p);
}

int sluice_group_overdue(const sluice_group_t *g, const sluice_token_t *token)
{
    size_t i;
    if (!g || !token || sluice_group_member_of(g, token->channel, &i) ||
        g->role != SLUICE_CONTROLLER || token->stream >= g->m[i].streams)
        return sl_fail(SLUICE_EINVAL, "the token does not belong to this controller group");
    sluice_group_t *mg = (sluice_group_t *)g; /* the lock only */
    const sl_slot_t *slot = &g->m[i].slot[token->stream];
    pthread_mutex_lock(&mg->lock);
    int overdue = g->event_timeout_ms && slot->seq == token->seq && token->seq != 0 &&
                  !slot->moving && !slot->owed &&
                  atomic_load_explicit(&g->m[i].ch->streams[token->stream].token_open,
                                       memory_order_acquire) &&
                  sl_now_ns() - slot->sent_ns >= (uint64_t)g->event_timeout_ms * 1000000u;
    pthread_mutex_unlock(&mg->lock);
    return overdue;
}

int sluice_group_cancel(sluice_group_t *g, sluice_token_t *token)
{
    if (!g || !token)
        return sl_fail(SLUICE_EINVAL, "group and token must not be NULL");
    size_t i;
    if (sluice_group_member_of(g, token->channel, &i) || g->role != SLUICE_CONTROLLER)
        return sl_fail(SLUICE_EINVAL, "the token does not belong to this controller group");
    int rc = sluice_event_fail(token, SLUICE_ECANCELED, "cancelled by the controller");
    if (rc == SLUICE_OK || sl_is_loss(rc)) {
        pthread_mutex_lock(&g->lock);
        g->stats.cancelled++;
        pthread_mutex_unlock(&g->lock);
    }
    return rc;
}

/* ------------------------------------------------------------ source */

int sluice_group_next(sluice_group_t *g, unsigned flags, sluice_item_t *item_p, size_t *member_p)
{
    if (!g || !item_p || !member_p)
        return sl_fail(SLUICE_EINVAL, "group, item_p and member_p must not be NULL");
    if (g->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_EINVAL, "sluice_group_next needs a source group");
    sl_deadline_t dl = sl_deadline_in(g->timeout_ms);
    sl_backoff_t b;
    sl_backoff_init(&b, g->spin, g->max_sleep_us);
    for (;;) {
        bool open = false;
        for (size_t k = 0; k < g->n; k++) {
            size_t i = (g->next + k) % g->n;
            sl_member_t *m = &g->m[i];
            if (m->done)
                continue;
            int rc = sluice_source_next(m->ch, SLUICE_NONBLOCK, item_p);
            if (rc == SLUICE_EAGAIN) {
                open = true;
                continue;
            }
            if (rc == SLUICE_EOF) {
                m->done = true;
                continue;
            }
            pthread_mutex_lock(&g->lock);
            if (sl_is_loss(rc)) {
                m->done = true;
                sl_member_lose(g, m, true);
            } else if (rc == SLUICE_OK && item_p->transition.kind == SLUICE_EVENT) {
                m->events++;
                g->stats.events++;
            }
            pthread_mutex_unlock(&g->lock);
            g->next = (i + 1) % g->n;
            *member_p = i;
            return rc;
        }
        if (!open)
            return SLUICE_EOF;
        if (flags & SLUICE_NONBLOCK)
            return sl_fail(SLUICE_EAGAIN, "group: no member has an item ready");
        if (sl_backoff_pause(&b, &dl) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "group: no member had an item in %u ms",
                           g->timeout_ms);
    }
}
