/* SPDX-License-Identifier: MIT */
/*
 * Device-memory endpoints (docs/gpu.md): the agreement at open, then device
 * products both ways over the path the channel takes. The data cases run
 * over the device layer the library was built with (tdev.h): a real GPU
 * where there is one, the emulated layer in the devemu.* lines, and exit 77
 * with the reason where there is no device.
 */
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "harness.h"
#include "tdev.h"

enum { D_INPUT = 7, D_RESULT = 8, D_BACK = 9, D_HITS = 10 };

#define D_SKIP 77

static double d_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Whether this process has a device to run the data cases on; prints why not. */
static int d_have_device(const char *what)
{
    char why[256] = "";
    if (tdev_count(why, sizeof why) > 0)
        return 1;
    printf("[%s] %s: skipped, no device: %s\n", h_role, what, why);
    return 0;
}

#if SLUICE_TEST_CUDA
/* Whether `m` says after `side` why a CUDA build cannot carry device memory there. */
static int d_reason_ok(const char *m, const char *side)
{
    const char *r = strstr(m, side);
    if (!r)
        return 0;
    r += strlen(side);
    return strncmp(r, "no CUDA device: ", 16) == 0 && r[16] != '\0' && r[16] != ';';
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
    /* Both declare instance 7 in device memory. Without a device, both opens fail with
     * SLUICE_ENOTSUP as soon as the declarations crossed, each with both sides' reasons; with
     * one, the channel opens over CUDA IPC (both sides on this node). */
    sluice_endpoint_t eps[2];
    d_endpoints(eps, SLUICE_MEMORY_DEVICE);
    sluice_options_t o = h_options();
    sluice_channel_t *ch = NULL;
    char why[256];
    if (tdev_count(why, sizeof why) > 0) {
        H_OK(h_open("device-both", 1, eps, 2, &o, &ch));
        H_TRUE(!strcmp(sluice_channel_device_path(ch), "ipc"), "device path %s on one node",
               sluice_channel_device_path(ch));
        H_OK(sluice_channel_close(ch));
        return 0;
    }
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
    /* A device channel, refused or opened, leaves nothing behind: the same channel, declared in
     * host memory on both sides, then opens and carries products both ways. */
    sluice_endpoint_t eps[2];
    d_endpoints(eps, SLUICE_MEMORY_DEVICE);
    sluice_options_t o = h_options();
    sluice_channel_t *ch = NULL;
    char why[256];
    if (tdev_count(why, sizeof why) > 0) {
        H_OK(h_open("device-then-host", 1, eps, 2, &o, &ch));
        H_OK(sluice_channel_close(ch));
    } else {
        H_STATUS(h_open("device-then-host", 1, eps, 2, &o, &ch), SLUICE_ENOTSUP);
    }
    d_endpoints(eps, SLUICE_MEMORY_HOST);
    H_OK(h_open("device-then-host", 1, eps, 2, &o, &ch));
    H_TRUE(!strcmp(sluice_channel_device_path(ch), "none"), "host-only channel has device "
           "path %s", sluice_channel_device_path(ch));
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

int case_device_custom_layout(void)
{
    /* A custom-layout type in device memory is refused by each side alone, before anything
     * crosses: its (de)serialise callbacks run on the CPU. */
    sluice_endpoint_t eps[2];
    d_endpoints(eps, SLUICE_MEMORY_DEVICE);
    eps[0].type = T_BLOB;
    sluice_options_t o = h_options();
    sluice_channel_t *ch = NULL;
    double t0 = d_now_ms();
    H_STATUS(h_open("device-custom", 1, eps, 2, &o, &ch), SLUICE_EINVAL);
    H_TRUE(strstr(sluice_last_error(), "instance 7: type `test::Blob` has a custom layout"),
           "message: %s", sluice_last_error());
    H_TRUE(ch == NULL, "channel handle set on failure");
    H_TRUE(d_now_ms() - t0 < o.timeout_ms / 4.0, "the refusal waited %.0f ms",
           d_now_ms() - t0);
    return 0;
}

int case_device_path_mismatch(void)
{
    /* The controller forces ipc, the source staged: both opens fail alike (SLUICE_ETYPE), or,
     * without a device, with SLUICE_ENOTSUP first. */
    sluice_endpoint_t eps[2];
    d_endpoints(eps, SLUICE_MEMORY_DEVICE);
    sluice_options_t o = h_options();
    o.device_path = h_is_ctrl ? SLUICE_DEVICE_PATH_IPC : SLUICE_DEVICE_PATH_STAGED;
    sluice_channel_t *ch = NULL;
    char why[256];
    int want = tdev_count(why, sizeof why) > 0 ? SLUICE_ETYPE : SLUICE_ENOTSUP;
    H_STATUS(h_open("device-path-mismatch", 1, eps, 2, &o, &ch), want);
    if (want == SLUICE_ETYPE)
        H_TRUE(strstr(sluice_last_error(), "the controller forces device path ipc, the source "
                                           "staged"),
               "message: %s", sluice_last_error());
    H_TRUE(ch == NULL, "channel handle set on failure");
    return 0;
}

/* ------------------------------------------------------------ data */

/* A T_BYTES endpoint `instance` in device memory, sent by the controller when `ctrl_sends`. */
static sluice_endpoint_t d_dev(uint32_t instance, int ctrl_sends)
{
    return (sluice_endpoint_t){ .instance = instance, .direction = h_dir(ctrl_sends),
                                .type = T_BYTES, .memory = SLUICE_MEMORY_DEVICE };
}

/* Open `name` with `eps` over device path `path` ("auto", "ipc", "staged"), and check the path
 * the channel reports (auto: ipc, both sides being on this node). */
static int d_open(const char *name, const char *path, const sluice_endpoint_t *eps, size_t n,
                  sluice_options_t *o, sluice_channel_t **ch_p)
{
    o->device_path = !strcmp(path, "ipc")      ? SLUICE_DEVICE_PATH_IPC
                     : !strcmp(path, "staged") ? SLUICE_DEVICE_PATH_STAGED
                                               : SLUICE_DEVICE_PATH_AUTO;
    H_OK(h_open(name, 1, eps, n, o, ch_p));
    const char *want = strcmp(path, "staged") ? "ipc" : "staged";
    H_TRUE(!strcmp(sluice_channel_device_path(*ch_p), want), "device path %s, expected %s",
           sluice_channel_device_path(*ch_p), want);
    return 0;
}

/* A received device product holds what h_fill(seed) wrote. */
static int d_check_view(const sluice_view_t *v, size_t bytes, uint64_t seed, const char *what)
{
    H_TRUE(v->bytes == bytes, "%s: %zu bytes, expected %zu", what, v->bytes, bytes);
    uint64_t got, want;
    unsigned char *ref = malloc(bytes ? bytes : 1);
    H_TRUE(ref != NULL, "no memory");
    h_fill(ref, bytes, seed);
    want = h_checksum(ref, bytes);
    free(ref);
    H_TRUE(tdev_checksum(v->data, v->bytes, &got) == 0, "%s: cannot read the device view", what);
    H_TRUE(got == want, "%s: %zu device bytes damaged", what, bytes);
    return 0;
}

/* Sizes from 0 B to 256 MiB, each way: reserve-fill-commit forward, send from a device buffer
 * back; contents checked on the receiving device. */
static int d_sizes(const char *path)
{
    static const size_t sizes[] = { 0, 1, 63, 64, 65, 4097, 1u << 20,
                                    (5u << 20) + 3, 16u << 20, 256u << 20 };
    const size_t n_sizes = sizeof sizes / sizeof sizes[0], max = 256u << 20;
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
        d_dev(D_BACK, 0),
    };
    sluice_options_t o = h_options();
    o.arena_bytes = max + 4096; /* the largest product fits whole */
    sluice_channel_t *ch;
    H_DO(d_open("device-sizes", path, eps, 2, &o, &ch));
    void *buf = tdev_alloc(max);
    H_TRUE(buf != NULL, "cannot allocate %zu device bytes", max);
    H_DO(h_begin(ch, 1));
    for (size_t i = 0; i < n_sizes; i++) {
        size_t bytes = sizes[i];
        uint64_t ev = i + 1;
        char what[64];
        sluice_token_t tok;
        H_DO(h_start_event(ch, 0, 1, ev, &tok));
        if (h_is_ctrl) {
            sluice_reservation_t r;
            H_OK(sluice_product_reserve(&tok, D_INPUT, bytes, bytes, 0, &r));
            H_TRUE(tdev_fill(r.data, bytes, ev) == 0, "cannot fill the reservation");
            H_OK(sluice_product_commit(&tok, &r));
            sluice_view_t v;
            H_OK(sluice_product_receive(&tok, D_BACK, 0, &v));
            snprintf(what, sizeof what, "back, %zu bytes", bytes);
            H_DO(d_check_view(&v, bytes, ev + 1000, what));
            H_OK(sluice_view_release(ch, &v));
        } else {
            sluice_view_t v;
            H_OK(sluice_product_receive(&tok, D_INPUT, 0, &v));
            snprintf(what, sizeof what, "forward, %zu bytes", bytes);
            H_DO(d_check_view(&v, bytes, ev, what));
            H_TRUE(v.count == bytes, "count %llu", (unsigned long long)v.count);
            H_OK(sluice_view_release(ch, &v));
            H_TRUE(tdev_fill(buf, bytes, ev + 1000) == 0, "cannot fill the device buffer");
            H_OK(sluice_product_send(&tok, D_BACK, buf, bytes, bytes, 0));
        }
        H_OK(sluice_event_finish(&tok));
    }
    H_DO(h_end_job(ch, 1));
    tdev_free(buf);
    H_OK(sluice_channel_close(ch));
    return 0;
}

