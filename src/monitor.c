/* SPDX-License-Identifier: MIT */
/* The status page's writer side: making the page, handing out channel slots, recording errors. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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
    if (sl_mon.contexts == 0 && sl_mon.linked) {
        if (sl_mon.owner == getpid())
            unlink(sl_mon.path);
        sl_mon.linked = false;
    }
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
    if (sl_mon.linked && sl_mon.owner == getpid()) {
        unlink(sl_mon.path);
        sl_mon.linked = false;
    }
    pthread_mutex_unlock(&sl_mon.lock);
}

/*
 * Pages that processes killed without a chance to unlink them left behind
 * (kill -9, or a launcher's SIGTERM): this user's pages whose pid is gone.
 * Once per process, when its page is made; a page whose pid was reused
 * stays until sluice-monitor --clean (which checks start times too). The
 * lock is held.
 */
static void sl_mon_sweep(const char *dir)
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
        long long pid;
        char tail;
        if (strncmp(e->d_name, mine, n) != 0 ||
            sscanf(e->d_name + n, "%lld%c", &pid, &tail) != 1 || pid <= 0 || pid == getpid())
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(sb.st_mode) || sb.st_uid != geteuid())
            continue;
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

void sl_mon_forget(int64_t pid, uint64_t start)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s%u-%lld", sluice_monitor_dir(), SLUICE_MONITOR_PREFIX,
             (unsigned)geteuid(), (long long)pid);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    /* Only that very process's page: this user's, with its pid and start. */
    struct stat sb;
    uint64_t head[4];
    sl_mon_page_t probe;
    bool same = fstat(fd, &sb) == 0 && sb.st_uid == geteuid() &&
                pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head &&
                pread(fd, &probe.pid, sizeof probe.pid, offsetof(sl_mon_page_t, pid)) ==
                    (ssize_t)sizeof probe.pid &&
                pread(fd, &probe.start_time, sizeof probe.start_time,
                      offsetof(sl_mon_page_t, start_time)) == (ssize_t)sizeof probe.start_time;
    close(fd);
    /* And gone here too: a peer judged dead by its heartbeat may have run
     * on another node, where a page of the same name would be another's. */
    if (same && head[0] == SL_MON_MAGIC && probe.pid == pid && probe.start_time == start &&
        kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        unlink(path);
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

/* Make the page; the lock is held. On failure, why (for SLUICE_MONITOR=1). */
static int sl_mon_create(const char *name, char *why, size_t why_len)
{
    sl_mon_sweep(sluice_monitor_dir());
    snprintf(sl_mon.path, sizeof sl_mon.path, "%s/%s%u-%d", sluice_monitor_dir(),
             SLUICE_MONITOR_PREFIX, (unsigned)geteuid(), (int)getpid());
    int fd = -1;
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = open(sl_mon.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        /* The name holds this pid: whoever made it is dead (a pid is
         * reused only then) or was this process. Replace it, once. */
        if (fd < 0 && errno == EEXIST && attempt == 0)
            unlink(sl_mon.path);
        else if (fd < 0)
            break;
    }
    if (fd < 0) {
        snprintf(why, why_len, "open %s: %s", sl_mon.path, strerror(errno));
        return -1;
    }
    const char *step = "ftruncate";
    void *mem = MAP_FAILED;
    if (ftruncate(fd, sizeof(sl_mon_page_t)) == 0) {
        step = "mmap";
        mem = mmap(NULL, sizeof(sl_mon_page_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    int err = errno;
    close(fd);
    if (mem == MAP_FAILED) {
        unlink(sl_mon.path);
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
    sl_copy(p->name, sizeof p->name, name);
    sl_mon_job(p);
    sl_mon_set(&p->updated_ns, sl_now_ns());
    /* Release: pairs with the reader's acquire load of magic; a reader that
     * sees it sees the header above. */
    atomic_store_explicit(&p->magic, SL_MON_MAGIC, memory_order_release);
    sl_mon.owner = getpid();
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
    /* A forked child inherits the parent's mapping, not its page. */
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
    /* Closed or dead is final: a later "alive" (none comes) would not undo it. */
    uint32_t was = atomic_load_explicit(&s->peer_state, memory_order_relaxed);
    if (was == (uint32_t)state || was == SLUICE_MONITOR_PEER_DEAD)
        return;
    atomic_store_explicit(&s->peer_state, (uint32_t)state, memory_order_relaxed);
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
