/* SPDX-License-Identifier: MIT */
/* Channels: opening (after the handshake agreed) and closing, stats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../gpu/gpu.h"
#include "channel.h"
#include "handshake.h"
#include "liveness.h"
#include "mpiguard.h"
#include "reap.h"

const sluice_endpoint_t *sl_channel_endpoint(const sluice_channel_t *ch, uint32_t instance,
                                             sluice_direction_t dir)
{
    for (size_t i = 0; i < ch->n_endpoints; i++)
        if (ch->endpoints[i].instance == instance && ch->endpoints[i].direction == dir)
            return &ch->endpoints[i];
    return NULL;
}

/* ------------------------------------------------------------ open / close */

static int sl_check_desc(const sluice_channel_desc_t *d)
{
    if (!d || d->size < sizeof *d)
        return sl_fail(SLUICE_EINVAL, "channel descriptor missing or its size field unset");
    if (!d->name || !*d->name || strlen(d->name) >= 64)
        return sl_fail(SLUICE_EINVAL, "channel name must be 1..63 characters");
    if (d->role != SLUICE_CONTROLLER && d->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": role %d is neither controller nor source",
                       d->name, (int)d->role);
    if (!d->peer)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": peer name is NULL", d->name);
    if (d->streams < 1 || d->streams > 4096)
        return sl_fail(SLUICE_ERANGE, "channel \"%s\": %u streams (need 1..4096)", d->name,
                       d->streams);
    if (d->n_endpoints && !d->endpoints)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": endpoints is NULL", d->name);
    for (size_t i = 0; i < d->n_endpoints; i++) {
        const sluice_endpoint_t *e = &d->endpoints[i];
        if (!e->type || (e->direction != SLUICE_SEND && e->direction != SLUICE_RECEIVE))
            return sl_fail(SLUICE_EINVAL, "channel \"%s\": endpoint %zu has no type or direction",
                           d->name, i);
        if (e->memory != SLUICE_MEMORY_HOST && e->memory != SLUICE_MEMORY_DEVICE)
            return sl_fail(SLUICE_EINVAL, "channel \"%s\": endpoint %zu (instance %u) has memory "
                                          "%d, neither host nor device",
                           d->name, i, e->instance, (int)e->memory);
        /* A custom layout is (de)serialised by the CPU, which cannot reach device memory. */
        if (e->memory == SLUICE_MEMORY_DEVICE && sluice_type_layout(e->type) == SLUICE_LAYOUT_CUSTOM)
            return sl_fail(SLUICE_EINVAL, "channel \"%s\": instance %u: type `%s` has a custom "
                                          "layout, which device memory cannot carry",
                           d->name, e->instance, sluice_type_name(e->type));
        for (size_t j = 0; j < i; j++)
            if (d->endpoints[j].instance == e->instance &&
                d->endpoints[j].direction == e->direction)
                return sl_fail(SLUICE_EINVAL, "channel \"%s\": instance %u declared twice as %s",
                               d->name, e->instance,
                               e->direction == SLUICE_SEND ? "sender" : "receiver");
    }
    return SLUICE_OK;
}

/* Let go of the peer's device arena: before the peer hears of the close, so
 * that its owner frees it only once nothing maps it (docs/gpu.md, "Lifetime"). */
static void sl_device_unmap_peer(sluice_channel_t *ch)
{
    if (ch->dev_peer_mapped) {
        sl_gpu_unmap(ch->dev_peer, ch->dev_bytes);
        ch->dev_peer = NULL;
        ch->dev_peer_mapped = false;
    }
}

/* Whether this side declares an endpoint in device memory going direction `dir`. */
static bool sl_has_device(const sluice_channel_t *ch, sluice_direction_t dir)
{
    for (size_t i = 0; i < ch->n_endpoints; i++)
        if (sl_endpoint_device(&ch->endpoints[i]) && ch->endpoints[i].direction == dir)
            return true;
    return false;
}

