/* SPDX-License-Identifier: MIT */
/* The status page's reader side (sluice_monitor_read): a read-only copy, checked before it is trusted. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "liveness.h"
#include "monitor.h"

/* Times a slot whose identity changes under the reader is read again before it is left out. */
#define SL_MON_READ_TRIES 8

static uint64_t sl_ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

void sl_mon_identity(sl_mon_ident_t *id)
{
    memset(id, 0, sizeof *id);
    /* A namespace is named by the device and inode of its nsfs file. */
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) == 0) {
        id->pidns_dev = (uint64_t)st.st_dev;
        id->pidns_ino = (uint64_t)st.st_ino;
    }
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, id->boot_id, sizeof id->boot_id - 1);
        close(fd);
        id->boot_id[n > 0 ? n : 0] = '\0';
        id->boot_id[strcspn(id->boot_id, "\n")] = '\0';
    }
}

bool sl_mon_same_ident(const sl_mon_ident_t *page, const sl_mon_ident_t *self)
{
    /* Unknown on either side proves nothing. The boot id tells hosts apart
     * (the first namespace has the same inode on every host), the namespace
     * containers of one host. */
    return self->pidns_ino != 0 && self->boot_id[0] != '\0' &&
           page->pidns_dev == self->pidns_dev && page->pidns_ino == self->pidns_ino &&
           strncmp(page->boot_id, self->boot_id, sizeof page->boot_id) == 0;
}

/* A string of `n` bytes another process wrote: cut at its last byte. */
static void sl_str(char *dst, const char *src, size_t n)
{
    memcpy(dst, src, n);
    dst[n - 1] = '\0';
}

/* The streams described one by one, and the events open on them (their sum). */
static void sl_read_streams(const sl_mon_slot_t *s, sluice_monitor_channel_t *c)
{
    c->n_streams = c->streams < SL_MON_STREAMS ? c->streams : SL_MON_STREAMS;
    c->events_open = 0;
    for (uint32_t i = 0; i < c->n_streams; i++) {
        const sl_mon_stream_t *g = &s->stream[i];
        c->stream[i] = (sluice_monitor_stream_t){
            .sent = sl_ld(&g->tx_head), .peer_took = sl_ld(&g->tx_seen),
            .taken = sl_ld(&g->rx_tail), .arena_out = sl_ld(&g->arena_out),
            .arena_in = sl_ld(&g->arena_in), .event = sl_ld(&g->event_seq),
            .event_open = sl_ld(&g->event_open) != 0 };
        c->events_open += (uint64_t)c->stream[i].event_open;
    }
}

/* The last error message, if no writer was inside it meanwhile. */
static void sl_read_error(const sl_mon_slot_t *s, sluice_monitor_channel_t *c)
{
    c->errors = sl_ld(&s->errors);
    c->last_status = (int)atomic_load_explicit(&s->last_status, memory_order_relaxed);
    c->last_error[0] = '\0';
    for (int i = 0; i < SL_MON_READ_TRIES; i++) {
        /* Acquire: pairs with the writer's release increment that ends a write. */
        uint64_t g1 = atomic_load_explicit(&s->error_gen, memory_order_acquire);
        if (g1 & 1)
            continue;
        sl_str(c->last_error, s->last_error, sizeof c->last_error);
        /* Acquire fence: the copy is done before gen is read again (pairs
         * with the writer's release fence after it made gen odd). */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->error_gen, memory_order_relaxed) == g1)
            return;
        c->last_error[0] = '\0';
    }
}

/*
 * One slot: 1 copied, 0 free (or never settled while read), into *c.
 * `judge`: the page is of this namespace and boot, so a local peer's pid
 * can be checked here.
 */
