/* SPDX-License-Identifier: MIT */
/* The GPU layer of a build without CUDA: there is never a device. */
#include <stdio.h>

#include "../src/internal.h"
#include "gpu.h"

bool sl_gpu_built(void) { return false; }

const char *sl_gpu_layer(void) { return "none"; }

int sl_gpu_available(char *why, size_t len)
{
    snprintf(why, len, "built without CUDA");
    return 0;
}

/* Never reached: the agreement refuses device endpoints before any of these. */
static int sl_gpu_none(void)
{
    return sl_fail(SLUICE_ENOTSUP, "built without CUDA");
}

int sl_gpu_alloc_shared(size_t bytes, void **dev_p, sl_gpu_handle_t *handle_p)
{
    (void)bytes, (void)dev_p, (void)handle_p;
    return sl_gpu_none();
}

int sl_gpu_alloc(size_t bytes, void **dev_p)
{
    (void)bytes, (void)dev_p;
    return sl_gpu_none();
}

void sl_gpu_free(void *dev, size_t bytes) { (void)dev, (void)bytes; }

int sl_gpu_map(const sl_gpu_handle_t *handle, size_t bytes, void **dev_p)
{
    (void)handle, (void)bytes, (void)dev_p;
    return sl_gpu_none();
}

void sl_gpu_unmap(void *dev, size_t bytes) { (void)dev, (void)bytes; }

int sl_gpu_copy(void *dst, const void *src, size_t len)
{
    (void)dst, (void)src, (void)len;
    return sl_gpu_none();
}

int sl_gpu_register(void *p, size_t len)
{
    (void)p, (void)len;
    return sl_gpu_none();
}

void sl_gpu_unregister(void *p) { (void)p; }

int sl_gpu_wait(void *stream)
{
    (void)stream;
    return sl_gpu_none();
}
