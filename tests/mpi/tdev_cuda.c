/* SPDX-License-Identifier: MIT */
/*
 * Device memory through the CUDA runtime: patterns are written and checked
 * on the host and copied to and from the device (no kernels: the suite
 * builds without a CUDA compiler).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "harness.h"
#include "tdev.h"

const char *tdev_layer(void) { return "cuda"; }

int tdev_count(char *why, size_t len)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        snprintf(why, len, "no CUDA device: %s", cudaGetErrorString(err));
        return 0;
    }
    if (n == 0)
        snprintf(why, len, "no CUDA device");
    return n;
}

void *tdev_alloc(size_t n)
{
    void *p = NULL;
    return cudaMalloc(&p, n ? n : 1) == cudaSuccess ? p : NULL;
}

void tdev_free(void *p) { cudaFree(p); }

int tdev_fill(void *dev, size_t n, uint64_t seed)
{
    void *h = malloc(n ? n : 1);
    if (!h)
        return -1;
    h_fill(h, n, seed);
    int rc = n && cudaMemcpy(dev, h, n, cudaMemcpyHostToDevice) != cudaSuccess ? -1 : 0;
    free(h);
    return rc;
}

int tdev_checksum(const void *dev, size_t n, uint64_t *sum_p)
{
    void *h = malloc(n ? n : 1);
    if (!h)
        return -1;
    int rc = n && cudaMemcpy(h, dev, n, cudaMemcpyDeviceToHost) != cudaSuccess ? -1 : 0;
    *sum_p = h_checksum(h, n);
    free(h);
    return rc;
}

/* Host work on the stream: it completes when the sleep does. */
static void CUDART_CB tdev_sleep(void *arg)
{
    unsigned ms = (unsigned)(uintptr_t)arg;
    nanosleep(&(struct timespec){ ms / 1000, (long)(ms % 1000) * 1000000L }, NULL);
}

void *tdev_slow_stream(unsigned ms)
{
    cudaStream_t s;
    if (cudaStreamCreate(&s) != cudaSuccess)
        return NULL;
    if (cudaLaunchHostFunc(s, tdev_sleep, (void *)(uintptr_t)ms) != cudaSuccess) {
        cudaStreamDestroy(s);
        return NULL;
    }
    return s;
}

void tdev_stream_wake(void *stream) { (void)stream; }

void tdev_stream_free(void *stream)
{
    if (stream)
        cudaStreamDestroy((cudaStream_t)stream);
}

int tdev_fail(const char *call, unsigned nth)
{
    (void)call, (void)nth;
    return -1;
}

long tdev_exports(void) { return -1; }

int tdev_waiters(void) { return -1; }

long tdev_registered(void) { return -1; }
