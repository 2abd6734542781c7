/* SPDX-License-Identifier: MIT */
/* The GPU layer: what this process can do with CUDA device memory (docs/gpu.md). */
#ifndef SL_GPU_H
#define SL_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Three implementations, one chosen at build time: gpu_cuda.c (SLUICE_CUDA
 * on, the CUDA runtime API), gpu_none.c (without CUDA: there is never a
 * device) and gpu_emu.c (tests only: "device memory" is host shared memory,
 * so the core's device data paths run on machines without a GPU; never in
 * the installed library). Only the core calls them, and only for channels
 * that declare a device endpoint, so a host-only channel never initialises
 * CUDA.
 *
 * Every call that fails returns SLUICE_EDEVICE (or SLUICE_ENOMEM, SLUICE_ESYS)
 * with the device runtime's own words in sluice_last_error. Any thread.
 */

/* What an exported allocation travels as: an IPC memory handle (64 bytes in CUDA). */
#define SL_GPU_HANDLE_BYTES 64
typedef struct sl_gpu_handle {
    uint8_t bytes[SL_GPU_HANDLE_BYTES];
} sl_gpu_handle_t;

/* Whether this build has a device layer at all (CUDA or the emulation). */
bool sl_gpu_built(void);

/* The layer's name, for reasons and tools: "cuda", "none" or "emulated". */
const char *sl_gpu_layer(void);

/*
 * How many devices this process sees (cudaGetDeviceCount). When it sees
 * none, returns 0 with the reason in `why` (at most `len` bytes, NUL
 * terminated): "built without CUDA", or "no CUDA device: " and the CUDA
 * runtime's own words (cudaGetErrorString). `why` is left alone when it
 * returns more than 0. The first call initialises the CUDA runtime, which
 * may take a while where there is a driver; it never blocks otherwise.
 */
int sl_gpu_available(char *why, size_t len);

/*
 * Allocate `bytes` of device memory on the calling thread's current device
 * and export it for other processes of this node (cudaIpcGetMemHandle).
 * sl_gpu_free releases it (the handle becomes useless to later openers).
 */
int sl_gpu_alloc_shared(size_t bytes, void **dev_p, sl_gpu_handle_t *handle_p);

/* Allocate `bytes` of device memory for this process alone. */
int sl_gpu_alloc(size_t bytes, void **dev_p);

/* Free what sl_gpu_alloc or sl_gpu_alloc_shared returned (`bytes` as allocated); NULL: nothing. */
void sl_gpu_free(void *dev, size_t bytes);

/* Map another process's export of `bytes` (cudaIpcOpenMemHandle); sl_gpu_unmap undoes it. */
int sl_gpu_map(const sl_gpu_handle_t *handle, size_t bytes, void **dev_p);
void sl_gpu_unmap(void *dev, size_t bytes);

/*
 * Copy `len` bytes between any two of host memory, this process's device
 * memory and mapped device memory (cudaMemcpy with cudaMemcpyDefault: the
 * direction comes from the pointers). Returns once the copy is complete.
 */
int sl_gpu_copy(void *dst, const void *src, size_t len);

/*
 * Page-lock `len` bytes of host memory at `p` for the device
 * (cudaHostRegister): copies between it and device memory then run by DMA
 * at full speed, with no bounce buffer. Used on the staged path for the
 * windows device products cross (docs/gpu.md, "Pinned windows"). A failure
 * is not fatal to the caller: copies still work, slower.
 * sl_gpu_unregister undoes it, before the memory is unmapped.
 */
int sl_gpu_register(void *p, size_t len);
void sl_gpu_unregister(void *p);

/*
 * Wait until the work queued on `stream` (a cudaStream_t) is complete; NULL
 * waits for all of this process's work on the current device.
 */
int sl_gpu_wait(void *stream);

#endif
