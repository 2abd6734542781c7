/* SPDX-License-Identifier: MIT */
/* The transport interface: how the core reaches the peer's inbox. */
#ifndef SL_TRANSPORT_H
#define SL_TRANSPORT_H

#include <mpi.h>
#include <stdatomic.h>

#include "internal.h"
#include "backoff.h"

typedef struct sl_link sl_link_t; /* transport-private */

/* A ring record for publish(): its payload (if any) goes to `payload_off`,
 * its body to `off` + `body_off`, then its stamp, the slot's first word, to
 * `off`. */
typedef struct sl_stamped {
    size_t off;
    size_t body_off;
    const void *body;
    size_t body_len;
    uint64_t stamp;
    size_t payload_off;       /* a product's bytes into the peer's arena, */
    const void *payload;      /* put with the record so that either both */
    size_t payload_len;       /* go out or neither does; 0: none */
} sl_stamped_t;

/* Longest name of a shared-memory segment, with its NUL. */
#define SL_SEGMENT_NAME_MAX 96

/* What open() needs to make this side's inbox. */
typedef struct sl_link_params {
    MPI_Comm pair;            /* two-rank communicator, controller first (MPI transports only) */
    size_t bytes;             /* inbox size */
    int numa;                 /* NUMA node of the reader (-1: anywhere) */
    const char *local_name;   /* segment name for this side's inbox (segment transports) */
    const char *peer_name;    /* segment name the peer gave its inbox */
    uint32_t liveness_ms;     /* a read the peer does not answer within this means it is dead */
    const sl_deadline_t *deadline; /* of open: MPI transports wait for the MPI guard until it */
    _Atomic bool *peer_dead;  /* the channel's sticky verdict: read and set by both layers */
} sl_link_params_t;

/* Capability bits; the core chooses behaviour by these, never by name. */
enum {
    /* peer_ptr() returns a writable pointer into the peer's inbox (zero copy). */
    SL_CAP_PEER_POINTER = 1u << 0,
    /* The transport needs progress() called inside poll loops. */
    SL_CAP_NEEDS_PROGRESS = 1u << 1,
};

/*
 * One transport. Offsets are byte offsets into an inbox (see docs/design.md).
 * "Peer" functions address the peer's inbox; the local inbox is read directly
 * through `local_base` returned by open, after local_sync().
 *
 * Unless a slot says otherwise, it does not block, takes no lock, and may be
 * called by any thread concurrently with calls on other streams (distinct
 * offsets). Reads of the peer's inbox that it does not answer within the
 * liveness period return SLUICE_EPEERDEAD, and so does every later call
 * that needs the peer.
 */
