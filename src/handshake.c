/* SPDX-License-Identifier: MIT */
/* The open agreement: the mailbox of handshake messages and the acknowledged handshake. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handshake.h"
#include "mpiguard.h"

/* Handshake messages travel on the context's own communicator, one tag. */
#define SL_HELLO_TAG 1

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

/* Forget completed sends, as far as the MPI guard is free now (never waits). Called with the
 * box lock held. */
static void sl_outgoing_reap(struct sl_hello_box *b)
{
    for (sl_outgoing_t **p = &b->out; *p;) {
        int done = 0;
        if (!sl_mpi_try_enter())
            return; /* the next reap goes on */
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

static int sl_hello_collect(sluice_context_t *ctx, const sl_deadline_t *deadline);

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
    pthread_mutex_unlock(&b->lock);
    /* Receive what has arrived (an ABORT of a failed open, say): a message
     * left unreceived on a freed communicator goes to the next one that
     * gets its id (see sl_handshake). */
    sl_hello_collect(ctx, &grace);
    pthread_mutex_lock(&b->lock);
    for (sl_outgoing_t *o = b->out, *n; o; o = n) {
        n = o->next;
        /* Context teardown: no deadline, and no sluice thread is in MPI any
         * more (every channel is closed); only the application may hold
         * the guard. */
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
static int sl_hello_send(sluice_context_t *ctx, int peer, const void *msg, size_t bytes,
                         const sl_deadline_t *deadline)
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
    int rc = sl_mpi_enter_until(deadline, "handshake send");
    if (rc != SLUICE_OK) {
        free(buf);
        free(o);
        return rc;
    }
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
static int sl_hello_collect(sluice_context_t *ctx, const sl_deadline_t *deadline)
{
    struct sl_hello_box *b = ctx->hello;
    int rc = SLUICE_OK;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        int found = 0, count = 0;
        MPI_Message m;
        MPI_Status st;
        if ((rc = sl_mpi_enter_until(deadline, "handshake probe")) != SLUICE_OK)
            break;
        int mrc = MPI_Improbe(MPI_ANY_SOURCE, SL_HELLO_TAG, ctx->hello_comm, &found, &m, &st);
        if (mrc != MPI_SUCCESS || !found) {
            sl_mpi_leave();
            if (mrc != MPI_SUCCESS)
                rc = sl_fail(SLUICE_EMPI, "handshake probe failed");
            break;
        }
        /* The matched message must be received (even when it is dropped):
         * the guard stays entered from the probe to the receive, so there
         * is no second wait for it that could time out in between. */
        MPI_Get_count(&st, MPI_BYTE, &count);
        sl_mail_t *mail = calloc(1, sizeof *mail);
        void *buf = malloc(count > 0 ? (size_t)count : 1);
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

static int sl_hello_reply(sluice_channel_t *ch, uint32_t kind, uint64_t nonce, uint64_t acked,
                          const sl_deadline_t *deadline)
{
    sl_hello_t h = { .magic = SL_DECL_MAGIC, .kind = kind, .nonce = nonce, .acked = acked };
    snprintf(h.channel, sizeof h.channel, "%s", ch->name);
    return sl_hello_send(ch->ctx, ch->peer_rank, &h, sizeof h, deadline);
}

int sl_handshake(sluice_channel_t *ch, sl_decl_t *mine, size_t bytes,
                 const sl_deadline_t *deadline, sl_agreement_t *out)
{
    sluice_context_t *ctx = ch->ctx;
    const uint64_t me = mine->hello.nonce;
    int rc = sl_hello_send(ctx, ch->peer_rank, mine, bytes, deadline);
    if (rc)
        return rc;
    /* The peer's current attempt: its nonce once its DECL was accepted and
     * acknowledged by us; whether it acknowledged ours. */
    uint64_t peer = 0;
    bool acked_by_peer = false, verdict_shared = false;
    sl_agreement_t agreed = { .my_nonce = me };
    /* Having acknowledged the peer, we may give up only when it aborts, or
     * one timeout after our own deadline (it is then taken to be gone). */
    sl_deadline_t hard = { deadline->at_ns + (uint64_t)ch->opt.timeout_ms * 1000000ull };
    sl_backoff_t bo;
    sl_backoff_init(&bo, ch->opt.spin, ch->opt.max_sleep_us);
    for (;;) {
        if ((rc = sl_hello_collect(ctx, peer ? &hard : deadline)))
            break;
        sl_mail_t *m;
        while (rc == SLUICE_OK && (m = sl_hello_take(ctx, ch->peer_rank, ch->name))) {
            const sl_hello_t *h = m->msg;
            if (h->kind == SL_HELLO_DECL) {
                /* A new attempt of the peer replaces any older one. */
                sl_decl_t *theirs = (sl_decl_t *)m->msg;
                peer = 0;
                acked_by_peer = false;
                rc = sl_decl_check(ch->name, ch->peer_rank, mine, theirs, m->bytes,
                                   &agreed.device_path);
                /* Declarations that disagree: the peer compares the same two
                 * and fails too, so it needs no ABORT. */
                verdict_shared = rc == SLUICE_ETYPE || rc == SLUICE_ENOTSUP;
                if (rc == SLUICE_OK) {
                    peer = h->nonce;
                    agreed.peer_nonce = peer;
                    agreed.peer_pid = theirs->pid;
                    agreed.peer_start = theirs->start;
                    agreed.same_node = strcmp(theirs->node, mine->node) == 0;
                    rc = sl_hello_reply(ch, SL_HELLO_ACK, me, peer, &hard);
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
    /*
     * Tell the peer this attempt is over, so it never acts on it; with a
     * bound of its own, the handshake's being spent. Not when it reached the
     * same verdict: a message nobody will receive must not be left in
     * flight, since Open MPI hands a message for a communicator that no
     * longer exists to the next one that gets its id, and a stray one there
     * breaks that communicator's message order (seen: a service's next
     * connection hung in MPI_Intercomm_merge after a refused open).
     */
    if (!verdict_shared) {
        sl_deadline_t last = sl_deadline_in(ch->opt.timeout_ms);
        sl_hello_reply(ch, SL_HELLO_ABORT, me, 0, &last);
    }
    return rc;
}
