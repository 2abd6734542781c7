/* SPDX-License-Identifier: MIT */
/* Services: a source that controllers of other jobs find by name and connect to (docs/service.md). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sluice/service.h>

#include "backoff.h"
#include "internal.h"
#include "knock.h"
#include "liveness.h"
#include "mpiguard.h"

#define SL_SERVICE_TIMEOUT_MS 30000u
#define SL_HELLO_MS 2000u         /* a controller says who it is at once */
#define SL_RECORD_MAX 512         /* well under MPI_MAX_PORT_NAME: it is published as a port */
#define SL_KNOCK_MAGIC "SLKNOCK1"
/* The usual reason a connect or accept between jobs fails. */
#define SL_NO_CONNECT_HINT                                                                     \
    " (Open MPI connects separately launched jobs only when each was started by mpirun "    \
    "--ompi-server file:URI; srun's direct launch cannot)"

/* What a controller says after its TCP connection is taken. */
enum { SL_KNOCK_CONNECT = 1, SL_KNOCK_PROBE = 2 };
typedef struct sl_hello {
    char magic[8];
    uint32_t kind;            /* network byte order */
} sl_hello_t;
typedef struct sl_reply {
    char magic[8];
    uint32_t port_len;        /* network byte order; the MPI port name follows */
} sl_reply_t;

struct sluice_service {
    char name[64];
    char file[PATH_MAX];      /* the port file, "" if none */
    char record[SL_RECORD_MAX];
    char mpi_port[MPI_MAX_PORT_NAME];
    bool port_open, published, file_written;
    uint32_t timeout_ms;
    sl_knock_listener_t knock;
};

/* A service record, as published and as written to a port file. */
typedef struct sl_record {
    int pid;
    unsigned long long start;
    char host[64];
    unsigned port;
    char addrs[SL_KNOCK_ADDRS_MAX];
} sl_record_t;

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

static void sl_port_file(char *out, size_t len, const char *dir, const char *name)
{
    snprintf(out, len, "%s/%s.port", dir, name);
}

static int sl_record_parse(const char *text, sl_record_t *r)
{
    unsigned version = 0;
    int n = sscanf(text, "sluice-service %u %d %llu %63s %u %255s", &version, &r->pid, &r->start,
                   r->host, &r->port, r->addrs);
    if (n != 6 || version != 1 || r->port == 0 || r->port > 65535)
        return sl_fail(SLUICE_ECORRUPT, "not a sluice service record of version 1: \"%.80s\"",
                       text);
    return SLUICE_OK;
}

/* ------------------------------------------------------------ name server */

/*
 * MPI raises errors of the name service on MPI_COMM_WORLD (MPI-3) or
 * MPI_COMM_SELF (MPI-4). Both get MPI_ERRORS_RETURN around our calls and
 * their own handlers back after: a missing name server must be a status,
 * never an abort of the host process.
 */
typedef struct sl_quiet {
    MPI_Errhandler world, self;
} sl_quiet_t;

static void sl_quiet_begin(sl_quiet_t *q)
{
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
}

/* The record published under `name`, or SLUICE_ENOTFOUND. */
static int sl_ns_lookup(const char *name, char *record, size_t len)
{
    char value[MPI_MAX_PORT_NAME] = "";
    sl_quiet_t q;
    sl_mpi_enter();
    sl_quiet_begin(&q);
    int err = MPI_Lookup_name(name, MPI_INFO_NULL, value);
    sl_quiet_end(&q);
    sl_mpi_leave();
    if (err != MPI_SUCCESS)
        return SLUICE_ENOTFOUND;
    snprintf(record, len, "%s", value);
    return SLUICE_OK;
}

static bool sl_ns_publish(const char *name, const char *record)
{
    sl_quiet_t q;
    sl_mpi_enter();
    sl_quiet_begin(&q);
    int err = MPI_Publish_name(name, MPI_INFO_NULL, record);
    sl_quiet_end(&q);
    sl_mpi_leave();
    return err == MPI_SUCCESS;
}

