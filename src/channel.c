/* SPDX-License-Identifier: MIT */
/* Channels: the handshake that checks both declarations, opening and closing. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "pairwait.h"

#define SL_DECL_MAGIC 0x4c43454449554c53ull /* "SLUIDECL" */

/* One endpoint as sent in the handshake. */
typedef struct sl_decl_endpoint {
    uint32_t instance;
    uint32_t direction;
    uint64_t fingerprint;
    char type_name[SLUICE_NAME_MAX];
} sl_decl_endpoint_t;

/* The handshake message: what each side declares. Plain data, sent as bytes. */
typedef struct sl_decl {
    uint64_t magic;
    uint32_t version;
    uint32_t role;
    uint32_t streams;
    uint32_t ring_depth;
    uint32_t global_depth;
    uint32_t max_open_lumis;
    uint32_t transport_shm;   /* 1: shared memory, 0: RMA */
    uint32_t reserved0;
    uint64_t arena_bytes;
    char channel[64];
    uint64_t n_endpoints;
    sl_decl_endpoint_t endpoints[];
} sl_decl_t;

static const char *sl_role_name(uint32_t role)
{
    return role == SLUICE_CONTROLLER ? "controller" : "source";
}

const sluice_endpoint_t *sl_channel_endpoint(const sluice_channel_t *ch, uint32_t instance,
                                             sluice_direction_t dir)
{
    for (size_t i = 0; i < ch->n_endpoints; i++)
        if (ch->endpoints[i].instance == instance && ch->endpoints[i].direction == dir)
            return &ch->endpoints[i];
    return NULL;
}

/* ------------------------------------------------------------ handshake */

static int sl_decl_build(const sluice_channel_desc_t *d, const sluice_options_t *o, bool shm,
                         sl_decl_t **decl_p, size_t *bytes_p)
{
    size_t bytes = sizeof(sl_decl_t) + d->n_endpoints * sizeof(sl_decl_endpoint_t);
    sl_decl_t *decl = calloc(1, bytes);
    if (!decl)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate the handshake message");
    decl->magic = SL_DECL_MAGIC;
    decl->version = SL_INBOX_VERSION;
    decl->role = d->role;
    decl->streams = d->streams;
    decl->ring_depth = o->ring_depth;
    decl->global_depth = o->global_depth;
    decl->max_open_lumis = o->max_open_lumis;
    decl->transport_shm = shm;
    decl->arena_bytes = o->arena_bytes;
    strncpy(decl->channel, d->name, sizeof decl->channel - 1);
    decl->n_endpoints = d->n_endpoints;
    for (size_t i = 0; i < d->n_endpoints; i++) {
        const sluice_endpoint_t *e = &d->endpoints[i];
        sl_decl_endpoint_t *de = &decl->endpoints[i];
        de->instance = e->instance;
        de->direction = e->direction;
        de->fingerprint = sluice_type_fingerprint(e->type);
        strncpy(de->type_name, sluice_type_name(e->type), sizeof de->type_name - 1);
    }
    *decl_p = decl;
    *bytes_p = bytes;
    return SLUICE_OK;
}

static const sl_decl_endpoint_t *sl_decl_find(const sl_decl_t *d, uint32_t instance, uint32_t dir)
{
    for (uint64_t i = 0; i < d->n_endpoints; i++)
        if (d->endpoints[i].instance == instance && d->endpoints[i].direction == dir)
            return &d->endpoints[i];
    return NULL;
}

/*
 * Every endpoint of `a` must have its counterpart in `b`. Run as
 * (controller, source) then (source, controller) on both sides, so both
 * sides reach the same verdict and the same message.
 */