/* Host and device products in one event, an SoA device product with its count, and a received
 * device view sent on as it is. */
static int d_mixed(const char *path)
{
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
        { .instance = D_RESULT, .direction = h_dir(1), .type = T_BYTES },
        { .instance = D_HITS, .direction = h_dir(1), .type = T_HITS,
          .memory = SLUICE_MEMORY_DEVICE },
        d_dev(D_BACK, 0),
    };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_DO(d_open("device-mixed", path, eps, 4, &o, &ch));
    /* Both sides receive device products: staged, each registered its inbox with the device
     * (and, over shared memory, the peer's, which it copies into); ipc registers nothing. */
    long pinned = tdev_registered();
    int staged = !strcmp(path, "staged");
    if (pinned >= 0)
        H_TRUE(staged ? pinned >= 1 : pinned == 0, "%ld host windows registered (%s)", pinned,
               path);
    H_DO(h_begin(ch, 1));
    unsigned char host[3000];
    for (uint64_t ev = 1; ev <= 40; ev++) {
        uint64_t hits = 100 * ev + 7;
        size_t hit_bytes = 0, dev_bytes = 5000 + (size_t)ev * 64;
        H_OK(sluice_type_bytes(T_HITS, hits, &hit_bytes));
        sluice_token_t tok;
        H_DO(h_start_event(ch, 0, 1, ev, &tok));
        if (h_is_ctrl) {
            h_fill(host, sizeof host, ev * 3);
            H_OK(sluice_product_send(&tok, D_RESULT, host, sizeof host, sizeof host, 0));
            sluice_reservation_t r;
            H_OK(sluice_product_reserve(&tok, D_HITS, hit_bytes, hits, 0, &r));
            /* One element more than the region holds is refused at commit. */
            sluice_reservation_t bad = r;
            bad.count = hits + 1000;
            H_STATUS(sluice_product_commit(&tok, &bad), SLUICE_EINVAL);
            H_TRUE(tdev_fill(r.data, hit_bytes, ev * 3 + 1) == 0, "cannot fill");
            H_OK(sluice_product_commit(&tok, &r));
            H_OK(sluice_product_reserve(&tok, D_INPUT, dev_bytes, dev_bytes, 0, &r));
            H_TRUE(tdev_fill(r.data, dev_bytes, ev * 3 + 2) == 0, "cannot fill");
            H_OK(sluice_product_commit(&tok, &r));
            sluice_view_t v;
            H_OK(sluice_product_receive(&tok, D_BACK, 0, &v));
            H_DO(d_check_view(&v, dev_bytes, ev * 3 + 2, "sent on"));
            H_OK(sluice_view_release(ch, &v));
        } else {
            /* Taken in another order than sent. */
            sluice_view_t vh, vd, vb;
            H_OK(sluice_product_receive(&tok, D_HITS, 0, &vh));
            H_TRUE(vh.count == hits, "SoA count %llu, expected %llu",
                   (unsigned long long)vh.count, (unsigned long long)hits);
            H_DO(d_check_view(&vh, hit_bytes, ev * 3 + 1, "SoA"));
            H_OK(sluice_product_receive(&tok, D_RESULT, 0, &vb));
            h_fill(host, sizeof host, ev * 3);
            H_TRUE(vb.bytes == sizeof host && !memcmp(vb.data, host, sizeof host),
                   "host product damaged");
            H_OK(sluice_product_receive(&tok, D_INPUT, 0, &vd));
            H_DO(d_check_view(&vd, dev_bytes, ev * 3 + 2, "device"));
            /* Straight from the device view into the peer's device memory. */
            H_OK(sluice_product_send(&tok, D_BACK, vd.data, vd.bytes, vd.bytes, 0));
            H_OK(sluice_view_release(ch, &vd));
            H_OK(sluice_view_release(ch, &vh));
            H_OK(sluice_view_release(ch, &vb));
        }
        H_OK(sluice_event_finish(&tok));
    }
    H_DO(h_end_job(ch, 1));
    H_OK(sluice_channel_close(ch));
    pinned = tdev_registered();
    H_TRUE(pinned <= 0, "%ld host windows still registered after close", pinned);
    return 0;
}

