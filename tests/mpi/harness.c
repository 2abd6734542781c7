/* SPDX-License-Identifier: MIT */
/* Shared set-up of the behaviour suite: the process's role, types, channel opening, global steps. */
#include "harness.h"

const char *h_role = "?";
int h_is_ctrl;
sluice_context_t *h_ctx;
sluice_registry_t *h_reg;
const sluice_type_t *T_BYTES, *T_HITS, *T_BLOB, *T_OTHER;

/* ------------------------------------------------------------ types */


static int blob_size(const void *o, size_t *bytes_p, void *u)
{
    (void)u;
    *bytes_p = sizeof(uint32_t) + ((const blob_t *)o)->n * sizeof(uint64_t);
    return 0;
}
static int blob_ser(const void *o, void *out, size_t bytes, void *u)
{
    (void)u;
    const blob_t *b = o;
    memcpy(out, &b->n, 4);
    memcpy((char *)out + 4, b->vals, bytes - 4);
    return 0;
}
static int blob_de(const void *in, size_t bytes, void *o, void *u)
{
    (void)u;
    blob_t *b = o;
    if (bytes < 4)
        return SLUICE_EINVAL;
    memcpy(&b->n, in, 4);
    if (b->n > 64 || bytes != 4 + b->n * sizeof(uint64_t))
        return SLUICE_EINVAL;
    memcpy(b->vals, (const char *)in + 4, bytes - 4);
    return 0;
}

int h_types(void)
{
    static const sluice_column_t hits[] = { { "x", 4, 4 }, { "y", 4, 4 }, { "id", 4, 4 },
                                            { "q", 2, 2 } };
    static const sluice_custom_ops_t blob_ops = { blob_size, blob_ser, blob_de, NULL, "1" };
    sluice_type_desc_t d[] = {
        { .size = sizeof d[0], .name = "test::Bytes", .layout = SLUICE_LAYOUT_BLOCK,
          .elem_size = 1, .align = 1 },
        { .size = sizeof d[0], .name = "test::HitsSoA", .layout = SLUICE_LAYOUT_SOA,
          .columns = hits, .n_columns = 4 },
        { .size = sizeof d[0], .name = "test::Blob", .layout = SLUICE_LAYOUT_CUSTOM,
          .custom = &blob_ops },
        { .size = sizeof d[0], .name = "test::Other", .layout = SLUICE_LAYOUT_BLOCK,
          .elem_size = 2, .align = 2 },
    };
    const sluice_type_t **out[] = { &T_BYTES, &T_HITS, &T_BLOB, &T_OTHER };
    H_OK(sluice_registry_create(&h_reg));
    for (int i = 0; i < 4; i++)
        H_OK(sluice_registry_add(h_reg, &d[i], out[i]));
    return 0;
}

/* ------------------------------------------------------------ helpers */

int h_open_any(const char *name, uint32_t streams, const sluice_endpoint_t *eps, size_t n,
                      const sluice_options_t *o, sluice_channel_t **ch_p);

sluice_options_t h_options(void)
{
    sluice_options_t o;
    sluice_options_init(&o);
    o.timeout_ms = 20000; /* generous: sanitizer builds on 2 cores are slow */
    o.arena_bytes = 1u << 20;
    o.max_sleep_us = 100;
    /* The job's SLUICE_* variables (the transport under test) still apply. */
    if (sluice_options_from_env(&o) != SLUICE_OK)
        fprintf(stderr, "[%s] bad SLUICE_* environment: %s\n", h_role, sluice_last_error());
    return o;
}

