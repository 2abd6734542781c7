/* SPDX-License-Identifier: MIT */
/* The GPU layer: what this process can do with CUDA device memory (docs/design.md, "Device memory"). */
#ifndef SL_GPU_H
#define SL_GPU_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Two implementations, one chosen at build time: gpu_cuda.c (SLUICE_CUDA
 * on, the CUDA runtime API) and gpu_none.c (without CUDA). Only the core
 * calls them, and only for channels that declare a device endpoint, so a
 * host-only channel never initialises CUDA.
 */

/* Whether this build has CUDA. */
bool sl_gpu_built(void);

/*
 * How many CUDA devices this process sees (cudaGetDeviceCount). When it
 * sees none, returns 0 with the reason in `why` (at most `len` bytes, NUL
 * terminated): "built without CUDA", or "no CUDA device: " and the CUDA
 * runtime's own words (cudaGetErrorString). `why` is left alone when it
 * returns more than 0. The first call initialises the CUDA runtime, which
 * may take a while where there is a driver; it never blocks otherwise.
 * Any thread.
 */
int sl_gpu_available(char *why, size_t len);

#endif