/*
 * The staged path's pinned windows (docs/gpu.md, "Pinned windows"): the
 * host memory device products cross is registered with the device, so the
 * copies into and out of it are DMA at full speed. Receiving, our inbox
 * (the window the peer puts into, or its shared segment); sending over
 * shared memory, the peer's inbox as mapped here, which the device-to-host
 * copy writes straight into. Over RMA the sender's copy goes to a staging
 * buffer the put reads. A registration that fails leaves that window
 * pageable: slower copies, nothing else.
 */
static void sl_device_pin(sluice_channel_t *ch, size_t peer_bytes)
{
    if (ch->dev_path != SLUICE_DEVICE_PATH_STAGED)
        return;
    if (sl_has_device(ch, SLUICE_RECEIVE) &&
        sl_gpu_register(ch->local, ch->geo.inbox_bytes) == SLUICE_OK)
        ch->dev_pinned_local = ch->local;
    void *peer = (ch->tp->caps & SL_CAP_PEER_POINTER) ? ch->tp->peer_ptr(ch->link, 0) : NULL;
    if (peer && sl_has_device(ch, SLUICE_SEND) && sl_gpu_register(peer, peer_bytes) == SLUICE_OK)
        ch->dev_pinned_peer = peer;
}

/* Before the windows are unmapped. */
static void sl_device_unpin(sluice_channel_t *ch)
{
    sl_gpu_unregister(ch->dev_pinned_local);
    sl_gpu_unregister(ch->dev_pinned_peer);
    ch->dev_pinned_local = ch->dev_pinned_peer = NULL;
}

/* Mark the peer's inbox closed, having let go of its device arena first. */
static void sl_signal_closed(sluice_channel_t *ch)
{
    sl_device_unmap_peer(ch);
    ch->tp->store64(ch->link, offsetof(sl_inbox_header_t, peer_closed), 1);
    ch->told_closed = true;
}

/*
 * Close the link, and free this side's exported device arena only once
 * nothing maps it (docs/gpu.md, "Lifetime"); the peer unmaps before it marks
 * our inbox closed. On shared memory, which has no close agreement, that
 * mark says so: until it is there, the inbox and the arena wait in the reap
 * list (reap.h) rather than in this call, so two processes closing several
 * channels in opposite orders never wait for each other. Over RMA a close
 * agreement that succeeded says so. A peer proven dead by its pid maps
 * nothing; a missing heartbeat or an unanswered read proves nothing. Else
 * the arena is kept for the life of the process: a leak, never a free
 * under a mapping.
 */
static int sl_close_link(sluice_channel_t *ch, const sl_deadline_t *deadline)
{
    sl_reap_poll();
    sl_device_unpin(ch);
    if (!ch->dev_exported)
        return ch->tp->close(ch->link, deadline);
    if (ch->tp->caps & SL_CAP_PEER_POINTER) {
        sl_reap_defer(&(sl_reap_item_t){ .owner = ch->ctx,
                                         .tp = ch->tp,
                                         .link = ch->link,
                                         .mark = &ch->header->peer_closed,
                                         .dev = ch->dev_local,
                                         .dev_bytes = ch->dev_bytes,
                                         .peer_pid = ch->peer_pid,
                                         .peer_start = ch->peer_start,
                                         .pid_visible = ch->peer_pid_visible,
                                         /* A peer we never reached (an open that
                                          * failed to connect) would find no mark in
                                          * its inbox: hidden from it at once. */
                                         .deadline_ns = ch->told_closed ? deadline->at_ns
                                                                        : 0 });
        ch->dev_local = NULL;
        ch->dev_exported = false;
        return SLUICE_OK;
    }
    int rc = ch->tp->close(ch->link, deadline);
    sl_reap_item_t peer = { .peer_pid = ch->peer_pid, .peer_start = ch->peer_start,
                            .pid_visible = ch->peer_pid_visible };
    if (rc != SLUICE_OK && !sl_reap_proven_dead(&peer)) {
        ch->dev_local = NULL;
        ch->dev_exported = false;
    }
    return rc;
}

