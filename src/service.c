/* SPDX-License-Identifier: MIT */
/* Services: a source that controllers of other jobs find by name and connect to (docs/service.md). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sluice/service.h>

#include "backoff.h"
#include "internal.h"
#include "knock.h"
#include "liveness.h"
#include "mpiguard.h"
#include "svc_record.h"

#define SL_SERVICE_TIMEOUT_MS 30000u
#define SL_HELLO_MS 2000u         /* a controller says who it is at once */
#define SL_KNOCK_MAGIC "SLKNOCK2" /* 2: messages carry the record's secret; go is acknowledged */
/* The usual reason a connect or accept between jobs fails. */
#define SL_NO_CONNECT_HINT                                                                     \
    " (Open MPI connects separately launched jobs only when each was started by mpirun "    \
    "--ompi-server file:URI; srun's direct launch cannot)"

/*
 * The knock's messages (docs/service.md, "Protocol"): the controller's
 * hello (CONNECT, or PROBE from a source that checks whether a record is
 * live) and go, the source's acknowledgement of go (ACK). Each carries the
 * secret of the record the controller found; the source answers nothing
 * to a message without it.
 */
enum { SL_KNOCK_CONNECT = 1, SL_KNOCK_PROBE = 2, SL_KNOCK_GO = 3, SL_KNOCK_ACK = 4 };
typedef struct sl_knock_msg {
    char magic[8];
    uint32_t kind;            /* network byte order */
    uint8_t secret[SL_SECRET_BYTES];
} sl_knock_msg_t;
_Static_assert(sizeof(sl_knock_msg_t) == 28, "the knock message has no padding");
/* The source's answer to a hello: the MPI port name follows. */
typedef struct sl_reply {
    char magic[8];
    uint32_t port_len;        /* network byte order, with the terminating NUL */
} sl_reply_t;

struct sluice_service {
    char name[64];
    char file[PATH_MAX];      /* the port file, "" if none */
    sl_svc_record_t me;           /* what `record` says, the secret included */
    char record[SL_SVC_RECORD_MAX];
    char mpi_port[MPI_MAX_PORT_NAME];
    bool port_open, published, file_written;
    uint32_t timeout_ms;
    sl_knock_listener_t knock;
};

static sl_knock_msg_t sl_msg(uint32_t kind, const uint8_t secret[SL_SECRET_BYTES])
{
    sl_knock_msg_t m = { .kind = htonl(kind) };
    memcpy(m.magic, SL_KNOCK_MAGIC, sizeof m.magic);
    memcpy(m.secret, secret, sizeof m.secret);
    return m;
}

/* Is `m` a `kind` message that knows `secret`? */
static bool sl_msg_is(const sl_knock_msg_t *m, uint32_t kind, const uint8_t secret[SL_SECRET_BYTES])
{
    return memcmp(m->magic, SL_KNOCK_MAGIC, sizeof m->magic) == 0 && ntohl(m->kind) == kind &&
           sl_secret_equal(m->secret, secret);
}

/* ------------------------------------------------------------ options, names */

typedef struct sl_service_cfg {
    const char *dir;          /* port directory, NULL if none */
    uint32_t timeout_ms;
} sl_service_cfg_t;

static int sl_service_cfg(const char *name, const sluice_service_options_t *o, sl_service_cfg_t *c)
{
    if (!name || !*name || strlen(name) > 63 || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                              "abcdefghijklmnopqrstuvwxyz"
                                                              "0123456789._-") != strlen(name) ||
        name[0] == '.')
        return sl_fail(SLUICE_EINVAL, "a service name is 1..63 characters of A-Z a-z 0-9 . _ - "
                                      "and does not start with '.', got \"%s\"",
                       name ? name : "(null)");
    sluice_service_options_t d = { .size = sizeof d };
    if (o) {
        if (o->size < offsetof(sluice_service_options_t, timeout_ms) + sizeof o->timeout_ms)
            return sl_fail(SLUICE_EINVAL, "sluice_service_options_t.size %zu is too small",
                           o->size);
        d = *o;
    }
    c->dir = d.port_dir ? d.port_dir : getenv("SLUICE_PORT_DIR");
    if (c->dir && !*c->dir)
        c->dir = NULL;
    c->timeout_ms = d.timeout_ms ? d.timeout_ms : SL_SERVICE_TIMEOUT_MS;
    if (c->dir && strlen(c->dir) + strlen(name) + 16 > PATH_MAX)
        return sl_fail(SLUICE_EINVAL, "port directory \"%s\" is too long", c->dir);
    return SLUICE_OK;
}

