/* SPDX-License-Identifier: MIT */
/* A library built without CUDA has no device: the device cases skip their data part. */
#include <stdio.h>

#include "tdev.h"

const char *tdev_layer(void) { return "none"; }

int tdev_count(char *why, size_t len)
{
    snprintf(why, len, "built without CUDA");
    return 0;
}

void *tdev_alloc(size_t n)
{
    (void)n;
    return NULL;
}

void tdev_free(void *p) { (void)p; }

int tdev_fill(void *dev, size_t n, uint64_t seed)
{
    (void)dev, (void)n, (void)seed;
    return -1;
}

int tdev_checksum(const void *dev, size_t n, uint64_t *sum_p)
{
    (void)dev, (void)n, (void)sum_p;
    return -1;
}

void *tdev_slow_stream(unsigned ms)
{
    (void)ms;
    return NULL;
}

void tdev_stream_wake(void *stream) { (void)stream; }

void tdev_stream_free(void *stream) { (void)stream; }

int tdev_fail(const char *call, unsigned nth)
{
    (void)call, (void)nth;
    return -1;
}

long tdev_exports(void) { return -1; }

int tdev_waiters(void) { return -1; }

long tdev_registered(void) { return -1; }
