/* SPDX-License-Identifier: MIT */
/** @file
 * sluice public API: contexts, channels, transitions and products. */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/history.h>
#include <sluice/lock.h>
#include <sluice/options.h>
#include <sluice/shared.h>
#include <sluice/status.h>
#include <sluice/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_VERSION_MAJOR 0 /**< major version of these headers */
#define SLUICE_VERSION_MINOR 1 /**< minor version of these headers */

/** major * 100 + minor of the library actually loaded. */
int sluice_version(void);

/** @{ */
/**
 * The MPI guard. When MPI was initialised below MPI_THREAD_MULTIPLE
 * (SERIALIZED: osc/pt2pt needs it), only one thread may be inside MPI at a
 * time, and sluice's own calls may run on any of your threads: hold this
 * guard around your own MPI calls made while sluice may be in use. sluice
 * holds it only around single MPI calls (or the few that publish one batch
 * of records over RMA), never across a wait, but one MPI
 * call may last: the window collectives of an RMA open or close (entered
 * once both sides agreed), or an MPI_Win_flush towards a peer that died, on
 * osc/pt2pt, which MPI does not bound. sluice's own waits for the guard
 * are bounded (they fail with SLUICE_ETIMEDOUT); sluice_mpi_lock waits
 * without a bound, sluice_mpi_lock_until at most `timeout_ms` and returns
 * SLUICE_OK (held: release with sluice_mpi_unlock) or SLUICE_ETIMEDOUT (not
 * held). Holding the guard for long makes sluice's calls that need MPI time
 * out, and peers on other nodes see this process as dead after
 * liveness_ms. At MPI_THREAD_MULTIPLE all three calls do nothing (and
 * sluice_mpi_lock_until returns SLUICE_OK). Not recursive. Valid once a
 * context exists. Any thread.
 */
void sluice_mpi_lock(void);
int sluice_mpi_lock_until(uint32_t timeout_ms);
void sluice_mpi_unlock(void);
/** @} */

/* ------------------------------------------------------------------ context */

/** This process's part in sluice: its communicator, its name, and what it knows of every rank. */
typedef struct sluice_context sluice_context_t;

/**
 * Create a context over `comm`, naming this process `name` (for example
 * "controller" or "gpu-server-0"). Collective over `comm`: every rank calls
 * it. The caller owns MPI_Init/MPI_Finalize; the context duplicates `comm`
 * with MPI_ERRORS_RETURN and learns which ranks share a node and their NUMA
 * nodes (hwloc). Blocks until every rank has called it.
 */
int sluice_context_create(MPI_Comm comm, const char *name, sluice_context_t **ctx_p);

/** Destroy the context. Every channel of it must be closed first. Not collective. */
void sluice_context_destroy(sluice_context_t *ctx);

/** What a context knows of one rank (sluice_context_peer). */
typedef struct sluice_peer_info {
    int rank;                 /**< rank in the context's communicator */
    char name[64];            /**< process name given to sluice_context_create */
    int node;                 /**< node number: equal for ranks on the same node */
    int numa;                 /**< NUMA node of the rank's CPU, or -1 if unknown */
    int pid;                  /**< process id of the rank, on its node */
} sluice_peer_info_t;

/** Number of ranks in the context. */
int sluice_context_size(const sluice_context_t *ctx);
/** What is known of rank `rank`, in `*info_p`; SLUICE_EINVAL if the context has no such rank. */
int sluice_context_peer(const sluice_context_t *ctx, int rank, sluice_peer_info_t *info_p);
/** The rank of the calling process. */
int sluice_context_rank(const sluice_context_t *ctx);
/**
 * The context's own duplicate of the communicator it was created over, for
 * the application's MPI calls between the same processes (a context from
 * sluice_service_accept or _connect has no other). Valid until the context
 * is destroyed; do not free it. sluice's own messages use another one.
 */
MPI_Comm sluice_context_comm(const sluice_context_t *ctx);

/* ------------------------------------------------------------------ channel */

/** One channel between a controller and a source: sluice_channel_open, sluice_channel_close. */
typedef struct sluice_channel sluice_channel_t;

/** Which side of a channel this process is. */
typedef enum sluice_role {
    SLUICE_CONTROLLER = 1, /**< replays transitions and sends events to the source */
    SLUICE_SOURCE = 2,     /**< takes the controller's transitions and events */
} sluice_role_t;

