/* SPDX-License-Identifier: MIT */
/* The status page: layout of the per-process page in /dev/shm that sluice-monitor reads, and its writers. */
#ifndef SL_MONITOR_H
#define SL_MONITOR_H

#include <stdatomic.h>

#include <sluice/monitor.h>

#include "internal.h"

/*
 * Layout (docs/monitor.md). One page per process, made by its first
 * context and unlinked with its last (or at exit): a header, then
 * SL_MON_SLOTS channel slots. Writers are this process only; readers map it
 * read-only. Fields a writer changes while the channel runs are _Atomic and
 * written with relaxed stores, one writer each where the comment says so;
 * the identity of a slot (name, role, ...) is written while `gen` is odd and
 * is stable while it is even, so a reader that sees the same even `gen`
 * before and after its copy has a consistent one. The page holds no
 * pointers, only sizes and counts.
 */

#define SL_MON_MAGIC 0x314e4f4d45434c53ull /* "SLCEMON1" read little-endian */
/* 2: the header names its PID namespace and boot (sl_mon_ident_t); no channel-wide events_open. */
#define SL_MON_VERSION 2u
#define SL_MON_SLOTS SLUICE_MONITOR_CHANNELS
#define SL_MON_STREAMS SLUICE_MONITOR_STREAMS
#define SL_MON_ERROR SLUICE_MONITOR_ERROR_MAX

/* The counters sluice_channel_stats returns: ch->stats points at these. */
typedef struct sl_mon_counters {
    _Atomic uint64_t transitions_sent, transitions_received;
    _Atomic uint64_t products_sent, products_received;
    _Atomic uint64_t bytes_sent, bytes_received, discarded;
    _Atomic uint64_t product_publications;
} sl_mon_counters_t;

/* One stream's gauges; written under the stream's lock (one writer). One line. */
typedef struct sl_mon_stream {
    _Atomic uint64_t tx_head;    /* records published to the peer */
    _Atomic uint64_t tx_seen;    /* the peer's tail as last read */
    _Atomic uint64_t rx_tail;    /* records taken from this side's ring */
    _Atomic uint64_t arena_out;  /* arena_head - arena_tail_cache */
    _Atomic uint64_t arena_in;   /* own arena: newest region's end - released tail */
    _Atomic uint64_t event_seq;
    _Atomic uint64_t event_open; /* 0 or 1; the reader sums them (events open on the channel) */
    uint64_t reserved;
} sl_mon_stream_t;

enum { SL_MON_FREE = 0, SL_MON_OPENING = 1, SL_MON_OPEN = 2 };

typedef struct sl_mon_slot {
    /* Identity: written while gen is odd (claim, and once more when open). */
    _Atomic uint64_t gen;
    _Atomic uint32_t state;      /* SL_MON_FREE, _OPENING, _OPEN */
    uint32_t role;
    char name[64];
    char peer[64];
    char transport[8];
    uint32_t streams, ring_depth, global_depth, peer_local;
    uint64_t arena_bytes;
    int64_t peer_pid;
    uint64_t peer_start;

    _Alignas(64) sl_mon_counters_t stats;
    /* Channel gauges, by the global writer only (the controller's global
     * lock, the source's reader). Events open are no channel gauge: each
     * stream's thread stores its own on its stream's line (event_open), and
     * the reader sums them, so no line is shared by the stream threads. */
    _Alignas(64) _Atomic uint64_t runs_open, lumis_open, run, lumi;
    _Atomic uint64_t global_head, global_seen, global_tail;
    _Alignas(64) _Atomic uint32_t peer_state; /* a sluice_monitor_peer_t */
    _Atomic uint32_t error_busy; /* taken with an exchange, never waited on */
    _Atomic uint64_t errors;
    _Atomic int64_t last_status;
    _Atomic uint64_t error_gen;  /* odd while last_error is written */
    char last_error[SL_MON_ERROR];
    _Alignas(64) sl_mon_stream_t stream[SL_MON_STREAMS];
} sl_mon_slot_t;

/*
 * Where a page's pid means something: its PID namespace (the device and
 * inode of /proc/self/ns/pid, which name a namespace) and its machine's boot
 * (/proc/sys/kernel/random/boot_id). Containers sharing /dev/shm, or nodes
 * sharing SLUICE_MONITOR_DIR, have pages whose pids are not this process's
 * to check. Zero and "" when unknown (no /proc): then nothing matches.
 */
