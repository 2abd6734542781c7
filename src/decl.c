/* SPDX-License-Identifier: MIT */
/* The declarations of the open handshake: building this side's, checking the peer's. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "backoff.h"
#include "decl.h"
#include "inbox.h"
#include "liveness.h"

/* The message is sent with an int count of bytes (MPI). */
#define SL_DECL_MAX_BYTES ((size_t)INT_MAX)

/* A fresh, non-zero attempt number. */
static uint64_t sl_nonce(void)
{
    uint64_t n = 0;
    if (getrandom(&n, sizeof n, GRND_NONBLOCK) != (ssize_t)sizeof n)
        n = sl_now_ns() ^ ((uint64_t)getpid() << 32);
    return n ? n : 1;
}

static const char *sl_role_name(uint32_t role)
{
    return role == SLUICE_CONTROLLER ? "controller" : "source";
}

int sl_decl_build(const sluice_channel_desc_t *d, const sluice_options_t *o, bool shm,
                  sl_decl_t **decl_p, size_t *bytes_p)
{
    if (d->n_endpoints > (SL_DECL_MAX_BYTES - sizeof(sl_decl_t)) / sizeof(sl_decl_endpoint_t))
        return sl_fail(SLUICE_ERANGE, "channel \"%s\": %zu endpoints do not fit a handshake "
                                      "message",
                       d->name, d->n_endpoints);
    size_t bytes = sizeof(sl_decl_t) + d->n_endpoints * sizeof(sl_decl_endpoint_t);
    sl_decl_t *decl = calloc(1, bytes);
    if (!decl)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate the handshake message");
    decl->hello.magic = SL_DECL_MAGIC;
    decl->hello.kind = SL_HELLO_DECL;
    strncpy(decl->hello.channel, d->name, sizeof decl->hello.channel - 1);
    decl->hello.nonce = sl_nonce();
    decl->version = SL_INBOX_VERSION;
    decl->role = d->role;
    decl->streams = d->streams;
    decl->ring_depth = o->ring_depth;
    decl->global_depth = o->global_depth;
    decl->max_open_lumis = o->max_open_lumis;
    decl->transport_shm = shm;
    decl->arena_bytes = o->arena_bytes;
    decl->device_path = o->device_path;
    decl->pid = (int64_t)getpid();
    decl->start = sl_proc_start_time(getpid());
    sl_node_identity(decl->node, sizeof decl->node);
    decl->n_endpoints = d->n_endpoints;
    for (size_t i = 0; i < d->n_endpoints; i++) {
        const sluice_endpoint_t *e = &d->endpoints[i];
        sl_decl_endpoint_t *de = &decl->endpoints[i];
        de->instance = e->instance;
        de->direction = e->direction;
        de->memory = e->memory;
        de->fingerprint = sluice_type_fingerprint(e->type);
        strncpy(de->type_name, sluice_type_name(e->type), sizeof de->type_name - 1);
    }
    *decl_p = decl;
    *bytes_p = bytes;
    return SLUICE_OK;
}

bool sl_decl_has_device(const sl_decl_t *decl)
{
    for (uint64_t i = 0; i < decl->n_endpoints; i++)
        if (decl->endpoints[i].memory == SLUICE_MEMORY_DEVICE)
            return true;
    return false;
}

void sl_decl_set_device(sl_decl_t *decl, uint32_t device, const char *why)
{
    decl->device = device | SL_DEVICE_PROBED;
    snprintf(decl->device_why, sizeof decl->device_why, "%s", why);
}

const char *sl_device_path_name(uint32_t path)
{
    switch (path) {
    case SLUICE_DEVICE_PATH_IPC: return "ipc";
    case SLUICE_DEVICE_PATH_STAGED: return "staged";
    default: return "none";
    }
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
 * sides reach the same verdict and the same message. One of the two is
 * always this side's own, so the work is (ours x theirs), linear in the
 * peer's message.
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
        if (o->memory != e->memory) {
            const sl_decl_t *dev = e->memory == SLUICE_MEMORY_DEVICE ? a : b;
            return sl_fail(SLUICE_ETYPE, "channel \"%s\": memory mismatch on instance %u (%s): the "
                                         "%s declares it in device memory, the %s in host memory",
                           channel, e->instance, flow, sl_role_name(dev->role),
                           sl_role_name(dev == a ? b->role : a->role));
        }
    }
    return SLUICE_OK;
}

/*
 * Device-memory endpoints, once both sides declared the same ones: the data
 * path both take (docs/gpu.md, "Choosing the path"). Both sides run this
 * over the same two declarations, so they take the same path or fail with
 * the same message. Each side's own reason travels in its declaration, so
 * a side without a GPU is named even when this side has one. The order:
 * a device on both sides; forced paths that agree; then CUDA IPC where both
 * can and share a node, else staged through the host arena.
 */