/** Which way an endpoint's products go, seen from this side. */
typedef enum sluice_direction {
    SLUICE_SEND = 1,          /**< this side sends products of this instance */
    SLUICE_RECEIVE = 2,       /**< this side receives products of this instance */
} sluice_direction_t;

/**
 * Where the products of an endpoint live (docs/gpu.md). Host memory is the
 * default (0). Device memory means CUDA device memory: sender and receiver
 * must both declare it (the open fails on both sides with SLUICE_ETYPE
 * otherwise), and both need a CUDA device and a build with CUDA, or the
 * open fails on both sides with SLUICE_ENOTSUP and sluice_last_error()
 * says which side lacks what ("built without CUDA", "no CUDA device: ...").
 * For a device endpoint, a reservation's `data` and a view's `data` are
 * device pointers, sluice_product_send reads `data` with cudaMemcpy (device
 * or host), and custom layouts are refused. How the bytes travel:
 * sluice_channel_device_path().
 */
typedef enum sluice_memory {
    SLUICE_MEMORY_HOST = 0,   /**< host memory: the arena in the receiver's inbox */
    SLUICE_MEMORY_DEVICE = 1, /**< CUDA device memory of the receiver's GPU */
} sluice_memory_t;

/**
 * One sender or receiver of this side, matched to the peer's by instance.
 * Initialise it with designated initialisers: fields added later (like
 * `memory`) then take their default, 0, without a -Wextra warning.
 */
typedef struct sluice_endpoint {
    uint32_t instance;        /**< matched with the peer's endpoint of the same instance */
    sluice_direction_t direction; /**< whether this side sends or receives it */
    const sluice_type_t *type; /**< its product type; must outlive the channel */
    sluice_memory_t memory;   /**< SLUICE_MEMORY_HOST (0) or SLUICE_MEMORY_DEVICE */
} sluice_endpoint_t;

/** What sluice_channel_open opens: the channel's name, this side's role and endpoints. */
typedef struct sluice_channel_desc {
    size_t size;              /**< sizeof(sluice_channel_desc_t) */
    const char *name;         /**< channel name; the same on both sides */
    sluice_role_t role;       /**< this side's role */
    const char *peer;         /**< process name of the other side */
    uint32_t streams;         /**< concurrent event slots; equal on both sides */
    const sluice_endpoint_t *endpoints; /**< this side's senders and receivers */
    size_t n_endpoints;       /**< entries in `endpoints` */
    const sluice_options_t *options; /**< NULL: defaults, then SLUICE_* overrides */
} sluice_channel_desc_t;

/**
 * Open a channel with the peer named in `desc`. Called by the controller and
 * by the source, each with its own endpoints; other ranks do not take part.
 * Blocks until both sides have opened and agreed (docs/design.md, "Opening
 * and closing"), or the deadline (timeout_ms) passes (SLUICE_ETIMEDOUT; a
 * side that already acknowledged the peer waits at most one more timeout).
 * A failed open leaves nothing behind and may simply be retried, by either
 * side, later. Declarations that disagree (types, streams, sizes, transport,
 * an endpoint's memory) fail both sides with SLUICE_ETYPE and a message
 * (sluice_last_error) naming the field or the instance and both types (or
 * which side declared device memory). A device-memory endpoint fails both
 * sides with SLUICE_ENOTSUP and the reason (sluice_memory_t). Several threads may open
 * different channels at once. `desc` and the types must outlive the call;
 * the types must outlive the channel.
 */
int sluice_channel_open(sluice_context_t *ctx, const sluice_channel_desc_t *desc,
                        sluice_channel_t **ch_p);

/**
 * Close the channel: tells the peer (whose waits then return
 * SLUICE_EPEERCLOSED) and frees the channel, whatever it returns. Shared
 * memory is freed at once. RMA windows are freed collectively, so close
 * agrees with the peer first (bounded by timeout_ms): SLUICE_OK when both
 * freed, SLUICE_ETIMEDOUT when the peer did not come in time (or is dead)
 * and both sides leave the window to MPI_Finalize. Views not yet released
 * become invalid. Call once, from one thread, after every other call on the
 * channel has returned; it may follow any status, SLUICE_EPEERDEAD included.
 *
 * After SLUICE_EPEERCLOSED or SLUICE_EPEERDEAD the channel is over: every
 * later wait on it returns the same status at once (calls that need no
 * wait may still succeed and change nothing the peer will see); release
 * views, then close. The context and MPI can then be finalised normally
 * (except over RMA after a death: docs/design.md, "Liveness").
 */
