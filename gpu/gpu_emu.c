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
 * real mapping would not tell. Here the segment records the pid of each
 * process that maps it, and freeing it while a live one is left aborts the
 * process: a test oracle for the core's unmap-before-free order (docs/gpu.md,
 * "Lifetime"). A mapper that died is no longer counted, as the driver would
 * drop its mapping. The mapper unlinks the segment's name once it has it
 * mapped, so a kept (never freed) arena leaves nothing in /dev/shm.
 *
 * For the tests only, sl_gpu_emu_* (exported by the test library) inject
 * failures and slow waits and count the live exports.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../src/internal.h"
#include "../src/liveness.h"
#include "gpu.h"

/* The test hooks (declared where the tests use them, tests/mpi/tdev_emu.c). */
size_t sl_gpu_emu_exports(void);
void sl_gpu_emu_fail(const char *call, unsigned nth);
void sl_gpu_emu_slow_wait(unsigned ms);
unsigned sl_gpu_emu_waiters(void);
void sl_gpu_emu_wake(void);
long sl_gpu_emu_registered(void);

static _Atomic size_t sl_emu_exports;   /* exported allocations not freed */
static _Atomic unsigned sl_emu_wait_ms; /* the next wait sleeps this long */
static _Atomic unsigned sl_emu_waiters; /* threads in such a sleep */
static _Atomic bool sl_emu_woken;       /* ends such a sleep early */
static _Atomic long sl_emu_registered;  /* host ranges registered and not unregistered */
static const char *_Atomic sl_emu_fail_call;
static _Atomic unsigned sl_emu_fail_nth;

size_t sl_gpu_emu_exports(void) { return atomic_load(&sl_emu_exports); }

/* The `nth` next call (1: the next) of `call` ("alloc", "map", "copy", "register", "wait") fails. */
void sl_gpu_emu_fail(const char *call, unsigned nth)
{
    atomic_store(&sl_emu_fail_nth, nth);
    atomic_store(&sl_emu_fail_call, call);
}

void sl_gpu_emu_slow_wait(unsigned ms)
{
    atomic_store(&sl_emu_woken, false);
    atomic_store(&sl_emu_wait_ms, ms);
}

unsigned sl_gpu_emu_waiters(void) { return atomic_load(&sl_emu_waiters); }

/* The slow wait under way (or the next one) ends now. */
void sl_gpu_emu_wake(void) { atomic_store(&sl_emu_woken, true); }

long sl_gpu_emu_registered(void) { return atomic_load(&sl_emu_registered); }

/* Whether this call of `call` is the one sl_gpu_emu_fail asked to fail. */
static int sl_emu_injected(const char *call)
{
    const char *c = atomic_load(&sl_emu_fail_call);
    if (!c || strcmp(c, call) != 0 || atomic_fetch_sub(&sl_emu_fail_nth, 1) != 1)
        return SLUICE_OK;
    atomic_store(&sl_emu_fail_call, NULL);
    return sl_fail(SLUICE_EDEVICE, "emulated device: %s: injected failure", call);
}

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

/* The mappers' pids, at the start of a segment's last page; 0: a free slot. */
enum { SL_EMU_MAPPERS = 16 };
static _Atomic int64_t *sl_emu_mappers(void *base, size_t span)
{
    return (_Atomic int64_t *)(void *)((char *)base + span - (size_t)sysconf(_SC_PAGESIZE));
}

/* As the library judges it (liveness.h): a zombie maps nothing any more. */
static bool sl_emu_pid_alive(int64_t pid) { return sl_proc_start_time((pid_t)pid) != 0; }

static int sl_emu_mmap(int fd, size_t bytes, void **p_p)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return sl_fail(SLUICE_ESYS, "emulated device: mmap of %zu bytes: %s", bytes,
                       strerror(errno));
    *p_p = p;
    return SLUICE_OK;
}

/* The last page of a segment: its mappers' pids, then its name in the last 64 bytes. */
static size_t sl_emu_span(size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    return ((bytes ? bytes : 1) + (size_t)page - 1) / (size_t)page * (size_t)page + (size_t)page;
}