/* ------------------------------------------------------------ MPI error handlers */

/*
 * The name-service calls and MPI_Open_port/MPI_Close_port have no
 * communicator of their own: MPI raises their errors on MPI_COMM_WORLD
 * (MPI-3) or MPI_COMM_SELF (MPI-4). Both get MPI_ERRORS_RETURN around those
 * calls and their own handlers back after: a missing name server must be a
 * status, never an abort of the host process. The swap is process-wide, so
 * sl_handlers_mutex serialises it between sluice's threads (at
 * MPI_THREAD_MULTIPLE the MPI guard does not). What it cannot order is an
 * application thread that sets or relies on those two handlers meanwhile
 * (docs/service.md, "Known gaps"). Taken inside the MPI guard, never around it.
 */
static pthread_mutex_t sl_handlers_mutex = PTHREAD_MUTEX_INITIALIZER;
/* A duplicate of MPI_COMM_SELF with MPI_ERRORS_RETURN, made once, for
 * MPI_Comm_accept and MPI_Comm_connect, which raise their errors on the
 * communicator they are given: no swap there. Under sl_handlers_mutex;
 * never freed (MPI_Finalize does). */
static MPI_Comm sl_self = MPI_COMM_NULL;

typedef struct sl_quiet {
    MPI_Errhandler world, self;
} sl_quiet_t;

static void sl_quiet_begin(sl_quiet_t *q)
{
    pthread_mutex_lock(&sl_handlers_mutex); /* pairs with the unlock in sl_quiet_end */
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &q->world);
    MPI_Comm_get_errhandler(MPI_COMM_SELF, &q->self);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
}

static void sl_quiet_end(sl_quiet_t *q)
{
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, q->world);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, q->self);
    MPI_Errhandler_free(&q->world);
    MPI_Errhandler_free(&q->self);
    pthread_mutex_unlock(&sl_handlers_mutex);
}

/* The service's own MPI_COMM_SELF (made on first use). Under the MPI guard. */
static int sl_self_comm(MPI_Comm *comm_p)
{
    sl_quiet_t q;
    sl_quiet_begin(&q); /* a failing dup of MPI_COMM_SELF reports on MPI_COMM_SELF */
    if (sl_self == MPI_COMM_NULL) {
        MPI_Comm dup;
        if (MPI_Comm_dup(MPI_COMM_SELF, &dup) == MPI_SUCCESS) {
            MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
            MPI_Comm_set_name(dup, "sluice service self");
            sl_self = dup;
        }
    }
    *comm_p = sl_self;
    sl_quiet_end(&q);
    if (*comm_p == MPI_COMM_NULL)
        return sl_fail(SLUICE_EMPI, "service: MPI_Comm_dup of MPI_COMM_SELF failed");
    return SLUICE_OK;
}

/* ------------------------------------------------------------ name server */

/*
 * The guard is waited for until `dl`; the name-server call itself cannot be
 * bounded (Open MPI waits as long as its name server does not answer:
 * docs/service.md, "Deadlines").
 */

/* The record published under `name`: SLUICE_OK, SLUICE_ENOTFOUND, or
 * SLUICE_ETIMEDOUT when the MPI guard stayed held. */
