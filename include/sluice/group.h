/* SPDX-License-Identifier: MIT */
/** @file
 * sluice groups: one controller to several sources, one source from several controllers. */
#ifndef SLUICE_GROUP_H
#define SLUICE_GROUP_H

#include <sluice/sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A group drives channels the application opened, all of one role, as one
 * (docs/design.md, "Groups"): a controller group sends every global
 * transition to each member and each event to one member chosen by a
 * dispatch policy; a source group takes the next item from whichever member
 * has one. The group owns no channel: destroy the group, then close the
 * channels. Once a channel is in a group, send its transitions and events
 * (controller) or take its items (source) through the group only; the
 * product, view, notification and finish calls on the tokens the group
 * hands out are the channel calls of sluice.h.
 */
typedef struct sluice_group sluice_group_t;

/** How a controller group chooses the member for an event. */
typedef enum sluice_dispatch {
    SLUICE_DISPATCH_ROUND_ROBIN = 1,   /**< members in turn, exactly */
    SLUICE_DISPATCH_STREAM_AFFINE = 2, /**< caller's stream k to live member k mod n_live */
    SLUICE_DISPATCH_LEAST_LOADED = 3,  /**< the member with the most free streams */
    SLUICE_DISPATCH_CALLBACK = 4,      /**< the application's function decides */
    SLUICE_DISPATCH_BY_ROLE = 5,       /**< every event to every member, each for its endpoints */
} sluice_dispatch_t;

/** What to do with the events of a member that died or closed. */
typedef enum sluice_group_on_loss {
    SLUICE_GROUP_REDISPATCH = 1, /**< sluice_group_redispatch sends them to another member */
    SLUICE_GROUP_FAIL_BACK = 2,  /**< sluice_group_redispatch hands them back: run them locally */
} sluice_group_on_loss_t;

/** One member as the dispatch policy sees it. */
typedef struct sluice_member_load {
    uint32_t streams;         /**< the member channel's streams */
    uint32_t free;            /**< of them, not holding an event of this group */
    int alive;                /**< 0 once the member was lost */
} sluice_member_load_t;

/**
 * SLUICE_DISPATCH_CALLBACK: return the member (0 .. n_members-1) for the
 * event the caller sends on its `stream`, or a negative status, which the
 * send returns. Called without any sluice lock held, possibly from several
 * threads at once, and again on every round while the send waits for the
 * chosen member to have a free stream; choosing a lost member is
 * SLUICE_EINVAL.
 */
typedef int (*sluice_dispatch_fn)(void *arg, uint32_t stream, const sluice_transition_t *event,
                                  const sluice_member_load_t *members, size_t n_members);

/** What sluice_group_create makes a group of, and how it behaves. */
typedef struct sluice_group_desc {
    size_t size;              /**< sizeof(sluice_group_desc_t) */
    sluice_channel_t *const *members; /**< open channels of one role, none in another group */
    size_t n_members;         /**< 1 .. 1024 (0 .. 1024 for a source group with role set) */
    sluice_dispatch_t dispatch; /**< controller groups; ignored by source groups */
    sluice_dispatch_fn fn;    /**< SLUICE_DISPATCH_CALLBACK only */
    void *arg;                /**< passed to fn */
    sluice_group_on_loss_t on_loss; /**< 0: SLUICE_GROUP_REDISPATCH */
    uint32_t timeout_ms;      /**< deadline of the group's own waits; 0: 30000 */
    uint32_t event_timeout_ms; /**< controller: an event older than this is overdue
                                    (sluice_group_give_up); 0: never */
    sluice_role_t role;       /**< 0: the members'; SLUICE_SOURCE lets a source group start
                                   empty (n_members 0) and take members later */
} sluice_group_desc_t;

/** Create a group; copies `desc` and the member list. Not collective. */
int sluice_group_create(const sluice_group_desc_t *desc, sluice_group_t **group_p);