/* The receiver holds views across events and releases them out of order while the next
 * products arrive into the freed regions: a held view never changes. A held view pins the
 * arena from its region on (the tail moves past released prefixes only), so the arena is sized
 * for the span the holding pattern below can pin: at most about six events of three products. */
static int d_held(const char *path)
{
    enum { EVENTS = 120, PER = 3, HOLD = 3 };
    const size_t bytes = 256u << 10;
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
    };
    sluice_options_t o = h_options();
    o.arena_bytes = 8u << 20;
    sluice_channel_t *ch;
    H_DO(d_open("device-held", path, eps, 1, &o, &ch));
    H_DO(h_begin(ch, 1));
    struct { sluice_view_t v; uint64_t seed; } held[HOLD + 1];
    int n_held = 0;
    for (uint64_t ev = 1; ev <= EVENTS; ev++) {
        sluice_token_t tok;
        H_DO(h_start_event(ch, 0, 1, ev, &tok));
        for (uint64_t k = 0; k < PER; k++) {
            uint64_t seed = ev * 16 + k;
            if (h_is_ctrl) {
                sluice_reservation_t r;
                H_OK(sluice_product_reserve(&tok, D_INPUT, bytes, bytes, 0, &r));
                H_TRUE(tdev_fill(r.data, bytes, seed) == 0, "cannot fill");
                H_OK(sluice_product_commit(&tok, &r));
                continue;
            }
            sluice_view_t v;
            H_OK(sluice_product_receive(&tok, D_INPUT, 0, &v));
            if (k != 1) { /* every second one is released at once */
                H_DO(d_check_view(&v, bytes, seed, "product"));
                H_OK(sluice_view_release(ch, &v));
                continue;
            }
            held[n_held].v = v;
            held[n_held++].seed = seed;
            if (n_held > HOLD) {
                /* Give back the oldest or the next one, in turn, then close the gap. */
                int out = (int)(ev % 2);
                H_DO(d_check_view(&held[out].v, bytes, held[out].seed, "held view"));
                H_OK(sluice_view_release(ch, &held[out].v));
                memmove(&held[out], &held[out + 1], (size_t)(n_held - out - 1) * sizeof held[0]);
                n_held--;
            }
        }
        H_OK(sluice_event_finish(&tok));
    }
    for (int i = 0; i < n_held; i++) {
        H_DO(d_check_view(&held[i].v, bytes, held[i].seed, "held view at the end"));
        H_OK(sluice_view_release(ch, &held[i].v));
    }
    H_DO(h_end_job(ch, 1));
    H_OK(sluice_channel_close(ch));
    return 0;
}

