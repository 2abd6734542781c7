/* SPDX-License-Identifier: MIT */
/* Node-local transport: inboxes in an MPI shared-memory window, plain loads and stores. */
#include <numa.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../src/pairwait.h"
#include "../src/transport.h"

/*
 * Open MPI's osc/sm does not promise more than 8-byte alignment for the
 * segments of a non-contiguous shared window. Every inbox offset is laid out
 * for a page-aligned base, so each segment is over-allocated by a page and
 * used from its first page boundary. Both processes map the same file with
 * page granularity, so they agree on where that boundary is.
 */
#define SL_SHM_ALIGN 4096u

static char *sl_shm_align(void *p)
{
    return (char *)(((uintptr_t)p + SL_SHM_ALIGN - 1) & ~(uintptr_t)(SL_SHM_ALIGN - 1));
}

struct sl_link {
    MPI_Comm pair;        /* borrowed from the channel */
    MPI_Win win;
    char *local;
    size_t local_bytes;
    char *peer;           /* mapped after connect */
    size_t peer_bytes;
    int peer_rank;
};

/* Place `bytes` at `base` on NUMA node `numa` before first touch, where that means anything. */
static void sl_shm_place(void *base, size_t bytes, int numa)
{
    if (numa >= 0 && numa_available() >= 0 && numa_max_node() > 0)
        numa_tonode_memory(base, bytes, numa);
    memset(base, 0, bytes); /* first touch by the reader: pages land on its node */
}

static int sl_shm_open(MPI_Comm pair, size_t bytes, int numa, sl_link_t **link_p,
                       void **local_base_p)
{
    sl_link_t *l = calloc(1, sizeof *l);
    if (!l)
        return sl_fail(SLUICE_ENOMEM, "shm: cannot allocate a link");
    l->pair = pair;
    int me;
    MPI_Comm_rank(pair, &me);
    l->peer_rank = 1 - me;

    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    char *raw;
    int mrc = MPI_Win_allocate_shared((MPI_Aint)(bytes + SL_SHM_ALIGN), 1, info, pair, &raw,
                                      &l->win);
    MPI_Info_free(&info);
    if (mrc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int n = 0;
        MPI_Error_string(mrc, msg, &n);
        free(l);
        return sl_fail(SLUICE_EMPI, "shm: MPI_Win_allocate_shared of %zu bytes failed: %s (the "
                                    "shared-memory transport needs osc/sm; do not exclude it)",
                       bytes, msg);
    }
    l->local = sl_shm_align(raw);
    l->local_bytes = bytes;
    sl_shm_place(l->local, bytes, numa);
    *link_p = l;
    *local_base_p = l->local;
    return SLUICE_OK;
}

static int sl_shm_connect(sl_link_t *l, const sl_deadline_t *deadline, size_t *peer_bytes_p)
{
    /* Each side's inbox initialisation comes before the other's first look. */
    int rc = sl_window_barrier(l->win, l->pair, deadline, "shm connect");
    if (rc)
        return rc;
    MPI_Aint size;
    int disp;
    void *peer;
    if (MPI_Win_shared_query(l->win, l->peer_rank, &size, &disp, &peer) != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "shm: MPI_Win_shared_query of the peer failed");
    l->peer = sl_shm_align(peer);
    size_t slack = (size_t)(l->peer - (char *)peer);
    l->peer_bytes = (size_t)size > slack ? (size_t)size - slack : 0;
    *peer_bytes_p = l->peer_bytes;
    return SLUICE_OK;
}

static int sl_shm_close(sl_link_t *l, const sl_deadline_t *deadline)
{
    if (!l)
        return SLUICE_OK;
    int rc = sl_pair_barrier(l->pair, deadline, "shm close");
    if (rc)
        return rc; /* the window stays: freeing it would block on the absent peer */
    MPI_Win_free(&l->win);
    free(l);
    return SLUICE_OK;
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
static void sl_shm_local_sync(sl_link_t *l) { (void)l; }
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
    .load64 = sl_shm_load64,
    .get = sl_shm_get,
    .local_sync = sl_shm_local_sync,
    .progress = sl_shm_progress,
};