typedef struct sl_mon_ident {
    uint64_t pidns_dev, pidns_ino;
    char boot_id[40];
} sl_mon_ident_t;

/* This process's identity (reads /proc each time: a child may be in another namespace). */
void sl_mon_identity(sl_mon_ident_t *id);
/*
 * Whether a page's identity is provably this process's namespace and boot:
 * only then may its pid be judged here (alive, dead, removable).
 */
bool sl_mon_same_ident(const sl_mon_ident_t *page, const sl_mon_ident_t *self);

typedef struct sl_mon_page {
    _Atomic uint64_t magic;      /* stored last (release) once the rest is set */
    uint32_t version, header_bytes;
    uint32_t slot_bytes, n_slots;
    uint32_t stream_slots, error_bytes;
    uint64_t total_bytes;
    int64_t pid;
    uint64_t uid;
    uint64_t start_time;
    sl_mon_ident_t ident;        /* where pid and start_time mean something */
    int32_t rank, world_size;
    char name[64], host[64], job[64], mpi_job[64];
    _Atomic uint64_t updated_ns;
    _Alignas(64) sl_mon_slot_t slot[SL_MON_SLOTS];
} sl_mon_page_t;

/*
 * The process's page follows its contexts: the first sluice_context_create
 * makes it (unless SLUICE_MONITOR=0; a failure is reported once on stderr
 * and changes nothing else), the last sluice_context_destroy unlinks it, and
 * so does exit. `name` is the context's process name. Never fails.
 */
void sl_mon_context_attach(const char *name);
void sl_mon_context_detach(void);

/*
 * A slot for a channel being opened: in the page when there is one with a
 * free slot, otherwise private memory, so the counters always have a home.
 * NULL only when even that allocation fails (ENOMEM). Any thread.
 */
sl_mon_slot_t *sl_mon_slot_claim(const char *name, uint32_t role, const char *peer,
                                 uint32_t streams, const sluice_options_t *o);
/* The channel is open: its transport and peer. One thread (the opener). */
void sl_mon_slot_opened(sl_mon_slot_t *s, const char *transport, int64_t peer_pid,
                        uint64_t peer_start, bool peer_local);
void sl_mon_slot_release(sl_mon_slot_t *s);

/*
 * The peer (pid, start) was found dead: remove the page it could not, if
 * it is here under its plain name, this user's, of this PID namespace and
 * boot, names that very process and that process does not run here. Never
 * blocks on the peer.
 */
void sl_mon_forget(int64_t pid, uint64_t start);

/*
 * Whether a public call's status counts as a channel error. Not success or
 * the positive results (SLUICE_ABSENT, SLUICE_EOF), and not the statuses of
 * a healthy run: SLUICE_EAGAIN (retry), SLUICE_EPEERCLOSED (the peer state
 * says so), SLUICE_ECANCELED (the controller cancelled the event, as early
 * rejection does for every event it drops) and SLUICE_EALREADY (a call on
 * an event another thread finished meanwhile, a view released twice).
 * SLUICE_ENOTFOUND counts: where a counted call returns it (a product
 * instance this side never declared) it is a mistake; where it is a normal
 * answer (sluice_transition_token) the call is not counted at all.
 */
static inline bool sl_mon_counts(int status)
{
    return status < 0 && status != SLUICE_EAGAIN && status != SLUICE_EPEERCLOSED &&
           status != SLUICE_ECANCELED && status != SLUICE_EALREADY;
}

/* A failed call on the channel: counted, and its message kept (unless another thread is writing one). */
void sl_mon_error(sl_mon_slot_t *s, int status, const char *message);
/*
 * What this side learned of its peer. The state only moves forward
 * (unknown, alive, closed, dead): a compare-and-swap, so a "closed" racing
 * a "dead" never overwrites it, and dead is final.
 */
void sl_mon_peer(sl_mon_slot_t *s, sluice_monitor_peer_t state);
/* A global transition sent (controller) or taken (source). One writer. */
void sl_mon_transition(sl_mon_slot_t *s, uint32_t kind, uint32_t run, uint32_t lumi);

static inline void sl_mon_set(_Atomic uint64_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

#endif
