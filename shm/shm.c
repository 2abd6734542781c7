/* SPDX-License-Identifier: MIT */
/* Node-local transport: inboxes in POSIX shared-memory segments sluice makes itself; plain loads and stores. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <limits.h>
#include <linux/futex.h>
#include <numa.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../src/inbox.h"
#include "../src/transport.h"

/*
 * Each side creates its own inbox segment (O_EXCL, mode 0600, named after
 * its pid and its handshake nonce), and maps the peer's by the name the
 * handshake told it. The mapper unlinks the peer's name as soon as it has
 * mapped it, and each side unlinks its own at close or on a failed open:
 * once both are mapped nothing is left in /dev/shm, so a kill -9 of either
 * side leaves nothing behind. No MPI call is made: opening and closing need
 * no collective, so a late, slow or dead peer can never hold this side in
 * MPI (docs/design.md, "Opening and closing").
 */
struct sl_link {
    char local_name[SL_SEGMENT_NAME_MAX];
    char peer_name[SL_SEGMENT_NAME_MAX];
    char *local;
    size_t local_bytes;
    char *peer;           /* mapped at connect */
    size_t peer_bytes;
    bool local_linked;    /* our name is still in /dev/shm */
};

static int sl_shm_errno(const char *what, const char *name)
{
    return sl_fail(SLUICE_ESYS, "shm: %s of segment %s failed: %s", what, name, strerror(errno));
}

/* Place `bytes` at `base` on NUMA node `numa` before first touch, where that means anything. */
static void sl_shm_place(void *base, size_t bytes, int numa)
{
    if (numa >= 0 && numa_available() >= 0 && numa_max_node() > 0)
        numa_tonode_memory(base, bytes, numa);
    memset(base, 0, bytes); /* first touch by the reader: pages land on its node */
}

/*
 * Segments a crashed process left behind. A segment stays in /dev/shm
 * unmapped by its peer only while an open waits for that peer, at most the
 * longest open timeout (an hour, options.c); one older than that whose
 * owner (the pid in its name) is gone was left by a process killed inside
 * an open, and nobody else will ever unlink it. Only this user's are
 * looked at. Once per process, at its first shared-memory open.
 */
#define SL_SHM_STALE_S (3600 + 60)

static void sl_shm_sweep(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        long long pid;
        unsigned long long nonce;
        char tail;
        if (sscanf(e->d_name, "sluice.%lld.%16llx%c", &pid, &nonce, &tail) != 2 || pid <= 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(sb.st_mode) || sb.st_uid != geteuid())
            continue;
        /* mtime: set at creation and sizing, later than any open's start. */
        if (now - sb.st_mtime < SL_SHM_STALE_S || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        unlinkat(dirfd(d), e->d_name, 0); /* shm_unlink of "/name" */
    }
    closedir(d);
}

static int sl_shm_open(const sl_link_params_t *p, sl_link_t **link_p, void **local_base_p)
{
    static pthread_once_t swept = PTHREAD_ONCE_INIT;
    pthread_once(&swept, sl_shm_sweep);
    sl_link_t *l = calloc(1, sizeof *l);
    if (!l)
        return sl_fail(SLUICE_ENOMEM, "shm: cannot allocate a link");
    snprintf(l->local_name, sizeof l->local_name, "%s", p->local_name);
    snprintf(l->peer_name, sizeof l->peer_name, "%s", p->peer_name);
    int rc;
    int fd = shm_open(l->local_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        /* The nonce is random: a name that exists was put there on purpose. */
        rc = errno == EEXIST
                 ? sl_fail(SLUICE_ESYS, "shm: segment %s already exists and is not ours; "
                                        "remove it (rm /dev/shm%s) if no process uses it",
                           l->local_name, l->local_name)
                 : sl_shm_errno("creation", l->local_name);
        goto free_link;
    }
    l->local_linked = true;
    /* Reserve the pages now: tmpfs sizes lazily, and a full /dev/shm would
     * otherwise kill us with SIGBUS at first touch instead of failing here. */
    int err = posix_fallocate(fd, 0, (off_t)p->bytes);
    if (err != 0) {
        errno = err;
        rc = sl_fail(SLUICE_ESYS, "shm: cannot reserve %zu bytes for segment %s: %s (is /dev/shm "
                                  "large enough? lower arena_bytes or streams)",
                     p->bytes, l->local_name, strerror(err));
        goto close_fd;
    }
    void *base = mmap(NULL, p->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = sl_shm_errno("mapping", l->local_name);
        goto close_fd;
    }
    close(fd);
    l->local = base;
    l->local_bytes = p->bytes;
    sl_shm_place(l->local, p->bytes, p->numa);
    *link_p = l;
    *local_base_p = l->local;
    return SLUICE_OK;

close_fd:
    close(fd);
    shm_unlink(l->local_name);
free_link:
    free(l);
    return rc;
}

