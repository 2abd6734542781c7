/* SPDX-License-Identifier: MIT */
/*
 * How the device cases reach device memory: through the same layer the
 * library under test was built with (tdev_cuda.c: the CUDA runtime;
 * tdev_emu.c: host memory, for the library built over the emulated GPU
 * layer; tdev_none.c: nothing). Each call returns 0 on success.
 */
#ifndef SL_TEST_TDEV_H
#define SL_TEST_TDEV_H

#include <stddef.h>
#include <stdint.h>

/* "cuda", "emulated" or "none": the layer the case runs over. */
const char *tdev_layer(void);
/* Devices this process can use; 0 with the reason in `why`. */
int tdev_count(char *why, size_t len);
void *tdev_alloc(size_t n);
void tdev_free(void *p);
/* Write h_fill's pattern of `seed` into `n` bytes of device memory. */
int tdev_fill(void *dev, size_t n, uint64_t seed);
/* h_checksum of `n` bytes of device memory. */
int tdev_checksum(const void *dev, size_t n, uint64_t *sum_p);

/*
 * A stream (cudaStream_t) whose queued work completes `ms` after this call,
 * to stand for a slow kernel; tdev_stream_free when done. NULL where the
 * layer cannot (none). tdev_stream_wake ends the work early where the layer
 * can (emulated: the library's wait for it returns); elsewhere it runs on.
 */
void *tdev_slow_stream(unsigned ms);
void tdev_stream_wake(void *stream);
void tdev_stream_free(void *stream);
/* Threads of this process inside the library's wait for a slow stream; -1 where the layer
 * cannot tell (cuda, none). */
int tdev_waiters(void);

/* Make the `nth` next call of the library's device layer named `call` ("alloc", "map", "copy",
 * "register", "wait") fail. -1 where the layer cannot inject failures (only the emulated one can). */
int tdev_fail(const char *call, unsigned nth);

/* The library's exported device arenas not freed yet; -1 where the layer cannot tell. */
long tdev_exports(void);
/* Host ranges the library registered with the device and has not unregistered; -1 likewise. */
long tdev_registered(void);

#endif
