/* SPDX-License-Identifier: MIT */
/* The inbox: the memory layout one side reads and its peer writes. */
#ifndef SL_INBOX_H
#define SL_INBOX_H

#include <stdatomic.h>

#include "internal.h"

#define SL_INBOX_MAGIC 0x4249454349554c53ull /* "SLUICEIB" little-endian */
/* The inbox layout's version, which the open declaration (decl.h) carries
 * too: raise it when either layout changes. 4: endpoints say their memory.
 * 5: records carry their own publication stamp (no head counter).
 * 6: the header's device section; declarations force a device path. */
#define SL_INBOX_VERSION 6u
#define SL_RECORD_BYTES 256u
/* Bytes of an exported device allocation's handle (a CUDA IPC handle is 64). */
#define SL_INBOX_DEVICE_HANDLE 64u

/*
 * Inbox header, at offset 0. Written by the owner before the peer may look
 * and then read-only, except `heartbeat`, which only its owner writes, and
 * the words on lines of their own: `peer_closed`,
 * which the peer sets once (store64), and `close_ticket`, which both sides
 * update only through the transport's atomic fetch-add (the close agreement,
 * docs/design.md). Plain fixed-width fields, no pointers, no packing.
 */
typedef struct sl_inbox_header {
    uint64_t magic;
    uint32_t version;
    uint32_t record_bytes;
    uint64_t inbox_bytes;
    uint32_t streams;
    uint32_t ring_depth;
    uint32_t global_depth;
    uint32_t reserved0;
    uint64_t arena_bytes;
    uint64_t global_off;      /* offset of the global ring's control lines */
    uint64_t streams_off;     /* offset of stream 0 */
    uint64_t stream_stride;   /* bytes from one stream to the next */
    int64_t owner_pid;        /* liveness on one node: the owner's pid ... */
    uint64_t owner_start;     /* ... and its start time, so a reused pid does not pass */
    _Atomic uint64_t heartbeat; /* across nodes: advanced by the owner while it lives (heartbeat.h) */
    uint8_t pad0[SL_CACHELINE * 2 - 96];
    _Atomic uint64_t peer_closed; /* own line: set by the peer at close */
    uint8_t pad1[SL_CACHELINE - sizeof(uint64_t)];
    uint64_t close_ticket;    /* own line: the close agreement (controller's inbox only) */
    uint8_t pad2[SL_CACHELINE - sizeof(uint64_t)];
    /* Own line: the owner's progress engine sleeps on `doorbell` (a futex)
     * with `sleeping` set; a peer on this node that publishes a record
     * then bumps `doorbell` and wakes it (docs/design.md, "Notifications"). */
    _Atomic uint32_t doorbell;
    _Atomic uint32_t sleeping;
    uint8_t pad3[SL_CACHELINE - 2 * sizeof(uint32_t)];
    /* Two lines: the owner's device arena, exported for a peer on its node
     * that sends device products over CUDA IPC (docs/gpu.md). Written with
     * the rest of the header, before the magic; `device_bytes` 0: none. */
    uint64_t device_bytes;    /* the arena's length: it mirrors the inbox, offset for offset */
    uint64_t reserved1;
    uint8_t device_handle[SL_INBOX_DEVICE_HANDLE]; /* the IPC handle that maps it */
    uint8_t pad4[2 * SL_CACHELINE - 16 - SL_INBOX_DEVICE_HANDLE];
} sl_inbox_header_t;

_Static_assert(sizeof(sl_inbox_header_t) == 7 * SL_CACHELINE, "header is seven cache lines");

/* Offsets inside one ring's control block (each counter on its own line).
 * Line 0 is unused since version 5: records carry their own stamp. */
#define SL_RING_TAIL_OFF SL_CACHELINE          /* written by the consumer (owner) */
#define SL_ARENA_TAIL_OFF (2 * SL_CACHELINE)   /* stream rings only: consumer's arena tail */
#define SL_RING_DONE_OFF (3 * SL_CACHELINE)    /* stream rings only: newest event the consumer finished */
#define SL_RING_CTRL_BYTES (4 * SL_CACHELINE)  /* control block, slots follow */

