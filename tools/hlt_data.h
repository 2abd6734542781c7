/* SPDX-License-Identifier: MIT */
/* The HLT demonstrator's event data (docs/hlt.md): FED-like RAW fragments, and the
 * reconstruction a server runs on them and a client checks, in the same code on both sides. */
#ifndef SLUICE_HLT_DATA_H
#define SLUICE_HLT_DATA_H

#include <stddef.h>
#include <stdint.h>

/* A FED fragment in the RAW buffer: this header, then `words` payload words. */
typedef struct hlt_fed_header {
    uint32_t fed;             /* the FED number, 0 .. feds-1 */
    uint32_t words;           /* payload words after this header */
    uint64_t event;           /* the event the fragment belongs to */
} hlt_fed_header_t;

#define HLT_WORDS_PER_HIT 8u      /* payload words unpacked into one rechit */
#define HLT_HITS_PER_CLUSTER 64u  /* consecutive rechits of one FED clustered together */

/* Payload words per FED for `raw_bytes` of RAW in `feds` fragments (a multiple of a cluster). */
uint32_t hlt_fed_words(size_t raw_bytes, uint32_t feds);
/* Bytes of RAW, rechits and clusters an event of `feds` fragments of `words` has. */
size_t hlt_raw_bytes(uint32_t feds, uint32_t words);
uint64_t hlt_rechits(uint32_t feds, uint32_t words);
uint64_t hlt_clusters(uint32_t feds, uint32_t words);

/* The "detector": the RAW of event `event` of client `client`, deterministic. */
void hlt_make_raw(void *raw, uint32_t feds, uint32_t words, uint32_t client, uint64_t event);

/* Column pointers of the two SoA collections. */
typedef struct hlt_rechit_cols {
    uint32_t *detid;
    float *energy, *time;
} hlt_rechit_cols_t;
typedef struct hlt_cluster_cols {
    float *energy, *eta, *phi;
    uint32_t *hits;
} hlt_cluster_cols_t;

/*
 * The offloaded reconstruction. Unpack: one rechit per HLT_WORDS_PER_HIT payload words. Cluster:
 * the rechits of one FED, HLT_HITS_PER_CLUSTER at a time. -1 if the RAW is malformed (a header
 * that does not match the event, the FED or the size), else 0.
 */
int hlt_unpack(const void *raw, size_t bytes, uint64_t event, uint32_t feds, uint32_t words,
               const hlt_rechit_cols_t *out);
void hlt_cluster(const hlt_rechit_cols_t *hits, uint64_t n_hits, const hlt_cluster_cols_t *out);

/* Spend `us` microseconds of this thread's CPU on arithmetic (the stand-in for real work). */
void hlt_burn(double us);
/* This thread's CPU seconds. */
double hlt_thread_cpu(void);

#endif
