/* SPDX-License-Identifier: MIT */
/* The status page's writer side: making the page, handing out channel slots, recording errors. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backoff.h"
#include "liveness.h"
#include "monitor.h"

/*
 * Process-wide: the page is one per process, whatever the number of
 * contexts. `lock` covers the fields below and slot claims and releases;
 * nothing on a channel's data path takes it.
 */
static struct {
    pthread_mutex_t lock;
    int contexts;             /* live contexts: the page's name lives while > 0 */
    int slots;                /* slots of the page in use: its mapping lives while > 0 */
    _Atomic(sl_mon_page_t *) page; /* NULL: none (off, failed, or no context) */
    bool linked;              /* the page still has its name */
    pid_t owner;              /* the process that made it (a forked child is not) */
    char path[256];
    dev_t dev;                /* the file made, so that only it is ever unlinked */
    ino_t ino;
    bool exit_hook;
} sl_mon = { .lock = PTHREAD_MUTEX_INITIALIZER };

static sl_mon_page_t *sl_mon_page(void)
{
    return atomic_load_explicit(&sl_mon.page, memory_order_relaxed);
}

const char *sluice_monitor_dir(void)
{
    const char *d = getenv("SLUICE_MONITOR_DIR");
    return d && *d ? d : "/dev/shm";
}

static void sl_copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/*
 * Unlink `name` (in the folder `dir`, AT_FDCWD for a path) only if it
 * still is the file (dev, ino) that was judged: a page replaced under the
 * same name between the judgement and here is left alone. What remains is
 * the window between this lstat and the unlink, which no unlink closes.
 */
