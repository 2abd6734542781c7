/* SPDX-License-Identifier: MIT */
/* Shared helpers of the multi-process tests: checks, types, channel set-up. */
#ifndef SL_TEST_HARNESS_H
#define SL_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

extern const char *h_role; /* "controller" or "source", for messages */
extern int h_is_ctrl;       /* this process is the controller */
extern sluice_context_t *h_ctx;
extern sluice_registry_t *h_reg;
/* Product types every case may use (harness.c). */
extern const sluice_type_t *T_BYTES, *T_HITS, *T_BLOB, *T_OTHER;

/* The object of T_BLOB, a custom-layout type. */
typedef struct blob {
    uint32_t n;
    uint64_t vals[64];
} blob_t;

/* Register the types above in h_reg. */
int h_types(void);
/* Channel options of the suite: defaults, generous timeout, then the job's SLUICE_* variables. */
sluice_options_t h_options(void);
/* Open a channel with the other process; h_open also checks the configured transport is used. */
int h_open(const char *name, uint32_t streams, const sluice_endpoint_t *eps, size_t n,
           const sluice_options_t *o, sluice_channel_t **ch_p);
int h_open_any(const char *name, uint32_t streams, const sluice_endpoint_t *eps, size_t n,
               const sluice_options_t *o, sluice_channel_t **ch_p);
/* SLUICE_SEND on the side that sends when `ctrl_sends` says the controller does. */
sluice_direction_t h_dir(int ctrl_sends);
/* Publish (controller) or expect (source) one global transition made by h_transition(). */
int h_send_global(sluice_channel_t *ch, sluice_transition_kind_t k, uint32_t run, uint32_t lumi);
int h_expect_global(sluice_channel_t *ch, sluice_transition_kind_t k, uint32_t run, uint32_t lumi);
/* Run `run` and its lumi 1 begin, on both sides. */
int h_begin(sluice_channel_t *ch, uint32_t run);
/* A barrier of the two processes, outside sluice. */
void h_sync(void);
/* Controller: send event `ev` of `run`, lumi 1, on `stream`; source: take it (it must be `ev`). */
int h_start_event(sluice_channel_t *ch, uint32_t stream, uint32_t run, uint64_t ev,
                  sluice_token_t *tok);
/* Lumi 1 and run `run` end, then the job, on both sides. */
int h_end_job(sluice_channel_t *ch, uint32_t run);

/* Cases of the robustness file (robust.c); each returns 0 when it passed. */
int case_zero_then_large(void);
int case_late_finish(void);
int case_nonblock_after_close(void);
int case_end_job_retry(void);
int case_bad_count(void);
int case_late_open(void);
int case_close_skew(void);
int case_peer_killed(void);
int case_open_while_streaming(void);
/* The next-item call (items.c). */
int case_next_item(void);
/* Notifications (notify.c). */
int case_notify(void);
int case_room_rung(void);
int case_progress_self_stop(void);
/* Run- and lumi-scoped products (scoped.c). */
int case_scoped(void);

/* Several threads on one event (threads.c). */
int case_concurrent_receives(void);
/* The reservation queue (resv.c). */
int case_send_behind_reservation(void);
/* Failed events (fail.c). */
int case_event_fail(void);
int case_event_fail_next_call(void);
/* Device-memory endpoints at open (device.c). */
int case_device_one_side(const char *device_side);
int case_device_both(void);
int case_device_then_host(void);
int case_device_path_mismatch(void);
int case_device_custom_layout(void);
/* Device products over the build's device layer (`what`: sizes, mixed, held, finished_early,
 * commit_race, fail, close_crossed; `path`: auto, ipc, staged); 77 where this process has no
 * device (or, for fail, a layer that cannot inject failures). */
int case_device_data(const char *what, const char *path);
/* kill -9 of SLUICE_TEST_VICTIM with device channels open both ways (the survivor's verdict
 * counts). */
int case_device_killed(void);

#define H_FAIL(...)                                                                                \
    do {                                                                                           \
        fprintf(stderr, "[%s] %s:%d: ", h_role, __FILE__, __LINE__);                               \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        return 1;                                                                                  \
    } while (0)

/* Check a sluice status; on mismatch print both codes and the detailed message. */
#define H_STATUS(expr, want)                                                                       \
    do {                                                                                           \
        int got_ = (expr);                                                                         \
        if (got_ != (want))                                                                        \
            H_FAIL("%s = %d (%s: %s), expected %d (%s)", #expr, got_, sluice_strerror(got_),       \
                   sluice_last_error(), (int)(want), sluice_strerror(want));                      \
    } while (0)

#define H_OK(expr) H_STATUS(expr, SLUICE_OK)
/* Run a step that prints its own failure and returns 0 or 1: return 1 if it failed. */
#define H_DO(expr)                                                                                 \
    do {                                                                                           \
        if ((expr) != 0)                                                                           \
            return 1;                                                                              \
    } while (0)
#define H_TRUE(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "[%s] check failed: %s\n", h_role, #cond);                             \
            H_FAIL(__VA_ARGS__);                                                                   \
        }                                                                                          \
    } while (0)

/* 64-bit checksum of a buffer (FNV-1a over 8-byte words, then the tail). */
static inline uint64_t h_checksum(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Deterministic bytes for (seed, i): both sides can rebuild them. */
static inline void h_fill(void *data, size_t n, uint64_t seed)
{
    unsigned char *p = data;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    for (; i < n; i++)
        p[i] = (unsigned char)(x >> (i % 8));
}

static inline sluice_transition_t h_transition(sluice_transition_kind_t kind, uint32_t run,
                                               uint32_t lumi, uint64_t event)
{
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.kind = kind;
    t.run = run;
    t.lumi = lumi;
    t.event = event;
    t.timestamp = ((uint64_t)run << 40) ^ ((uint64_t)lumi << 20) ^ event;
    t.history[0] = 0xc5;
    t.history[15] = (uint8_t)run;
    t.aux_size = (uint32_t)(event % (SLUICE_AUX_MAX + 1));
    for (uint32_t i = 0; i < t.aux_size; i++)
        t.aux[i] = (uint8_t)(event + i);
    return t;
}

/* Whether a received transition carries exactly what h_transition() put in. */
static inline int h_transition_intact(const sluice_transition_t *t)
{
    sluice_transition_t want = h_transition(t->kind, t->run, t->lumi, t->event);
    return memcmp(t, &want, sizeof want) == 0;
}

#endif