int sluice_channel_close(sluice_channel_t *ch);

/** Counters of one side of a channel (sluice_channel_stats). */
typedef struct sluice_channel_stats {
    /** @{ */
    /** Transitions this side sent and received, events included. */
    uint64_t transitions_sent, transitions_received;
    /** @} */
    /** @{ */
    /** Products this side sent (committed) and received. */
    uint64_t products_sent, products_received;
    /** @} */
    /** @{ */
    /** Bytes of the products this side sent and received. */
    uint64_t bytes_sent, bytes_received;
    /** @} */
    uint64_t discarded;       /**< products dropped because their event was already finished */
    /** Publications that carried products_sent: products committed out of
     * order settle together and share one (over RMA: one flush). */
    uint64_t product_publications;
} sluice_channel_stats_t;

/** Name of the transport the channel uses ("shm" or "rma"); a constant string. */
const char *sluice_channel_transport(const sluice_channel_t *ch);

/**
 * The path the channel's data takes, in more detail than the transport:
 * "shm", or for RMA "rma/" and the Open MPI one-sided component that
 * serves its windows ("rma/pt2pt": emulated over messages, "rma/rdma",
 * "rma/ucx", "rma/sm"), or just "rma" where the MPI library does not say.
 * Valid until the channel is closed.
 */
const char *sluice_channel_path(const sluice_channel_t *ch);

/**
 * How the channel's products in device memory travel (docs/gpu.md): "ipc"
 * (the sender's copies and kernels write straight into the receiver's GPU
 * memory, mapped with CUDA IPC: one node), "staged" (through the host arena:
 * device to host on the sender, host to device on the receiver), or "none"
 * (no endpoint in device memory). Both sides agree on it at open; the
 * option device_path forces one. A constant string.
 */
const char *sluice_channel_device_path(const sluice_channel_t *ch);

/** Counters of this side. Thread-safe; values may lag concurrent calls. */
void sluice_channel_stats(const sluice_channel_t *ch, sluice_channel_stats_t *stats_p);

/* --------------------------------------------------------------- transitions */

/** What a transition is; the ordering rules are in docs/design.md. */
typedef enum sluice_transition_kind {
    SLUICE_BEGIN_RUN = 1,  /**< a run begins */
    SLUICE_BEGIN_LUMI = 2, /**< a luminosity block of an open run begins */
    SLUICE_EVENT = 3,      /**< one event of an open lumi, on one stream */
    SLUICE_END_LUMI = 4,   /**< the lumi ends, after all its events */
    SLUICE_END_RUN = 5,    /**< the run ends, after all its lumis */
    SLUICE_END_JOB = 6,    /**< no more transitions will come */
} sluice_transition_kind_t;

#define SLUICE_AUX_MAX 128    /**< most bytes of user payload per transition */

/** One transition as the controller sends it and the source receives it. */
typedef struct sluice_transition {
    sluice_transition_kind_t kind; /**< what it is */
    uint32_t run;             /**< run number */
    uint32_t lumi;            /**< lumi number, for lumis and events */
    uint64_t event;           /**< event number, for events */
    uint64_t timestamp;       /**< user's clock, carried verbatim */
    uint8_t history[16];      /**< process-history id */
    uint32_t aux_size;        /**< bytes used in aux, at most SLUICE_AUX_MAX */
    uint8_t aux[SLUICE_AUX_MAX]; /**< user payload, carried verbatim */
} sluice_transition_t;

/** Flags for calls that may wait. */
#define SLUICE_NONBLOCK 1u    /**< return SLUICE_EAGAIN instead of waiting */

/**
 * Controller: publish a global transition (BEGIN_RUN, BEGIN_LUMI, END_LUMI,
 * END_RUN, END_JOB). Any thread may call it; calls are serialised. Checks the
 * ordering rules (docs/design.md) and returns SLUICE_EORDER or SLUICE_ELIMIT
 * without publishing anything when they are broken. Waits (bounded) while the
 * global ring is full, or returns SLUICE_EAGAIN with SLUICE_NONBLOCK.
 */
int sluice_transition_send(sluice_channel_t *ch, const sluice_transition_t *t, unsigned flags);

/**
 * Source: take the next global transition, in the controller's order. An
 * END_LUMI is delivered only after every event of that lumi has been taken
 * on every stream. Returns SLUICE_EOF after END_JOB was delivered. One thread
 * at a time.
 */