static bool sl_mon_unlink_if(int dir, const char *name, dev_t dev, ino_t ino)
{
    struct stat now;
    if (fstatat(dir, name, &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_dev != dev ||
        now.st_ino != ino)
        return false;
    return unlinkat(dir, name, 0) == 0;
}

/* This process's own page: its name, if it still names the file it made. The lock is held. */
static void sl_mon_unlink_own(void)
{
    if (sl_mon.owner == getpid())
        sl_mon_unlink_if(AT_FDCWD, sl_mon.path, sl_mon.dev, sl_mon.ino);
    sl_mon.linked = false;
}

/*
 * Whether the page open on `fd` is provably stale: a regular file of this
 * user, a page of this layout whose header is complete, made in this
 * process's PID namespace on this boot (sl_mon_same_ident), and whose
 * process (pid and start time) no longer runs. `pid` > 0 and `start` != 0
 * ask for that very process too. Anything less proven is live, or not
 * ours to judge. *st_p: the file's fstat, for sl_mon_unlink_if.
 */
static bool sl_mon_stale(int fd, const sl_mon_ident_t *self, int64_t pid, uint64_t start,
                         struct stat *st_p)
{
    /* The header's fields one by one, not the page (300 KiB) on the stack. */
#define SL_MON_PREAD(var, field)                                                                   \
    (pread(fd, &(var), sizeof(var), offsetof(sl_mon_page_t, field)) == (ssize_t)sizeof(var))
    uint64_t magic;
    uint32_t version, header_bytes;
    int64_t h_pid;
    uint64_t h_start;
    sl_mon_ident_t h_ident;
    if (fstat(fd, st_p) != 0 || !S_ISREG(st_p->st_mode) || st_p->st_uid != geteuid() ||
        (size_t)st_p->st_size < sizeof(sl_mon_page_t) || !SL_MON_PREAD(magic, magic) ||
        !SL_MON_PREAD(version, version) || !SL_MON_PREAD(header_bytes, header_bytes))
        return false;
    /* A page being made has no magic yet: live. Another layout version: not
     * ours to judge (its header may not name a namespace). */
    if (magic != SL_MON_MAGIC || version != SL_MON_VERSION ||
        header_bytes != offsetof(sl_mon_page_t, slot) || !SL_MON_PREAD(h_pid, pid) ||
        !SL_MON_PREAD(h_start, start_time) || !SL_MON_PREAD(h_ident, ident))
        return false;
#undef SL_MON_PREAD
    h_ident.boot_id[sizeof h_ident.boot_id - 1] = '\0';
    if (!sl_mon_same_ident(&h_ident, self) || h_pid <= 0 || (pid > 0 && h_pid != pid) ||
        (start != 0 && h_start != start))
        return false;
    return !sl_proc_alive(h_pid, h_start);
}

/*
 * Remove the name when the last context goes, and the mapping once no
 * channel uses a slot of it either (a channel left open past its context,
 * which sluice.h forbids, keeps counting into memory nobody reads rather
 * than into unmapped memory). The lock is held.
 */
static void sl_mon_retire(void)
{
    sl_mon_page_t *p = sl_mon_page();
    if (!p)
        return;
    if (sl_mon.contexts == 0 && sl_mon.linked)
        sl_mon_unlink_own();
    if (!sl_mon.linked && sl_mon.slots == 0) {
        atomic_store_explicit(&sl_mon.page, NULL, memory_order_relaxed);
        munmap(p, sizeof *p);
    }
}

/*
 * At exit: a process that never destroys its context leaves no page. The
 * mapping goes with the process; only the name is removed here.
 */
static void sl_mon_at_exit(void)
{
    if (pthread_mutex_trylock(&sl_mon.lock) != 0)
        return; /* another thread is inside: it cannot finish, leave the page */
    if (sl_mon.linked && sl_mon.owner == getpid())
        sl_mon_unlink_own();
    pthread_mutex_unlock(&sl_mon.lock);
}

/*
 * Pages that processes killed without a chance to unlink them left behind
 * (kill -9, or a launcher's SIGTERM): this user's pages that are provably
 * stale (sl_mon_stale: of this PID namespace and boot, their process gone,
 * a reused pid included). Pages of other containers or hosts sharing the
 * folder are never judged. Once per process, when its page is made. The
 * lock is held.
 */
static void sl_mon_sweep(const char *dir, const sl_mon_ident_t *self)
{
    static bool swept;
    if (swept)
        return;
    swept = true;
    DIR *d = opendir(dir);
    if (!d)
        return;
    char mine[64];
    snprintf(mine, sizeof mine, "%s%u-", SLUICE_MONITOR_PREFIX, (unsigned)geteuid());
    size_t n = strlen(mine);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, mine, n) != 0)
            continue;
        /* O_NONBLOCK: a fifo planted under a page's name does not hang the open. */
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue;
        struct stat st;
        if (sl_mon_stale(fd, self, 0, 0, &st))
            sl_mon_unlink_if(dirfd(d), e->d_name, st.st_dev, st.st_ino);
        close(fd);
    }
    closedir(d);
}

void sl_mon_forget(int64_t pid, uint64_t start)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s%u-%lld", sluice_monitor_dir(), SLUICE_MONITOR_PREFIX,
             (unsigned)geteuid(), (long long)pid);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return;
    /* Only that very process's page, of this namespace and boot, and gone
     * here too: a peer judged dead by its heartbeat may have run on another
     * node or in another container, where a page of that pid is another's. */
    sl_mon_ident_t self;
    sl_mon_identity(&self);
    struct stat st;
    if (sl_mon_stale(fd, &self, pid, start, &st))
        sl_mon_unlink_if(AT_FDCWD, path, st.st_dev, st.st_ino);
    close(fd);
}

static void sl_mon_job(sl_mon_page_t *p)
{
    sl_copy(p->job, sizeof p->job, getenv("SLURM_JOB_ID"));
    const char *j = getenv("PMIX_NAMESPACE");
    if (!j)
        j = getenv("OMPI_MCA_ess_base_jobid");
    sl_copy(p->mpi_job, sizeof p->mpi_job, j);
    p->rank = -1;
    p->world_size = 0;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) {
        MPI_Comm_rank(MPI_COMM_WORLD, &p->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &p->world_size);
    }
    gethostname(p->host, sizeof p->host - 1);
}

/*
 * Open a new page file, O_EXCL. Its plain name holds this pid; a file there
 * is replaced only when it is provably stale (sl_mon_stale), else the page
 * takes a name with a suffix (a live page of the same pid in another PID
 * namespace, or a file that is not a page, stays). -1 and errno if none.
 */
