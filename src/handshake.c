/* SPDX-License-Identifier: MIT */
/* The open agreement: declarations, their check, and the acknowledged handshake. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "handshake.h"
#include "liveness.h"
#include "mpiguard.h"

/* Handshake messages travel on the context's own communicator, one tag. */
#define SL_HELLO_TAG 1

enum { SL_HELLO_DECL = 1, SL_HELLO_ACK = 2, SL_HELLO_ABORT = 3 };

/* A fresh, non-zero attempt number. */
static uint64_t sl_nonce(void)
{
    uint64_t n = 0;
    if (getrandom(&n, sizeof n, GRND_NONBLOCK) != (ssize_t)sizeof n)
        n = sl_now_ns() ^ ((uint64_t)getpid() << 32);
    return n ? n : 1;
}

#define SL_DECL_MAGIC 0x4c43454449554c53ull /* "SLUIDECL" */

/* One endpoint as sent in the handshake. */
typedef struct sl_decl_endpoint {
    uint32_t instance;
    uint32_t direction;
    uint64_t fingerprint;
    char type_name[SLUICE_NAME_MAX];
} sl_decl_endpoint_t;

/*
 * Every handshake message starts with this: which channel, which attempt
 * (a fresh random nonce per open), and for an ACK which of the peer's
 * attempts it acknowledges. Plain data, sent as bytes.
 */
typedef struct sl_hello {
    uint64_t magic;           /* SL_DECL_MAGIC */
    uint32_t kind;            /* SL_HELLO_DECL, SL_HELLO_ACK or SL_HELLO_ABORT */
    uint32_t reserved;
    char channel[64];
    uint64_t nonce;           /* the sender's attempt */
    uint64_t acked;           /* ACK: the receiver's attempt it acknowledges */
} sl_hello_t;

/* A DECL: what each side declares. */
struct sl_decl {
    sl_hello_t hello;
    uint32_t version;
    uint32_t role;
    uint32_t streams;
    uint32_t ring_depth;
    uint32_t global_depth;
    uint32_t max_open_lumis;
    uint32_t transport_shm;   /* 1: shared memory, 0: RMA */
    uint32_t reserved0;
    uint64_t arena_bytes;
    int64_t pid;              /* the declaring process, for liveness and segment names */
    uint64_t start;           /* its start time (liveness.h) */
    char node[160];           /* host name and boot id (sl_node_identity) */
    uint64_t n_endpoints;
    sl_decl_endpoint_t endpoints[];
};

static const char *sl_role_name(uint32_t role)
{
    return role == SLUICE_CONTROLLER ? "controller" : "source";
}

/* ------------------------------------------------------------ handshake */

int sl_decl_build(const sluice_channel_desc_t *d, const sluice_options_t *o, bool shm,
                  sl_decl_t **decl_p, size_t *bytes_p)
{
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
    decl->pid = (int64_t)getpid();
    decl->start = sl_proc_start_time(getpid());
    sl_node_identity(decl->node, sizeof decl->node);
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
    return rc ? rc : sl_decl_match(channel, src, ctrl);
}


/* ------------------------------------------------------------ mailbox */

/* A received handshake message, queued until the open it belongs to takes it. */
typedef struct sl_mail {
    struct sl_mail *next;
    int source;               /* rank in the context */
    size_t bytes;
    sl_hello_t *msg;          /* at least sizeof(sl_hello_t), magic checked */
} sl_mail_t;

/* A send in flight: its buffer lives until MPI says the send completed. */
typedef struct sl_outgoing {
    struct sl_outgoing *next;
    MPI_Request req;
    void *buf;
} sl_outgoing_t;

struct sl_hello_box {
    pthread_mutex_t lock;     /* the lists below; never held across a wait */
    sl_mail_t *mail;
    sl_outgoing_t *out;
};

int sl_hello_init(sluice_context_t *ctx)
{
    struct sl_hello_box *b = calloc(1, sizeof *b);
    if (!b)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate the handshake mailbox");
    pthread_mutex_init(&b->lock, NULL);
    ctx->hello = b;
    return SLUICE_OK;
}

/* Forget completed sends. Called with the box lock held. */
static void sl_outgoing_reap(struct sl_hello_box *b)
{
    for (sl_outgoing_t **p = &b->out; *p;) {
        int done = 0;
        sl_mpi_enter();
        MPI_Test(&(*p)->req, &done, MPI_STATUS_IGNORE);
        sl_mpi_leave();
        if (!done) {
            p = &(*p)->next;
            continue;
        }
        sl_outgoing_t *o = *p;
        *p = o->next;
        free(o->buf);
        free(o);
    }
}