/* The receiver finishes an event before the sender's device products of it were sent: the
 * sender's reservations still hand out device memory it can fill (the ones that find the
 * receiver done while waiting for room go nowhere), every commit succeeds, nothing is left
 * pinned, and the next event's product arrives intact. */
static int d_finished_early(const char *path)
{
    enum { N = 24 };
    const size_t bytes = 1u << 20; /* N of them overfill the default 4 MiB arena */
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
    };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_DO(d_open("device-finished-early", path, eps, 1, &o, &ch));
    H_DO(h_begin(ch, 1));
    sluice_token_t tok;
    H_DO(h_start_event(ch, 0, 1, 1, &tok));
    if (h_is_ctrl) {
        h_sync(); /* the source has finished event 1 */
        for (int i = 0; i < N; i++) {
            sluice_reservation_t r;
            H_OK(sluice_product_reserve(&tok, D_INPUT, bytes, bytes, 0, &r));
            H_TRUE(r.data != NULL, "reservation %d has no memory", i);
            H_TRUE(tdev_fill(r.data, bytes, (uint64_t)i) == 0, "cannot fill reservation %d", i);
            H_OK(sluice_product_commit(&tok, &r));
        }
        sluice_channel_stats_t st;
        sluice_channel_stats(ch, &st);
        printf("[%s] finished_early: %llu of %d products dropped\n", h_role,
               (unsigned long long)st.discarded, N);
    } else {
        H_OK(sluice_event_finish(&tok));
        h_sync();
    }
    if (h_is_ctrl)
        H_OK(sluice_event_finish(&tok));
    H_DO(h_start_event(ch, 0, 1, 2, &tok));
    if (h_is_ctrl) {
        sluice_reservation_t r;
        H_OK(sluice_product_reserve(&tok, D_INPUT, bytes, bytes, 0, &r));
        H_TRUE(tdev_fill(r.data, bytes, 99) == 0, "cannot fill");
        H_OK(sluice_product_commit(&tok, &r));
    } else {
        sluice_view_t v;
        H_OK(sluice_product_receive(&tok, D_INPUT, 0, &v));
        H_DO(d_check_view(&v, bytes, 99, "after the early finish"));
        H_OK(sluice_view_release(ch, &v));
    }
    H_OK(sluice_event_finish(&tok));
    H_DO(h_end_job(ch, 1));
    H_OK(sluice_channel_close(ch));
    return 0;
}