void sl_channel_free(sluice_channel_t *ch)
{
    sl_device_unmap_peer(ch);
    sl_gpu_free(ch->dev_peer, ch->dev_bytes);
    sl_gpu_free(ch->dev_local, ch->dev_bytes);
    if (ch->streams) {
        for (uint32_t s = 0; s <= SL_SCOPE(ch); s++) {
            sl_stream_t *st = &ch->streams[s];
            sl_gpu_free(st->dev_scratch, ch->geo.arena_bytes);
            sl_arena_rx_fini(&st->arx);
            free(st->pending);
            for (uint32_t i = 0; i < SL_RESV_MAX; i++)
                free(st->resv[i].staging);
            for (uint32_t i = 0; i < st->n_spare; i++)
                free(st->spare[i].buf);
            pthread_mutex_destroy(&st->lock);
        }
    }
    free(ch->streams);
    free((void *)ch->slot_events);
    free(ch->lumis);
    free(ch->runs);
    free(ch->endpoints);
    sl_notify_fini(ch);
    pthread_mutex_destroy(&ch->source_lock);
    pthread_mutex_destroy(&ch->global_lock);
    sl_mon_slot_release(ch->mon);
    free(ch);
}

int sl_channel_alloc(sluice_context_t *ctx, const sluice_channel_desc_t *d,
                     const sluice_options_t *o, sluice_channel_t **ch_p)
{
    sluice_channel_t *ch = calloc(1, sizeof *ch);
    if (!ch)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate a channel");
    pthread_mutex_init(&ch->global_lock, NULL);
    pthread_mutex_init(&ch->source_lock, NULL);
    ch->efd = -1;
    int rc = sl_notify_init(ch);
    if (rc) {
        sl_channel_free(ch);
        return rc;
    }
    /* Its counters' home first: every path below may count (or free). */
    ch->mon = sl_mon_slot_claim(d->name, d->role, d->peer, d->streams, o);
    if (!ch->mon) {
        sl_channel_free(ch);
        return sl_fail(SLUICE_ENOMEM, "cannot allocate the counters of channel \"%s\"", d->name);
    }
    ch->stats = &ch->mon->stats;
    ch->ctx = ctx;
    strcpy(ch->name, d->name);
    ch->role = d->role;
    ch->opt = *o;
    ch->pair = MPI_COMM_NULL;
    ch->n_streams = d->streams;
    ch->streams = calloc(d->streams + 1, sizeof *ch->streams);
    ch->lumis = calloc(o->max_open_lumis, sizeof *ch->lumis);
    ch->runs = calloc(o->max_open_lumis, sizeof *ch->runs);
    ch->slot_events = calloc(o->max_open_lumis, sizeof *ch->slot_events);
    ch->endpoints = malloc((d->n_endpoints ? d->n_endpoints : 1) * sizeof *ch->endpoints);
    if (!ch->streams || !ch->lumis || !ch->runs || !ch->slot_events || !ch->endpoints) {
        sl_channel_free(ch);
        return sl_fail(SLUICE_ENOMEM, "cannot allocate the state of %u streams", d->streams);
    }
    for (uint32_t s = 0; s <= d->streams; s++)
        pthread_mutex_init(&ch->streams[s].lock, NULL);
    if (d->n_endpoints)
        memcpy(ch->endpoints, d->endpoints, d->n_endpoints * sizeof *ch->endpoints);
    ch->n_endpoints = d->n_endpoints;
    *ch_p = ch;
    return SLUICE_OK;
}

/* Point every ring and arena half at its inbox now that both are mapped. */
void sl_channel_wire(sluice_channel_t *ch)
{
    const sl_geometry_t *g = &ch->geo;
    for (uint32_t s = 0; s <= SL_SCOPE(ch); s++) {
        sl_stream_t *st = &ch->streams[s];
        uint64_t ctrl = sl_stream_ctrl(g, s);
        sl_ring_tx_init(&st->tx, ctrl, g->ring_depth);
        sl_ring_rx_init(&st->rx, ch->local, ctrl, g->ring_depth);
        st->arena_off = sl_stream_arena(g, s);
        sl_arena_rx_init(&st->arx, g->arena_bytes);
    }
    sl_ring_tx_init(&ch->gtx, g->global_off, g->global_depth);
    sl_ring_rx_init(&ch->grx, ch->local, g->global_off, g->global_depth);
}