int sluice_transition_next(sluice_channel_t *ch, sluice_transition_t *t_p, unsigned flags);

/* ---------------------------------------------------------------- events */

/*
 * Threads. Calls on one event (its token) may come from several threads at
 * once: receives of the same or different instances, sends, reservations
 * and their commits, and its finish; each takes the stream's lock, never
 * across a back-off wait, so a thread waiting for a product does not hold
 * up one sending on the same event (over RMA the lock is held across the
 * transport's MPI calls, a credit read up to liveness_ms: docs/design.md,
 * "Threads and locks"). A view may be released from any thread at any
 * time before the channel is closed. Different streams never share a lock.
 * What stays one thread at a time: sluice_event_send and sluice_event_next
 * per stream (a token is handed out once), sluice_transition_next and
 * sluice_source_next per channel (they share the global reader), and
 * sluice_channel_close (after every other call on the channel returned).
 * A call on an event that another thread finishes meanwhile returns
 * SLUICE_EALREADY.
 */

/** Names one event on one stream of one side, from its start to its finish. */
typedef struct sluice_token {
    sluice_channel_t *channel; /**< the channel the event is on */
    uint32_t stream;          /**< the stream it is on */
    uint64_t seq;             /**< the stream's event sequence number */
} sluice_token_t;

/**
 * Controller: publish an EVENT transition on `stream` and start its token.
 * The stream's previous token must be finished (SLUICE_EBUSY) and the event's
 * lumi open (SLUICE_EORDER). One thread per stream at a time; different
 * streams may be driven concurrently.
 */
int sluice_event_send(sluice_channel_t *ch, uint32_t stream, const sluice_transition_t *event,
                      unsigned flags, sluice_token_t *token_p);

/**
 * Source: take the next event of `stream`, waiting (bounded) until its lumi's
 * begin has been delivered by sluice_transition_next. Returns SLUICE_EOF at
 * end of job. The previous token of the stream must be finished.
 */
int sluice_event_next(sluice_channel_t *ch, uint32_t stream, sluice_transition_t *event_p,
                      unsigned flags, sluice_token_t *token_p);

/**
 * Controller: publish a global transition (not END_JOB) that carries
 * products: run- and lumi-scoped data such as conditions payloads, lumi
 * summaries or luminosity information. `token_p` names its scope, used
 * like an event's token with the product calls, in both directions (the
 * source may answer an END_LUMI with its summary): the same types, type
 * checks and zero copy. Finish it with sluice_event_finish; one scope is
 * open at a time (SLUICE_EBUSY), and end of job needs it finished. The
 * source receives the transition as usual and its scope with it
 * (sluice_transition_token, or sluice_item_t.token).
 */
int sluice_transition_send_scoped(sluice_channel_t *ch, const sluice_transition_t *t,
                                  unsigned flags, sluice_token_t *token_p);

/**
 * Source: the scope of the transition sluice_transition_next (or
 * sluice_source_next) delivered last, if it carries products; else
 * SLUICE_ENOTFOUND. Finish the scope before the next scoped transition can
 * be delivered.
 */
int sluice_transition_token(sluice_channel_t *ch, sluice_token_t *token_p);

/** What sluice_source_next (and sluice_group_next) returns: a transition or an event. */
typedef struct sluice_item {
    sluice_transition_t transition; /**< transition.kind says which */
    uint32_t stream;          /**< SLUICE_EVENT: the stream; otherwise UINT32_MAX */
    sluice_token_t token;     /**< SLUICE_EVENT: finish it (any thread) before its stream's next;
                                   a global transition with products: its scope, else
                                   token.channel is NULL */
} sluice_item_t;

/**
 * Source, the InputSource way: one call says what comes next, a global
 * transition (BEGIN_RUN ... END_JOB; `stream` is UINT32_MAX) or an event
 * (kind SLUICE_EVENT, with its `stream` and `token`), in an order the
 * framework may process as it comes: runs and lumis nested, each event
 * after its lumi's begin, an END_LUMI only after every event of its lumi
 * was returned. A stream's next event comes only once its previous token is
 * finished; events of different streams interleave (streams are taken in
 * turn). A single thread driving everything through this call never
 * deadlocks on it; several lumis may be open at once. SLUICE_EOF once
 * END_JOB was returned. Do not mix it with sluice_transition_next or
 * sluice_event_next on the same channel; one thread at a time.
 */
int sluice_source_next(sluice_channel_t *ch, unsigned flags, sluice_item_t *item_p);