static int sl_decl_match(const char *channel, const sl_decl_t *a, const sl_decl_t *b)
{
    for (uint64_t i = 0; i < a->n_endpoints; i++) {
        const sl_decl_endpoint_t *e = &a->endpoints[i];
        bool a_sends = e->direction == SLUICE_SEND;
        const sl_decl_t *snd = a_sends ? a : b;
        const char *flow = snd->role == SLUICE_CONTROLLER ? "controller->source"
                                                          : "source->controller";
        const sl_decl_endpoint_t *o =
            sl_decl_find(b, e->instance, a_sends ? SLUICE_RECEIVE : SLUICE_SEND);
        if (!o)
            return sl_fail(SLUICE_ETYPE, "channel \"%s\": instance %u (%s): the %s %s `%s` but the "
                                         "%s declares no %s",
                           channel, e->instance, flow, sl_role_name(a->role),
                           a_sends ? "sends" : "receives", e->type_name, sl_role_name(b->role),
                           a_sends ? "receiver" : "sender");
        if (o->fingerprint != e->fingerprint) {
            const sl_decl_endpoint_t *s = a_sends ? e : o, *r = a_sends ? o : e;
            return sl_fail(SLUICE_ETYPE, "channel \"%s\": type mismatch on instance %u (%s): sender "
                                         "has `%s` (fingerprint 0x%016llx), receiver expects `%s` "
                                         "(0x%016llx)",
                           channel, e->instance, flow, s->type_name,
                           (unsigned long long)s->fingerprint, r->type_name,
                           (unsigned long long)r->fingerprint);
        }
    }
    return SLUICE_OK;
}

static int sl_decl_agree(const char *channel, const sl_decl_t *ctrl, const sl_decl_t *src)
{
#define SL_AGREE(field)                                                                            \
    if (ctrl->field != src->field)                                                                 \
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": " #field " differs: controller %llu, "      \
                                      "source %llu",                                              \
                       channel, (unsigned long long)ctrl->field, (unsigned long long)src->field);
    SL_AGREE(version);
    SL_AGREE(streams);
    SL_AGREE(ring_depth);
    SL_AGREE(global_depth);
    SL_AGREE(max_open_lumis);
    SL_AGREE(arena_bytes);
    SL_AGREE(transport_shm);
#undef SL_AGREE
    int rc = sl_decl_match(channel, ctrl, src);
    return rc ? rc : sl_decl_match(channel, src, ctrl);
}

static int sl_handshake_tag(const char *name)
{
    return 1 + (int)(sl_fnv1a(SL_FNV_OFFSET, name, strlen(name)) % 30000u);
}

/* Exchange declarations with the peer and check them; bounded by `deadline`. */
static int sl_handshake(sluice_channel_t *ch, const sl_decl_t *mine, size_t bytes,
                        const sl_deadline_t *deadline)
{
    int tag = sl_handshake_tag(ch->name);
    MPI_Comm comm = ch->ctx->comm;
    MPI_Request sreq;
    if (MPI_Isend(mine, (int)bytes, MPI_BYTE, ch->peer_rank, tag, comm, &sreq) != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "channel \"%s\": handshake send failed", ch->name);

    sl_backoff_t b;
    sl_backoff_init(&b, ch->opt.spin, ch->opt.max_sleep_us);
    MPI_Status st;
    int found = 0;
    for (;;) {
        if (MPI_Iprobe(ch->peer_rank, tag, comm, &found, &st) != MPI_SUCCESS)
            return sl_fail(SLUICE_EMPI, "channel \"%s\": handshake probe failed", ch->name);
        if (found)
            break;
        if (sl_backoff_pause(&b, deadline) == SLUICE_ETIMEDOUT) {
            MPI_Cancel(&sreq);
            MPI_Request_free(&sreq);
            return sl_fail(SLUICE_ETIMEDOUT, "channel \"%s\": peer \"%s\" (rank %d) did not open "
                                             "the channel within %u ms",
                           ch->name, ch->ctx->peers[ch->peer_rank].name, ch->peer_rank,
                           ch->opt.timeout_ms);
        }
    }
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    int rc = SLUICE_OK;
    sl_decl_t *theirs = malloc(count > 0 ? (size_t)count : 1);
    if (!theirs) {
        rc = sl_fail(SLUICE_ENOMEM, "channel \"%s\": cannot allocate the peer's declaration",
                     ch->name);
        MPI_Recv(NULL, 0, MPI_BYTE, ch->peer_rank, tag, comm, MPI_STATUS_IGNORE);
    } else if (MPI_Recv(theirs, count, MPI_BYTE, ch->peer_rank, tag, comm, MPI_STATUS_IGNORE) !=
               MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "channel \"%s\": handshake receive failed", ch->name);
    } else if ((size_t)count < sizeof(sl_decl_t) || theirs->magic != SL_DECL_MAGIC ||
               theirs->n_endpoints > ((size_t)count - sizeof(sl_decl_t)) /
                                         sizeof(sl_decl_endpoint_t)) {
        rc = sl_fail(SLUICE_ECORRUPT, "channel \"%s\": malformed handshake message of %d bytes "
                                      "from rank %d",
                     ch->name, count, ch->peer_rank);
    } else if (theirs->role == mine->role) {
        rc = sl_fail(SLUICE_EINVAL, "channel \"%s\": both sides opened it as %s", ch->name,
                     sl_role_name(mine->role));
    } else if (strncmp(theirs->channel, mine->channel, sizeof mine->channel) != 0) {
        rc = sl_fail(SLUICE_EINVAL, "channel \"%s\": the peer opened channel \"%.63s\"", ch->name,
                     theirs->channel);
    } else {
        for (uint64_t i = 0; i < theirs->n_endpoints; i++)
            theirs->endpoints[i].type_name[SLUICE_NAME_MAX - 1] = '\0';
        rc = mine->role == SLUICE_CONTROLLER ? sl_decl_agree(ch->name, mine, theirs)
                                             : sl_decl_agree(ch->name, theirs, mine);
    }
    free(theirs);
    int wrc = sl_request_wait(&sreq, true, deadline, "handshake send");
    return rc ? rc : wrc;
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
        for (size_t j = 0; j < i; j++)
            if (d->endpoints[j].instance == e->instance &&
                d->endpoints[j].direction == e->direction)
                return sl_fail(SLUICE_EINVAL, "channel \"%s\": instance %u declared twice as %s",
                               d->name, e->instance,
                               e->direction == SLUICE_SEND ? "sender" : "receiver");
    }
    return SLUICE_OK;
}