static void d_sleep_ms(unsigned ms)
{
    nanosleep(&(struct timespec){ ms / 1000, (long)(ms % 1000) * 1000000L }, NULL);
}

struct d_committer {
    sluice_token_t *tok;
    sluice_reservation_t res;
    int rc;
};

static void *d_commit_thread(void *arg)
{
    struct d_committer *c = arg;
    c->rc = sluice_product_commit(c->tok, &c->res);
    return NULL;
}

/* Ends the slow stream's work 200 ms from now, while the finish waits for the commit. */
static void *d_waker_thread(void *stream)
{
    d_sleep_ms(200);
    tdev_stream_wake(stream);
    return NULL;
}

/* A commit waits for slow device work (a stream done 3 s later, or once woken where the layer
 * can) while another thread of the event cancels the reservation (refused: it is being
 * committed) and finishes the event (it waits for the commit): the product goes out whole,
 * and the region is not handed on under the work that fills it. */
static int d_commit_race(const char *path)
{
    const size_t bytes = 64u << 10;
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
    };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_DO(d_open("device-commit-race", path, eps, 1, &o, &ch));
    H_DO(h_begin(ch, 1));
    for (uint64_t ev = 1; ev <= 3; ev++) {
        sluice_token_t tok;
        H_DO(h_start_event(ch, 0, 1, ev, &tok));
        if (h_is_ctrl) {
            struct d_committer c = { .tok = &tok };
            H_OK(sluice_product_reserve(&tok, D_INPUT, bytes, bytes, 0, &c.res));
            H_TRUE(tdev_fill(c.res.data, bytes, ev) == 0, "cannot fill");
            c.res.cuda_stream = tdev_slow_stream(3000);
            H_TRUE(c.res.cuda_stream != NULL, "no slow stream");
            sluice_reservation_t copy = c.res;
            pthread_t t;
            H_TRUE(pthread_create(&t, NULL, d_commit_thread, &c) == 0, "pthread_create");
            /* Until the commit waits for the stream (where the layer cannot tell: 1 s of
             * the 3). */
            if (tdev_waiters() < 0)
                d_sleep_ms(1000);
            for (double t0 = d_now_ms(); tdev_waiters() == 0;) {
                H_TRUE(d_now_ms() - t0 < 2500, "the commit did not wait for the stream");
                d_sleep_ms(1);
            }
            H_STATUS(sluice_product_cancel(&tok, &copy), SLUICE_EBUSY);
            pthread_t waker;
            H_TRUE(pthread_create(&waker, NULL, d_waker_thread, c.res.cuda_stream) == 0,
                   "pthread_create");
            /* A finish that did not wait would publish its end mark before the product:
             * the receiver would not get it. */
            H_OK(sluice_event_finish(&tok));
            /* Where the layer tells, the finish returned after the wait had ended. */
            H_TRUE(tdev_waiters() <= 0, "the finish returned while the commit still waited");
            pthread_join(t, NULL);
            pthread_join(waker, NULL);
            tdev_stream_free(c.res.cuda_stream);
            H_TRUE(c.rc == SLUICE_OK, "commit: %s", sluice_strerror(c.rc));
        } else {
            sluice_view_t v;
            H_OK(sluice_product_receive(&tok, D_INPUT, 0, &v));
            H_DO(d_check_view(&v, bytes, ev, "committed during the finish"));
            H_OK(sluice_view_release(ch, &v));
            H_OK(sluice_event_finish(&tok));
        }
    }
    H_DO(h_end_job(ch, 1));
    H_OK(sluice_channel_close(ch));
    return 0;
}