/** @{ */
/**
 * Source groups: members join and leave while the group serves the others
 * (a service accepts controllers over time, sluice/service.h). Add an open
 * source channel that is in no group; `*member_p` (may be NULL) is its
 * index, which stays its own until it is removed and may then be reused.
 * Remove a member before closing its channel (after sluice_group_next
 * reported it closed or dead, or to stop serving it); its open events are
 * the application's to finish. Call them from the thread that calls
 * sluice_group_next, never during it. SLUICE_ENOTSUP for a controller
 * group, SLUICE_ELIMIT past 1024 members, SLUICE_ENOTFOUND to remove a
 * channel that is not a member.
 */
int sluice_group_add(sluice_group_t *group, sluice_channel_t *ch, size_t *member_p);
int sluice_group_remove(sluice_group_t *group, sluice_channel_t *ch);
/** @} */

/** Destroy the group (not its channels). After every other call on it returned. */
void sluice_group_destroy(sluice_group_t *group);

/**
 * Controller: publish a global transition on every live member, in member
 * order. On SLUICE_EAGAIN (SLUICE_NONBLOCK) or SLUICE_ETIMEDOUT the members
 * before the one that could not take it have it: call again with the same
 * transition and the group goes on from there (another transition first is
 * SLUICE_EBUSY). A member found lost is skipped from then on; the call fails
 * with SLUICE_EPEERDEAD only when no member is left. An error from the
 * first member that takes part (SLUICE_EORDER, SLUICE_ELIMIT, ...) changes
 * nothing and is returned; a member that refuses what the members before it
 * took no longer matches them and leaves the group (counted as lost). An END_LUMI first waits (bounded; SLUICE_EAGAIN with
 * SLUICE_NONBLOCK) until every event of its lumi sent through the group is
 * finished, cancelled or handed back, so that an event re-dispatched from a
 * lost member still finds its lumi open on the others. Calls are serialised.
 */
int sluice_group_transition_send(sluice_group_t *group, const sluice_transition_t *t,
                                 unsigned flags);

/**
 * Controller: send `event` to one member chosen by the group's policy, on a
 * free stream of that member, and start its token there (token->channel is
 * the member). `stream` is the caller's own event slot, any value: the
 * stream-affine policy and the callback look at it. Waits (bounded by the
 * group's timeout) for the chosen member to have a free stream, or returns
 * SLUICE_EAGAIN with SLUICE_NONBLOCK; a member found lost while sending is
 * skipped and another one chosen. Any thread; several at once.
 */
int sluice_group_event_send(sluice_group_t *group, uint32_t stream,
                            const sluice_transition_t *event, unsigned flags,
                            sluice_token_t *token_p);

/**
 * Controller, SLUICE_DISPATCH_BY_ROLE: the members serve different parts of
 * an event (one the calorimeter products, another the pixel tracks: each
 * channel declares its own endpoints). Sends `event` to every live member
 * on a free stream of each, waiting (bounded) until every one has one, and
 * fills `tokens` (n_members entries, in member order; a lost member's entry
 * has channel NULL, also for one found dead during this call): all live
 * members get the event or none does (on failure an entry that still has a
 * channel is one that could not be taken back: finish it). Send and
 * receive each product on the token of the member that declared its
 * instance (sluice_group_token_for); finish every token. A lost member's
 * events cannot move to another (no other serves its endpoints):
 * sluice_group_redispatch hands them back.
 */
int sluice_group_event_send_roles(sluice_group_t *group, uint32_t stream,
                                  const sluice_transition_t *event, unsigned flags,
                                  sluice_token_t *tokens);

/** Of the tokens sluice_group_event_send_roles filled, the one whose member
 * declared `instance`; NULL if none. */
sluice_token_t *sluice_group_token_for(const sluice_group_t *group, sluice_token_t *tokens,
                                       uint32_t instance);

/**
 * Controller: the event of `lost` cannot complete on its member (a call on
 * it returned SLUICE_EPEERDEAD or SLUICE_EPEERCLOSED). Finishes `lost` and
 * marks its member lost. With SLUICE_GROUP_REDISPATCH, sends the same event
 * to another live member and returns its token in `token_p`: send the
 * event's products again on it. With SLUICE_GROUP_FAIL_BACK, returns
 * SLUICE_EPEERDEAD: the event is the caller's to run (also when no member
 * is left). Either way the event is counted (sluice_group_stats).
 * SLUICE_EINVAL for a token the group did not hand out, or whose event was
 * finished or already moved. If no member stream is free yet (SLUICE_EAGAIN,
 * SLUICE_ETIMEDOUT) call again with the same token. Until the event has
 * moved, its lumi cannot end (sluice_group_transition_send).
 */