/* Try once to map the peer's segment; SLUICE_EAGAIN while it is not there or not ready. */
static int sl_shm_try_map(sl_link_t *l)
{
    if (!l->peer) {
        int fd = shm_open(l->peer_name, O_RDWR | O_CLOEXEC, 0);
        if (fd < 0)
            return errno == ENOENT ? SLUICE_EAGAIN : sl_shm_errno("opening", l->peer_name);
        struct stat sb;
        int rc = SLUICE_EAGAIN;
        /* Its owner sizes it right after creating it: wait for that. */
        if (fstat(fd, &sb) != 0) {
            rc = sl_shm_errno("fstat", l->peer_name);
        } else if ((size_t)sb.st_size >= sizeof(sl_inbox_header_t)) {
            void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) {
                rc = sl_shm_errno("mapping", l->peer_name);
            } else {
                l->peer = p;
                l->peer_bytes = (size_t)sb.st_size;
                shm_unlink(l->peer_name); /* mapped: the name is no longer needed */
            }
        }
        close(fd);
        if (!l->peer)
            return rc;
    }
    /* Acquire: pairs with the owner's release store of the magic, the last
     * word sl_inbox_init writes. */
    uint64_t magic = atomic_load_explicit((_Atomic uint64_t *)(void *)l->peer, memory_order_acquire);
    return magic == SL_INBOX_MAGIC ? SLUICE_OK : SLUICE_EAGAIN;
}

static int sl_shm_connect(sl_link_t *l, const sl_deadline_t *deadline, size_t *peer_bytes_p)
{
    sl_backoff_t b;
    sl_backoff_init(&b, 64, 1000);
    int rc;
    while ((rc = sl_shm_try_map(l)) == SLUICE_EAGAIN) {
        if (sl_backoff_pause(&b, deadline) == SLUICE_ETIMEDOUT)
            return sl_fail(SLUICE_ETIMEDOUT, "shm: the peer's segment %s did not appear before "
                                             "the deadline",
                           l->peer_name);
    }
    if (rc)
        return rc;
    *peer_bytes_p = l->peer_bytes;
    return SLUICE_OK;
}

/* Purely local: the peer keeps its own mappings for as long as it needs them. */
static int sl_shm_close(sl_link_t *l, const sl_deadline_t *deadline)
{
    (void)deadline;
    if (!l)
        return SLUICE_OK;
    if (l->local_linked)
        shm_unlink(l->local_name); /* ENOENT once the peer mapped it: fine */
    if (l->peer)
        munmap(l->peer, l->peer_bytes);
    munmap(l->local, l->local_bytes);
    free(l);
    return SLUICE_OK;
}

static void sl_shm_hide(sl_link_t *l)
{
    if (l->local_linked)
        shm_unlink(l->local_name); /* ENOENT once the peer mapped it: fine */
    l->local_linked = false;
}

static int sl_shm_put(sl_link_t *l, size_t off, const void *src, size_t len)
{
    memcpy(l->peer + off, src, len);
    return SLUICE_OK;
}

static void *sl_shm_peer_ptr(sl_link_t *l, size_t off) { return l->peer + off; }

static int sl_shm_store64(sl_link_t *l, size_t off, uint64_t value)
{
    /* Release: pairs with the reader's acquire load of this counter. */
    atomic_store_explicit((_Atomic uint64_t *)(void *)(l->peer + off), value,
                          memory_order_release);
    return SLUICE_OK;
}

static int sl_shm_publish(sl_link_t *l, const sl_stamped_t *recs, size_t n)
{
    return sl_publish_in_order(&sl_shm_transport, l, recs, n); /* neither step fails here */
}

static int sl_shm_load64(sl_link_t *l, size_t off, uint64_t *value_p)
{
    /* Acquire: pairs with the owner's release store of its consumer counters. */
    *value_p = atomic_load_explicit((_Atomic uint64_t *)(void *)(l->peer + off),
                                    memory_order_acquire);
    return SLUICE_OK;
}

static int sl_shm_get(sl_link_t *l, size_t off, void *dst, size_t len)
{
    memcpy(dst, l->peer + off, len);
    return SLUICE_OK;
}

/* Same address space for loads: the atomics' orders are all that is needed. */
static int sl_shm_local_sync(sl_link_t *l)
{
    (void)l;
    return SLUICE_OK;
}

/*
 * The doorbell (inbox.h): Dekker's pattern with the sleeper. We stored the
 * ring head, then read `sleeping`; it stored `sleeping`, then reads the
 * heads. The full fences make sure at least one of us sees the other's
 * store: either it sees the record and does not sleep, or we see it asleep
 * and wake it. A process-shared futex: the word is in a shared mapping.
 */
static void sl_shm_wake(sl_link_t *l)
{
    sl_inbox_header_t *peer = (sl_inbox_header_t *)(void *)l->peer;
    sl_full_fence();
    if (!atomic_load_explicit(&peer->sleeping, memory_order_relaxed))
        return;
    atomic_fetch_add_explicit(&peer->doorbell, 1, memory_order_release);
    syscall(SYS_futex, &peer->doorbell, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}
static void sl_shm_progress(sl_link_t *l) { (void)l; }

const sl_transport_ops_t sl_shm_transport = {
    .size = sizeof(sl_transport_ops_t),
    .name = "shm",
    .caps = SL_CAP_PEER_POINTER,
    .open = sl_shm_open,
    .connect = sl_shm_connect,
    .close = sl_shm_close,
    .put = sl_shm_put,
    .peer_ptr = sl_shm_peer_ptr,
    .store64 = sl_shm_store64,
    .publish = sl_shm_publish,
    .load64 = sl_shm_load64,
    .get = sl_shm_get,
    .local_sync = sl_shm_local_sync,
    .progress = sl_shm_progress,
    /* A peer on this host whose process cannot be seen (another pid
     * namespace) is watched by its heartbeat, read straight from memory. */
    .watch64 = sl_shm_load64,
    .wake = sl_shm_wake,
    .hide = sl_shm_hide,
};