static int sl_ns_lookup(const char *name, char *record, size_t len, const sl_deadline_t *dl)
{
    char value[MPI_MAX_PORT_NAME] = "";
    int rc = sl_mpi_enter_until(dl, "service: MPI_Lookup_name");
    if (rc)
        return rc;
    sl_quiet_t q;
    sl_quiet_begin(&q);
    int err = MPI_Lookup_name(name, MPI_INFO_NULL, value);
    sl_quiet_end(&q);
    sl_mpi_leave();
    if (err != MPI_SUCCESS)
        return SLUICE_ENOTFOUND;
    snprintf(record, len, "%s", value);
    return SLUICE_OK;
}

/* SLUICE_OK, SLUICE_ENOTFOUND (no name server), or SLUICE_ETIMEDOUT (the guard). */
static int sl_ns_publish(const char *name, const char *record, const sl_deadline_t *dl)
{
    int rc = sl_mpi_enter_until(dl, "service: MPI_Publish_name");
    if (rc)
        return rc;
    sl_quiet_t q;
    sl_quiet_begin(&q);
    int err = MPI_Publish_name(name, MPI_INFO_NULL, record);
    sl_quiet_end(&q);
    sl_mpi_leave();
    return err == MPI_SUCCESS ? SLUICE_OK : SLUICE_ENOTFOUND;
}

static int sl_ns_unpublish(const char *name, const char *record, const sl_deadline_t *dl)
{
    int rc = sl_mpi_enter_until(dl, "service: MPI_Unpublish_name");
    if (rc)
        return rc;
    sl_quiet_t q;
    sl_quiet_begin(&q);
    MPI_Unpublish_name(name, MPI_INFO_NULL, record);
    sl_quiet_end(&q);
    sl_mpi_leave();
    return SLUICE_OK;
}

/* ------------------------------------------------------------ finding a source */

/* Does a live service answer at `r`? One TCP connection, told it is a probe. */
static bool sl_probe(const sl_svc_record_t *r, uint32_t ms)
{
    sl_deadline_t dl = sl_deadline_in(ms);
    int fd;
    if (sl_knock_dial(r->addrs, (uint16_t)r->port, ms, &dl, &fd) != SLUICE_OK)
        return false;
    sl_knock_msg_t h = sl_msg(SL_KNOCK_PROBE, r->secret);
    sl_knock_write(fd, &h, sizeof h, &dl);
    close(fd);
    return true;
}

/*
 * The record of whoever serves `name` now, by the port file (if a directory
 * is set) or the name server; SLUICE_ENOTFOUND if neither has one. A port
 * file that is there but not trusted or not a record is passed over for the
 * name server, and `why` says what was wrong with it ("" if nothing was).
 */
static int sl_find(const char *name, const sl_service_cfg_t *c, const sl_deadline_t *dl,
                   sl_svc_record_t *r, char text[SL_SVC_RECORD_MAX], char *why, size_t why_len)
{
    why[0] = '\0';
    if (c->dir) {
        char path[PATH_MAX];
        sl_port_file_path(path, sizeof path, c->dir, name);
        int rc = sl_port_file_read(path, text, SL_SVC_RECORD_MAX);
        if (rc == SLUICE_OK)
            rc = sl_svc_record_parse(text, r);
        if (rc == SLUICE_OK)
            return SLUICE_OK;
        if (rc != SLUICE_ENOTFOUND)
            snprintf(why, why_len, "%s", sluice_last_error());
    }
    if (sl_ns_lookup(name, text, SL_SVC_RECORD_MAX, dl) == SLUICE_OK &&
        sl_svc_record_parse(text, r) == SLUICE_OK)
        return SLUICE_OK;
    return SLUICE_ENOTFOUND;
}

/* ------------------------------------------------------------ source */

static void sl_withdraw(sluice_service_t *s, const sl_deadline_t *dl)
{
    if (s->published)
        sl_ns_unpublish(s->name, s->record, dl); /* if the guard stays held: a stale record,
                                                    replaced by the next source (no live port) */
    s->published = false;
    if (s->file_written) {
        /* Only our own record: a newer owner's file stays. */
        char text[SL_SVC_RECORD_MAX];
        if (sl_port_file_read(s->file, text, sizeof text) == SLUICE_OK && !strcmp(text, s->record))
            unlink(s->file);
    }
    s->file_written = false;
}