int h_open(const char *name, uint32_t streams, const sluice_endpoint_t *eps, size_t n,
                  const sluice_options_t *o, sluice_channel_t **ch_p)
{
    int rc = h_open_any(name, streams, eps, n, o, ch_p);
    /* The configuration under test names its transport: make sure it is the one used. */
    const char *want = getenv("SLUICE_TRANSPORT");
    if (rc == SLUICE_OK && want && strcmp(want, sluice_channel_transport(*ch_p)) != 0) {
        fprintf(stderr, "[%s] channel uses %s, configuration says %s\n", h_role,
                sluice_channel_transport(*ch_p), want);
        exit(1);
    }
    /* The transport line may also say which path that is (sluice_channel_path). */
    const char *path = getenv("SLUICE_TEST_PATH");
    if (rc == SLUICE_OK && path && strcmp(path, sluice_channel_path(*ch_p)) != 0) {
        fprintf(stderr, "[%s] channel path is %s, configuration says %s\n", h_role,
                sluice_channel_path(*ch_p), path);
        exit(1);
    }
    return rc;
}

int h_open_any(const char *name, uint32_t streams, const sluice_endpoint_t *eps, size_t n,
                      const sluice_options_t *o, sluice_channel_t **ch_p)
{
    sluice_channel_desc_t d = { .size = sizeof d, .name = name,
                                .role = h_is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = h_is_ctrl ? "source" : "controller",
                                .streams = streams, .endpoints = eps, .n_endpoints = n,
                                .options = o };
    return sluice_channel_open(h_ctx, &d, ch_p);
}

sluice_direction_t h_dir(int ctrl_sends)
{
    return (ctrl_sends == h_is_ctrl) ? SLUICE_SEND : SLUICE_RECEIVE;
}

int h_send_global(sluice_channel_t *ch, sluice_transition_kind_t k, uint32_t run,
                         uint32_t lumi)
{
    sluice_transition_t t = h_transition(k, run, lumi, 0);
    H_OK(sluice_transition_send(ch, &t, 0));
    return 0;
}

int h_expect_global(sluice_channel_t *ch, sluice_transition_kind_t k, uint32_t run,
                           uint32_t lumi)
{
    sluice_transition_t t;
    H_OK(sluice_transition_next(ch, &t, 0));
    H_TRUE(t.kind == k && t.run == run && t.lumi == lumi, "got kind %d run %u lumi %u, want %d %u %u",
           t.kind, t.run, t.lumi, k, run, lumi);
    H_TRUE(h_transition_intact(&t), "payload of kind %d damaged", t.kind);
    return 0;
}

void h_sync(void) { MPI_Barrier(MPI_COMM_WORLD); }

int h_begin(sluice_channel_t *ch, uint32_t run)
{
    if (h_is_ctrl) {
        H_OK(h_send_global(ch, SLUICE_BEGIN_RUN, run, 0));
        H_OK(h_send_global(ch, SLUICE_BEGIN_LUMI, run, 1));
    } else {
        H_OK(h_expect_global(ch, SLUICE_BEGIN_RUN, run, 0));
        H_OK(h_expect_global(ch, SLUICE_BEGIN_LUMI, run, 1));
    }
    return 0;
}

int h_start_event(sluice_channel_t *ch, uint32_t stream, uint32_t run, uint64_t ev,
                  sluice_token_t *tok)
{
    sluice_transition_t t = h_transition(SLUICE_EVENT, run, 1, ev);
    if (h_is_ctrl) {
        H_OK(sluice_event_send(ch, stream, &t, 0, tok));
        return 0;
    }
    H_OK(sluice_event_next(ch, stream, &t, 0, tok));
    H_TRUE(t.kind == SLUICE_EVENT && t.event == ev && h_transition_intact(&t),
           "stream %u: event %llu, expected %llu", stream, (unsigned long long)t.event,
           (unsigned long long)ev);
    return 0;
}

int h_end_job(sluice_channel_t *ch, uint32_t run)
{
    if (h_is_ctrl) {
        H_DO(h_send_global(ch, SLUICE_END_LUMI, run, 1));
        H_DO(h_send_global(ch, SLUICE_END_RUN, run, 0));
        H_DO(h_send_global(ch, SLUICE_END_JOB, 0, 0));
    } else {
        H_DO(h_expect_global(ch, SLUICE_END_LUMI, run, 1));
        H_DO(h_expect_global(ch, SLUICE_END_RUN, run, 0));
        H_DO(h_expect_global(ch, SLUICE_END_JOB, 0, 0));
    }
    return 0;
}