void sl_hello_fini(sluice_context_t *ctx)
{
    struct sl_hello_box *b = ctx->hello;
    if (!b)
        return;
    /* Sends still in flight after a short grace are left to MPI with their
     * buffers (a few hundred bytes each): freeing a buffer MPI may still
     * read would be worse. */
    sl_deadline_t grace = sl_deadline_in(100);
    sl_backoff_t bo;
    sl_backoff_init(&bo, 0, 1000);
    pthread_mutex_lock(&b->lock);
    sl_outgoing_reap(b);
    while (b->out && sl_backoff_pause(&bo, &grace) == SLUICE_OK)
        sl_outgoing_reap(b);
    for (sl_outgoing_t *o = b->out, *n; o; o = n) {
        n = o->next;
        sl_mpi_enter();
        MPI_Request_free(&o->req); /* the send still completes; we only stop tracking it */
        sl_mpi_leave();
        free(o);
    }
    for (sl_mail_t *m = b->mail, *n; m; m = n) {
        n = m->next;
        free(m->msg);
        free(m);
    }
    pthread_mutex_unlock(&b->lock);
    pthread_mutex_destroy(&b->lock);
    free(b);
    ctx->hello = NULL;
}

/* Send `bytes` of `msg` (a copy is kept until the send completes). */
static int sl_hello_send(sluice_context_t *ctx, int peer, const void *msg, size_t bytes)
{
    struct sl_hello_box *b = ctx->hello;
    sl_outgoing_t *o = calloc(1, sizeof *o);
    void *buf = malloc(bytes);
    if (!o || !buf) {
        free(o);
        free(buf);
        return sl_fail(SLUICE_ENOMEM, "cannot allocate a handshake message");
    }
    memcpy(buf, msg, bytes);
    o->buf = buf;
    sl_mpi_enter();
    int mrc = MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, SL_HELLO_TAG, ctx->hello_comm, &o->req);
    sl_mpi_leave();
    if (mrc != MPI_SUCCESS) {
        free(buf);
        free(o);
        return sl_fail(SLUICE_EMPI, "handshake send to rank %d failed", peer);
    }
    pthread_mutex_lock(&b->lock);
    o->next = b->out;
    b->out = o;
    pthread_mutex_unlock(&b->lock);
    return SLUICE_OK;
}

/*
 * Move every arrived handshake message into the mailbox. The box lock is
 * held from the probe to the append, so messages of one peer enter the
 * mailbox in the order MPI matched them even when several threads collect:
 * an ACK never overtakes the DECL before it.
 */