void sluice_service_close(sluice_service_t *s)
{
    if (!s)
        return;
    sl_deadline_t dl = sl_deadline_in(s->timeout_ms);
    sl_withdraw(s, &dl);
    sl_knock_unlisten(&s->knock); /* first: no controller gets a port about to close */
    if (s->port_open && sl_mpi_enter_until(&dl, "service: MPI_Close_port") == SLUICE_OK) {
        sl_quiet_t q;
        sl_quiet_begin(&q);
        MPI_Close_port(s->mpi_port);
        sl_quiet_end(&q);
        sl_mpi_leave();
    } /* else the port stays open until MPI_Finalize: nobody can reach it any more */
    free(s);
}

/* Is the name still ours where we published it? (Two sources that start at
 * once both find it free; the name server and the port file then answer
 * with the newer record, so the older one sees it lost and withdraws.) */
static bool sl_still_ours(const sluice_service_t *s, const sl_deadline_t *dl)
{
    char text[SL_SVC_RECORD_MAX];
    if (s->file_written && (sl_port_file_read(s->file, text, sizeof text) != SLUICE_OK ||
                            strcmp(text, s->record)))
        return false;
    if (s->published &&
        (sl_ns_lookup(s->name, text, sizeof text, dl) != SLUICE_OK || strcmp(text, s->record)))
        return false;
    return true;
}

int sluice_service_open(const char *name, const sluice_service_options_t *o,
                        sluice_service_t **svc_p)
{
    sl_service_cfg_t c;
    int rc = sl_service_cfg(name, o, &c);
    if (rc)
        return rc;
    if (!svc_p)
        return sl_fail(SLUICE_EINVAL, "svc_p must not be NULL");
    sl_mpi_guard_init();
    sl_deadline_t dl = sl_deadline_in(c.timeout_ms);
    sl_svc_record_t other;
    char text[SL_SVC_RECORD_MAX], why[256];
    if (sl_find(name, &c, &dl, &other, text, why, sizeof why) == SLUICE_OK &&
        sl_probe(&other, 2000))
        return sl_fail(SLUICE_EBUSY, "service \"%s\" is already served by process %d on %s",
                       name, other.pid, other.host);
    sluice_service_t *s = calloc(1, sizeof *s);
    if (!s)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate a service");
    snprintf(s->name, sizeof s->name, "%s", name);
    s->timeout_ms = c.timeout_ms;
    s->knock.fd = -1;
    if ((rc = sl_knock_listen(&s->knock)))
        goto fail;
    sl_svc_record_t *me = &s->me;
    if ((rc = sl_secret_draw(me->secret)))
        goto fail;
    gethostname(me->host, sizeof me->host - 1);
    me->host[strcspn(me->host, " \t\n")] = '\0';
    if (!me->host[0])
        snprintf(me->host, sizeof me->host, "?");
    me->pid = (int)getpid();
    me->start = (unsigned long long)sl_proc_start_time(getpid());
    me->port = s->knock.port;
    snprintf(me->addrs, sizeof me->addrs, "%s", s->knock.addrs);
    if ((rc = sl_svc_record_format(me, s->record, sizeof s->record)))
        goto fail;
    if ((rc = sl_mpi_enter_until(&dl, "service: MPI_Open_port")))
        goto fail;
    sl_quiet_t q;
    sl_quiet_begin(&q);
    int err = MPI_Open_port(MPI_INFO_NULL, s->mpi_port);
    sl_quiet_end(&q);
    sl_mpi_leave();
    if (err != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "service: MPI_Open_port failed");
        goto fail;
    }
    s->port_open = true;
    rc = sl_ns_publish(name, s->record, &dl);
    if (rc == SLUICE_ETIMEDOUT)
        goto fail;
    s->published = rc == SLUICE_OK;
    if (c.dir) {
        sl_port_file_path(s->file, sizeof s->file, c.dir, name);
        if ((rc = sl_port_file_write(s->file, s->record)))
            goto fail;
        s->file_written = true;
    }
    if (!s->published && !s->file_written) {
        rc = sl_fail(SLUICE_ENOTFOUND,
                     "service \"%s\": no name server to publish it on (start the job with "
                     "mpirun --ompi-server file:URI) and no port directory (SLUICE_PORT_DIR)",
                     name);
        goto fail;
    }
    if (!sl_still_ours(s, &dl)) {
        rc = sl_fail(SLUICE_EBUSY, "service \"%s\" was claimed by another source at the same time",
                     name);
        goto fail;
    }
    *svc_p = s;
    return SLUICE_OK;