int sluice_group_redispatch(sluice_group_t *group, const sluice_token_t *lost, unsigned flags,
                            sluice_token_t *token_p);

/**
 * Controller, with event_timeout_ms set: 1 if the event of `token` was sent
 * longer ago than that (its source, alive, has not answered: a stuck kernel,
 * a busy loop), 0 if not, or a negative status. Any thread.
 */
int sluice_group_overdue(const sluice_group_t *group, const sluice_token_t *token);

/**
 * Controller: give up on an overdue event, as if its member were lost for
 * it alone: the event is cancelled on its source (SLUICE_ECANCELED on the
 * source's next call for it; the member stays in the group), then, as
 * sluice_group_redispatch does, goes to another member (new token in
 * `token_p`, counted in `redispatched` and `given_up`; never the member
 * that was stuck on it) or is handed back (SLUICE_ECANCELED, counted in
 * `failed_back` and `given_up`; also when no other member is left).
 * SLUICE_EALREADY if the event was finished meanwhile (nothing changes);
 * SLUICE_EINVAL if it is not overdue or not the group's. If no member
 * stream is free yet (SLUICE_EAGAIN, SLUICE_ETIMEDOUT) the event stays
 * cancelled on its source and owed: call again with the same token.
 */
int sluice_group_give_up(sluice_group_t *group, const sluice_token_t *stuck, unsigned flags,
                         sluice_token_t *token_p);

/**
 * Controller: cancel an event in flight (a local filter rejected it, say).
 * Fails the event with SLUICE_ECANCELED: its token is finished here and its
 * member stream is free at once; the source's next call on the event
 * returns SLUICE_ECANCELED and what still arrives for it is discarded.
 */
int sluice_group_cancel(sluice_group_t *group, sluice_token_t *token);

/**
 * Source: the next item of any member (sluice_source_next), members asked
 * in turn starting after the one that answered last; `*member_p` is the
 * member it came from. Results go back to the controller that sent an
 * event through its token. A member that closed or died is reported once:
 * the call returns SLUICE_EPEERCLOSED or SLUICE_EPEERDEAD with `*member_p`
 * set, and skips it afterwards. SLUICE_EOF once every member delivered its
 * end of job or was lost, and at once for a group with no member (a
 * service's group before its first controller: accept one, then ask
 * again). Waits (bounded) or SLUICE_EAGAIN with SLUICE_NONBLOCK. One thread
 * at a time.
 */
int sluice_group_next(sluice_group_t *group, unsigned flags, sluice_item_t *item_p,
                      size_t *member_p);

/** The member channel of a token, as a member index; SLUICE_ENOTFOUND if none. */
int sluice_group_member_of(const sluice_group_t *group, const sluice_channel_t *ch,
                           size_t *member_p);

/** Counters of a group (sluice_group_stats). */
typedef struct sluice_group_stats {
    uint64_t events;          /**< events sent (a re-dispatched one counts again) */
    uint64_t redispatched;    /**< events sent again to another member */
    uint64_t failed_back;     /**< events handed back to the caller */
    uint64_t cancelled;       /**< events cancelled (sluice_group_cancel) */
    uint32_t members_lost;    /**< members found dead or closed, or that left the group */
    uint64_t given_up;        /**< overdue events taken off their member (sluice_group_give_up) */
} sluice_group_stats_t;

/**
 * Counters of the group, and (if `per_member` is not NULL) the events sent
 * to each member, `n` entries at most. Thread-safe.
 */
void sluice_group_stats(const sluice_group_t *group, sluice_group_stats_t *stats_p,
                        uint64_t *per_member, size_t n);

#ifdef __cplusplus
}
#endif
#endif