static int sl_read_slot(const sl_mon_slot_t *s, uint32_t index, bool judge,
                        sluice_monitor_channel_t *c)
{
    for (int i = 0; i < SL_MON_READ_TRIES; i++) {
        /* Acquire: pairs with the release increment in sl_mon_end. */
        uint64_t g1 = atomic_load_explicit(&s->gen, memory_order_acquire);
        if (g1 & 1)
            continue;
        uint32_t state = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (state == SL_MON_FREE)
            return 0;
        memset(c, 0, sizeof *c);
        c->slot = index;
        c->generation = g1;
        sl_str(c->name, s->name, sizeof c->name);
        sl_str(c->peer, s->peer, sizeof c->peer);
        sl_str(c->transport, s->transport, sizeof c->transport);
        c->role = (sluice_role_t)s->role;
        c->open = state == SL_MON_OPEN;
        c->streams = s->streams;
        c->ring_depth = s->ring_depth;
        c->global_depth = s->global_depth;
        c->arena_bytes = s->arena_bytes;
        c->peer_pid = s->peer_pid;
        c->peer_start = s->peer_start;
        c->peer_local = s->peer_local != 0;
        /* As sl_read_error: the copy before the second look at gen. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->gen, memory_order_relaxed) != g1)
            continue;
        c->peer_exited = judge && c->open && c->peer_local &&
                         !sl_proc_alive(c->peer_pid, c->peer_start);
        /* The live part: each value on its own, no consistency between them. */
        uint32_t ps = atomic_load_explicit(&s->peer_state, memory_order_relaxed);
        c->peer_state = ps <= SLUICE_MONITOR_PEER_DEAD ? (sluice_monitor_peer_t)ps
                                                        : SLUICE_MONITOR_PEER_UNKNOWN;
        const sl_mon_counters_t *k = &s->stats;
        c->stats = (sluice_channel_stats_t){
            .transitions_sent = sl_ld(&k->transitions_sent),
            .transitions_received = sl_ld(&k->transitions_received),
            .products_sent = sl_ld(&k->products_sent),
            .products_received = sl_ld(&k->products_received),
            .bytes_sent = sl_ld(&k->bytes_sent), .bytes_received = sl_ld(&k->bytes_received),
            .discarded = sl_ld(&k->discarded),
            .product_publications = sl_ld(&k->product_publications) };
        c->runs_open = sl_ld(&s->runs_open);
        c->lumis_open = sl_ld(&s->lumis_open);
        c->run = sl_ld(&s->run);
        c->lumi = sl_ld(&s->lumi);
        c->global_sent = sl_ld(&s->global_head);
        c->global_peer_took = sl_ld(&s->global_seen);
        c->global_taken = sl_ld(&s->global_tail);
        sl_read_error(s, c);
        sl_read_streams(s, c);
        /* Still the same channel: a release and a new claim meanwhile
         * would give the identity above the new channel's zeroed counters.
         * As above, the acquire fence keeps the live reads before this load. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->gen, memory_order_relaxed) != g1)
            continue;
        return 1;
    }
    return 0;
}

static int sl_read_page(const sl_mon_page_t *p, size_t file_bytes, sluice_monitor_process_t *out)
{
    /* Acquire: pairs with the release store of magic once the header is set. */
    uint64_t magic = atomic_load_explicit(&p->magic, memory_order_acquire);
    if (magic == 0)
        return sl_fail(SLUICE_EAGAIN, "status page still being set up");
    if (magic != SL_MON_MAGIC)
        return sl_fail(SLUICE_ECORRUPT, "not a sluice status page (magic 0x%016llx)",
                       (unsigned long long)magic);
    if (p->version != SL_MON_VERSION)
        return sl_fail(SLUICE_EVERSION, "status page layout version %u; this library reads %u",
                       p->version, SL_MON_VERSION);
    /* Never trust sizes another process wrote: they must be this layout's
     * and fit the file. */
    if (p->header_bytes != offsetof(sl_mon_page_t, slot) || p->slot_bytes != sizeof(sl_mon_slot_t) ||
        p->n_slots != SL_MON_SLOTS || p->stream_slots != SL_MON_STREAMS ||
        p->error_bytes != SL_MON_ERROR || p->total_bytes != sizeof *p || file_bytes < sizeof *p)
        return sl_fail(SLUICE_ECORRUPT, "status page sizes (header %u, slot %u x %u, file %zu) "
                                        "are not this layout's",
                       p->header_bytes, p->slot_bytes, p->n_slots, file_bytes);
    out->pid = p->pid;
    out->uid = (uint32_t)p->uid;
    out->start_time = p->start_time;
    sl_str(out->name, p->name, sizeof out->name);
    sl_str(out->host, p->host, sizeof out->host);
    sl_str(out->job, p->job, sizeof out->job);
    sl_str(out->mpi_job, p->mpi_job, sizeof out->mpi_job);
    out->rank = p->rank;
    out->world_size = p->world_size;
    out->updated_ns = sl_ld(&p->updated_ns);
    /* Its pid is judged here only if it is a pid of this namespace and boot. */
    sl_mon_ident_t self, ident;
    sl_mon_identity(&self);
    memcpy(&ident, &p->ident, sizeof ident);
    ident.boot_id[sizeof ident.boot_id - 1] = '\0';
    out->same_namespace = sl_mon_same_ident(&ident, &self);
    out->alive = !out->same_namespace ? -1 : p->pid > 0 && sl_proc_alive(p->pid, p->start_time);
    out->n_channels = 0;
    for (uint32_t i = 0; i < SL_MON_SLOTS; i++)
        out->n_channels += (uint32_t)sl_read_slot(&p->slot[i], i, out->same_namespace,
                                                  &out->channel[out->n_channels]);
    return SLUICE_OK;
}

int sluice_monitor_read(int fd, sluice_monitor_process_t *out)
{
    if (!out || out->size != sizeof *out)
        return sl_fail(SLUICE_EINVAL, "sluice_monitor_read: out is NULL or its size is not "
                                      "sizeof(sluice_monitor_process_t)");
    struct stat st;
    if (fstat(fd, &st) != 0)
        return sl_fail(SLUICE_ESYS, "fstat of the status page: %s", strerror(errno));
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size < sizeof(uint64_t))
        return st.st_size == 0 ? sl_fail(SLUICE_EAGAIN, "status page still being set up")
                               : sl_fail(SLUICE_ECORRUPT, "not a status page: not a regular "
                                                          "file of at least 8 bytes");
    size_t bytes = (size_t)st.st_size;
    /* Read-only: the reader cannot write the process's memory even by mistake. */
    void *mem = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED)
        return sl_fail(SLUICE_ESYS, "mmap of the status page: %s", strerror(errno));
    int rc = SLUICE_ECORRUPT;
    if (bytes >= offsetof(sl_mon_page_t, slot))
        rc = sl_read_page(mem, bytes, out);
    else if (atomic_load_explicit((const _Atomic uint64_t *)mem, memory_order_acquire) == 0)
        rc = sl_fail(SLUICE_EAGAIN, "status page still being set up");
    else
        rc = sl_fail(SLUICE_ECORRUPT, "status page of %zu bytes: shorter than its header", bytes);
    munmap(mem, bytes);
    return rc;
}