static void sl_channel_free(sluice_channel_t *ch)
{
    if (ch->streams) {
        for (uint32_t s = 0; s < ch->n_streams; s++) {
            sl_arena_rx_fini(&ch->streams[s].arx);
            free(ch->streams[s].pending);
            free(ch->streams[s].staging);
        }
    }
    free(ch->streams);
    free((void *)ch->slot_events);
    free(ch->lumis);
    free(ch->runs);
    free(ch->endpoints);
    pthread_mutex_destroy(&ch->global_lock);
    free(ch);
}

static int sl_channel_alloc(sluice_context_t *ctx, const sluice_channel_desc_t *d,
                            const sluice_options_t *o, sluice_channel_t **ch_p)
{
    sluice_channel_t *ch = calloc(1, sizeof *ch);
    if (!ch)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate a channel");
    pthread_mutex_init(&ch->global_lock, NULL);
    ch->ctx = ctx;
    strcpy(ch->name, d->name);
    ch->role = d->role;
    ch->opt = *o;
    ch->pair = MPI_COMM_NULL;
    ch->n_streams = d->streams;
    ch->streams = calloc(d->streams, sizeof *ch->streams);
    ch->lumis = calloc(o->max_open_lumis, sizeof *ch->lumis);
    ch->runs = calloc(o->max_open_lumis, sizeof *ch->runs);
    ch->slot_events = calloc(o->max_open_lumis, sizeof *ch->slot_events);
    ch->endpoints = malloc((d->n_endpoints ? d->n_endpoints : 1) * sizeof *ch->endpoints);
    if (!ch->streams || !ch->lumis || !ch->runs || !ch->slot_events || !ch->endpoints) {
        sl_channel_free(ch);
        return sl_fail(SLUICE_ENOMEM, "cannot allocate the state of %u streams", d->streams);
    }
    if (d->n_endpoints)
        memcpy(ch->endpoints, d->endpoints, d->n_endpoints * sizeof *ch->endpoints);
    ch->n_endpoints = d->n_endpoints;
    *ch_p = ch;
    return SLUICE_OK;
}

