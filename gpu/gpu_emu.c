/* SPDX-License-Identifier: MIT */
/*
 * The emulated GPU layer, for the tests of the core's device data paths on
 * machines without a GPU (docs/gpu.md, "Testing without a GPU"). One
 * "device" whose memory is host memory: an exported allocation is a POSIX
 * shared-memory segment and its handle the segment's name, a copy is
 * memcpy, a wait returns at once. It is linked only into the test build of
 * the core (sluice_core_devemu), never into libsluice.
 *
 * CUDA leaves freeing memory that another process still maps undefined; a
 * real mapping would not tell. Here the segment counts its mappings, and
 * freeing it while one is left aborts the process: a test oracle for the
 * core's unmap-before-free order (docs/gpu.md, "Lifetime").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/internal.h"
#include "gpu.h"

bool sl_gpu_built(void) { return true; }

const char *sl_gpu_layer(void) { return "emulated"; }

int sl_gpu_available(char *why, size_t len)
{
    (void)why, (void)len;
    return 1;
}

/* The name of an exported allocation, kept in the handle so that free can unlink it. */
static void sl_emu_name(char *out, size_t len)
{
    static _Atomic unsigned next;
    snprintf(out, len, "/sluice-devemu.%ld.%u", (long)getpid(), atomic_fetch_add(&next, 1));
}

static _Atomic uint64_t *sl_emu_maps(void *base, size_t span)
{
    return (_Atomic uint64_t *)(void *)((char *)base + span - 2 * SL_GPU_HANDLE_BYTES);
}

static int sl_emu_mmap(int fd, size_t bytes, void **p_p)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return sl_fail(SLUICE_ESYS, "emulated device: mmap of %zu bytes: %s", bytes,
                       strerror(errno));
    *p_p = p;
    return SLUICE_OK;
}

/* The last page of a segment: its mapping count, then its name in the last 64 bytes. */
static size_t sl_emu_span(size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    return ((bytes ? bytes : 1) + (size_t)page - 1) / (size_t)page * (size_t)page + (size_t)page;
}

int sl_gpu_alloc_shared(size_t bytes, void **dev_p, sl_gpu_handle_t *handle_p)
{
    sl_gpu_handle_t h = { { 0 } };
    sl_emu_name((char *)h.bytes, sizeof h.bytes);
    int fd = shm_open((char *)h.bytes, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return sl_fail(SLUICE_ESYS, "emulated device: shm_open %s: %s", (char *)h.bytes,
                       strerror(errno));
    size_t span = sl_emu_span(bytes);
    void *p = NULL;
    int rc = ftruncate(fd, (off_t)span) ? sl_fail(SLUICE_ESYS, "emulated device: ftruncate: %s",
                                                  strerror(errno))
                                        : sl_emu_mmap(fd, span, &p);
    close(fd);
    if (rc) {
        shm_unlink((char *)h.bytes);
        return rc;
    }
    memcpy((char *)p + span - sizeof h.bytes, h.bytes, sizeof h.bytes);
    *handle_p = h;
    *dev_p = p;
    return SLUICE_OK;
}

int sl_gpu_alloc(size_t bytes, void **dev_p)
{
    void *p = mmap(NULL, sl_emu_span(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return sl_fail(SLUICE_ENOMEM, "emulated device: %zu bytes: %s", bytes, strerror(errno));
    *dev_p = p;
    return SLUICE_OK;
}

void sl_gpu_free(void *dev, size_t bytes)
{
    if (!dev)
        return;
    size_t span = sl_emu_span(bytes);
    const char *name = (const char *)dev + span - SL_GPU_HANDLE_BYTES;
    if (name[0] == '/' && strncmp(name, "/sluice-devemu.", 15) == 0) {
        uint64_t maps = atomic_load(sl_emu_maps(dev, span));
        if (maps) {
            fprintf(stderr, "emulated device: %s freed while %llu other process(es) map it\n",
                    name, (unsigned long long)maps);
            abort();
        }
        shm_unlink(name);
    }
    munmap(dev, span);
}

int sl_gpu_map(const sl_gpu_handle_t *handle, size_t bytes, void **dev_p)
{
    char name[SL_GPU_HANDLE_BYTES + 1];
    memcpy(name, handle->bytes, SL_GPU_HANDLE_BYTES);
    name[SL_GPU_HANDLE_BYTES] = '\0';
    if (strncmp(name, "/sluice-devemu.", 15) != 0)
        return sl_fail(SLUICE_EDEVICE, "emulated device: handle names no emulated allocation");
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0)
        return sl_fail(SLUICE_EDEVICE, "emulated device: cannot open %s: %s", name,
                       strerror(errno));
    struct stat sb;
    size_t span = sl_emu_span(bytes);
    int rc = fstat(fd, &sb) || (size_t)sb.st_size != span
                 ? sl_fail(SLUICE_EDEVICE, "emulated device: %s is not %zu bytes long", name, span)
                 : sl_emu_mmap(fd, span, dev_p);
    close(fd);
    if (rc == SLUICE_OK)
        atomic_fetch_add(sl_emu_maps(*dev_p, span), 1);
    return rc;
}

void sl_gpu_unmap(void *dev, size_t bytes)
{
    if (!dev)
        return;
    size_t span = sl_emu_span(bytes);
    atomic_fetch_sub(sl_emu_maps(dev, span), 1);
    munmap(dev, span);
}

int sl_gpu_copy(void *dst, const void *src, size_t len)
{
    if (len)
        memmove(dst, src, len);
    return SLUICE_OK;
}

int sl_gpu_wait(void *stream)
{
    (void)stream;
    return SLUICE_OK;
}