fail:
    sluice_service_close(s);
    return rc;
}

/*
 * Merge the two-process intercommunicator (controller low) and make a
 * context. Under the MPI guard, which the caller took before its accept or
 * connect and leaves after: the steps after the connection are collectives
 * of the two processes, and a side that gave up between them would leave
 * the other inside MPI for good. (A source may be serving other controllers,
 * whose channels' threads use MPI too; sluice_context_create takes no guard
 * itself.)
 */
static int sl_context_of(MPI_Comm *inter, bool high, const char *proc_name,
                         sluice_context_t **ctx_p)
{
    MPI_Comm both;
    int err = MPI_Intercomm_merge(*inter, high, &both);
    MPI_Comm_free(inter);
    if (err != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "service: MPI_Intercomm_merge failed");
    int rc = sluice_context_create(both, proc_name, ctx_p);
    MPI_Comm_free(&both);
    return rc;
}

/* What sl_serve_knock says of a knock it dropped: not a status of the caller's. */
#define SL_DROPPED 1

/*
 * One knock at the source, from its hello on: SLUICE_OK with the controller
 * acknowledged and a context made; SL_DROPPED when the knock came to
 * nothing (the caller's wait goes on); else a failure of the accept itself.
 */
static int sl_serve_knock(sluice_service_t *s, int fd, const sl_deadline_t *hello_dl,
                          const char *proc_name, sluice_context_t **ctx_p)
{
    /* A probe, a stranger (no magic or not this record's secret) or a
     * controller that left: dropped without a word. */
    sl_knock_msg_t m;
    if (sl_knock_read(fd, &m, sizeof m, hello_dl) != SLUICE_OK ||
        !sl_msg_is(&m, SL_KNOCK_CONNECT, s->me.secret))
        return SL_DROPPED;
    sl_deadline_t dl = sl_deadline_in(s->timeout_ms);
    size_t len = strlen(s->mpi_port) + 1;
    sl_reply_t r = { .port_len = htonl((uint32_t)len) };
    memcpy(r.magic, SL_KNOCK_MAGIC, sizeof r.magic);
    if (sl_knock_write(fd, &r, sizeof r, &dl) != SLUICE_OK ||
        sl_knock_write(fd, s->mpi_port, len, &dl) != SLUICE_OK)
        return SL_DROPPED;
    /* Enter the accept only once the controller says it is entering its
     * connect: a knock that read the port and went away is dropped here,
     * since nothing can end an MPI_Comm_accept that nobody answers. */
    if (sl_knock_read(fd, &m, sizeof m, &dl) != SLUICE_OK ||
        !sl_msg_is(&m, SL_KNOCK_GO, s->me.secret))
        return SL_DROPPED;
    /* The acknowledgement promises the accept, so everything the accept
     * needs is had first: the guard, then a deadline not yet passed (a
     * controller that waited this long may have given up: it enters its
     * connect only on the acknowledgement). */
    int rc = sl_mpi_enter_until(&dl, "service: MPI_Comm_accept");
    if (rc)
        return rc; /* the guard stayed held: the caller hears why */
    MPI_Comm self, inter;
    if ((rc = sl_self_comm(&self)))
        goto leave;
    sl_knock_msg_t ack = sl_msg(SL_KNOCK_ACK, s->me.secret);
    if (sl_deadline_passed(&dl) || sl_knock_write(fd, &ack, sizeof ack, &dl) != SLUICE_OK) {
        rc = SL_DROPPED;
        goto leave;
    }
    int err = MPI_Comm_accept(s->mpi_port, MPI_INFO_NULL, 0, self, &inter);
    if (err != MPI_SUCCESS)
        rc = sl_fail(SLUICE_EMPI, "service \"%s\": MPI_Comm_accept failed%s", s->name,
                     SL_NO_CONNECT_HINT);
    else
        rc = sl_context_of(&inter, true, proc_name, ctx_p);
leave:
    sl_mpi_leave();
    return rc;
}