/**
 * Either side: finish the event. Tells the peer no more products of this
 * event will come, and discards received-but-unclaimed products of it.
 * Views already taken stay valid until released. Reservations still open
 * are cancelled: their `data` must not be written any more (by any thread).
 * SLUICE_EALREADY if finished.
 * On SLUICE_ETIMEDOUT or SLUICE_EAGAIN the event stays open and finish may
 * be called again; after SLUICE_EPEERCLOSED or SLUICE_EPEERDEAD it is
 * finished here all the same.
 */
int sluice_event_finish(sluice_token_t *token);

/**
 * Either side: fail the event, with a negative `status` of the caller's
 * choosing (SLUICE_EFAILED when in doubt) and a short message (at most
 * SLUICE_AUX_MAX bytes are kept). Finishes the event here like
 * sluice_event_finish; the peer's next call on the event (a receive, a
 * send, a reservation) returns that status with "the peer failed event N:
 * <message>" in sluice_last_error, and what it had received of the event
 * is released. The peer still finishes its token as usual.
 */
int sluice_event_fail(sluice_token_t *token, int status, const char *message);

/* ---------------------------------------------------------------- products */

/**
 * A reserved region in the peer's arena. `data` is writable until commit;
 * the region is `bytes` long and aligned to 64 bytes. Up to 16 may be open
 * on one stream at once (and fewer than its ring depth); their products
 * reach the receiver in the order they were reserved, so one committed
 * while an older one is still open goes out when the older one is
 * committed or cancelled (or the event is finished, which cancels it).
 */
typedef struct sluice_reservation {
    void *data;               /**< where to write the product; writable until commit (a device
                                   pointer for a device endpoint) */
    size_t bytes;             /**< the region's length */
    uint32_t instance;        /**< the instance it was reserved for */
    uint64_t count;           /**< the element count given to sluice_product_reserve */
    uint64_t handle;          /**< private: names the reservation in its stream */
    void *cuda_stream;        /**< device endpoint: the cudaStream_t whose work fills `data`,
                                   set before commit; NULL (the default): all of this process's
                                   work on the device */
} sluice_reservation_t;

/**
 * Reserve `bytes` for a product of `instance` in the event of `token`, with
 * `count` elements. For block and SoA types `count` is the element count and
 * sluice_type_bytes(type, count) must fit in `bytes` (SLUICE_EINVAL
 * otherwise: receivers index columns by it); for custom types it is any
 * value the receiver should see. If the receiver has already finished the
 * event, the reservation gets a local buffer and its commit publishes
 * nothing (the product is counted as discarded). Zero copy: on shared memory `data` is the
 * receiver's arena. Waits (bounded) for space, or SLUICE_EAGAIN with
 * SLUICE_NONBLOCK. SLUICE_ETOOBIG if it can never fit; SLUICE_ENOTFOUND if
 * this side declared no sender of `instance`; SLUICE_ELIMIT if too many
 * reservations of the stream are open. Any thread (see "Threads").
 */
int sluice_product_reserve(sluice_token_t *token, uint32_t instance, size_t bytes, uint64_t count,
                           unsigned flags, sluice_reservation_t *res_p);

/**
 * Publish a reserved product. Do not touch `res->data` afterwards. For a
 * device endpoint, commit first waits for the work on `res->cuda_stream`
 * (cudaStreamSynchronize; cudaDeviceSynchronize for NULL), so the receiver
 * gets complete bytes without synchronising anything itself; on the staged
 * path it then copies the product to the host arena. A CUDA failure is
 * SLUICE_EDEVICE, and the reservation stays open (cancel it or commit again). A
 * failure (SLUICE_ETIMEDOUT when the MPI guard stays held, a dead peer)
 * leaves the product committed: it goes out with the next publication of
 * its stream that succeeds (a later commit or send, or the event's finish),
 * unless the event fails or the peer is gone; do not commit it again.
 */
int sluice_product_commit(sluice_token_t *token, sluice_reservation_t *res);

/** Drop a reservation without publishing anything. */
int sluice_product_cancel(sluice_token_t *token, sluice_reservation_t *res);

/**
 * Reserve, copy `bytes` from `data`, commit: one copy. `data` is the
 * caller's again when the call returns, whatever it returned. On a failure
 * the product is not sent, with one exception: when an older product of
 * the stream is still committed but unpublished (its own commit failed),
 * this one was staged behind it and goes out with it, as a commit's would.
 */
