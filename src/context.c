/* SPDX-License-Identifier: MIT */
/* Contexts: the communicator, process names and topology (nodes, NUMA nodes). */
#include <hwloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "context.h"
#include "handshake.h"
#include "liveness.h"
#include "monitor.h"
#include "mpiguard.h"
#include "reap.h"

/* NUMA node of the CPU this process last ran on, or -1 when hwloc cannot tell. */
static int sl_numa_of_self(void)
{
    hwloc_topology_t topo;
    int numa = -1;
    if (hwloc_topology_init(&topo) != 0)
        return -1;
    if (hwloc_topology_load(topo) == 0) {
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        if (set && hwloc_get_last_cpu_location(topo, set, HWLOC_CPUBIND_PROCESS) == 0) {
            hwloc_obj_t obj = hwloc_get_next_obj_covering_cpuset_by_type(topo, set,
                                                                         HWLOC_OBJ_NUMANODE, NULL);
            if (obj)
                numa = (int)obj->os_index;
        }
        hwloc_bitmap_free(set);
    }
    hwloc_topology_destroy(topo);
    return numa;
}

int sluice_context_create(MPI_Comm comm, const char *name, sluice_context_t **ctx_p)
{
    if (!name || !*name || strlen(name) >= sizeof(((sluice_peer_info_t *)0)->name) || !ctx_p)
        return sl_fail(SLUICE_EINVAL, "process name must be 1..63 characters and ctx_p non-NULL");
    sluice_context_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate a context");
    int rc = SLUICE_EMPI;
    sl_mpi_guard_init();
    if (MPI_Comm_dup(comm, &ctx->comm) != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "MPI_Comm_dup of the user's communicator failed");
        goto free_ctx;
    }
    MPI_Comm_set_errhandler(ctx->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(ctx->comm, &ctx->rank);
    MPI_Comm_size(ctx->comm, &ctx->size);
    /*
     * Which ranks share a node: by host name and boot id (sl_node_identity),
     * not by MPI_COMM_TYPE_SHARED, which between separately launched jobs
     * puts every process on a node of its own (../shared/PLATFORM.md) while
     * sluice's own segments work there all the same. The node number is the
     * lowest context rank with the same identity.
     */
    enum { ID_LEN = 160 };
    char *ids = calloc((size_t)ctx->size, ID_LEN);
    char mine[ID_LEN] = { 0 };
    ctx->peers = calloc((size_t)ctx->size, sizeof *ctx->peers);
    if (!ctx->peers || !ids) {
        free(ids);
        rc = sl_fail(SLUICE_ENOMEM, "cannot allocate the table of %d peers", ctx->size);
        goto free_peers;
    }
    sl_node_identity(mine, sizeof mine);
    if (MPI_Allgather(mine, ID_LEN, MPI_CHAR, ids, ID_LEN, MPI_CHAR, ctx->comm) != MPI_SUCCESS) {
        free(ids);
        rc = sl_fail(SLUICE_EMPI, "MPI_Allgather of node identities failed");
        goto free_peers;
    }
    int node = ctx->rank;
    for (int r = 0; r < ctx->rank; r++) {
        ids[(size_t)r * ID_LEN + ID_LEN - 1] = '\0'; /* bytes another process wrote */
        if (strcmp(ids + (size_t)r * ID_LEN, mine) == 0) {
            node = r;
            break;
        }
    }
    free(ids);
    sluice_peer_info_t me = { .rank = ctx->rank, .node = node, .numa = sl_numa_of_self(),
                              .pid = (int)getpid() };
    strcpy(me.name, name);
    if (MPI_Allgather(&me, sizeof me, MPI_BYTE, ctx->peers, sizeof me, MPI_BYTE, ctx->comm) !=
        MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "MPI_Allgather of process names failed");
        goto free_peers;
    }
    /* The names are bytes another process wrote: a peer that is buggy, of
     * another build, or hostile may send 64 bytes without a NUL, and every
     * later strcmp and "%s" (sl_context_find, the channel's messages) would
     * then run past the entry. Cut each name at its last byte. */
    for (int r = 0; r < ctx->size; r++)
        ctx->peers[r].name[sizeof ctx->peers[r].name - 1] = '\0';
    if (MPI_Comm_dup(ctx->comm, &ctx->hello_comm) != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "MPI_Comm_dup for the handshakes failed");
        goto free_peers;
    }
    MPI_Comm_set_errhandler(ctx->hello_comm, MPI_ERRORS_RETURN);
    if (MPI_Comm_dup(comm, &ctx->app_comm) != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "MPI_Comm_dup for the application failed");
        goto free_hello;
    }
    if ((rc = sl_hello_init(ctx)))
        goto free_app;
    sl_mon_context_attach(name); /* this process's status page (docs/monitor.md) */
    *ctx_p = ctx;
    return SLUICE_OK;

free_app:
    MPI_Comm_free(&ctx->app_comm);
free_hello:
    MPI_Comm_free(&ctx->hello_comm);
free_peers:
    free(ctx->peers);
    MPI_Comm_free(&ctx->comm);
free_ctx:
    free(ctx);
    return rc;
}

void sluice_context_destroy(sluice_context_t *ctx)
{
    if (!ctx)
        return;
    sl_hello_fini(ctx);
    /* Arenas a peer may still map: waited for up to their channels'
     * deadlines, then kept for the life of the process (reap.h). */
    sl_reap_drain(ctx);
    /* No deadline here, and nothing to give up: every channel is closed,
     * so no sluice thread is in MPI; only the application may hold it. */
    sl_mpi_enter();
    MPI_Comm_free(&ctx->app_comm);
    MPI_Comm_free(&ctx->hello_comm);
    MPI_Comm_free(&ctx->comm);
    sl_mpi_leave();
    free(ctx->peers);
    free(ctx);
    sl_mon_context_detach();
}

int sluice_context_size(const sluice_context_t *ctx) { return ctx->size; }
int sluice_context_rank(const sluice_context_t *ctx) { return ctx->rank; }
MPI_Comm sluice_context_comm(const sluice_context_t *ctx) { return ctx->app_comm; }

int sluice_context_peer(const sluice_context_t *ctx, int rank, sluice_peer_info_t *info_p)
{
    if (!ctx || !info_p || rank < 0 || rank >= ctx->size)
        return sl_fail(SLUICE_EINVAL, "rank %d is not in the context (size %d)", rank,
                       ctx ? ctx->size : 0);
    *info_p = ctx->peers[rank];
    return SLUICE_OK;
}

int sl_context_find(const sluice_context_t *ctx, const char *name, int *rank_p)
{
    int found = -1;
    for (int r = 0; r < ctx->size; r++) {
        if (r == ctx->rank || strcmp(ctx->peers[r].name, name) != 0)
            continue;
        if (found >= 0)
            return sl_fail(SLUICE_EINVAL, "process name \"%s\" is used by ranks %d and %d", name,
                           found, r);
        found = r;
    }
    if (found < 0)
        return sl_fail(SLUICE_ENOTFOUND, "no process named \"%s\" in the context", name);
    *rank_p = found;
    return SLUICE_OK;
}