static void sl_ns_unpublish(const char *name, const char *record)
{
    sl_quiet_t q;
    sl_mpi_enter();
    sl_quiet_begin(&q);
    MPI_Unpublish_name(name, MPI_INFO_NULL, record);
    sl_quiet_end(&q);
    sl_mpi_leave();
}

/* ------------------------------------------------------------ port files */

static int sl_file_read(const char *path, char *record, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return SLUICE_ENOTFOUND;
    ssize_t n = read(fd, record, len - 1);
    close(fd);
    if (n <= 0)
        return SLUICE_ENOTFOUND;
    record[n] = '\0';
    record[strcspn(record, "\n")] = '\0';
    return SLUICE_OK;
}

/* Write the port file whole or not at all: a temporary file renamed into place. */
static int sl_file_write(const char *path, const char *record)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return sl_fail(SLUICE_ESYS, "service: cannot create %s: %s", tmp, strerror(errno));
    size_t len = strlen(record);
    bool ok = write(fd, record, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int rc = sl_fail(SLUICE_ESYS, "service: cannot write port file %s: %s", path,
                         strerror(errno));
        unlink(tmp);
        return rc;
    }
    return SLUICE_OK;
}

/* ------------------------------------------------------------ knocks */

/* Does a live service answer at `r`? One TCP connection, told it is a probe. */
static bool sl_probe(const sl_record_t *r, uint32_t ms)
{
    sl_deadline_t dl = sl_deadline_in(ms);
    int fd;
    if (sl_knock_dial(r->addrs, (uint16_t)r->port, ms, &dl, &fd) != SLUICE_OK)
        return false;
    sl_hello_t h = { .kind = htonl(SL_KNOCK_PROBE) };
    memcpy(h.magic, SL_KNOCK_MAGIC, sizeof h.magic);
    sl_knock_write(fd, &h, sizeof h, &dl);
    close(fd);
    return true;
}

/* The record of whoever serves `name` now, by the port file (if a
 * directory is set) or the name server; SLUICE_ENOTFOUND if neither has one. */
static int sl_find(const char *name, const sl_service_cfg_t *c, sl_record_t *r,
                   char text[SL_RECORD_MAX])
{
    char path[PATH_MAX];
    if (c->dir) {
        sl_port_file(path, sizeof path, c->dir, name);
        if (sl_file_read(path, text, SL_RECORD_MAX) == SLUICE_OK &&
            sl_record_parse(text, r) == SLUICE_OK)
            return SLUICE_OK;
    }
    if (sl_ns_lookup(name, text, SL_RECORD_MAX) == SLUICE_OK && sl_record_parse(text, r) == SLUICE_OK)
        return SLUICE_OK;
    return SLUICE_ENOTFOUND;
}

/* ------------------------------------------------------------ source */

static void sl_withdraw(sluice_service_t *s)
{
    if (s->published)
        sl_ns_unpublish(s->name, s->record);
    s->published = false;
    if (s->file_written) {
        /* Only our own record: a newer owner's file stays. */
        char text[SL_RECORD_MAX];
        if (sl_file_read(s->file, text, sizeof text) == SLUICE_OK && !strcmp(text, s->record))
            unlink(s->file);
    }
    s->file_written = false;
}

void sluice_service_close(sluice_service_t *s)
{
    if (!s)
        return;
    sl_withdraw(s);
    if (s->port_open) {
        sl_mpi_enter();
        MPI_Close_port(s->mpi_port);
        sl_mpi_leave();
    }
    sl_knock_unlisten(&s->knock);
    free(s);
}

/* Is the name still ours where we published it? (Two sources that start at
 * once both find it free; the name server and the port file then answer
 * with the newer record, so the older one sees it lost and withdraws.) */
