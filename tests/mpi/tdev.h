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

#endif