int sluice_service_accept(sluice_service_t *s, const char *proc_name, uint32_t timeout_ms,
                          sluice_context_t **ctx_p)
{
    if (!s || !proc_name || !ctx_p)
        return sl_fail(SLUICE_EINVAL, "svc, proc_name and ctx_p must not be NULL");
    sl_deadline_t wait = sl_deadline_in(timeout_ms);
    for (bool dropped = false;; dropped = true) {
        int fd;
        /* After a knock that came to nothing, only the caller's time is left:
         * the next one waits for the next call. */
        int rc = dropped && sl_deadline_passed(&wait)
                     ? SLUICE_EAGAIN
                     : sl_knock_accept(&s->knock, &wait, &fd);
        if (rc == SLUICE_EAGAIN)
            return timeout_ms ? sl_fail(SLUICE_ETIMEDOUT, "service \"%s\": no controller came "
                                                          "in %u ms",
                                        s->name, timeout_ms)
                              : sl_fail(SLUICE_EAGAIN, "service \"%s\": no controller is "
                                                       "waiting",
                                        s->name);
        if (rc)
            return rc;
        /* A controller says hello as soon as it is connected: give it up to
         * SL_HELLO_MS, but no more than the caller's wait (at least a
         * quarter second, so that accept(0) can take one that is there). */
        sl_deadline_t hello_dl = sl_deadline_in(SL_HELLO_MS), least = sl_deadline_in(250);
        if (hello_dl.at_ns > wait.at_ns)
            hello_dl = wait.at_ns > least.at_ns ? wait : least;
        rc = sl_serve_knock(s, fd, &hello_dl, proc_name, ctx_p);
        close(fd);
        if (rc != SL_DROPPED)
            return rc;
    }
}

/* ------------------------------------------------------------ controller */

/*
 * Knock at the source of record `r` (`text`) and connect: SLUICE_OK with a
 * context, or a status. Says "connecting now" (go) only when the connection
 * can be made: Open MPI 4.1 connects two jobs only through a name server
 * both were started with, and a source told go enters an accept that
 * nothing else ends. The name server must therefore answer this process
 * with the same record (SLUICE_ENOTSUP if it has none to ask; SLUICE_EAGAIN
 * if it names another, newer source: look again). Enters MPI_Comm_connect
 * only once the source acknowledged go; without that acknowledgement by
 * `dl`, the source did not accept (a status: knock again). `*entered_p`:
 * MPI_Comm_connect was entered, so the status is final.
 */