/* The device layer fails (injected) in each call a product takes: the call says
 * SLUICE_EDEVICE, nothing half-done is delivered, and the channel goes on. */
static int d_fail(const char *path)
{
    const size_t bytes = 4096;
    int staged = !strcmp(path, "staged");
    if (tdev_fail(NULL, 0) < 0) {
        printf("[%s] device_fail: skipped, the %s layer cannot inject failures\n", h_role,
               tdev_layer());
        return D_SKIP;
    }
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
    };
    sluice_options_t o = h_options();
    o.arena_bytes = 16u << 20; /* room for a product of three RMA chunks */
    sluice_channel_t *ch;
    H_DO(d_open("device-fail", path, eps, 1, &o, &ch));
    void *buf = tdev_alloc(bytes);
    H_TRUE(buf != NULL, "cannot allocate");
    H_DO(h_begin(ch, 1));
    sluice_token_t tok;
    H_DO(h_start_event(ch, 0, 1, 1, &tok));
    if (h_is_ctrl) {
        /* The wait for the filling work fails: the reservation stays open. */
        sluice_reservation_t r;
        H_OK(sluice_product_reserve(&tok, D_INPUT, bytes, bytes, 0, &r));
        H_TRUE(tdev_fill(r.data, bytes, 1) == 0, "cannot fill");
        H_TRUE(tdev_fail("wait", 1) == 0, "cannot inject");
        H_STATUS(sluice_product_commit(&tok, &r), SLUICE_EDEVICE);
        if (staged) { /* then its copy to the host arena fails: still open */
            H_TRUE(tdev_fail("copy", 1) == 0, "cannot inject");
            H_STATUS(sluice_product_commit(&tok, &r), SLUICE_EDEVICE);
        }
        H_OK(sluice_product_cancel(&tok, &r));
        if (staged && !strcmp(sluice_channel_transport(ch), "rma")) {
            /* Its second 4 MiB chunk fails after the first was put: cancelled, and the
             * products below reuse the region the first chunk went to. */
            const size_t big = (9u << 20) + 5;
            H_OK(sluice_product_reserve(&tok, D_INPUT, big, big, 0, &r));
            H_TRUE(tdev_fill(r.data, big, 6) == 0, "cannot fill");
            H_TRUE(tdev_fail("copy", 2) == 0, "cannot inject");
            H_STATUS(sluice_product_commit(&tok, &r), SLUICE_EDEVICE);
            H_OK(sluice_product_cancel(&tok, &r));
        }
        /* A send whose copy fails sends nothing. */
        H_TRUE(tdev_fill(buf, bytes, 2) == 0, "cannot fill");
        H_TRUE(tdev_fail("copy", 1) == 0, "cannot inject");
        H_STATUS(sluice_product_send(&tok, D_INPUT, buf, bytes, bytes, 0), SLUICE_EDEVICE);
        /* Then two that go out. */
        H_TRUE(tdev_fill(buf, bytes, 3) == 0, "cannot fill");
        H_OK(sluice_product_send(&tok, D_INPUT, buf, bytes, bytes, 0));
        H_TRUE(tdev_fill(buf, bytes, 4) == 0, "cannot fill");
        H_OK(sluice_product_send(&tok, D_INPUT, buf, bytes, bytes, 0));
    } else {
        sluice_view_t v;
        if (staged) {
            /* The copy to this side's device fails: that product is lost to the caller,
             * the next one is whole. */
            H_TRUE(tdev_fail("copy", 1) == 0, "cannot inject");
            H_STATUS(sluice_product_receive(&tok, D_INPUT, 0, &v), SLUICE_EDEVICE);
        } else {
            H_OK(sluice_product_receive(&tok, D_INPUT, 0, &v));
            H_DO(d_check_view(&v, bytes, 3, "first after the failures"));
            H_OK(sluice_view_release(ch, &v));
        }
        H_OK(sluice_product_receive(&tok, D_INPUT, 0, &v));
        H_DO(d_check_view(&v, bytes, 4, "second after the failures"));
        H_OK(sluice_view_release(ch, &v));
        sluice_channel_stats_t st;
        sluice_channel_stats(ch, &st);
        H_TRUE(st.products_received == (staged ? 1 : 2), "%llu products received",
               (unsigned long long)st.products_received);
    }
    H_OK(sluice_event_finish(&tok));
    H_DO(h_end_job(ch, 1));
    tdev_free(buf);
    H_OK(sluice_channel_close(ch));
    /* The source cannot allocate its device arena: its open fails with SLUICE_EDEVICE. The
     * controller's fails too over ipc (there is no arena to map); staged, it reads nothing of
     * the source's device side at open, and its first wait finds the channel closed. */
    sluice_endpoint_t both[2];
    d_endpoints(both, SLUICE_MEMORY_DEVICE); /* and instance 8 back, in host memory */
    if (!h_is_ctrl)
        H_TRUE(tdev_fail("alloc", 1) == 0, "cannot inject");
    int rc = h_open("device-fail-alloc", 1, both, 2, &o, &ch);
    if (!h_is_ctrl) {
        H_TRUE(rc == SLUICE_EDEVICE, "open without an arena: %s", sluice_strerror(rc));
    } else if (!staged || rc != SLUICE_OK) {
        H_TRUE(rc != SLUICE_OK, "the open succeeded without the peer's arena");
    } else {
        sluice_transition_t t = h_transition(SLUICE_BEGIN_RUN, 1, 0, 0);
        H_OK(sluice_transition_send(ch, &t, 0));
        t = h_transition(SLUICE_BEGIN_LUMI, 1, 1, 0);
        H_OK(sluice_transition_send(ch, &t, 0));
        t = h_transition(SLUICE_EVENT, 1, 1, 1);
        H_OK(sluice_event_send(ch, 0, &t, 0, &tok));
        sluice_view_t v;
        H_STATUS(sluice_product_receive(&tok, D_RESULT, 0, &v), SLUICE_EPEERCLOSED);
        sluice_channel_close(ch); /* its status may say the peer is gone */
    }
    h_sync();
    if (staged)
        return 0;
    /* Over ipc the controller cannot map the source's arena: its open fails with
     * SLUICE_EDEVICE, the source's fails or finds the channel closed, and neither leaves an
     * arena behind once the other has let go. */
    if (h_is_ctrl)
        H_TRUE(tdev_fail("map", 1) == 0, "cannot inject");
    rc = h_open("device-fail-map", 1, eps, 1, &o, &ch);
    if (h_is_ctrl) {
        H_TRUE(rc == SLUICE_EDEVICE, "open without the peer's arena: %s", sluice_strerror(rc));
    } else if (rc == SLUICE_OK) {
        sluice_item_t it;
        H_STATUS(sluice_source_next(ch, 0, &it), SLUICE_EPEERCLOSED);
        H_OK(sluice_channel_close(ch));
    } else {
        H_TRUE(rc == SLUICE_EPEERCLOSED || rc == SLUICE_ETIMEDOUT,
               "the source's open: %s", sluice_strerror(rc));
    }
    h_sync();
    /* The controller marked the source's inbox closed after it failed to map: the source's
     * arena went with its close. */
    long left = tdev_exports();
    H_TRUE(left == 0, "%ld exported arenas left", left);
    return 0;
}