/* Global record (`instance`): the transition carries products, on the scope
 * stream, in the event whose sequence number is the record's `dep`. */
#define SL_GLOBAL_SCOPED 1u

/* Record kinds; transitions use the public sluice_transition_kind_t values. */
enum {
    SL_REC_PRODUCT = 16,   /* a product region in the arena */
    SL_REC_ABSENT = 17,    /* the product is absent for this event */
    SL_REC_EVENT_END = 18, /* the writer finished the event: no more products */
    SL_REC_STREAM_END = 19, /* end of job on this stream */
    SL_REC_EVENT_FAIL = 20  /* the writer failed the event: `count` its status, aux its message */
};

/*
 * One ring record. Its first cache line holds its publication stamp and
 * everything a product, absent, end or fail mark needs, so a hand-off of
 * one of those moves one line to the consumer; transitions use the second
 * line too. Copied out by the consumer before it is trusted.
 */
typedef struct sl_record {
    /* Line 1. */
    uint64_t stamp;        /* record number + 1 once published: stored last, with release */
    uint32_t kind;
    uint32_t aux_size;
    uint64_t seq;          /* global ring: record number; stream: event sequence */
    uint32_t instance;
    uint32_t slot;         /* lumi slot */
    uint64_t count;        /* END_LUMI: events in the lumi; PRODUCT: element count; FAIL: status */
    uint64_t fingerprint;  /* PRODUCT/ABSENT: type fingerprint */
    uint64_t pos;          /* PRODUCT: free-running arena start */
    uint64_t bytes;        /* PRODUCT: length */
    /* Line 2: transitions only. */
    uint32_t run;
    uint32_t lumi;
    uint64_t event;
    uint64_t timestamp;
    uint8_t history[16];
    uint64_t dep;          /* EVENT: global record number of its lumi's begin */
    uint8_t aux[SLUICE_AUX_MAX];
    uint8_t pad[SL_RECORD_BYTES - 112 - SLUICE_AUX_MAX];
} sl_record_t;

_Static_assert(sizeof(sl_record_t) == SL_RECORD_BYTES, "record size is part of the layout");
_Static_assert(offsetof(sl_record_t, run) == SL_CACHELINE, "line 1 is one cache line");

/* Bytes of a record that are always written and read; aux follows, only as
 * long as aux_size says (most records carry none). */
#define SL_RECORD_HEAD_BYTES offsetof(sl_record_t, aux)
/* Where the producer's put of a record starts: the stamp is stored apart, last. */
#define SL_RECORD_BODY_OFF offsetof(sl_record_t, kind)

/* The geometry of an inbox, computed from options; identical on both sides. */
typedef struct sl_geometry {
    uint32_t streams, ring_depth, global_depth;
    uint64_t arena_bytes;
    uint64_t global_off, streams_off, stream_stride, inbox_bytes;
} sl_geometry_t;

int sl_geometry_compute(uint32_t streams, const sluice_options_t *o, sl_geometry_t *g_p);

/* Offsets of a stream's ring control block, its slots and its arena. */
static inline uint64_t sl_stream_ctrl(const sl_geometry_t *g, uint32_t s)
{
    return g->streams_off + (uint64_t)s * g->stream_stride;
}
static inline uint64_t sl_ring_slots(uint64_t ctrl) { return ctrl + SL_RING_CTRL_BYTES; }
static inline uint64_t sl_stream_arena(const sl_geometry_t *g, uint32_t s)
{
    return sl_ring_slots(sl_stream_ctrl(g, s)) + (uint64_t)g->ring_depth * SL_RECORD_BYTES;
}

/*
 * Write the header of a fresh local inbox and zero its control blocks; with
 * `device_handle`, the device section too (an arena of `device_bytes`).
 */
void sl_inbox_init(void *base, const sl_geometry_t *g, uint64_t device_bytes,
                   const void *device_handle);

/*
 * Check a peer's header (copied out first) against its mapped size and the
 * geometry this side expects; names the first bad field.
 */
int sl_inbox_check(const sl_inbox_header_t *h, uint64_t mapped_bytes, const sl_geometry_t *expect);

#endif