static int sl_decl_device(const char *channel, const sl_decl_t *ctrl, const sl_decl_t *src,
                          uint32_t *path_p)
{
    *path_p = 0;
    const sl_decl_endpoint_t *dev = NULL;
    for (uint64_t i = 0; i < ctrl->n_endpoints && !dev; i++)
        if (ctrl->endpoints[i].memory == SLUICE_MEMORY_DEVICE)
            dev = &ctrl->endpoints[i];
    if (!dev)
        return SLUICE_OK;
    if (!(ctrl->device & src->device & SL_DEVICE_GPU))
        return sl_fail(SLUICE_ENOTSUP, "channel \"%s\": instance %u is declared in device memory, "
                                       "but the two sides have no device data path in common: "
                                       "controller: %s; source: %s",
                       channel, dev->instance,
                       ctrl->device_why[0] ? ctrl->device_why : "(no reason given)",
                       src->device_why[0] ? src->device_why : "(no reason given)");
    if (ctrl->device_path && src->device_path && ctrl->device_path != src->device_path)
        return sl_fail(SLUICE_ETYPE, "channel \"%s\": the controller forces device path %s, the "
                                     "source %s",
                       channel, sl_device_path_name(ctrl->device_path),
                       sl_device_path_name(src->device_path));
    uint32_t forced = ctrl->device_path ? ctrl->device_path : src->device_path;
    const char *no_ipc = NULL;
    if (strcmp(ctrl->node, src->node) != 0)
        no_ipc = "the two sides are on different nodes";
    else if (!(ctrl->device & SL_DEVICE_IPC))
        no_ipc = "the controller cannot share device memory between processes";
    else if (!(src->device & SL_DEVICE_IPC))
        no_ipc = "the source cannot share device memory between processes";
    if (forced == SLUICE_DEVICE_PATH_IPC && no_ipc)
        return sl_fail(SLUICE_ENOTSUP, "channel \"%s\": device path ipc was forced, but %s",
                       channel, no_ipc);
    if (!(ctrl->device & src->device & SL_DEVICE_STAGED) &&
        (forced == SLUICE_DEVICE_PATH_STAGED || no_ipc))
        return sl_fail(SLUICE_ENOTSUP, "channel \"%s\": instance %u is declared in device memory, "
                                       "but %s cannot stage device memory through the host",
                       channel, dev->instance,
                       ctrl->device & SL_DEVICE_STAGED ? "the source" : "the controller");
    *path_p = forced ? forced : no_ipc ? SLUICE_DEVICE_PATH_STAGED : SLUICE_DEVICE_PATH_IPC;
    return SLUICE_OK;
}

static int sl_decl_agree(const char *channel, const sl_decl_t *ctrl, const sl_decl_t *src,
                         uint32_t *device_path_p)
{
#define SL_AGREE(field)                                                                            \
    if (ctrl->field != src->field)                                                                 \
        return sl_fail(SLUICE_ETYPE, "channel \"%s\": " #field " differs: controller %llu, "      \
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
    if (ctrl->transport_shm && strcmp(ctrl->node, src->node) != 0)
        return sl_fail(SLUICE_ENOTSUP, "channel \"%s\": shared memory between different nodes "
                                       "(controller on %s, source on %s)",
                       channel, ctrl->node, src->node);
    int rc = sl_decl_match(channel, ctrl, src);
    if (rc == SLUICE_OK)
        rc = sl_decl_match(channel, src, ctrl);
    return rc ? rc : sl_decl_device(channel, ctrl, src, device_path_p);
}

int sl_decl_check(const char *channel, int from_rank, const sl_decl_t *mine, sl_decl_t *theirs,
                  size_t bytes, uint32_t *device_path_p)
{
    /* The endpoint count is compared by division: n_endpoints * size could
     * wrap around for a hostile count and pass a multiplied check. */
    if (bytes < sizeof(sl_decl_t) ||
        theirs->n_endpoints > (bytes - sizeof(sl_decl_t)) / sizeof(sl_decl_endpoint_t))
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": malformed declaration of %zu bytes from "
                                        "rank %d",
                       channel, bytes, from_rank);
    if (theirs->hello.magic != SL_DECL_MAGIC || theirs->hello.kind != SL_HELLO_DECL)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": message from rank %d is no declaration "
                                        "(magic 0x%016llx, kind %u)",
                       channel, from_rank, (unsigned long long)theirs->hello.magic,
                       theirs->hello.kind);
    /* Terminated here, before anything prints or compares them. */
    theirs->hello.channel[sizeof theirs->hello.channel - 1] = '\0';
    theirs->node[sizeof theirs->node - 1] = '\0';
    theirs->device_why[sizeof theirs->device_why - 1] = '\0';
    for (uint64_t i = 0; i < theirs->n_endpoints; i++)
        theirs->endpoints[i].type_name[SLUICE_NAME_MAX - 1] = '\0';
    if (strcmp(theirs->hello.channel, channel) != 0)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": rank %d sent a declaration for channel "
                                        "\"%s\"",
                       channel, from_rank, theirs->hello.channel);
    /* The messages below name roles and flows by these values: anything
     * else would be taken for the other role. */
    if (theirs->role != SLUICE_CONTROLLER && theirs->role != SLUICE_SOURCE)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": rank %d declares role %u (neither "
                                        "controller nor source)",
                       channel, from_rank, theirs->role);
    for (uint64_t i = 0; i < theirs->n_endpoints; i++) {
        const sl_decl_endpoint_t *e = &theirs->endpoints[i];
        if (e->direction != SLUICE_SEND && e->direction != SLUICE_RECEIVE)
            return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": rank %d declares instance %u with "
                                            "direction %u (neither send nor receive)",
                           channel, from_rank, e->instance, e->direction);
        if (e->memory != SLUICE_MEMORY_HOST && e->memory != SLUICE_MEMORY_DEVICE)
            return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": rank %d declares instance %u in "
                                            "memory %u (neither host nor device)",
                           channel, from_rank, e->instance, e->memory);
    }
    if (theirs->device_path > SLUICE_DEVICE_PATH_STAGED)
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": rank %d forces device path %u (no such "
                                        "path)",
                       channel, from_rank, theirs->device_path);
    if (theirs->role == mine->role)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": both sides opened it as %s", channel,
                       sl_role_name(mine->role));
    return mine->role == SLUICE_CONTROLLER ? sl_decl_agree(channel, mine, theirs, device_path_p)
                                           : sl_decl_agree(channel, theirs, mine, device_path_p);
}
