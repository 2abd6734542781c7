/* SPDX-License-Identifier: MIT */
/* Device-memory endpoints at open (docs/design.md, "Device memory"): both sides must agree, and
 * until a device data path exists both sides refuse them at once, saying why. */
#include <time.h>

#include "harness.h"

enum { D_INPUT = 7, D_RESULT = 8 };

static double d_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#if SLUICE_TEST_CUDA
/* Whether `m` says after `side` why a CUDA build cannot carry device memory there. */
static int d_reason_ok(const char *m, const char *side)
{
    const char *r = strstr(m, side);
    if (!r)
        return 0;
    r += strlen(side);
    if (strncmp(r, "no CUDA device: ", 16) == 0)
        return r[16] != '\0' && r[16] != ';';
    char *end;
    return strtol(r, &end, 10) > 0 && strncmp(end, " CUDA device", 12) == 0 &&
           strstr(end, "no device data path yet") != NULL;
}
#endif

/* Instance 7 controller->source in `mem7` on this side; instance 8 back, in host memory. */
static void d_endpoints(sluice_endpoint_t eps[2], sluice_memory_t mem7)
{
    eps[0] = (sluice_endpoint_t){ .instance = D_INPUT, .direction = h_dir(1), .type = T_BYTES,
                                  .memory = mem7 };
    eps[1] = (sluice_endpoint_t){ .instance = D_RESULT, .direction = h_dir(0), .type = T_BYTES,
                                  .memory = SLUICE_MEMORY_HOST };
}

int case_device_one_side(const char *device_side)
{
    /* Only `device_side` declares instance 7 in device memory: both opens fail, naming it. */
    int mine = strcmp(device_side, h_role) == 0;
    sluice_endpoint_t eps[2];
    d_endpoints(eps, mine ? SLUICE_MEMORY_DEVICE : SLUICE_MEMORY_HOST);
    sluice_options_t o = h_options();
    sluice_channel_t *ch = NULL;
    H_STATUS(h_open("device-one-side", 1, eps, 2, &o, &ch), SLUICE_ETYPE);
    const char *m = sluice_last_error();
    char want[128];
    snprintf(want, sizeof want, "the %s declares it in device memory, the %s in host memory",
             device_side, strcmp(device_side, "controller") ? "controller" : "source");
    H_TRUE(strstr(m, "instance 7") && strstr(m, want), "message does not say \"%s\": %s", want, m);
    H_TRUE(ch == NULL, "channel handle set on failure");
    return 0;
}

int case_device_both(void)
{
    /* Both declare instance 7 in device memory: both opens fail with SLUICE_ENOTSUP as soon as
     * the declarations crossed, each with both sides' reasons. */
    sluice_endpoint_t eps[2];
    d_endpoints(eps, SLUICE_MEMORY_DEVICE);
    sluice_options_t o = h_options();
    sluice_channel_t *ch = NULL;
    h_sync();
    double t0 = d_now_ms();
    H_STATUS(h_open("device-both", 1, eps, 2, &o, &ch), SLUICE_ENOTSUP);
    double took = d_now_ms() - t0;
    const char *m = sluice_last_error();
    H_TRUE(ch == NULL, "channel handle set on failure");
    H_TRUE(took < o.timeout_ms / 4.0, "the refusal took %.0f ms of a %u ms timeout", took,
           o.timeout_ms);
    H_TRUE(strstr(m, "instance 7 is declared in device memory"), "message: %s", m);
#if SLUICE_TEST_CUDA
    /* This build has CUDA: each side either has no device (and CUDA's reason) or has one and
     * no data path to use it with. */
    H_TRUE(d_reason_ok(m, "controller: ") && d_reason_ok(m, "source: "),
           "message does not give a CUDA reason for each side: %s", m);
#else
    H_TRUE(strstr(m, "controller: built without CUDA; source: built without CUDA"),
           "message does not say the build has no CUDA: %s", m);
#endif
    printf("[%s] device_both: refused in %.0f ms: %s\n", h_role, took, m);
    return 0;
}

int case_device_then_host(void)
{
    /* A refused device channel leaves nothing behind: the same channel, declared in host memory
     * on both sides, then opens and carries products both ways. */
    sluice_endpoint_t eps[2];
    d_endpoints(eps, SLUICE_MEMORY_DEVICE);
    sluice_options_t o = h_options();
    sluice_channel_t *ch = NULL;
    H_STATUS(h_open("device-then-host", 1, eps, 2, &o, &ch), SLUICE_ENOTSUP);
    d_endpoints(eps, SLUICE_MEMORY_HOST);
    H_OK(h_open("device-then-host", 1, eps, 2, &o, &ch));
    H_DO(h_begin(ch, 1));
    unsigned char buf[4096];
    for (uint64_t ev = 1; ev <= 3; ev++) {
        sluice_token_t tok;
        H_DO(h_start_event(ch, 0, 1, ev, &tok));
        uint32_t out = h_is_ctrl ? D_INPUT : D_RESULT, in = h_is_ctrl ? D_RESULT : D_INPUT;
        h_fill(buf, sizeof buf, ev * 2 + (uint64_t)h_is_ctrl);
        H_OK(sluice_product_send(&tok, out, buf, sizeof buf, sizeof buf, 0));
        sluice_view_t v;
        H_OK(sluice_product_receive(&tok, in, 0, &v));
        h_fill(buf, sizeof buf, ev * 2 + (uint64_t)!h_is_ctrl);
        H_TRUE(v.bytes == sizeof buf && h_checksum(v.data, v.bytes) == h_checksum(buf, sizeof buf),
               "event %llu: product of %zu bytes damaged", (unsigned long long)ev, v.bytes);
        H_OK(sluice_view_release(ch, &v));
        H_OK(sluice_event_finish(&tok));
    }
    H_DO(h_end_job(ch, 1));
    H_OK(sluice_channel_close(ch));
    return 0;
}