int sluice_product_send(sluice_token_t *token, uint32_t instance, const void *data, size_t bytes,
                        uint64_t count, unsigned flags);

/** Send a CUSTOM-layout object through the type's serialise callback. */
int sluice_product_send_object(sluice_token_t *token, uint32_t instance, const void *object,
                               unsigned flags);

/** Tell the receiver this product is absent for this event. */
int sluice_product_send_absent(sluice_token_t *token, uint32_t instance);

/**
 * A read-only view of a received product, valid until sluice_view_release.
 * Treat it as opaque apart from the fields documented here.
 */
typedef struct sluice_view {
    const void *data;         /**< the product's bytes, in the receiver's arena (a device pointer,
                                   complete on arrival, for a device endpoint) */
    size_t bytes;             /**< the product's length */
    uint64_t count;           /**< element count given by the sender */
    const sluice_type_t *type; /**< the product's type */
    uint32_t stream;          /**< private: the arena this view holds */
    uint64_t handle;          /**< private: identifies the held region */
} sluice_view_t;

/**
 * Receive the next product of `instance` for the token's event, waiting
 * (bounded) for it. Returns SLUICE_ABSENT (a non-error) if the sender marked
 * it absent or finished the event without it. Several products of one
 * instance in one event are received in the order they were sent.
 * SLUICE_EFAILED if the peer failed the event (sluice_event_fail; its
 * message is in sluice_last_error). Any thread (see "Threads").
 */
int sluice_product_receive(sluice_token_t *token, uint32_t instance, unsigned flags,
                           sluice_view_t *view_p);

/** Rebuild a CUSTOM-layout object from a view. */
int sluice_view_deserialise(const sluice_view_t *view, void *object);

/**
 * Release a view; its arena region may then be reused by the sender.
 * SLUICE_EALREADY if it was already released. Any thread, any time before
 * the channel is closed.
 */
int sluice_view_release(sluice_channel_t *ch, sluice_view_t *view);

/* ------------------------------------------------------------ notifications */

/**
 * Waiting without spending a thread: arm a one-shot notification, go on
 * with other work, and be told when the call it names would return without
 * waiting (docs/design.md, "Notifications"). A notification fires once,
 * from whichever thread drives progress (the channel's progress thread, or
 * a caller of sluice_progress), outside every sluice lock; `fn` may be NULL
 * (only the channel's eventfd is signalled) and may call sluice, re-arming
 * included. Each firing also adds to the channel's eventfd, which a
 * framework can poll in its own loop. A notification armed before the
 * thing it waits for arrived fires at the next progress round: none is lost.
 * It fires too when the call would fail at once instead (the peer closed or
 * died, the event was finished or failed). Notifications still armed when
 * the channel closes are dropped without firing. Any thread may arm.
 */
typedef void (*sluice_notify_fn)(void *arg);

/** When sluice_product_receive(token, instance) would not wait. */
int sluice_notify_product(const sluice_token_t *token, uint32_t instance, sluice_notify_fn fn,
                          void *arg);

/** Source: when sluice_source_next would not wait. */
int sluice_notify_item(sluice_channel_t *ch, sluice_notify_fn fn, void *arg);

/** When stream `stream` has a free ring slot to send a record on (arena room is not looked at). */
int sluice_notify_room(sluice_channel_t *ch, uint32_t stream, sluice_notify_fn fn, void *arg);

/** The channel's eventfd (EFD_NONBLOCK): readable once a notification fired; read it to reset. */
int sluice_channel_fd(const sluice_channel_t *ch);

/**
 * One progress round: fire every armed notification that is ready, and
 * return how many fired (or a negative status). With `wait_us`, wait up to
 * that long for at least one to fire: a short spin, then sleep until the
 * peer rings this side's doorbell (same node: a futex in the inbox, rung by
 * the peer after it publishes) or, over RMA, poll with short sleeps.
 */
int sluice_progress(sluice_channel_t *ch, uint32_t wait_us);

/** @{ */
/**
 * A progress thread for the channel, so that notifications fire without
 * the application calling sluice_progress. Stop it before closing (close
 * stops it too). SLUICE_EALREADY if it runs. A callback running on that
 * thread cannot stop it nor close the channel: both return SLUICE_EBUSY
 * and change nothing. Start and stop from one thread at a time.
 */
int sluice_progress_start(sluice_channel_t *ch);
int sluice_progress_stop(sluice_channel_t *ch);
/** @} */

#ifdef __cplusplus
}
#endif
#endif