static int sl_knock_at(const char *name, const sl_svc_record_t *r, const char *text,
                       const sl_deadline_t *dl, const char *proc_name, sluice_context_t **ctx_p,
                       bool *entered_p)
{
    int fd, rc;
    if ((rc = sl_knock_dial(r->addrs, (uint16_t)r->port, 2000, dl, &fd)))
        return rc;
    sl_knock_msg_t m = sl_msg(SL_KNOCK_CONNECT, r->secret);
    sl_reply_t rep;
    char port[MPI_MAX_PORT_NAME];
    if ((rc = sl_knock_write(fd, &m, sizeof m, dl)) ||
        (rc = sl_knock_read(fd, &rep, sizeof rep, dl)))
        goto out;
    uint32_t n = ntohl(rep.port_len);
    if (memcmp(rep.magic, SL_KNOCK_MAGIC, sizeof rep.magic) != 0 || n < 2 || n > sizeof port) {
        rc = sl_fail(SLUICE_ECORRUPT, "service: the source answered with a bad reply");
        goto out;
    }
    if ((rc = sl_knock_read(fd, port, n, dl)))
        goto out;
    port[n - 1] = '\0';
    char seen[SL_SVC_RECORD_MAX];
    rc = sl_ns_lookup(name, seen, sizeof seen, dl);
    if (rc == SLUICE_ENOTFOUND)
        rc = sl_fail(SLUICE_ENOTSUP, "service \"%s\": the source answered, but this job has no "
                                     "name server to connect through%s",
                     name, SL_NO_CONNECT_HINT);
    else if (rc == SLUICE_OK && strcmp(seen, text) != 0)
        rc = SLUICE_EAGAIN;
    if (rc)
        goto out;
    /* The guard is taken before go and held through the acknowledgement:
     * once the source acknowledged, it is in its accept, and this side must
     * then connect without waiting for anything else. The round trip is
     * bounded by `dl` (a live source answers at once). */
    MPI_Comm self, inter;
    if ((rc = sl_mpi_enter_until(dl, "service: MPI_Comm_connect")))
        goto out;
    if ((rc = sl_self_comm(&self)))
        goto leave;
    m = sl_msg(SL_KNOCK_GO, r->secret);
    if ((rc = sl_knock_write(fd, &m, sizeof m, dl)) || (rc = sl_knock_read(fd, &m, sizeof m, dl)))
        goto leave; /* no acknowledgement: the source did not accept */
    if (!sl_msg_is(&m, SL_KNOCK_ACK, r->secret)) {
        rc = sl_fail(SLUICE_ECORRUPT, "service: the source answered go with a bad "
                                      "acknowledgement");
        goto leave;
    }
    close(fd);
    fd = -1;
    *entered_p = true;
    int err = MPI_Comm_connect(port, MPI_INFO_NULL, 0, self, &inter);
    if (err != MPI_SUCCESS)
        rc = sl_fail(SLUICE_EMPI, "service \"%s\": MPI_Comm_connect failed%s", name,
                     SL_NO_CONNECT_HINT);
    else
        rc = sl_context_of(&inter, false, proc_name, ctx_p);
leave:
    sl_mpi_leave();
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

int sluice_service_connect(const char *name, const char *proc_name,
                           const sluice_service_options_t *o, sluice_context_t **ctx_p)
{
    sl_service_cfg_t c;
    int rc = sl_service_cfg(name, o, &c);
    if (rc)
        return rc;
    if (!proc_name || !ctx_p)
        return sl_fail(SLUICE_EINVAL, "proc_name and ctx_p must not be NULL");
    sl_mpi_guard_init();
    sl_deadline_t dl = sl_deadline_in(c.timeout_ms);
    sl_backoff_t b;
    sl_backoff_init(&b, 0, 100000);
    bool seen = false;
    char why[256] = "";
    for (;;) {
        sl_svc_record_t r;
        char text[SL_SVC_RECORD_MAX];
        if (sl_find(name, &c, &dl, &r, text, why, sizeof why) == SLUICE_OK) {
            bool entered = false;
            rc = sl_knock_at(name, &r, text, &dl, proc_name, ctx_p, &entered);
            if (rc == SLUICE_OK || rc == SLUICE_ENOTSUP || entered)
                return rc;
            seen = seen || rc != SLUICE_ENOTFOUND;
        }
        if (sl_backoff_pause(&b, &dl) == SLUICE_ETIMEDOUT)
            break;
    }
    if (seen)
        return sl_fail(SLUICE_ETIMEDOUT, "service \"%s\": its source did not accept within %u ms",
                       name, c.timeout_ms);
    char where[PATH_MAX + 32] = "on the name server";
    if (c.dir) {
        char path[PATH_MAX];
        sl_port_file_path(path, sizeof path, c.dir, name);
        snprintf(where, sizeof where, "in %s and on the name server", path);
    }
    return sl_fail(SLUICE_ENOTFOUND,
                   "service \"%s\": no live source serves it (looked %s for %u ms; were the jobs "
                   "started with mpirun --ompi-server file:URI?)%s%s",
                   name, where, c.timeout_ms, why[0] ? "; " : "", why);
}