/*
 * The two-rank communicator of an RMA channel, controller first. Collective
 * over the pair: entered only after the handshake agreed, by both sides,
 * with a tag both derive from the agreed attempt numbers.
 */
static int sl_pair_comm(sluice_channel_t *ch, const sl_agreement_t *a,
                        const sl_deadline_t *deadline)
{
    MPI_Group world, pair;
    int ranks[2];
    ranks[0] = ch->role == SLUICE_CONTROLLER ? ch->ctx->rank : ch->peer_rank;
    ranks[1] = ch->role == SLUICE_CONTROLLER ? ch->peer_rank : ch->ctx->rank;
    int tag = 1 + (int)((a->my_nonce ^ a->peer_nonce) % 30000u);
    /* Not entering means not entering the collective: the peer then waits
     * in it alone (docs/design.md, "MPI threading contract"). */
    int rc = sl_mpi_enter_until(deadline, "MPI_Comm_create_group of the pair");
    if (rc != SLUICE_OK)
        return rc;
    MPI_Comm_group(ch->ctx->comm, &world);
    MPI_Group_incl(world, 2, ranks, &pair);
    int mrc = MPI_Comm_create_group(ch->ctx->comm, pair, tag, &ch->pair);
    MPI_Group_free(&pair);
    MPI_Group_free(&world);
    if (mrc == MPI_SUCCESS)
        MPI_Comm_set_errhandler(ch->pair, MPI_ERRORS_RETURN);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "channel \"%s\": MPI_Comm_create_group failed", ch->name);
    return SLUICE_OK;
}

/* A guard that stays held for a whole timeout leaves the communicator to MPI_Finalize. */
static void sl_pair_free(sluice_channel_t *ch)
{
    if (ch->pair == MPI_COMM_NULL)
        return;
    sl_deadline_t deadline = sl_deadline_in(ch->opt.timeout_ms);
    if (sl_mpi_enter_until(&deadline, "freeing the pair communicator") != SLUICE_OK)
        return;
    MPI_Comm_free(&ch->pair);
    sl_mpi_leave();
}

/*
 * Shared memory for a peer on this node, one-sided MPI for one elsewhere,
 * unless the options force one. Both sides must choose the same: the
 * handshake carries the choice (and the node identities) and refuses a
 * disagreement.
 */
static int sl_choose_transport(const sluice_context_t *ctx, int peer,
                               const sluice_channel_desc_t *d, const sluice_options_t *o,
                               const sl_transport_ops_t **tp_p)
{
    bool same_node = ctx->peers[peer].node == ctx->peers[ctx->rank].node;
    if (o->transport == SLUICE_TRANSPORT_SHM && !same_node)
        return sl_fail(SLUICE_ENOTSUP, "channel \"%s\": the shared-memory transport was forced but "
                                       "peer \"%s\" is on another node",
                       d->name, d->peer);
    if (o->transport == SLUICE_TRANSPORT_SHM ||
        (o->transport == SLUICE_TRANSPORT_AUTO && same_node)) {
        *tp_p = &sl_shm_transport;
        return SLUICE_OK;
    }
    /* Several threads of this process call MPI on this transport (a global
     * reader and stream threads, even with one stream): below SERIALIZED
     * that is not allowed at all. */
    int level;
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_SERIALIZED)
        return sl_fail(SLUICE_ENOTSUP, "channel \"%s\": the RMA transport needs MPI initialised "
                                       "with MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE",
                       d->name);
    *tp_p = &sl_rma_transport;
    return SLUICE_OK;
}

/*
 * A declaration with device endpoints says what this side can do with
 * device memory, so that the agreement fails both sides with both reasons
 * (decl.c) rather than this side alone, which would leave the peer waiting
 * for its timeout. Host-only channels never get here: they do not
 * initialise CUDA.
 */
