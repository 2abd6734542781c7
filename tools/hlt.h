/* SPDX-License-Identifier: MIT */
/* What the HLT demonstrator's parts share (hlt.c, hlt_client.c, hlt_server.c, hlt_report.c;
 * docs/hlt.md): its configuration, the event geometry, the report every process sends, and the
 * helpers both roles use. */
#ifndef SLUICE_HLT_H
#define SLUICE_HLT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <sluice/group.h>
#include <sluice/sluice.h>

#include "hlt_data.h"

/* The channels' product instances: RAW out, the two collections back. */
enum { I_RAW = 1, I_RECHITS = 2, I_CLUSTERS = 3 };
enum { HLT_MAX_PEERS = 64, HLT_TAG_REPORT = 4711 };

/* The run's configuration: the command line of every process, the same on each. */
typedef struct hlt_cfg {
    uint32_t clients, servers;
    uint32_t streams;         /* per client */
    uint32_t workers;         /* per server; 0: as many as a client has streams */
    uint32_t events;          /* per client */
    uint32_t raw_kib, feds;
    uint32_t lumi_events, open_lumis;
    double work_us;           /* the application's CPU work per event, both sides together */
    uint32_t offload_pct;     /* of it, the share the server does */
    uint32_t reject_pct;      /* events the client's early filter rejects */
    sluice_dispatch_t dispatch;
    int kill_server;          /* -1: no fault */
    uint32_t kill_after;      /* the server's accepted events before it dies on the next */
    uint32_t corrupt_every;   /* servers spoil one rechit energy of every Nth answer; 0: never */
    double progress_s;
    const char *json;
    int mpi_threads;
} hlt_cfg_t;

/* Set by main (hlt.c) before either role runs. */
extern hlt_cfg_t cfg;
extern uint32_t fed_words;  /* payload words per FED */
extern size_t raw_bytes;    /* of an event's RAW */
extern uint64_t n_hits, n_clusters; /* elements of an event's two collections */
extern const sluice_type_t *T_RAW, *T_RECHITS, *T_CLUSTERS;
extern int rank, me;  /* MPI rank; index among the clients or among the servers */
extern bool is_client;

/* Monotonic seconds; this process's CPU seconds. */
double now_s(void);
double process_cpu(void);
/* Whether the early filter of `client` rejects event `ev`: the same answer on every process. */
bool rejected(uint32_t client, uint64_t ev);
/* "client" or "server". */
const char *role_name(void);

/* A line on stderr, prefixed with this process's role and index. */
#define FAILED(...)                                                                                \
    do {                                                                                           \
        fprintf(stderr, "%s %d: ", role_name(), me);                                               \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
    } while (0)

/* A sluice call failed: say which, with the library's message; returns 1. */
int sluice_failed(const char *what, int rc);

/* The peer is gone (dead or closed): what a group moves an event away from. */
static inline bool lost(int rc) { return rc == SLUICE_EPEERDEAD || rc == SLUICE_EPEERCLOSED; }

/* What every process reports to rank 0 at the end (sent as bytes: one binary, one layout). */
typedef struct hlt_report {
    int32_t is_client, index, killed, failed;
    char host[64], transport[8], path[24]; /* sluice_channel_transport, _path */
    double seconds, cpu_s, sluice_cpu_s;
    uint64_t events;          /* client: events of its run finished; server: events answered */
    uint64_t rejected;        /* client: cancelled by its filter; server: cancelled on it */
    uint64_t redispatched;    /* client */
    uint64_t verified;        /* client: events whose two collections it checked */
    uint64_t bytes_out, bytes_in;
    double p50_ms, p90_ms, p99_ms;
    uint32_t max_open_lumis;  /* server: most lumis of one client open at once */
    uint64_t per_server[HLT_MAX_PEERS]; /* client: events its group sent to each server */
} hlt_report_t;

/* Column `c` of an SoA product of `type` with `n` elements at `base`; the two collections'
 * columns; the bytes of `n` elements of `type`. */
void *column(const sluice_type_t *type, void *base, uint64_t n, uint32_t c);
hlt_rechit_cols_t rechit_cols(void *base);
hlt_cluster_cols_t cluster_cols(void *base);
size_t bytes_of(const sluice_type_t *type, uint64_t n);

/* Time spent inside sluice on this thread. */
#define IN_SLUICE(s, rc, call)                                                                     \
    do {                                                                                           \
        double c0_ = hlt_thread_cpu();                                                             \
        (rc) = (call);                                                                             \
        (s)->sluice_cpu += hlt_thread_cpu() - c0_;                                                 \
    } while (0)

/* A client's run over its channels to every server (hlt_client.c), a server's over its channels
 * to every client (hlt_server.c): fill `r`, return 1 on failure (said why). */
int client_run(sluice_channel_t **ch, hlt_report_t *r);
int server_run(sluice_channel_t **ch, hlt_report_t *r);

/* The report (hlt_report.c): rank 0 gathers every live process's (each wait bounded by
 * `seconds`; 1 if one is missing), prints the table, writes the JSON, and judges the run. */
int gather(const hlt_report_t *mine, hlt_report_t *all, double seconds);
void print_report(const hlt_report_t *all, int n);
void json_report(FILE *f, const hlt_report_t *all, int n, bool ok);
bool judge(const hlt_report_t *all, int n);

#endif