/* Two channels carrying device products both ways, closed in opposite orders by the two
 * sides: no close waits for the peer's, and every exported arena is freed once the peer has
 * let go (by the next open, at the latest). */
static int d_close_crossed(const char *path)
{
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
        d_dev(D_BACK, 0),
    };
    sluice_options_t o = h_options();
    sluice_channel_t *ch[2];
    H_DO(d_open("device-crossed-a", path, eps, 2, &o, &ch[0]));
    H_DO(d_open("device-crossed-b", path, eps, 2, &o, &ch[1]));
    h_sync();
    for (int i = 0; i < 2; i++) {
        sluice_channel_t *c = ch[h_is_ctrl ? i : 1 - i];
        double t0 = d_now_ms();
        H_OK(sluice_channel_close(c));
        double took = d_now_ms() - t0;
        H_TRUE(took < o.timeout_ms / 4.0, "close %d took %.0f ms (the timeout is %u ms)", i,
               took, o.timeout_ms);
    }
    h_sync();
    long left = tdev_exports();
    if (left < 0) {
        printf("[%s] close_crossed: the %s layer cannot count its exports\n", h_role,
               tdev_layer());
        return 0;
    }
    /* Both peers have closed both channels: the next open frees what waited for them. */
    sluice_endpoint_t host = { .instance = D_RESULT, .direction = h_dir(1), .type = T_BYTES };
    sluice_channel_t *h;
    H_OK(h_open("device-crossed-after", 1, &host, 1, &o, &h));
    left = tdev_exports();
    H_OK(sluice_channel_close(h));
    H_TRUE(left == 0, "%ld exported arenas left after both sides closed", left);
    return 0;
}