static void sl_declare_device(sl_decl_t *decl)
{
    char why[sizeof decl->device_why];
    uint32_t device = sl_gpu_built() ? SL_DEVICE_CUDA : 0;
    int n = sl_gpu_available(why, sizeof why);
    if (n > 0) {
        /* Every layer with a device can export its memory and stage it; a
         * driver that then refuses fails the open with its own words. */
        device |= SL_DEVICE_GPU | SL_DEVICE_IPC | SL_DEVICE_STAGED;
        snprintf(why, sizeof why, "%d %s device%s", n,
                 strcmp(sl_gpu_layer(), "cuda") ? sl_gpu_layer() : "CUDA", n == 1 ? "" : "s");
    }
    sl_decl_set_device(decl, device, why);
}

/*
 * This side's device arena, where the device products it receives land:
 * exported over IPC (its handle goes in the inbox header), or private when
 * the products are staged through the host arena. None without device
 * receivers.
 */
static int sl_device_open_local(sluice_channel_t *ch, sl_gpu_handle_t *handle, bool *exported_p)
{
    *exported_p = false;
    if (!ch->dev_path || !sl_has_device(ch, SLUICE_RECEIVE))
        return SLUICE_OK;
    if (ch->dev_path == SLUICE_DEVICE_PATH_STAGED)
        return sl_gpu_alloc(ch->dev_bytes, &ch->dev_local);
    int rc = sl_gpu_alloc_shared(ch->dev_bytes, &ch->dev_local, handle);
    *exported_p = ch->dev_exported = rc == SLUICE_OK;
    return rc;
}

/*
 * Where the device products this side sends go: the peer's device arena,
 * mapped from the handle in its inbox header (ipc), or a private staging
 * area they are copied out of into the peer's host arena (staged).
 */
static int sl_device_open_peer(sluice_channel_t *ch, const sl_inbox_header_t *peer)
{
    if (!ch->dev_path || !sl_has_device(ch, SLUICE_SEND))
        return SLUICE_OK;
    if (ch->dev_path == SLUICE_DEVICE_PATH_STAGED)
        return sl_gpu_alloc(ch->dev_bytes, &ch->dev_peer);
    if (peer->device_bytes == 0)
        return sl_fail(SLUICE_EDEVICE, "channel \"%s\": the peer could not set up the device "
                                       "arena its device products go to (its open fails with "
                                       "the reason)",
                       ch->name);
    if (peer->device_bytes != ch->dev_bytes)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": the peer's device arena is %llu bytes, "
                                        "expected %zu",
                       ch->name, (unsigned long long)peer->device_bytes, ch->dev_bytes);
    sl_gpu_handle_t h;
    memcpy(h.bytes, peer->device_handle, sizeof h.bytes);
    int rc = sl_gpu_map(&h, ch->dev_bytes, &ch->dev_peer);
    ch->dev_peer_mapped = rc == SLUICE_OK;
    return rc;
}

_Static_assert(SL_INBOX_DEVICE_HANDLE == SL_GPU_HANDLE_BYTES, "the inbox holds a whole handle");

/* Segment names: the owner's pid and its attempt number, unique on the node. */
static void sl_segment_name(char *out, int64_t pid, uint64_t nonce)
{
    snprintf(out, SL_SEGMENT_NAME_MAX, "/sluice.%lld.%016llx", (long long)pid,
             (unsigned long long)nonce);
}

