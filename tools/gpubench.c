/* SPDX-License-Identifier: MIT */
/*
 * sluice device-memory benchmark (issue 12, docs/gpu.md): the hand-off of a
 * device product from one process's GPU memory to another's, on one node,
 * against what CUDA does alone, measured in the same run.
 *
 *   mpiexec -n 1 sluice-gpubench controller [--quick] : -n 1 sluice-gpubench source [--quick]
 *
 * For each size from 1 MiB to 256 MiB (1 to 16 MiB with --quick):
 *   ipc      sluice, device path ipc: the controller sluice_product_send()s
 *            from a device buffer straight into the source's device arena,
 *            the source receives the view and releases it;
 *   staged   the same over device path staged (device to host arena, host
 *            arena to device);
 *   d2d      baseline: cudaMemcpy device to device inside one process;
 *   pinned   baseline: cudaMemcpy device to pinned host, then pinned host to
 *            device (what a hand-made staging costs);
 * and the ratios the issue sets targets for: ipc / d2d (>= 0.9 from 1 MiB)
 * and staged / pinned (>= 0.8). Each figure is the best of --reps runs of
 * --iters products (--quick: 4 and 1 unless given), each run after WARMUP
 * untimed ones. The baselines run on rank 0 alone while rank 1 waits. The
 * controller (rank 0) prints a table and "csv,..." lines with fixed
 * columns, then "gpubench: done".
 *
 * Exit status: 2 for bad arguments or a launch other than controller as
 * rank 0 and source as rank 1 (every rank refuses, none is left waiting);
 * 77 on every rank when any rank has no usable CUDA device, each saying why;
 * 1 when a rank's setup fails.
 *
 * It has not run on a GPU yet: no device was lent while it was written.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <sluice/sluice.h>

enum { INSTANCE = 1, ACK = 2 };

/* Untimed runs before each timed one: the first products and copies pay for
 * mappings, page-table set-up and clock ramp-up that no later one does. */
enum { WARMUP = 3 };

