/* SPDX-License-Identifier: MIT */
/* The GPU layer over the CUDA runtime API (built with SLUICE_CUDA). */
#include <stdio.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "../src/internal.h"
#include "gpu.h"

_Static_assert(sizeof(cudaIpcMemHandle_t) <= SL_GPU_HANDLE_BYTES, "an IPC handle fits the inbox");

bool sl_gpu_built(void) { return true; }

const char *sl_gpu_layer(void) { return "cuda"; }

/* A CUDA call failed: SLUICE_EDEVICE with CUDA's words, and no trace left for
 * the application's own cudaGetLastError to stumble on. */
static int sl_cuda_fail(cudaError_t err, const char *what)
{
    (void)cudaGetLastError();
    return sl_fail(SLUICE_EDEVICE, "%s: %s (%s)", what, cudaGetErrorString(err),
                   cudaGetErrorName(err));
}

int sl_gpu_available(char *why, size_t len)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        snprintf(why, len, "no CUDA device: %s (%s)", cudaGetErrorString(err),
                 cudaGetErrorName(err));
        (void)cudaGetLastError();
        return 0;
    }
    if (n <= 0) {
        snprintf(why, len, "no CUDA device: cudaGetDeviceCount found none");
        return 0;
    }
    return n;
}

int sl_gpu_alloc(size_t bytes, void **dev_p)
{
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);
    if (err != cudaSuccess)
        return sl_cuda_fail(err, "cudaMalloc");
    *dev_p = p;
    return SLUICE_OK;
}

int sl_gpu_alloc_shared(size_t bytes, void **dev_p, sl_gpu_handle_t *handle_p)
{
    void *p = NULL;
    int rc = sl_gpu_alloc(bytes, &p);
    if (rc)
        return rc;
    cudaIpcMemHandle_t h;
    cudaError_t err = cudaIpcGetMemHandle(&h, p);
    if (err != cudaSuccess) {
        rc = sl_cuda_fail(err, "cudaIpcGetMemHandle");
        cudaFree(p);
        return rc;
    }
    memset(handle_p, 0, sizeof *handle_p);
    memcpy(handle_p->bytes, &h, sizeof h);
    *dev_p = p;
    return SLUICE_OK;
}

void sl_gpu_free(void *dev, size_t bytes)
{
    (void)bytes;
    if (!dev)
        return;
    /* The free may run on another thread than the allocation did (the reap
     * list, src/reap.h), whose current device may differ: it runs on the
     * allocation's own device, so that no context is made on another. */
    struct cudaPointerAttributes a;
    int current = -1;
    bool moved = cudaPointerGetAttributes(&a, dev) == cudaSuccess &&
                 cudaGetDevice(&current) == cudaSuccess && a.device != current &&
                 cudaSetDevice(a.device) == cudaSuccess;
    if (cudaFree(dev) != cudaSuccess)
        (void)cudaGetLastError();
    if (moved && cudaSetDevice(current) != cudaSuccess)
        (void)cudaGetLastError();
    (void)cudaGetLastError(); /* a failed attribute query leaves nothing behind */
}

int sl_gpu_map(const sl_gpu_handle_t *handle, size_t bytes, void **dev_p)
{
    (void)bytes; /* the handle names the whole allocation */
    cudaIpcMemHandle_t h;
    memcpy(&h, handle->bytes, sizeof h);
    void *p = NULL;
    cudaError_t err = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
    if (err != cudaSuccess)
        return sl_cuda_fail(err, "cudaIpcOpenMemHandle");
    *dev_p = p;
    return SLUICE_OK;
}

void sl_gpu_unmap(void *dev, size_t bytes)
{
    (void)bytes;
    if (dev && cudaIpcCloseMemHandle(dev) != cudaSuccess)
        (void)cudaGetLastError();
}

int sl_gpu_copy(void *dst, const void *src, size_t len)
{
    if (!len)
        return SLUICE_OK;
    /* cudaMemcpy may return before a device-to-device copy, or one from
     * pageable host memory, has landed: the legacy default stream it ran on
     * is waited for too. */
    cudaError_t err = cudaMemcpy(dst, src, len, cudaMemcpyDefault);
    if (err != cudaSuccess)
        return sl_cuda_fail(err, "cudaMemcpy");
    err = cudaStreamSynchronize(0);
    return err == cudaSuccess ? SLUICE_OK : sl_cuda_fail(err, "cudaStreamSynchronize");
}

int sl_gpu_register(void *p, size_t len)
{
    /* Portable: the pages are pinned for every context of this process. */
    cudaError_t err = cudaHostRegister(p, len ? len : 1, cudaHostRegisterPortable);
    return err == cudaSuccess ? SLUICE_OK : sl_cuda_fail(err, "cudaHostRegister");
}

void sl_gpu_unregister(void *p)
{
    if (p && cudaHostUnregister(p) != cudaSuccess)
        (void)cudaGetLastError();
}

int sl_gpu_wait(void *stream)
{
    cudaError_t err = stream ? cudaStreamSynchronize((cudaStream_t)stream) : cudaDeviceSynchronize();
    return err == cudaSuccess ? SLUICE_OK
                              : sl_cuda_fail(err, stream ? "cudaStreamSynchronize"
                                                         : "cudaDeviceSynchronize");
}