int sl_gpu_alloc_shared(size_t bytes, void **dev_p, sl_gpu_handle_t *handle_p)
{
    int rc = sl_emu_injected("alloc");
    if (rc)
        return rc;
    sl_gpu_handle_t h = { { 0 } };
    sl_emu_name((char *)h.bytes, sizeof h.bytes);
    int fd = shm_open((char *)h.bytes, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return sl_fail(SLUICE_ESYS, "emulated device: shm_open %s: %s", (char *)h.bytes,
                       strerror(errno));
    size_t span = sl_emu_span(bytes);
    void *p = NULL;
    rc = ftruncate(fd, (off_t)span) ? sl_fail(SLUICE_ESYS, "emulated device: ftruncate: %s",
                                                  strerror(errno))
                                        : sl_emu_mmap(fd, span, &p);
    close(fd);
    if (rc) {
        shm_unlink((char *)h.bytes);
        return rc;
    }
    memcpy((char *)p + span - sizeof h.bytes, h.bytes, sizeof h.bytes);
    atomic_fetch_add(&sl_emu_exports, 1);
    *handle_p = h;
    *dev_p = p;
    return SLUICE_OK;
}

int sl_gpu_alloc(size_t bytes, void **dev_p)
{
    int rc = sl_emu_injected("alloc");
    if (rc)
        return rc;
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
        for (int i = 0; i < SL_EMU_MAPPERS; i++) {
            int64_t pid = atomic_load(&sl_emu_mappers(dev, span)[i]);
            if (pid && sl_emu_pid_alive(pid)) {
                fprintf(stderr, "emulated device: %s freed while process %lld maps it\n", name,
                        (long long)pid);
                abort();
            }
        }
        shm_unlink(name); /* ENOENT once a mapper unlinked it: fine */
        atomic_fetch_sub(&sl_emu_exports, 1);
    }
    munmap(dev, span);
}

int sl_gpu_map(const sl_gpu_handle_t *handle, size_t bytes, void **dev_p)
{
    int rc = sl_emu_injected("map");
    if (rc)
        return rc;
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
    rc = fstat(fd, &sb) || (size_t)sb.st_size != span
             ? sl_fail(SLUICE_EDEVICE, "emulated device: %s is not %zu bytes long", name, span)
             : sl_emu_mmap(fd, span, dev_p);
    close(fd);
    if (rc)
        return rc;
    _Atomic int64_t *mappers = sl_emu_mappers(*dev_p, span);
    int i = 0;
    for (int64_t free_slot = 0; i < SL_EMU_MAPPERS; i++, free_slot = 0)
        if (atomic_compare_exchange_strong(&mappers[i], &free_slot, (int64_t)getpid()))
            break;
    if (i == SL_EMU_MAPPERS) {
        munmap(*dev_p, span);
        return sl_fail(SLUICE_EDEVICE, "emulated device: %s: more than %d mappers", name,
                       SL_EMU_MAPPERS);
    }
    shm_unlink(name);
    return SLUICE_OK;
}

void sl_gpu_unmap(void *dev, size_t bytes)
{
    if (!dev)
        return;
    size_t span = sl_emu_span(bytes);
    _Atomic int64_t *mappers = sl_emu_mappers(dev, span);
    for (int i = 0; i < SL_EMU_MAPPERS; i++) {
        int64_t me = (int64_t)getpid();
        if (atomic_compare_exchange_strong(&mappers[i], &me, 0))
            break;
    }
    munmap(dev, span);
}

int sl_gpu_copy(void *dst, const void *src, size_t len)
{
    int rc = sl_emu_injected("copy");
    if (rc)
        return rc;
    if (len)
        memmove(dst, src, len);
    return SLUICE_OK;
}

/* Host memory needs no pinning here: registrations are only counted, for the tests. */
int sl_gpu_register(void *p, size_t len)
{
    (void)p, (void)len;
    int rc = sl_emu_injected("register");
    if (rc == SLUICE_OK)
        atomic_fetch_add(&sl_emu_registered, 1);
    return rc;
}

void sl_gpu_unregister(void *p)
{
    if (p)
        atomic_fetch_sub(&sl_emu_registered, 1);
}

int sl_gpu_wait(void *stream)
{
    (void)stream;
    unsigned ms = atomic_exchange(&sl_emu_wait_ms, 0);
    if (ms) {
        atomic_fetch_add(&sl_emu_waiters, 1);
        for (unsigned i = 0; i < ms && !atomic_exchange(&sl_emu_woken, false); i++)
            nanosleep(&(struct timespec){ 0, 1000000L }, NULL);
        atomic_fetch_sub(&sl_emu_waiters, 1);
    }
    return sl_emu_injected("wait");
}