static int is_ctrl;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != SLUICE_OK) {                                                                    \
            fprintf(stderr, "gpubench: %s: %s (%s)\n", #call, sluice_strerror(rc_),               \
                    sluice_last_error());                                                          \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

#define CUDA(call)                                                                                 \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "gpubench: %s: %s\n", #call, cudaGetErrorString(e_));                  \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

/* The worst of every rank's `status`: a rank that fails or refuses alone
 * must not leave the other waiting in the next collective step. */
static int agree_max(int status)
{
    int worst = status;
    MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}

/* A barrier while a channel is open: below MPI_THREAD_MULTIPLE sluice's own
 * threads may be inside MPI (sluice_mpi_lock); a no-op guard above. */
static void guarded_barrier(void)
{
    sluice_mpi_lock();
    MPI_Barrier(MPI_COMM_WORLD);
    sluice_mpi_unlock();
}

static void global(sluice_channel_t *ch, sluice_transition_kind_t kind)
{
    sluice_transition_t t = { .kind = kind, .run = 1, .lumi = kind == SLUICE_BEGIN_LUMI ||
                                                               kind == SLUICE_END_LUMI };
    if (is_ctrl) {
        CHECK(sluice_transition_send(ch, &t, 0));
    } else {
        CHECK(sluice_transition_next(ch, &t, 0));
        if (t.kind != kind) {
            fprintf(stderr, "gpubench: transition %d, expected %d\n", t.kind, kind);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
}

/* One device product of `bytes` as event `event`: sent from `dev` by the
 * controller, received and released by the source. */
static void hand_off(sluice_channel_t *ch, uint64_t event, size_t bytes, void *dev)
{
    sluice_transition_t ev = { .kind = SLUICE_EVENT, .run = 1, .lumi = 1, .event = event };
    sluice_token_t tok;
    if (is_ctrl) {
        CHECK(sluice_event_send(ch, 0, &ev, 0, &tok));
        CHECK(sluice_product_send(&tok, INSTANCE, dev, bytes, bytes, 0));
    } else {
        CHECK(sluice_event_next(ch, 0, &ev, 0, &tok));
        sluice_view_t v;
        CHECK(sluice_product_receive(&tok, INSTANCE, 0, &v));
        CHECK(sluice_view_release(ch, &v));
    }
    CHECK(sluice_event_finish(&tok));
}

/* Seconds for `iters` device products of `bytes` over a channel forced onto `path`. */
static double sluice_run(sluice_context_t *ctx, const sluice_type_t *type, const char *path,
                         size_t bytes, int iters, void *dev)
{
    sluice_endpoint_t eps[] = {
        { .instance = INSTANCE, .direction = is_ctrl ? SLUICE_SEND : SLUICE_RECEIVE, .type = type,
          .memory = SLUICE_MEMORY_DEVICE },
    };
    sluice_options_t o;
    sluice_options_init(&o);
    CHECK(sluice_options_from_env(&o));
    o.arena_bytes = 3 * bytes + 4096; /* two in flight (the arena holds its size less the largest) */
    o.device_path = strcmp(path, "ipc") ? SLUICE_DEVICE_PATH_STAGED : SLUICE_DEVICE_PATH_IPC;
    char name[64];
    snprintf(name, sizeof name, "gpubench-%s-%zu", path, bytes);
    sluice_channel_desc_t d = { .size = sizeof d, .name = name,
                                .role = is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = is_ctrl ? "source" : "controller", .streams = 1,
                                .endpoints = eps, .n_endpoints = 1, .options = &o };
    sluice_channel_t *ch;
    CHECK(sluice_channel_open(ctx, &d, &ch));
    if (strcmp(sluice_channel_device_path(ch), path) != 0) {
        fprintf(stderr, "gpubench: channel took device path %s, not %s\n",
                sluice_channel_device_path(ch), path);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    global(ch, SLUICE_BEGIN_RUN);
    global(ch, SLUICE_BEGIN_LUMI);
    /* Real hand-offs through this channel, untimed: both sides count them
     * alike, so the source stays in step and the timed events follow on. */
    uint64_t event = 0;
    for (int i = 0; i < WARMUP; i++)
        hand_off(ch, ++event, bytes, dev);
    /* Both sides are past the warm-up (the source has released its last
     * view) before the clock starts. */
    guarded_barrier();
    double t0 = now_s();
    for (int i = 0; i < iters; i++)
        hand_off(ch, ++event, bytes, dev);
    /* The source's last release ends the measurement on both sides. */
    guarded_barrier();
    double took = now_s() - t0;
    global(ch, SLUICE_END_LUMI);
    global(ch, SLUICE_END_RUN);
    global(ch, SLUICE_END_JOB);
    CHECK(sluice_channel_close(ch));
    return took;
}

/* One copy of `bytes` from `src` to `dst`, then on to `dst2` if given. */
static void copy_once(void *dst, const void *src, void *dst2, size_t bytes)
{
    CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    if (dst2)
        CUDA(cudaMemcpy(dst2, dst, bytes, cudaMemcpyDefault));
}

/* Seconds for `iters` copies of `bytes` inside this process, after WARMUP untimed ones. */
static double copy_run(void *dst, const void *src, void *dst2, size_t bytes, int iters)
{
    for (int i = 0; i < WARMUP; i++)
        copy_once(dst, src, dst2, bytes);
    CUDA(cudaDeviceSynchronize());
    double t0 = now_s();
    for (int i = 0; i < iters; i++)
        copy_once(dst, src, dst2, bytes);
    CUDA(cudaDeviceSynchronize());
    return now_s() - t0;
}

/* The value of count option `opt`: a whole decimal number, at least `min`.
 * atoi would take "0", "-3" or "abc" as 0 and divide by it later. */
static int parse_count(const char *opt, const char *s, int min, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > INT_MAX) {
        fprintf(stderr, "gpubench: %s needs a whole number of at least %d, not '%s'\n", opt, min,
                s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

/* This rank's device, chosen by its rank on the node so that ranks sharing a
 * node spread over its GPUs; 1 if it is usable, else 0 with the reason in `why`. */
static int pick_device(int rank, int *dev_id, char *why, size_t len)
{
    MPI_Comm node;
    int local_rank = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    int n_dev = 0;
    cudaError_t err = cudaGetDeviceCount(&n_dev);
    if (err != cudaSuccess || n_dev <= 0) {
        snprintf(why, len, "%s", err != cudaSuccess ? cudaGetErrorString(err) : "none counted");
        return 0;
    }
    *dev_id = local_rank % n_dev;
    /* cudaFree(NULL) makes the context now: a device that cannot be used
     * (exclusive mode, out of memory) says so here, before any agreement. */
    if ((err = cudaSetDevice(*dev_id)) != cudaSuccess || (err = cudaFree(NULL)) != cudaSuccess) {
        snprintf(why, len, "device %d of %d: %s", *dev_id, n_dev, cudaGetErrorString(err));
        return 0;
    }
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, *dev_id) != cudaSuccess)
        snprintf(p.name, sizeof p.name, "?");
    printf("gpubench: rank %d (%s, node-local rank %d) uses device %d of %d: %s\n", rank,
           is_ctrl ? "controller" : "source", local_rank, *dev_id, n_dev, p.name);
    fflush(stdout);
    return 1;
}

/* cudaMalloc and the like during setup: 0 with a message on failure, which
 * every rank then learns of before the context's collective creation. */
static int setup_ok(cudaError_t err, const char *what)
{
    if (err == cudaSuccess)
        return 1;
    fprintf(stderr, "gpubench: %s: %s\n", what, cudaGetErrorString(err));
    return 0;
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    /* Each rank has its own command line (MPMD): every rank checks its own,
     * then all agree, so one that refuses does not leave the other waiting. */
    int bad = 0;
    if (argc < 2 || (strcmp(argv[1], "controller") && strcmp(argv[1], "source"))) {
        fprintf(stderr, "usage: sluice-gpubench controller|source [--quick] [--iters N] "
                        "[--reps R]\n");
        bad = 1;
    }
    is_ctrl = !bad && !strcmp(argv[1], "controller");
    int quick = 0, iters = -1, reps = -1;
    for (int i = 2; !bad && i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--iters") || !strcmp(argv[i], "--reps")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "gpubench: %s needs a value\n", argv[i]);
                bad = 1;
            } else if (!parse_count(argv[i], argv[i + 1], 1,
                                    !strcmp(argv[i], "--iters") ? &iters : &reps)) {
                bad = 1;
            }
            i++;
        } else {
            fprintf(stderr, "gpubench: unknown option '%s'\n", argv[i]);
            bad = 1;
        }
    }
    /* --quick shortens what was not given explicitly. */
    if (iters < 0)
        iters = quick ? 4 : 20;
    if (reps < 0)
        reps = quick ? 1 : 3;
    /* The baselines run on rank 0 and the controller prints them with its own
     * figures, so the controller must be rank 0, and there must be one source. */
    if (!bad && (size != 2 || is_ctrl != (rank == 0))) {
        fprintf(stderr, "gpubench: rank %d of %d is the %s: launch two ranks, the controller "
                        "first (rank 0) and the source second (rank 1)\n",
                rank, size, is_ctrl ? "controller" : "source");
        bad = 1;
    }
    if (agree_max(bad)) {
        if (!bad)
            fprintf(stderr, "gpubench: rank %d: another rank refused its arguments\n", rank);
        MPI_Finalize();
        return 2;
    }

    /* One rank without a device would skip while the other waits for it:
     * all skip together when any lacks one. */
    char why[256] = "";
    int dev_id = -1;
    int have = pick_device(rank, &dev_id, why, sizeof why);
    int all_have = have;
    MPI_Allreduce(&have, &all_have, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_have) {
        if (have)
            printf("gpubench: skipped, no CUDA device: another rank has none (rank %d has device "
                   "%d)\n", rank, dev_id);
        else
            printf("gpubench: skipped, no CUDA device: rank %d: %s\n", rank, why);
        MPI_Finalize();
        return 77;
    }

    /* The controller sends from `dev`; rank 0 (the controller) alone also
     * needs the baselines' buffers. The source receives into sluice's arena. */
    const size_t max = quick ? 16u << 20 : 256u << 20;
    void *dev = NULL, *dev2 = NULL, *pinned = NULL;
    int ok = 1;
    if (is_ctrl)
        ok = setup_ok(cudaMalloc(&dev, max), "cudaMalloc") &&
             setup_ok(cudaMemset(dev, 0x5a, max), "cudaMemset") &&
             setup_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    if (ok && rank == 0)
        ok = setup_ok(cudaMalloc(&dev2, max), "cudaMalloc") &&
             setup_ok(cudaMallocHost(&pinned, max), "cudaMallocHost");
    if (agree_max(!ok)) {
        if (ok)
            fprintf(stderr, "gpubench: rank %d: another rank's setup failed\n", rank);
        cudaFree(dev);
        cudaFree(dev2);
        cudaFreeHost(pinned);
        MPI_Finalize();
        return 1;
    }

    sluice_context_t *ctx;
    CHECK(sluice_context_create(MPI_COMM_WORLD, argv[1], &ctx));
    sluice_registry_t *reg;
    const sluice_type_t *type;
    sluice_type_desc_t td = { .size = sizeof td, .name = "gpubench::Bytes",
                              .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1, .align = 1 };
    CHECK(sluice_registry_create(&reg));
    CHECK(sluice_registry_add(reg, &td, &type));

    if (is_ctrl) {
        printf("%10s %12s %12s %12s %12s %10s %10s\n", "bytes", "ipc GB/s", "d2d GB/s",
               "staged GB/s", "pinned GB/s", "ipc/d2d", "stg/pin");
    }
    char csv[64][192];
    int n_csv = 0;
    for (size_t bytes = 1u << 20; bytes <= max; bytes *= 4) {
        double ipc = 1e30, staged = 1e30, d2d = 1e30, pin = 1e30;
        for (int r = 0; r < reps; r++) {
            double t = sluice_run(ctx, type, "ipc", bytes, iters, dev);
            ipc = t < ipc ? t : ipc;
            t = sluice_run(ctx, type, "staged", bytes, iters, dev);
            staged = t < staged ? t : staged;
            /* The baselines on rank 0 alone (the controller, which prints
             * them), the source waiting at the barrier: copying on both
             * ranks at once would share the GPU and PCIe and halve them. */
            if (rank == 0) {
                t = copy_run(dev2, dev, NULL, bytes, iters);
                d2d = t < d2d ? t : d2d;
                t = copy_run(pinned, dev, dev2, bytes, iters);
                pin = t < pin ? t : pin;
            }
            MPI_Barrier(MPI_COMM_WORLD);
        }
        double gb = (double)bytes * iters / 1e9;
        if (is_ctrl) {
            printf("%10zu %12.2f %12.2f %12.2f %12.2f %10.2f %10.2f\n", bytes, gb / ipc, gb / d2d,
                   gb / staged, gb / pin, d2d / ipc, pin / staged);
            snprintf(csv[n_csv++], sizeof csv[0], "csv,%zu,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f",
                     bytes, iters, gb / ipc, gb / d2d, gb / staged, gb / pin, d2d / ipc,
                     pin / staged);
        }
    }
    if (is_ctrl) {
        printf("csv,bytes,iters,ipc_gbps,d2d_gbps,staged_gbps,pinned_gbps,ipc_over_d2d,"
               "staged_over_pinned\n");
        for (int i = 0; i < n_csv; i++)
            printf("%s\n", csv[i]);
        printf("gpubench: done\n");
    }
    cudaFree(dev);
    cudaFree(dev2);
    cudaFreeHost(pinned);
    sluice_registry_destroy(reg);
    sluice_context_destroy(ctx);
    MPI_Finalize();
    return 0;
}
