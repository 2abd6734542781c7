/* SPDX-License-Identifier: MIT */
/* What the demo's parts share: its configuration, its checks and the source's event work. */
#ifndef SLUICE_DEMO_H
#define SLUICE_DEMO_H

#include <stdint.h>
#include <stdio.h>

#include <sluice/group.h>
#include <sluice/sluice.h>

typedef enum demo_mode {
    DEMO_JOB,            /* controllers and sources in one job */
    DEMO_SERVE,          /* a source serving controllers of other jobs */
    DEMO_CONNECT,        /* a controller connecting to a source of another job */
} demo_mode_t;

typedef struct demo_cfg {
    int is_ctrl;
    uint32_t events, streams, raw_words, lumi_events;
    int mpi_threads;     /* thread level to ask MPI for */
    uint32_t sources, controllers;
    sluice_dispatch_t dispatch;
    int me;              /* index among the controllers, or among the sources */
    demo_mode_t mode;
    const char *service; /* --serve or --connect NAME */
    uint32_t clients;    /* --serve: stop after this many controllers left; 0: never */
} demo_cfg_t;

extern demo_cfg_t cfg;

#define DEMO_CHECK(expr)                                                                           \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != SLUICE_OK) {                                                                    \
            fprintf(stderr, "%s: %s failed: %s (%s)\n", cfg.is_ctrl ? "controller" : "source",    \
                    #expr, sluice_strerror(rc_), sluice_last_error());                            \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* What a controller tells its sources with END_JOB (the transition's aux),
 * sent only when every check passed: a source serving other jobs reports
 * it, since only the controller checks. */
typedef struct demo_verdict {
    uint64_t checked;    /* results checked against the controller's own reconstruction */
} demo_verdict_t;

/* Monotonic seconds. */
double now_s(void);
/* Open this process's channels on `ctx`: one per peer (n of them). 1 on failure (said why). */
int open_channels(sluice_context_t *ctx, sluice_channel_t **ch, uint32_t n);
/* Source: serve one event (receive its RAW, send its clusters, finish); 1 on failure. */
int src_event(sluice_channel_t *ch, sluice_token_t *tok, uint64_t *bytes_p);
/* --serve: a source serving controllers of other jobs (demo_serve.c); the exit status. */
int serve(void);

#endif
