/* SPDX-License-Identifier: MIT */
/* Device memory of the emulated GPU layer is host memory: the checks read it directly. The
 * layer's test hooks (gpu/gpu_emu.c) slow its waits, inject failures and count exports. */
#include <stdlib.h>

#include "harness.h"
#include "tdev.h"

const char *tdev_layer(void) { return "emulated"; }

int tdev_count(char *why, size_t len)
{
    (void)why, (void)len;
    return 1;
}

void *tdev_alloc(size_t n) { return malloc(n ? n : 1); }

void tdev_free(void *p) { free(p); }

int tdev_fill(void *dev, size_t n, uint64_t seed)
{
    h_fill(dev, n, seed);
    return 0;
}

int tdev_checksum(const void *dev, size_t n, uint64_t *sum_p)
{
    *sum_p = h_checksum(dev, n);
    return 0;
}

size_t sl_gpu_emu_exports(void);
void sl_gpu_emu_fail(const char *call, unsigned nth);
void sl_gpu_emu_slow_wait(unsigned ms);

/* The emulated wait ignores its stream: the next one sleeps. Any non-NULL token will do. */
void *tdev_slow_stream(unsigned ms)
{
    sl_gpu_emu_slow_wait(ms);
    return (void *)&sl_gpu_emu_slow_wait;
}

void sl_gpu_emu_wake(void);

void tdev_stream_wake(void *stream)
{
    (void)stream;
    sl_gpu_emu_wake();
}

void tdev_stream_free(void *stream) { (void)stream; }

int tdev_fail(const char *call, unsigned nth)
{
    sl_gpu_emu_fail(call, nth);
    return 0;
}

long tdev_exports(void) { return (long)sl_gpu_emu_exports(); }

unsigned sl_gpu_emu_waiters(void);
int tdev_waiters(void) { return (int)sl_gpu_emu_waiters(); }

long sl_gpu_emu_registered(void);
long tdev_registered(void) { return sl_gpu_emu_registered(); }