typedef struct sl_transport_ops {
    size_t size;          /* sizeof(sl_transport_ops_t): lets the table grow */
    const char *name;
    unsigned caps;

    /*
     * Allocate the local inbox (params). Called by both sides only after the
     * handshake agreed, so a collective here (MPI transports) meets its peer.
     * On failure nothing stays allocated and *link_p is unset.
     */
    int (*open)(const sl_link_params_t *params, sl_link_t **link_p, void **local_base_p);

    /*
     * After the local inbox is initialised (its magic written last, with
     * release): wait (bounded by `deadline`) until the peer's inbox shows
     * its magic, then map it. Enters no collective. Returns its size.
     */
    int (*connect)(sl_link_t *link, const sl_deadline_t *deadline, size_t *peer_bytes_p);

    /*
     * Free everything; safe after a failed connect. Never blocks past
     * `deadline` and never leaves a collective half-entered: a transport
     * whose freeing is collective first agrees with the peer (both free, or
     * both leak) and returns SLUICE_ETIMEDOUT when they leak.
     */
    int (*close)(sl_link_t *link, const sl_deadline_t *deadline);

    /*
     * Copy `len` bytes into the peer's inbox; visible only after store64().
     * put, store64, load64 and get of MPI transports wait for the MPI guard
     * at most one liveness period and then return SLUICE_ETIMEDOUT having
     * done nothing (src/mpiguard.h).
     */
    int (*put)(sl_link_t *link, size_t off, const void *src, size_t len);

    /* SL_CAP_PEER_POINTER only: the peer's inbox at `off`, writable. */
    void *(*peer_ptr)(sl_link_t *link, size_t off);

    /*
     * Store a 64-bit counter into the peer's inbox with release semantics:
     * every put(), publish(), store64() and write through peer_ptr() before
     * it is visible to the peer before the counter is (pairs with the
     * peer's acquire load of its local inbox).
     */
    int (*store64)(sl_link_t *link, size_t off, uint64_t value);

    /*
     * Publish `n` ring records (ring.h): store every payload and body, then
     * every stamp with release semantics, so that the peer sees them, and
     * every put() and write through peer_ptr() before the call, before it
     * sees any of the stamps. All or nothing: on failure no stamp was stored,
     * and the ring is as it was (the one exception, an MPI error in the
     * middle, may have let some stamps out and leaves the link dead:
     * nothing more goes through it, but the peer may read those). The
     * bodies may be reused as soon as it returns. MPI transports take the
     * MPI guard once for all n, waiting at most one liveness period. All
     * or nothing holds per call, so per ring: an operation that pushes to
     * several rings (end of job, a scoped transition) is not.
     */
    int (*publish)(sl_link_t *link, const sl_stamped_t *recs, size_t n);

    /* Load a 64-bit counter from the peer's inbox with acquire semantics. */
    int (*load64)(sl_link_t *link, size_t off, uint64_t *value_p);

    /* Copy `len` bytes out of the peer's inbox (header checks at connect). */
    int (*get)(sl_link_t *link, size_t off, void *dst, size_t len);

    /*
     * Make the peer's writes to the local inbox visible to local loads.
     * May wait for the MPI guard, at most one liveness period:
     * SLUICE_ETIMEDOUT then, and nothing was synchronised.
     */
    int (*local_sync)(sl_link_t *link);

    /* Drive transport progress inside poll loops; called only with SL_CAP_NEEDS_PROGRESS.
     * Never waits: skipped when it cannot run now. */
    void (*progress)(sl_link_t *link);

    /*
     * Read a 64-bit word of the peer's inbox without waiting: SLUICE_OK with
     * the value once a read has completed, SLUICE_EAGAIN while one is under
     * way (the next call looks again), SLUICE_EBUSY when it cannot look now
     * (the MPI guard stayed held for a tenth of the liveness period: no
     * verdict). For the heartbeat of a peer on another node (heartbeat.h);
     * one caller at a time. NULL where every peer is on this node.
     */
    int (*watch64)(sl_link_t *link, size_t off, uint64_t *value_p);

    /*
     * Called by the heartbeat thread after it stored `value` into this
     * side's heartbeat word, for transports whose watch64 does not read
     * that word (NULL otherwise). Waits at most a quarter of the liveness
     * period (for the MPI guard); skips the beat when it cannot send one.
     */
    void (*beat)(sl_link_t *link, uint64_t value);

    /*
     * What carries this link beyond the transport's name, for
     * sluice_channel_path ("rma/pt2pt"); NULL: the name says it all.
     */
    const char *(*path)(const sl_link_t *link);

    /*
     * After a record was published: wake the peer's progress engine if it
     * sleeps on its doorbell (inbox.h). NULL where the peer cannot be woken
     * (its engine polls instead). Never waits.
     */
    void (*wake)(sl_link_t *link);

    /*
     * Make this side's inbox unreachable to a peer that has not found it
     * yet (remove its name), while it stays mapped on both sides: for a link
     * whose close is put off (reap.h). NULL where an inbox has no name.
     * Never waits.
     */
    void (*hide)(sl_link_t *link);
} sl_transport_ops_t;

/*
 * publish() for a transport whose put() is visible in order with its
 * store64() and that cannot fail half-way (shared memory, the tests'
 * loopbacks): each body, then each stamp.
 */
static inline int sl_publish_in_order(const sl_transport_ops_t *t, sl_link_t *l,
                                      const sl_stamped_t *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = recs[i].payload_len
                     ? t->put(l, recs[i].payload_off, recs[i].payload, recs[i].payload_len)
                     : SLUICE_OK;
        if (!rc)
            rc = t->put(l, recs[i].off + recs[i].body_off, recs[i].body, recs[i].body_len);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = t->store64(l, recs[i].off, recs[i].stamp);
        if (rc)
            return rc;
    }
    return SLUICE_OK;
}

extern const sl_transport_ops_t sl_shm_transport;
extern const sl_transport_ops_t sl_rma_transport;

#endif