static int sl_hello_collect(sluice_context_t *ctx)
{
    struct sl_hello_box *b = ctx->hello;
    int rc = SLUICE_OK;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        int found = 0, count = 0;
        MPI_Message m;
        MPI_Status st;
        sl_mpi_enter();
        int mrc = MPI_Improbe(MPI_ANY_SOURCE, SL_HELLO_TAG, ctx->hello_comm, &found, &m, &st);
        if (mrc == MPI_SUCCESS && found)
            MPI_Get_count(&st, MPI_BYTE, &count);
        sl_mpi_leave();
        if (mrc != MPI_SUCCESS) {
            rc = sl_fail(SLUICE_EMPI, "handshake probe failed");
            break;
        }
        if (!found)
            break;
        sl_mail_t *mail = calloc(1, sizeof *mail);
        void *buf = malloc(count > 0 ? (size_t)count : 1);
        sl_mpi_enter();
        /* The matched message must be received even when it is dropped. */
        mrc = MPI_Mrecv(buf ? buf : &found, buf ? count : 0, MPI_BYTE, &m, MPI_STATUS_IGNORE);
        sl_mpi_leave();
        if (!mail || !buf || mrc != MPI_SUCCESS || (size_t)count < sizeof(sl_hello_t) ||
            ((sl_hello_t *)buf)->magic != SL_DECL_MAGIC) {
            /* Not something a sluice peer sends (or no memory to keep it):
             * dropped; the peer's attempt then times out cleanly. */
            free(mail);
            free(buf);
            continue;
        }
        ((sl_hello_t *)buf)->channel[sizeof((sl_hello_t *)buf)->channel - 1] = '\0';
        mail->source = st.MPI_SOURCE;
        mail->bytes = (size_t)count;
        mail->msg = buf;
        sl_mail_t **tail = &b->mail;
        while (*tail)
            tail = &(*tail)->next;
        *tail = mail;
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

/* Take the oldest message of `peer` for `channel`, in arrival order. */
static sl_mail_t *sl_hello_take(sluice_context_t *ctx, int peer, const char *channel)
{
    struct sl_hello_box *b = ctx->hello;
    pthread_mutex_lock(&b->lock);
    sl_mail_t *found = NULL;
    for (sl_mail_t **p = &b->mail; *p; p = &(*p)->next) {
        if ((*p)->source == peer && strcmp((*p)->msg->channel, channel) == 0) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    sl_outgoing_reap(b);
    pthread_mutex_unlock(&b->lock);
    return found;
}

static void sl_mail_free(sl_mail_t *m)
{
    if (m) {
        free(m->msg);
        free(m);
    }
}

/* Check a peer's DECL as received: size, role, names. */
static int sl_decl_received(sluice_channel_t *ch, const sl_decl_t *mine, sl_decl_t *theirs,
                            size_t bytes)
{
    if (bytes < sizeof(sl_decl_t) ||
        theirs->n_endpoints > (bytes - sizeof(sl_decl_t)) / sizeof(sl_decl_endpoint_t))
        return sl_fail(SLUICE_ECORRUPT, "channel \"%s\": malformed declaration of %zu bytes from "
                                        "rank %d",
                       ch->name, bytes, ch->peer_rank);
    theirs->node[sizeof theirs->node - 1] = '\0';
    for (uint64_t i = 0; i < theirs->n_endpoints; i++)
        theirs->endpoints[i].type_name[SLUICE_NAME_MAX - 1] = '\0';
    if (theirs->role == mine->role)
        return sl_fail(SLUICE_EINVAL, "channel \"%s\": both sides opened it as %s", ch->name,
                       sl_role_name(mine->role));
    return mine->role == SLUICE_CONTROLLER ? sl_decl_agree(ch->name, mine, theirs)
                                           : sl_decl_agree(ch->name, theirs, mine);
}

static int sl_hello_reply(sluice_channel_t *ch, uint32_t kind, uint64_t nonce, uint64_t acked)
{
    sl_hello_t h = { .magic = SL_DECL_MAGIC, .kind = kind, .nonce = nonce, .acked = acked };
    snprintf(h.channel, sizeof h.channel, "%s", ch->name);
    return sl_hello_send(ch->ctx, ch->peer_rank, &h, sizeof h);
}

int sl_handshake(sluice_channel_t *ch, sl_decl_t *mine, size_t bytes,
                 const sl_deadline_t *deadline, sl_agreement_t *out)
{
    sluice_context_t *ctx = ch->ctx;
    const uint64_t me = mine->hello.nonce;
    int rc = sl_hello_send(ctx, ch->peer_rank, mine, bytes);
    if (rc)
        return rc;
    /* The peer's current attempt: its nonce once its DECL was accepted and
     * acknowledged by us; whether it acknowledged ours. */
    uint64_t peer = 0;
    bool acked_by_peer = false;
    sl_agreement_t agreed = { .my_nonce = me };
    /* Having acknowledged the peer, we may give up only when it aborts, or
     * one timeout after our own deadline (it is then taken to be gone). */
    sl_deadline_t hard = { deadline->at_ns + (uint64_t)ch->opt.timeout_ms * 1000000ull };
    sl_backoff_t bo;
    sl_backoff_init(&bo, ch->opt.spin, ch->opt.max_sleep_us);
    for (;;) {
        if ((rc = sl_hello_collect(ctx)))
            break;
        sl_mail_t *m;
        while (rc == SLUICE_OK && (m = sl_hello_take(ctx, ch->peer_rank, ch->name))) {
            const sl_hello_t *h = m->msg;
            if (h->kind == SL_HELLO_DECL) {
                /* A new attempt of the peer replaces any older one. */
                sl_decl_t *theirs = (sl_decl_t *)m->msg;
                peer = 0;
                acked_by_peer = false;
                rc = sl_decl_received(ch, mine, theirs, m->bytes);
                if (rc == SLUICE_OK) {
                    peer = h->nonce;
                    agreed.peer_nonce = peer;
                    agreed.peer_pid = theirs->pid;
                    agreed.peer_start = theirs->start;
                    agreed.same_node = strcmp(theirs->node, mine->node) == 0;
                    rc = sl_hello_reply(ch, SL_HELLO_ACK, me, peer);
                }
            } else if (h->kind == SL_HELLO_ACK && peer && h->nonce == peer && h->acked == me) {
                acked_by_peer = true;
            } else if (h->kind == SL_HELLO_ABORT && peer && h->nonce == peer) {
                peer = 0; /* that attempt is over: wait for a fresh one */
                acked_by_peer = false;
            }
            /* Anything else belongs to an older attempt of either side. */
            sl_mail_free(m);
        }
        if (rc)
            break;
        if (peer && acked_by_peer) {
            *out = agreed;
            return SLUICE_OK;
        }
        if (sl_backoff_pause(&bo, peer ? &hard : deadline) == SLUICE_ETIMEDOUT) {
            rc = sl_fail(SLUICE_ETIMEDOUT, "channel \"%s\": peer \"%s\" (rank %d) did not %s "
                                           "within %u ms",
                         ch->name, ctx->peers[ch->peer_rank].name, ch->peer_rank,
                         peer ? "acknowledge the open" : "open the channel", ch->opt.timeout_ms);
            break;
        }
    }
    /* Tell the peer this attempt is over, so it never acts on it. */
    sl_hello_reply(ch, SL_HELLO_ABORT, me, 0);
    return rc;
}
