/* SPDX-License-Identifier: MIT */
/* A controller and a source channel in one process over a loopback transport, for unit tests of
 * the core without MPI (test_stream.c, test_product.c). */
#ifndef SL_TEST_LOOPBACK_H
#define SL_TEST_LOOPBACK_H

#include <stdatomic.h>

#include "check.h"
#include "../../src/channel.h"

/* ------------------------------------------------------------ loopback transport */

/*
 * "The peer's inbox" is the other channel's inbox buffer in this process,
 * reached with the same copies and memory orders as shm/shm.c, so the core
 * runs its real paths. The fixture builds links by hand; open/connect/close
 * are never on those paths.
 */
struct sl_link {
    char *peer;
    size_t peer_bytes;
};

/* The transport (SL_CAP_PEER_POINTER, no SL_CAP_NEEDS_PROGRESS: waits never call progress). */
extern const sl_transport_ops_t lb_ops;
/* The same without SL_CAP_PEER_POINTER, so the core puts as it does over RMA; its next
 * `lb_publish_failures` publications fail with SLUICE_ETIMEDOUT, storing nothing. */
extern const sl_transport_ops_t lb_put_ops;
extern _Atomic int lb_publish_failures;
void *lb_peer_ptr(sl_link_t *l, size_t off);

/* ------------------------------------------------------------ fixture */

/* Instances: 1-3 go from the controller to the source, 11 comes back. */
enum { INST_BLOCK = 1, INST_SOA = 2, INST_SPARE = 3, INST_BACK = 11, INST_UNKNOWN = 99 };

/* One product: 8 elements of the block type (8 bytes each) or of the SoA (4 + 4). */
#define WORDS 8u
#define PRODUCT_BYTES (WORDS * sizeof(uint64_t))
/* Every stream's arena, in both directions (small_options). */
#define ARENA_BYTES 4096u

typedef struct side {
    sluice_channel_t *ch;
    struct sl_link link;
} side_t;

typedef struct pair {
    sluice_registry_t *reg;
    const sluice_type_t *block, *soa;
    side_t ctl, src;
} pair_t;

/*
 * cmocka setups: `streams` streams, rings of `ring_depth`, arenas of
 * ARENA_BYTES, a 200 ms deadline (a wait that should not happen fails the
 * test quickly instead of hanging it).
 */
int pair_setup(void **state, uint32_t streams, uint32_t ring_depth);
int setup_one_stream(void **state);   /* 1 stream, ring depth 8 */
int setup_two_streams(void **state);  /* 2 streams, ring depth 8 */
int setup_deep_ring(void **state);    /* 1 stream, ring depth 1024 */
int teardown(void **state);

/* ------------------------------------------------------------ helpers */

sluice_transition_t transition(sluice_transition_kind_t kind, uint32_t run, uint32_t lumi,
                               uint64_t event);
/* Controller: publish a global transition (non-blocking, must succeed). */
void ctl_global(pair_t *p, sluice_transition_kind_t kind, uint32_t run, uint32_t lumi);
/* Source: take the next global transition, which must be of `kind`. */
void src_expect_global(pair_t *p, sluice_transition_kind_t kind);
/* Run 1, lumi 1 open on both sides. */
void open_lumi(pair_t *p);
/* Controller: send event `event` of run 1, lumi `lumi`, on `stream` (non-blocking). */
int ctl_event(pair_t *p, uint32_t stream, uint32_t lumi, uint64_t event, sluice_token_t *t);
/* Source: take the next event of `stream`, which must be `event`. */
void src_event(pair_t *p, uint32_t stream, uint64_t event, sluice_token_t *t);
/* Lumi 1 open, and one event (1000) on stream 0 started on both sides. */
void start_event(pair_t *p, sluice_token_t *ct, sluice_token_t *sc);

/* Send WORDS words first, first + 1, ... as one product of WORDS elements. */
int send_words(sluice_token_t *t, uint32_t instance, uint64_t first, unsigned flags);
/* Receive (non-blocking) the next product of `instance`: it must be send_words(first); released. */
void expect_words(sluice_token_t *t, uint32_t instance, uint64_t first);

/* A 64-bit word of `ch`'s own inbox (acquire). */
uint64_t inbox_word(const sluice_channel_t *ch, uint64_t off);
/* Records published into `ch`'s own ring of stream `s` and not yet taken off it. */
uint64_t ring_fill(const sluice_channel_t *ch, uint32_t s);
sluice_channel_stats_t stats(const sluice_channel_t *ch);

#endif
