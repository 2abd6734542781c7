/* SPDX-License-Identifier: MIT */
/* Device memory of the emulated GPU layer is host memory: the checks read it directly. */
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