int sluice_channel_open(sluice_context_t *ctx, const sluice_channel_desc_t *desc,
                        sluice_channel_t **ch_p)
{
    if (!ctx || !ch_p)
        return sl_fail(SLUICE_EINVAL, "ctx and ch_p must not be NULL");
    sl_reap_poll(); /* arenas of channels closed earlier whose peers have let go since */
    int rc = sl_check_desc(desc);
    if (rc)
        return rc;
    sluice_options_t opt;
    if (desc->options) {
        /* Only the first desc->options->size bytes are the caller's (options.h). */
        if ((rc = sl_options_import(desc->options, &opt)))
            return rc;
    } else {
        sluice_options_init(&opt);
        if ((rc = sluice_options_from_env(&opt)))
            return rc;
    }
    int peer;
    if ((rc = sl_context_find(ctx, desc->peer, &peer)))
        return rc;
    const sl_transport_ops_t *tp = NULL;
    if ((rc = sl_choose_transport(ctx, peer, desc, &opt, &tp)))
        return rc;

    /* Everything that can fail locally comes before the handshake: once
     * both sides agreed, neither may stop short of the collectives. */
    sluice_channel_t *ch = NULL;
    if ((rc = sl_channel_alloc(ctx, desc, &opt, &ch)))
        return rc;
    ch->tp = tp;
    ch->peer_rank = peer;
    sl_deadline_t deadline = sl_deadline_in(opt.timeout_ms);
    sl_decl_t *decl = NULL;
    size_t decl_bytes = 0;
    size_t peer_bytes = 0;
    sl_inbox_header_t peer_header;
    sl_agreement_t agreed;
    char local_name[SL_SEGMENT_NAME_MAX], peer_name[SL_SEGMENT_NAME_MAX];

    if ((rc = sl_channel_geometry(ch, &ch->geo)))
        goto free_channel;
    if ((rc = sl_decl_build(desc, &opt, ch->tp == &sl_shm_transport, &decl, &decl_bytes)))
        goto free_channel;
    if (sl_decl_has_device(decl))
        sl_declare_device(decl);
    if ((rc = sl_handshake(ch, decl, decl_bytes, &deadline, &agreed)))
        goto free_decl;
    /* Agreed: the peer is on its way here too. What follows gets its own
     * deadline, whatever the handshake took. */
    deadline = sl_deadline_in(opt.timeout_ms);
    ch->peer_pid = agreed.peer_pid;
    ch->peer_start = agreed.peer_start;
    ch->dev_path = agreed.device_path;
    ch->dev_bytes = ch->geo.inbox_bytes;
    /* Same host and boot, and its process visible here (containers of one
     * host may not share /proc): only then can its pid be checked. */
    ch->peer_local = agreed.same_node && sl_proc_alive(agreed.peer_pid, agreed.peer_start) &&
                     sl_proc_start_time((pid_t)agreed.peer_pid) == agreed.peer_start;
    ch->peer_pid_visible = ch->peer_local;
    /* Lets the tests of one node exercise the heartbeat (both sides set it). */
    if (getenv("SLUICE_TEST_HEARTBEAT"))
        ch->peer_local = false;
    if (!(ch->tp->caps & SL_CAP_PEER_POINTER) && (rc = sl_pair_comm(ch, &agreed, &deadline)))
        goto free_decl;
    sl_segment_name(local_name, (int64_t)getpid(), agreed.my_nonce);
    sl_segment_name(peer_name, agreed.peer_pid, agreed.peer_nonce);
    sl_link_params_t params = { .pair = ch->pair, .bytes = ch->geo.inbox_bytes,
                                .numa = ctx->peers[ctx->rank].numa, .local_name = local_name,
                                .peer_name = peer_name, .liveness_ms = opt.liveness_ms,
                                .peer_dead = &ch->peer_dead, .deadline = &deadline };
    /* A device arena that cannot be had fails the open, but only after the
     * transport's collectives, which the peer is entering too. */
    sl_gpu_handle_t dev_handle;
    bool dev_exported;
    int dev_rc = sl_device_open_local(ch, &dev_handle, &dev_exported);
    void *local;
    if ((rc = ch->tp->open(&params, &ch->link, &local)))
        goto free_pair;
    ch->local = local;
    ch->header = local;
    sl_inbox_init(local, &ch->geo, ch->dev_bytes, dev_exported ? dev_handle.bytes : NULL);
    if ((rc = ch->tp->connect(ch->link, &deadline, &peer_bytes)))
        goto close_link;
    if ((rc = ch->tp->get(ch->link, 0, &peer_header, sizeof peer_header)) ||
        (rc = sl_inbox_check(&peer_header, peer_bytes, &ch->geo)) || (rc = dev_rc) ||
        (rc = sl_device_open_peer(ch, &peer_header))) {
        /* Connected: tell the peer, whose open may have succeeded. */
        sl_signal_closed(ch);
        goto close_link;
    }
    sl_device_pin(ch, peer_bytes);
    /* A peer elsewhere watches our heartbeat from now on; we watch its. */
    ch->hb_moved_ns = sl_now_ns();
    if (!ch->peer_local) {
        ch->beat = (sl_beat_t){ .word = &ch->header->heartbeat, .period_ms = opt.liveness_ms,
                                .tp = ch->tp, .link = ch->link };
        if ((rc = sl_heartbeat_join(&ch->beat))) {
            sl_signal_closed(ch);
            goto close_link;
        }
        ch->beating = true;
    }
    sl_channel_wire(ch);
    free(decl);
    sl_mon_slot_opened(ch->mon, ch->tp->name, ch->peer_pid, ch->peer_start, ch->peer_local);
    *ch_p = ch;
    return SLUICE_OK;

close_link: {
    /* The close agreement, with a deadline of its own (not the spent one).
     * A peer whose open got further may map our arena (sl_close_link). */
    sl_deadline_t close_deadline = sl_deadline_in(opt.timeout_ms);
    sl_device_unmap_peer(ch);
    sl_close_link(ch, &close_deadline);
}
free_pair:
    sl_pair_free(ch);
free_decl:
    free(decl);
free_channel:
    /* Counted before the slot goes: a reader that saw it opening may
     * catch why it went (a failed open is its own call's business). */
    sl_channel_result(ch, rc);
    sl_channel_free(ch);
    return rc;
}