/* Point every ring and arena half at its inbox now that both are mapped. */
static void sl_channel_wire(sluice_channel_t *ch)
{
    const sl_geometry_t *g = &ch->geo;
    for (uint32_t s = 0; s < ch->n_streams; s++) {
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

static int sl_pair_comm(sluice_channel_t *ch)
{
    MPI_Group world, pair;
    int ranks[2];
    ranks[0] = ch->role == SLUICE_CONTROLLER ? ch->ctx->rank : ch->peer_rank;
    ranks[1] = ch->role == SLUICE_CONTROLLER ? ch->peer_rank : ch->ctx->rank;
    MPI_Comm_group(ch->ctx->comm, &world);
    MPI_Group_incl(world, 2, ranks, &pair);
    int mrc = MPI_Comm_create_group(ch->ctx->comm, pair, sl_handshake_tag(ch->name), &ch->pair);
    MPI_Group_free(&pair);
    MPI_Group_free(&world);
    if (mrc != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "channel \"%s\": MPI_Comm_create_group failed", ch->name);
    MPI_Comm_set_errhandler(ch->pair, MPI_ERRORS_RETURN);
    return SLUICE_OK;
}

/*
 * Shared memory for a peer on this node, one-sided MPI for one elsewhere,
 * unless the options force one. Both sides must choose the same: the
 * handshake carries the choice and refuses a disagreement.
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
    /* Stream threads call MPI on this transport (serialised by it below
     * MPI_THREAD_MULTIPLE, see rma/rma.c). */
    int level;
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_SERIALIZED && d->streams > 1)
        return sl_fail(SLUICE_ENOTSUP, "channel \"%s\": the RMA transport with %u streams needs "
                                       "MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE",
                       d->name, d->streams);
    *tp_p = &sl_rma_transport;
    return SLUICE_OK;
}

int sluice_channel_open(sluice_context_t *ctx, const sluice_channel_desc_t *desc,
                        sluice_channel_t **ch_p)
{
    if (!ctx || !ch_p)
        return sl_fail(SLUICE_EINVAL, "ctx and ch_p must not be NULL");
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

    if ((rc = sl_geometry_compute(desc->streams, &opt, &ch->geo)))
        goto free_channel;
    if ((rc = sl_decl_build(desc, &opt, ch->tp == &sl_shm_transport, &decl, &decl_bytes)))
        goto free_channel;
    if ((rc = sl_handshake(ch, decl, decl_bytes, &deadline)))
        goto free_decl;
    if ((rc = sl_pair_comm(ch)))
        goto free_decl;
    void *local;
    if ((rc = ch->tp->open(ch->pair, ch->geo.inbox_bytes, ctx->peers[ctx->rank].numa, &ch->link,
                           &local)))
        goto free_pair;
    ch->local = local;
    ch->header = local;
    sl_inbox_init(local, &ch->geo);
    if ((rc = ch->tp->connect(ch->link, &deadline, &peer_bytes)))
        goto close_link;
    if ((rc = ch->tp->get(ch->link, 0, &peer_header, sizeof peer_header)))
        goto close_link;
    if ((rc = sl_inbox_check(&peer_header, peer_bytes, &ch->geo)))
        goto close_link;
    sl_channel_wire(ch);
    free(decl);
    *ch_p = ch;
    return SLUICE_OK;

close_link:
    /* The peer is in open too: close collectively so neither side blocks. */
    ch->tp->close(ch->link, &deadline);
free_pair:
    MPI_Comm_free(&ch->pair);
free_decl:
    free(decl);
free_channel:
    sl_channel_free(ch);
    return rc;
}

int sluice_channel_close(sluice_channel_t *ch)
{
    if (!ch)
        return SLUICE_OK;
    /* Tell the peer first so its waits end now rather than at their deadline. */
    ch->tp->store64(ch->link, offsetof(sl_inbox_header_t, peer_closed), 1);
    sl_deadline_t deadline = sl_deadline_in(ch->opt.timeout_ms);
    int rc = ch->tp->close(ch->link, &deadline);
    if (rc == SLUICE_OK)
        MPI_Comm_free(&ch->pair);
    sl_channel_free(ch);
    return rc;
}

const char *sluice_channel_transport(const sluice_channel_t *ch) { return ch->tp->name; }

void sluice_channel_stats(const sluice_channel_t *ch, sluice_channel_stats_t *out)
{
    sluice_channel_t *c = (sluice_channel_t *)ch;
#define SL_LOAD(f) out->f = atomic_load_explicit(&c->stats.f, memory_order_relaxed)
    SL_LOAD(transitions_sent);
    SL_LOAD(transitions_received);
    SL_LOAD(products_sent);
    SL_LOAD(products_received);
    SL_LOAD(bytes_sent);
    SL_LOAD(bytes_received);
    SL_LOAD(discarded);
#undef SL_LOAD
}