static bool sl_still_ours(const sluice_service_t *s)
{
    char text[SL_RECORD_MAX];
    if (s->file_written &&
        (sl_file_read(s->file, text, sizeof text) != SLUICE_OK || strcmp(text, s->record)))
        return false;
    if (s->published &&
        (sl_ns_lookup(s->name, text, sizeof text) != SLUICE_OK || strcmp(text, s->record)))
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
    sl_record_t other;
    char text[SL_RECORD_MAX];
    if (sl_find(name, &c, &other, text) == SLUICE_OK && sl_probe(&other, 2000))
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
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    host[strcspn(host, " \t\n")] = '\0';
    snprintf(s->record, sizeof s->record, "sluice-service 1 %d %llu %s %u %s", (int)getpid(),
             (unsigned long long)sl_proc_start_time(getpid()), host[0] ? host : "?",
             (unsigned)s->knock.port, s->knock.addrs);
    sl_mpi_enter();
    int err = MPI_Open_port(MPI_INFO_NULL, s->mpi_port);
    sl_mpi_leave();
    if (err != MPI_SUCCESS) {
        rc = sl_fail(SLUICE_EMPI, "service: MPI_Open_port failed");
        goto fail;
    }
    s->port_open = true;
    s->published = sl_ns_publish(name, s->record);
    if (c.dir) {
        sl_port_file(s->file, sizeof s->file, c.dir, name);
        if ((rc = sl_file_write(s->file, s->record)))
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
    if (!sl_still_ours(s)) {
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

/* Merge the two-process intercommunicator (controller low) and make a context. */
static int sl_context_of(MPI_Comm *inter, bool high, const char *proc_name,
                         sluice_context_t **ctx_p)
{
    MPI_Comm both;
    sl_mpi_enter();
    int err = MPI_Intercomm_merge(*inter, high, &both);
    MPI_Comm_free(inter);
    sl_mpi_leave();
    if (err != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "service: MPI_Intercomm_merge failed");
    /* Under the guard: a source may be serving other controllers, whose
     * channels' threads use MPI too (RMA, heartbeats). sluice_context_create
     * takes no guard itself. */
    sl_mpi_enter();
    int rc = sluice_context_create(both, proc_name, ctx_p);
    MPI_Comm_free(&both);
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
        sl_hello_t h;
        if (sl_knock_read(fd, &h, sizeof h, &hello_dl) != SLUICE_OK ||
            memcmp(h.magic, SL_KNOCK_MAGIC, sizeof h.magic) != 0 ||
            ntohl(h.kind) != SL_KNOCK_CONNECT) {
            close(fd); /* a probe, a stranger, or a controller that left: wait on */
            continue;
        }
        sl_deadline_t dl = sl_deadline_in(s->timeout_ms);
        size_t len = strlen(s->mpi_port) + 1;
        sl_reply_t r = { .port_len = htonl((uint32_t)len) };
        memcpy(r.magic, SL_KNOCK_MAGIC, sizeof r.magic);
        if (sl_knock_write(fd, &r, sizeof r, &dl) != SLUICE_OK ||
            sl_knock_write(fd, s->mpi_port, len, &dl) != SLUICE_OK) {
            close(fd);
            continue;
        }
        /* Enter the accept only once the controller says it is entering its
         * connect: a knock that read the port and went away is dropped here,
         * since nothing can end an MPI_Comm_accept that nobody answers. */
        char go[sizeof h.magic];
        rc = sl_knock_read(fd, go, sizeof go, &dl);
        close(fd);
        if (rc || memcmp(go, SL_KNOCK_MAGIC, sizeof go) != 0)
            continue; /* that controller is gone; the caller's wait goes on */
        MPI_Comm inter;
        sl_quiet_t q;
        sl_mpi_enter();
        sl_quiet_begin(&q); /* errors come on MPI_COMM_SELF, fatal by default */
        int err = MPI_Comm_accept(s->mpi_port, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter);
        sl_quiet_end(&q);
        sl_mpi_leave();
        if (err != MPI_SUCCESS)
            return sl_fail(SLUICE_EMPI, "service \"%s\": MPI_Comm_accept failed%s", s->name,
                           SL_NO_CONNECT_HINT);
        return sl_context_of(&inter, true, proc_name, ctx_p);
    }
}

/* ------------------------------------------------------------ controller */

/*
 * Knock at the source of record `r` (`text`) and take the MPI port it
 * answers with: SLUICE_OK, or a status. Says "connecting now" only when the
 * connection can be made: Open MPI 4.1 connects two jobs only through a
 * name server both were started with, and a source told "connecting now"
 * enters an accept that nothing else ends. The name server must therefore
 * answer this process with the same record (SLUICE_ENOTSUP if it has none
 * to ask; SLUICE_EAGAIN if it names another, newer source: look again).
 */
static int sl_knock_at(const char *name, const sl_record_t *r, const char *text,
                       const sl_deadline_t *dl, char *port, size_t len)
{
    int fd, rc;
    if ((rc = sl_knock_dial(r->addrs, (uint16_t)r->port, 2000, dl, &fd)))
        return rc;
    sl_hello_t h = { .kind = htonl(SL_KNOCK_CONNECT) };
    memcpy(h.magic, SL_KNOCK_MAGIC, sizeof h.magic);
    sl_reply_t rep;
    if ((rc = sl_knock_write(fd, &h, sizeof h, dl)) ||
        (rc = sl_knock_read(fd, &rep, sizeof rep, dl)))
        goto out;
    uint32_t n = ntohl(rep.port_len);
    if (memcmp(rep.magic, SL_KNOCK_MAGIC, sizeof rep.magic) != 0 || n < 2 || n > len) {
        rc = sl_fail(SLUICE_ECORRUPT, "service: the source answered with a bad reply");
        goto out;
    }
    if ((rc = sl_knock_read(fd, port, n, dl)))
        goto out;
    port[n - 1] = '\0';
    char seen[SL_RECORD_MAX];
    if (sl_ns_lookup(name, seen, sizeof seen) != SLUICE_OK)
        rc = sl_fail(SLUICE_ENOTSUP, "service \"%s\": the source answered, but this job has no "
                                     "name server to connect through%s",
                     name, SL_NO_CONNECT_HINT);
    else if (strcmp(seen, text) != 0)
        rc = SLUICE_EAGAIN;
    else
        rc = sl_knock_write(fd, h.magic, sizeof h.magic, dl); /* "connecting now" */
out:
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
    char port[MPI_MAX_PORT_NAME];
    for (;;) {
        sl_record_t r;
        char text[SL_RECORD_MAX];
        if (sl_find(name, &c, &r, text) == SLUICE_OK) {
            rc = sl_knock_at(name, &r, text, &dl, port, sizeof port);
            if (rc == SLUICE_OK || rc == SLUICE_ENOTSUP)
                break;
            seen = seen || rc != SLUICE_ENOTFOUND;
        }
        if (sl_backoff_pause(&b, &dl) == SLUICE_ETIMEDOUT) {
            if (seen)
                return sl_fail(SLUICE_ETIMEDOUT, "service \"%s\": its source did not accept "
                                                 "within %u ms",
                               name, c.timeout_ms);
            char where[PATH_MAX + 32] = "on the name server";
            if (c.dir) {
                char path[PATH_MAX];
                sl_port_file(path, sizeof path, c.dir, name);
                snprintf(where, sizeof where, "in %s and on the name server", path);
            }
            return sl_fail(SLUICE_ENOTFOUND,
                           "service \"%s\": no live source serves it (looked %s for %u ms; "
                           "were the jobs started with mpirun --ompi-server file:URI?)",
                           name, where, c.timeout_ms);
        }
    }
    if (rc)
        return rc;
    MPI_Comm inter;
    sl_quiet_t q;
    sl_mpi_enter();
    sl_quiet_begin(&q); /* errors come on MPI_COMM_SELF, fatal by default */
    int err = MPI_Comm_connect(port, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter);
    sl_quiet_end(&q);
    sl_mpi_leave();
    if (err != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "service \"%s\": MPI_Comm_connect failed%s", name,
                       SL_NO_CONNECT_HINT);
    return sl_context_of(&inter, false, proc_name, ctx_p);
}