int sluice_channel_close(sluice_channel_t *ch)
{
    if (!ch)
        return SLUICE_OK;
    if (sl_on_progress_thread(ch))
        return sl_fail(SLUICE_EBUSY, "channel \"%s\": a notification callback cannot close the "
                                     "channel whose progress thread it runs on", ch->name);
    /* Nothing may touch the link once close begins. */
    sluice_progress_stop(ch);
    if (ch->beating)
        sl_heartbeat_leave(&ch->beat);
    bool dead = atomic_load_explicit(&ch->peer_dead, memory_order_relaxed);
    /* Tell a live peer first so its waits end now rather than at their
     * deadline. A dead one reads nothing, and waiting on it is pointless:
     * the close agreement then gives up at once. Either way the peer's
     * device arena is let go of first. */
    sl_device_unmap_peer(ch);
    /* On shared memory the mark is a plain store: given even to a peer
     * thought dead (the heartbeat may be wrong), which may be waiting for
     * it to free its arena (reap.h). */
    if (!dead || (ch->tp->caps & SL_CAP_PEER_POINTER)) {
        sl_signal_closed(ch);
        if (ch->tp->wake)
            ch->tp->wake(ch->link); /* its sleeping engine fires "closed" notes now */
    }
    sl_deadline_t deadline = sl_deadline_in(dead ? 0 : ch->opt.timeout_ms);
    int rc = sl_close_link(ch, &deadline);
    if (rc == SLUICE_OK)
        sl_pair_free(ch);
    /* Otherwise the window lives on (freeing it is collective) and so does
     * its communicator: both are left to MPI_Finalize. */
    sl_channel_free(ch);
    return rc;
}

const char *sluice_channel_transport(const sluice_channel_t *ch) { return ch->tp->name; }

const char *sluice_channel_device_path(const sluice_channel_t *ch)
{
    return sl_device_path_name(ch->dev_path);
}

const char *sluice_channel_path(const sluice_channel_t *ch)
{
    return ch->tp->path ? ch->tp->path(ch->link) : ch->tp->name;
}

void sluice_channel_stats(const sluice_channel_t *ch, sluice_channel_stats_t *out)
{
    const sluice_channel_t *c = ch;
#define SL_LOAD(f) out->f = atomic_load_explicit(&c->stats->f, memory_order_relaxed)
    SL_LOAD(transitions_sent);
    SL_LOAD(transitions_received);
    SL_LOAD(products_sent);
    SL_LOAD(products_received);
    SL_LOAD(bytes_sent);
    SL_LOAD(bytes_received);
    SL_LOAD(discarded);
    SL_LOAD(product_publications);
#undef SL_LOAD
}
