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
 * --iters products. The controller prints a table and "csv,..." lines with
 * fixed columns, then "gpubench: done". Without a CUDA device (or built
 * without CUDA) both ranks say why and exit 77.
 *
 * It has not run on a GPU yet: no device was lent while it was written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <sluice/sluice.h>

enum { INSTANCE = 1, ACK = 2 };

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
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        sluice_transition_t ev = { .kind = SLUICE_EVENT, .run = 1, .lumi = 1,
                                   .event = (uint64_t)i + 1 };
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
    /* The source's last release ends the measurement on both sides. */
    MPI_Barrier(MPI_COMM_WORLD);
    double took = now_s() - t0;
    global(ch, SLUICE_END_LUMI);
    global(ch, SLUICE_END_RUN);
    global(ch, SLUICE_END_JOB);
    CHECK(sluice_channel_close(ch));
    return took;
}

/* Seconds for `iters` copies of `bytes` inside this process. */
static double copy_run(void *dst, const void *src, void *dst2, size_t bytes, int iters)
{
    CUDA(cudaDeviceSynchronize());
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
        if (dst2)
            CUDA(cudaMemcpy(dst2, dst, bytes, cudaMemcpyDefault));
    }
    CUDA(cudaDeviceSynchronize());
    return now_s() - t0;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (argc < 2 || (strcmp(argv[1], "controller") && strcmp(argv[1], "source"))) {
        fprintf(stderr, "usage: sluice-gpubench controller|source [--quick] [--iters N] "
                        "[--reps R]\n");
        MPI_Finalize();
        return 2;
    }
    is_ctrl = !strcmp(argv[1], "controller");
    int quick = 0, iters = 20, reps = 3;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
    }
    if (quick)
        iters = 4, reps = 1;
    int n_dev = 0;
    cudaError_t err = cudaGetDeviceCount(&n_dev);
    if (err != cudaSuccess || n_dev == 0) {
        printf("gpubench: skipped, no CUDA device: %s\n",
               err != cudaSuccess ? cudaGetErrorString(err) : "none counted");
        MPI_Finalize();
        return 77;
    }
    sluice_context_t *ctx;
    CHECK(sluice_context_create(MPI_COMM_WORLD, argv[1], &ctx));
    sluice_registry_t *reg;
    const sluice_type_t *type;
    sluice_type_desc_t td = { .size = sizeof td, .name = "gpubench::Bytes",
                              .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1, .align = 1 };
    CHECK(sluice_registry_create(&reg));
    CHECK(sluice_registry_add(reg, &td, &type));

    const size_t max = quick ? 16u << 20 : 256u << 20;
    void *dev, *dev2, *pinned;
    CUDA(cudaMalloc(&dev, max));
    CUDA(cudaMalloc(&dev2, max));
    CUDA(cudaMallocHost(&pinned, max));
    CUDA(cudaMemset(dev, 0x5a, max));
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
            t = copy_run(dev2, dev, NULL, bytes, iters);
            d2d = t < d2d ? t : d2d;
            t = copy_run(pinned, dev, dev2, bytes, iters);
            pin = t < pin ? t : pin;
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
