/* SPDX-License-Identifier: MIT */
/* The GPU layer over the CUDA runtime API (built with SLUICE_CUDA). */
#include <stdio.h>

#include <cuda_runtime_api.h>

#include "gpu.h"

bool sl_gpu_built(void) { return true; }

int sl_gpu_available(char *why, size_t len)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        snprintf(why, len, "no CUDA device: %s (%s)", cudaGetErrorString(err),
                 cudaGetErrorName(err));
        /* The runtime keeps the error for cudaGetLastError: leave no trace
         * for the application's own error checks to stumble on. */
        (void)cudaGetLastError();
        return 0;
    }
    if (n <= 0) {
        snprintf(why, len, "no CUDA device: cudaGetDeviceCount found none");
        return 0;
    }
    return n;
}
