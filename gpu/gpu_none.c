/* SPDX-License-Identifier: MIT */
/* The GPU layer of a build without CUDA: there is never a device. */
#include <stdio.h>

#include "gpu.h"

bool sl_gpu_built(void) { return false; }

int sl_gpu_available(char *why, size_t len)
{
    snprintf(why, len, "built without CUDA");
    return 0;
}