/* The peer is killed with device channels open both ways: the survivor sees the death, closes,
 * and frees its exported arena, since the dead peer (proven so by its pid) maps nothing. */
int case_device_killed(void)
{
    const char *victim = getenv("SLUICE_TEST_VICTIM");
    int i_die = victim && strcmp(victim, h_role) == 0;
    if (!d_have_device("device_killed"))
        return D_SKIP;
    sluice_endpoint_t eps[] = {
        d_dev(D_INPUT, 1),
        d_dev(D_BACK, 0),
    };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_DO(d_open("device-killed", "ipc", eps, 2, &o, &ch));
    H_DO(h_begin(ch, 1));
    sluice_token_t tok;
    H_DO(h_start_event(ch, 0, 1, 1, &tok));
    const size_t bytes = 8192;
    sluice_reservation_t r;
    H_OK(sluice_product_reserve(&tok, h_is_ctrl ? D_INPUT : D_BACK, bytes, bytes, 0, &r));
    H_TRUE(tdev_fill(r.data, bytes, 5) == 0, "cannot fill");
    H_OK(sluice_product_commit(&tok, &r));
    sluice_view_t v;
    H_OK(sluice_product_receive(&tok, h_is_ctrl ? D_BACK : D_INPUT, 0, &v));
    H_DO(d_check_view(&v, bytes, 5, "before the kill"));
    H_OK(sluice_view_release(ch, &v));
    h_sync();
    if (i_die) {
        d_sleep_ms(200);
        raise(SIGKILL);
    }
    H_STATUS(sluice_product_receive(&tok, h_is_ctrl ? D_BACK : D_INPUT, 0, &v), SLUICE_EPEERDEAD);
    sluice_channel_close(ch); /* its status may say the peer is gone: that is the point */
    long left = tdev_exports();
    H_TRUE(left <= 0, "%ld exported arenas kept after the peer died", left);
    return 0;
}

int case_device_data(const char *what, const char *path)
{
    char name[64];
    snprintf(name, sizeof name, "device_%s (%s, %s layer)", what, path, tdev_layer());
    if (!d_have_device(name))
        return D_SKIP;
    double t0 = d_now_ms();
    int rc = !strcmp(what, "sizes")   ? d_sizes(path)
             : !strcmp(what, "mixed") ? d_mixed(path)
             : !strcmp(what, "held")  ? d_held(path)
             : !strcmp(what, "finished_early") ? d_finished_early(path)
             : !strcmp(what, "commit_race")    ? d_commit_race(path)
             : !strcmp(what, "fail")           ? d_fail(path)
             : !strcmp(what, "close_crossed")  ? d_close_crossed(path)
                                      : (fprintf(stderr, "[%s] no device case %s\n", h_role, what),
                                         1);
    if (rc == 0)
        printf("[%s] %s: %.0f ms\n", h_role, name, d_now_ms() - t0);
    return rc;
}