static int sl_mon_open_new(const char *dir, const sl_mon_ident_t *self)
{
    int n = snprintf(sl_mon.path, sizeof sl_mon.path, "%s/%s%u-%d", dir, SLUICE_MONITOR_PREFIX,
                     (unsigned)geteuid(), (int)getpid());
    const int flags = O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
    int fd = open(sl_mon.path, flags, 0600);
    if (fd >= 0 || errno != EEXIST)
        return fd;
    int old = open(sl_mon.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (old >= 0) {
        struct stat st;
        bool replaced = sl_mon_stale(old, self, getpid(), 0, &st) &&
                        sl_mon_unlink_if(AT_FDCWD, sl_mon.path, st.st_dev, st.st_ino);
        close(old);
        if (replaced && (fd = open(sl_mon.path, flags, 0600)) >= 0)
            return fd;
    }
    /* Not ours to remove: another name. The suffix need not be secret,
     * O_EXCL keeps it from clobbering anything; a few tries. */
    uint64_t r = sl_now_ns() ^ ((uint64_t)getpid() << 32);
    for (int attempt = 0; attempt < 4 && n > 0 && (size_t)n < sizeof sl_mon.path; attempt++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        snprintf(sl_mon.path + n, sizeof sl_mon.path - (size_t)n, ".%08x", (unsigned)(r >> 32));
        fd = open(sl_mon.path, flags, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

/* Make the page; the lock is held. On failure, why (for SLUICE_MONITOR=1). */
static int sl_mon_create(const char *name, char *why, size_t why_len)
{
    sl_mon_ident_t self;
    sl_mon_identity(&self);
    sl_mon_sweep(sluice_monitor_dir(), &self);
    int fd = sl_mon_open_new(sluice_monitor_dir(), &self);
    if (fd < 0) {
        snprintf(why, why_len, "open %s: %s", sl_mon.path, strerror(errno));
        return -1;
    }
    /* Reserve the memory now: tmpfs sizes lazily, and a full /dev/shm would
     * otherwise kill this process with SIGBUS at the first write of a slot
     * (as shm/shm.c does for its segments). Failing here means no page. */
    const char *step = "posix_fallocate";
    void *mem = MAP_FAILED;
    struct stat st;
    int err = posix_fallocate(fd, 0, (off_t)sizeof(sl_mon_page_t));
    if (err == 0) {
        step = "fstat";
        if (fstat(fd, &st) != 0) {
            err = errno;
        } else {
            step = "mmap";
            mem = mmap(NULL, sizeof(sl_mon_page_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            err = errno;
        }
    }
    close(fd);
    if (mem == MAP_FAILED) {
        unlink(sl_mon.path); /* made by this open, O_EXCL: ours */
        snprintf(why, why_len, "%s %s: %s", step, sl_mon.path, strerror(err));
        return -1;
    }
    /* A fresh file reads as zeros: every slot is free, every counter 0. */
    sl_mon_page_t *p = mem;
    p->version = SL_MON_VERSION;
    p->header_bytes = (uint32_t)offsetof(sl_mon_page_t, slot);
    p->slot_bytes = sizeof(sl_mon_slot_t);
    p->n_slots = SL_MON_SLOTS;
    p->stream_slots = SL_MON_STREAMS;
    p->error_bytes = SL_MON_ERROR;
    p->total_bytes = sizeof *p;
    p->pid = getpid();
    p->uid = geteuid();
    p->start_time = sl_proc_start_time(getpid());
    p->ident = self;
    sl_copy(p->name, sizeof p->name, name);
    sl_mon_job(p);
    sl_mon_set(&p->updated_ns, sl_now_ns());
    /* Release: pairs with the reader's acquire load of magic; a reader that
     * sees it sees the header above. */
    atomic_store_explicit(&p->magic, SL_MON_MAGIC, memory_order_release);
    sl_mon.owner = getpid();
    sl_mon.dev = st.st_dev;
    sl_mon.ino = st.st_ino;
    sl_mon.linked = true;
    sl_mon.slots = 0;
    atomic_store_explicit(&sl_mon.page, p, memory_order_relaxed);
    if (!sl_mon.exit_hook)
        sl_mon.exit_hook = atexit(sl_mon_at_exit) == 0;
    return 0;
}

void sl_mon_context_attach(const char *name)
{
    pthread_mutex_lock(&sl_mon.lock);
    /* A forked child inherits the parent's mapping (it claims no slot of
     * it and never unlinks it): its first context drops it and makes its own. */
    sl_mon_page_t *p = sl_mon_page();
    if (p && sl_mon.owner != getpid()) {
        atomic_store_explicit(&sl_mon.page, NULL, memory_order_relaxed);
        munmap(p, sizeof *p);
        sl_mon.contexts = 0;
        sl_mon.linked = false;
    }
    /* A page whose name is gone but whose slots are still used (see
     * sl_mon_retire) is not replaced: this process then has none. */
    if (sl_mon.contexts++ == 0 && !sl_mon_page()) {
        const char *env = getenv("SLUICE_MONITOR");
        bool off = env && strcmp(env, "0") == 0;
        char why[512];
        /* The library does not print; asked for explicitly, it says why not. */
        if (!off && sl_mon_create(name, why, sizeof why) != 0 && env && strcmp(env, "1") == 0)
            fprintf(stderr, "sluice: no status page for sluice-monitor: %s (the channels work "
                            "without it)\n",
                    why);
    }
    pthread_mutex_unlock(&sl_mon.lock);
}

void sl_mon_context_detach(void)
{
    pthread_mutex_lock(&sl_mon.lock);
    if (sl_mon.contexts > 0 && --sl_mon.contexts == 0)
        sl_mon_retire();
    pthread_mutex_unlock(&sl_mon.lock);
}

static bool sl_mon_in_page(const sl_mon_slot_t *s)
{
    const sl_mon_page_t *p = sl_mon_page();
    return p && s >= &p->slot[0] && s < &p->slot[SL_MON_SLOTS];
}

/* The identity is being written: readers retry or skip the slot. */
static void sl_mon_begin(sl_mon_slot_t *s)
{
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_relaxed);
    /* Release fence: the odd gen is visible before any identity byte
     * changes (pairs with the reader's acquire fence after its copy). */
    atomic_thread_fence(memory_order_release);
}

static void sl_mon_end(sl_mon_slot_t *s)
{
    /* Release: the identity is complete before gen is even again (pairs
     * with the reader's acquire load of gen before its copy). */
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
}

/* Called by a slot in use or under the lock: the page stays mapped meanwhile. */
static void sl_mon_touch(void)
{
    sl_mon_page_t *p = sl_mon_page();
    if (p)
        sl_mon_set(&p->updated_ns, sl_now_ns());
}

sl_mon_slot_t *sl_mon_slot_claim(const char *name, uint32_t role, const char *peer,
                                 uint32_t streams, const sluice_options_t *o)
{
    sl_mon_slot_t *s = NULL;
    pthread_mutex_lock(&sl_mon.lock);
    sl_mon_page_t *p = sl_mon_page();
    bool usable = p && sl_mon.linked && sl_mon.owner == getpid();
    for (uint32_t i = 0; usable && i < SL_MON_SLOTS; i++) {
        if (atomic_load_explicit(&p->slot[i].state, memory_order_relaxed) == SL_MON_FREE) {
            s = &p->slot[i];
            break;
        }
    }
    if (s) {
        sl_mon.slots++;
        sl_mon_begin(s);
        /* Everything but gen starts from zero, the counters too. */
        memset((char *)s + sizeof s->gen, 0, sizeof *s - sizeof s->gen);
    } else if (!(s = aligned_alloc(64, sizeof *s))) {
        pthread_mutex_unlock(&sl_mon.lock);
        return NULL;
    } else {
        memset(s, 0, sizeof *s);
        sl_mon_begin(s);
    }
    s->role = role;
    sl_copy(s->name, sizeof s->name, name);
    sl_copy(s->peer, sizeof s->peer, peer);
    s->streams = streams;
    s->ring_depth = o->ring_depth;
    s->global_depth = o->global_depth;
    s->arena_bytes = o->arena_bytes;
    atomic_store_explicit(&s->state, SL_MON_OPENING, memory_order_relaxed);
    sl_mon_end(s);
    sl_mon_touch();
    pthread_mutex_unlock(&sl_mon.lock);
    return s;
}

void sl_mon_slot_opened(sl_mon_slot_t *s, const char *transport, int64_t peer_pid,
                        uint64_t peer_start, bool peer_local)
{
    sl_mon_begin(s);
    sl_copy(s->transport, sizeof s->transport, transport);
    s->peer_pid = peer_pid;
    s->peer_start = peer_start;
    s->peer_local = peer_local;
    atomic_store_explicit(&s->state, SL_MON_OPEN, memory_order_relaxed);
    sl_mon_end(s);
    sl_mon_peer(s, SLUICE_MONITOR_PEER_ALIVE);
}

void sl_mon_slot_release(sl_mon_slot_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&sl_mon.lock);
    if (sl_mon_in_page(s)) {
        sl_mon_begin(s);
        atomic_store_explicit(&s->state, SL_MON_FREE, memory_order_relaxed);
        sl_mon_end(s);
        sl_mon_touch();
        sl_mon.slots--;
        sl_mon_retire();
    } else {
        free(s); /* private */
    }
    pthread_mutex_unlock(&sl_mon.lock);
}

void sl_mon_error(sl_mon_slot_t *s, int status, const char *message)
{
    atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    atomic_store_explicit(&s->last_status, status, memory_order_relaxed);
    /* One writer of the message at a time, and nobody waits for it: a
     * thread that finds it taken leaves its message out. */
    if (atomic_exchange_explicit(&s->error_busy, 1, memory_order_acquire))
        return;
    atomic_fetch_add_explicit(&s->error_gen, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release); /* as sl_mon_begin */
    sl_copy(s->last_error, sizeof s->last_error, message);
    atomic_fetch_add_explicit(&s->error_gen, 1, memory_order_release); /* as sl_mon_end */
    atomic_store_explicit(&s->error_busy, 0, memory_order_release);
    sl_mon_touch();
}

void sl_mon_peer(sl_mon_slot_t *s, sluice_monitor_peer_t state)
{
    /* Forward only (unknown < alive < closed < dead): a CAS, so that a
     * "closed" from one thread cannot overwrite the "dead" another thread
     * stored between its load and its store. Relaxed: the state is one word
     * that the reader takes on its own. */
    uint32_t was = atomic_load_explicit(&s->peer_state, memory_order_relaxed);
    do {
        if (was >= (uint32_t)state)
            return;
    } while (!atomic_compare_exchange_weak_explicit(&s->peer_state, &was, (uint32_t)state,
                                                    memory_order_relaxed, memory_order_relaxed));
    sl_mon_touch();
}

void sl_mon_transition(sl_mon_slot_t *s, uint32_t kind, uint32_t run, uint32_t lumi)
{
    /* One writer (the global one): plain read-modify-write of relaxed atomics. */
    uint64_t runs = atomic_load_explicit(&s->runs_open, memory_order_relaxed);
    uint64_t lumis = atomic_load_explicit(&s->lumis_open, memory_order_relaxed);
    switch (kind) {
    case SLUICE_BEGIN_RUN:
        sl_mon_set(&s->runs_open, runs + 1);
        sl_mon_set(&s->run, run);
        break;
    case SLUICE_BEGIN_LUMI:
        sl_mon_set(&s->lumis_open, lumis + 1);
        sl_mon_set(&s->lumi, lumi);
        break;
    case SLUICE_END_LUMI:
        sl_mon_set(&s->lumis_open, lumis ? lumis - 1 : 0);
        break;
    case SLUICE_END_RUN:
        sl_mon_set(&s->runs_open, runs ? runs - 1 : 0);
        break;
    default:
        break;
    }
}
