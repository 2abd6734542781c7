/* SPDX-License-Identifier: MIT */
/* sluice-monitor: the running sluice processes of this node, per channel and stream, refreshed (docs/monitor.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sluice/monitor.h>

/*
 * It only reads: each page is opened read-only, checked to be this user's,
 * copied by sluice_monitor_read (which maps it read-only) and closed. It
 * never writes to, locks against or signals a watched process. What a page
 * holds is printed escaped: a name with control bytes cannot drive the
 * terminal. Exit
 * status: 0; 1 when --pid names a page that is refused or absent; 2 for a
 * bad command line.
 */

#define MON_MAX_PAGES 1024

typedef struct mon_sample {
    size_t n;
    sluice_monitor_process_t *proc[MON_MAX_PAGES];
    char path[MON_MAX_PAGES][300];
    dev_t dev[MON_MAX_PAGES]; /* the file read, for --clean: unlink only that one */
    ino_t ino[MON_MAX_PAGES];
    double t;                 /* CLOCK_MONOTONIC seconds when taken */
} mon_sample_t;

static struct {
    long pid;                 /* 0: all */
    const char *job;          /* NULL: all */
    double interval;
    long count;               /* refreshes; 0: until interrupted */
    bool once, json, clean;
} opt = { .interval = 1.0 };

/* Set by SIGINT/SIGTERM: finish the refresh and exit (lock-free, so a handler may store it). */
static atomic_bool mon_stop;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store_explicit(&mon_stop, true, memory_order_relaxed);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sluice-monitor [--pid P] [--job J] [--interval S] [--once | --count N] [--json]\n"
            "       sluice-monitor --clean\n"
            "  Shows this user's running sluice processes (their status pages in %s/%s*),\n"
            "  per channel and stream: transitions, products and bytes per second, ring and\n"
            "  arena fill, events in flight, open runs and lumis, the peer, errors.\n"
            "  --pid P        only process P (exit 1 if its page is absent or not yours)\n"
            "  --job J        only processes of job J (SLURM_JOB_ID, or the MPI launcher's job)\n"
            "  --interval S   seconds between the two samples of a rate, and between refreshes\n"
            "                 (default 1)\n"
            "  --once         one refresh (two samples), then exit: for `watch`\n"
            "  --count N      N refreshes, then exit (default: until Ctrl-C)\n"
            "  --json         one JSON object per refresh, one line each (docs/monitor.md)\n"
            "  --clean        remove this user's pages of processes that are gone, then exit\n"
            "                 (pages of another PID namespace or host are never removed)\n"
            "SLUICE_MONITOR_DIR sets the directory of the pages.\n",
            sluice_monitor_dir(), SLUICE_MONITOR_PREFIX);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ reading */

/*
 * `s` for a terminal: bytes that are not printable ASCII (control bytes,
 * escape sequences, other encodings) as \xNN, and the backslash as \\.
 * A page is another process's memory: its strings must not move the
 * cursor or retitle the window. Cut to fit `n` bytes.
 */
static const char *term(const char *s, char *buf, size_t n)
{
    size_t o = 0;
    for (; *s && o + 5 <= n; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\\')
            o += (size_t)snprintf(buf + o, n - o, "\\\\");
        else if (ch < 0x20 || ch >= 0x7f)
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    buf[o] = '\0';
    return buf;
}

/* Room for a string of 64 bytes, each escaped (4 bytes). */
typedef struct mon_esc {
    char b[64 * 4 + 1];
} mon_esc_t;

/* Paths already refused, so each is said once on stderr. */
static char refused_said[64][300];
static size_t n_refused_said;

static void refuse(const char *path, const char *why)
{
    for (size_t i = 0; i < n_refused_said; i++)
        if (strcmp(refused_said[i], path) == 0)
            return;
    if (n_refused_said < 64)
        snprintf(refused_said[n_refused_said++], sizeof refused_said[0], "%s", path);
    char esc[sizeof refused_said[0] * 4];
    fprintf(stderr, "sluice-monitor: refusing %s: %s\n", term(path, esc, sizeof esc), why);
}

/* The pid in a page's name (sluice-mon-UID-PID, or sluice-mon-UID-PID.SUFFIX), or -1. */
static long name_pid(const char *name)
{
    const char *dash = strrchr(name, '-');
    char *end;
    long pid = dash ? strtol(dash + 1, &end, 10) : -1;
    return dash && (*end == '\0' || *end == '.') ? pid : -1;
}

/*
 * Read one page: 1 read (into s), 0 skipped (being set up, or another
 * layout), -1 refused (not this user's).
 */
static int read_page(const char *path, mon_sample_t *s)
{
    /* Whose it is before opening it (another user's may not even open),
     * and again on what was opened (the name may have changed hands). */
    struct stat st;
    uid_t me = getuid();
    char why[160];
    if (lstat(path, &st) != 0)
        return 0; /* gone meanwhile */
    int fd = st.st_uid == me ? open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) : -1;
    if (fd < 0 && st.st_uid == me)
        return 0;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_uid != me) {
        snprintf(why, sizeof why, "the page belongs to uid %u, not to you (uid %u)",
                 (unsigned)st.st_uid, (unsigned)me);
        if (fd >= 0)
            close(fd);
        refuse(path, why);
        return -1;
    }
    if (s->n == MON_MAX_PAGES) {
        close(fd);
        return 0;
    }
    sluice_monitor_process_t *p = s->proc[s->n];
    if (!p && !(p = s->proc[s->n] = malloc(sizeof *p))) {
        close(fd);
        return 0;
    }
    p->size = sizeof *p;
    int rc = sluice_monitor_read(fd, p);
    struct stat read_st = st; /* fstat of the fd read, above */
    close(fd);
    if (rc == SLUICE_EVERSION || rc == SLUICE_ECORRUPT) {
        char esc[sizeof s->path[0] * 4];
        fprintf(stderr, "sluice-monitor: skipping %s: %s\n", term(path, esc, sizeof esc),
                sluice_last_error());
        return 0;
    }
    if (rc != SLUICE_OK)
        return 0;
    if (p->uid != me) {
        snprintf(why, sizeof why, "it records uid %u, not yours (uid %u)", p->uid, (unsigned)me);
        refuse(path, why);
        return -1;
    }
    if ((opt.pid && p->pid != opt.pid) ||
        (opt.job && strcmp(p->job, opt.job) != 0 && strcmp(p->mpi_job, opt.job) != 0))
        return 0;
    snprintf(s->path[s->n], sizeof s->path[0], "%s", path);
    s->dev[s->n] = read_st.st_dev;
    s->ino[s->n] = read_st.st_ino;
    s->n++;
    return 1;
}

/* Every page of the directory, in name order; *pid_refused when --pid's page was refused. */
static void take_sample(mon_sample_t *s, bool *pid_refused)
{
    s->n = 0;
    s->t = mono_now();
    const char *dir = sluice_monitor_dir();
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0)
        return;
    size_t plen = strlen(SLUICE_MONITOR_PREFIX);
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (strncmp(name, SLUICE_MONITOR_PREFIX, plen) == 0) {
            char path[300];
            snprintf(path, sizeof path, "%s/%s", dir, name);
            int r = read_page(path, s);
            if (r < 0 && opt.pid && name_pid(name) == opt.pid)
                *pid_refused = true;
        }
        free(names[i]);
    }
    free(names);
}

/* ------------------------------------------------------------ rates */

/* The same page in the earlier sample: same file name, pid and start time. */
static const sluice_monitor_process_t *find_proc(const mon_sample_t *s, const char *path,
                                                 const sluice_monitor_process_t *p)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->proc[i]->pid == p->pid && s->proc[i]->start_time == p->start_time &&
            strcmp(s->path[i], path) == 0)
            return s->proc[i];
    return NULL;
}

/*
 * The same channel in the earlier sample: the same slot with the same
 * generation (a slot given to another channel, even of the same name, has
 * another), so its counters only grew.
 */
static const sluice_monitor_channel_t *find_channel(const sluice_monitor_process_t *p,
                                                    const sluice_monitor_channel_t *c)
{
    for (uint32_t i = 0; p && i < p->n_channels; i++) {
        const sluice_monitor_channel_t *o = &p->channel[i];
        if (o->slot == c->slot && o->generation == c->generation &&
            strcmp(o->name, c->name) == 0)
            return o;
    }
    return NULL;
}

/* b - a, or 0 if the counter went back. */
static uint64_t up(uint64_t a, uint64_t b)
{
    return b > a ? b - a : 0;
}

typedef struct mon_rates {
    bool known;
    double transitions, products, bytes;
} mon_rates_t;

static mon_rates_t rates_of(const sluice_monitor_channel_t *a, const sluice_monitor_channel_t *b,
                            double dt)
{
    mon_rates_t r = { 0 };
    if (!a || dt <= 0)
        return r;
    const sluice_channel_stats_t *x = &a->stats, *y = &b->stats;
    /* Counters only grow within one generation; should one not have (a
     * torn pair of samples), the rate is 0, never a wrapped 1.8e19. */
#define MON_GROWTH(f1, f2) ((double)(up(x->f1, y->f1) + up(x->f2, y->f2)) / dt)
    r.known = true;
    r.transitions = MON_GROWTH(transitions_sent, transitions_received);
    r.products = MON_GROWTH(products_sent, products_received);
    r.bytes = MON_GROWTH(bytes_sent, bytes_received);
#undef MON_GROWTH
    return r;
}

static const char *role_name(sluice_role_t r)
{
    return r == SLUICE_CONTROLLER ? "controller" : r == SLUICE_SOURCE ? "source" : "?";
}

/* What is known of the peer: the reader's own look at a local peer's process wins. */
static const char *peer_state(const sluice_monitor_channel_t *c)
{
    if (c->peer_exited)
        return "dead";
    switch (c->peer_state) {
    case SLUICE_MONITOR_PEER_ALIVE: return "alive";
    case SLUICE_MONITOR_PEER_CLOSED: return "closed";
    case SLUICE_MONITOR_PEER_DEAD: return "dead";
    default: return "opening";
    }
}

/*
 * Whether the process runs: a page of another PID namespace or host (a
 * container or node sharing the folder) has a pid that means nothing here,
 * so it is neither "running" nor "exited".
 */
static const char *process_state(const sluice_monitor_process_t *p)
{
    return !p->same_namespace ? "other namespace/host" : p->alive > 0 ? "running" : "exited";
}

/* ------------------------------------------------------------ text */

/* 1234 -> "1.2K", binary units; fits 6 columns. */
static const char *human(double v, char *buf, size_t n)
{
    static const char units[] = " KMGTP";
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%.0f", v);
    else
        snprintf(buf, n, "%.1f%c", v, units[u]);
    return buf;
}

static void text_channel(const sluice_monitor_channel_t *c, const mon_rates_t *r)
{
    char t[16], p[16], b[16], in_flight[24];
    mon_esc_t name, transport, peer;
    char last_error[SLUICE_MONITOR_ERROR_MAX * 4 + 1];
    if (r->known) {
        snprintf(t, sizeof t, "%.1f", r->transitions);
        snprintf(p, sizeof p, "%.1f", r->products);
        human(r->bytes, b, sizeof b);
    } else {
        snprintf(t, sizeof t, "-");
        snprintf(p, sizeof p, "-");
        snprintf(b, sizeof b, "-");
    }
    /* Summed over the streams shown: "3+" when the channel has more (at least 3). */
    snprintf(in_flight, sizeof in_flight, "%" PRIu64 "%s", c->events_open,
             c->streams > c->n_streams ? "+" : "");
    printf("  %-16s %-10s %-4s peer %s (pid %" PRId64 ") %-7s streams %-4u transitions/s %-8s "
           "products/s %-8s bytes/s %-7s in flight %-3s runs %" PRIu64 " lumis %" PRIu64
           " (run %" PRIu64 " lumi %" PRIu64 ")  errors %" PRIu64 "\n",
           term(c->name, name.b, sizeof name.b), role_name(c->role),
           c->open ? term(c->transport, transport.b, sizeof transport.b) : "open",
           term(c->peer, peer.b, sizeof peer.b), c->peer_pid, peer_state(c), c->streams, t, p, b,
           in_flight, c->runs_open, c->lumis_open, c->run, c->lumi, c->errors);
    if (c->errors)
        printf("    last error: %s (%d): %s\n", sluice_strerror(c->last_status), c->last_status,
               c->last_error[0] ? term(c->last_error, last_error, sizeof last_error)
                                : "(message being written)");
    if (c->role == SLUICE_CONTROLLER)
        printf("    global ring %" PRIu64 "/%u (sent %" PRIu64 ", taken by peer >= %" PRIu64 ")\n",
               c->global_sent - c->global_peer_took, c->global_depth, c->global_sent,
               c->global_peer_took);
    else
        printf("    global ring: taken %" PRIu64 "\n", c->global_taken);
    for (uint32_t i = 0; i < c->n_streams; i++) {
        const sluice_monitor_stream_t *s = &c->stream[i];
        char out[16], in[16];
        printf("    stream %-4u event %-8" PRIu64 " %-6s ring %" PRIu64 "/%u  arena out %-7s in "
               "%-7s sent %" PRIu64 " taken %" PRIu64 "\n",
               i, s->event, s->event_open ? "open" : "done", s->sent - s->peer_took,
               c->ring_depth, human((double)s->arena_out, out, sizeof out),
               human((double)s->arena_in, in, sizeof in), s->sent, s->taken);
    }
    if (c->streams > c->n_streams)
        printf("    (%u more streams not shown: a page describes the first %d)\n",
               c->streams - c->n_streams, SLUICE_MONITOR_STREAMS);
}

static void print_text(const mon_sample_t *a, const mon_sample_t *b, unsigned refresh)
{
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", localtime(&now));
    printf("sluice-monitor %s  refresh %u  %zu process%s of uid %u  (every %.1f s)\n", when,
           refresh, b->n, b->n == 1 ? "" : "es", (unsigned)getuid(), opt.interval);
    if (b->n == 0)
        printf("  no sluice process of yours is running (pages: %s/%s*)\n", sluice_monitor_dir(),
               SLUICE_MONITOR_PREFIX);
    for (size_t i = 0; i < b->n; i++) {
        const sluice_monitor_process_t *p = b->proc[i];
        const sluice_monitor_process_t *old = find_proc(a, b->path[i], p);
        double dt = b->t - a->t;
        mon_esc_t name, host, job, mpi_job;
        printf("pid %" PRId64 " %s  rank %d/%d  host %s  job %s  mpi job %s  %s  %u channel%s\n",
               p->pid, term(p->name, name.b, sizeof name.b), p->rank, p->world_size,
               term(p->host, host.b, sizeof host.b),
               p->job[0] ? term(p->job, job.b, sizeof job.b) : "-",
               p->mpi_job[0] ? term(p->mpi_job, mpi_job.b, sizeof mpi_job.b) : "-",
               process_state(p), p->n_channels, p->n_channels == 1 ? "" : "s");
        for (uint32_t j = 0; j < p->n_channels; j++) {
            const sluice_monitor_channel_t *c = &p->channel[j];
            mon_rates_t r = rates_of(find_channel(old, c), c, dt);
            text_channel(c, &r);
        }
    }
}

/* ------------------------------------------------------------ JSON */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            printf("\\u%04x", ch); /* bytes outside ASCII too: the page holds no encoding */
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_channel(const sluice_monitor_channel_t *c, const mon_rates_t *r)
{
    const sluice_channel_stats_t *k = &c->stats;
    printf("{\"name\":");
    json_str(c->name);
    printf(",\"role\":\"%s\",\"transport\":", role_name(c->role));
    json_str(c->transport);
    printf(",\"open\":%s,\"peer\":", c->open ? "true" : "false");
    json_str(c->peer);
    printf(",\"peer_pid\":%" PRId64 ",\"peer_local\":%s,\"peer_state\":\"%s\",\"streams\":%u,"
           "\"ring_depth\":%u,\"global_depth\":%u,\"arena_bytes\":%" PRIu64 ",",
           c->peer_pid, c->peer_local ? "true" : "false", peer_state(c), c->streams, c->ring_depth,
           c->global_depth, c->arena_bytes);
    printf("\"counters\":{\"transitions_sent\":%" PRIu64 ",\"transitions_received\":%" PRIu64
           ",\"products_sent\":%" PRIu64 ",\"products_received\":%" PRIu64
           ",\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ",\"discarded\":%" PRIu64
           ",\"product_publications\":%" PRIu64 "},",
           k->transitions_sent, k->transitions_received, k->products_sent, k->products_received,
           k->bytes_sent, k->bytes_received, k->discarded, k->product_publications);
    printf("\"slot\":%u,\"generation\":%" PRIu64 ",", c->slot, c->generation);
    if (r->known)
        printf("\"rates\":{\"transitions\":%.3f,\"products\":%.3f,\"bytes\":%.3f},",
               r->transitions, r->products, r->bytes);
    else
        printf("\"rates\":null,");
    printf("\"events_open\":%" PRIu64 ",\"events_open_partial\":%s,\"runs_open\":%" PRIu64
           ",\"lumis_open\":%" PRIu64 ",\"run\":%" PRIu64 ",\"lumi\":%" PRIu64
           ",\"global\":{\"sent\":%" PRIu64 ",\"peer_took\":%" PRIu64 ",\"taken\":%" PRIu64
           "},\"errors\":%" PRIu64 ",\"last_status\":%d,\"last_error\":",
           c->events_open, c->streams > c->n_streams ? "true" : "false", c->runs_open,
           c->lumis_open, c->run, c->lumi, c->global_sent, c->global_peer_took, c->global_taken,
           c->errors, c->last_status);
    json_str(c->last_error);
    printf(",\"stream\":[");
    for (uint32_t i = 0; i < c->n_streams; i++) {
        const sluice_monitor_stream_t *s = &c->stream[i];
        printf("%s{\"index\":%u,\"event\":%" PRIu64 ",\"event_open\":%s,\"sent\":%" PRIu64
               ",\"peer_took\":%" PRIu64 ",\"ring_fill\":%" PRIu64 ",\"taken\":%" PRIu64
               ",\"arena_out\":%" PRIu64 ",\"arena_in\":%" PRIu64 "}",
               i ? "," : "", i, s->event, s->event_open ? "true" : "false", s->sent, s->peer_took,
               s->sent - s->peer_took, s->taken, s->arena_out, s->arena_in);
    }
    printf("]}");
}

static void print_json(const mon_sample_t *a, const mon_sample_t *b)
{
    printf("{\"version\":2,\"time\":%.3f,\"interval\":%.3f,\"uid\":%u,\"dir\":", (double)time(NULL),
           b->t - a->t, (unsigned)getuid());
    json_str(sluice_monitor_dir());
    printf(",\"processes\":[");
    for (size_t i = 0; i < b->n; i++) {
        const sluice_monitor_process_t *p = b->proc[i];
        const sluice_monitor_process_t *old = find_proc(a, b->path[i], p);
        printf("%s{\"pid\":%" PRId64 ",\"name\":", i ? "," : "", p->pid);
        json_str(p->name);
        printf(",\"host\":");
        json_str(p->host);
        printf(",\"rank\":%d,\"world_size\":%d,\"job\":", p->rank, p->world_size);
        json_str(p->job);
        printf(",\"mpi_job\":");
        json_str(p->mpi_job);
        printf(",\"same_namespace\":%s,\"alive\":%s,\"page\":",
               p->same_namespace ? "true" : "false",
               !p->same_namespace ? "null" : p->alive > 0 ? "true" : "false");
        json_str(b->path[i]);
        printf(",\"channels\":[");
        for (uint32_t j = 0; j < p->n_channels; j++) {
            const sluice_monitor_channel_t *c = &p->channel[j];
            mon_rates_t r = rates_of(find_channel(old, c), c, b->t - a->t);
            if (j)
                putchar(',');
            json_channel(c, &r);
        }
        printf("]}");
    }
    printf("]}\n");
}

/* ------------------------------------------------------------ main */

/*
 * --clean: this user's pages of processes that are gone. Only pages of this
 * PID namespace and boot are judged (another container's or node's pid
 * means nothing here), and a page is unlinked only if its name still is
 * the file that was read (a process may have made a new page of that name
 * since).
 */
static int clean(void)
{
    static mon_sample_t s;
    bool ignored = false;
    take_sample(&s, &ignored);
    unsigned removed = 0;
    for (size_t i = 0; i < s.n; i++) {
        char esc[sizeof s.path[0] * 4];
        term(s.path[i], esc, sizeof esc);
        if (!s.proc[i]->same_namespace || s.proc[i]->alive != 0)
            continue;
        struct stat now;
        if (lstat(s.path[i], &now) != 0 || now.st_dev != s.dev[i] || now.st_ino != s.ino[i]) {
            fprintf(stderr, "sluice-monitor: not removing %s: it changed since it was read\n", esc);
        } else if (unlink(s.path[i]) == 0) {
            printf("sluice-monitor: removed %s (pid %" PRId64 " is gone)\n", esc, s.proc[i]->pid);
            removed++;
        } else {
            fprintf(stderr, "sluice-monitor: cannot remove %s: %s\n", esc, strerror(errno));
        }
    }
    printf("sluice-monitor: %u page%s removed\n", removed, removed == 1 ? "" : "s");
    return 0;
}

static void pause_for(double seconds)
{
    double end = mono_now() + seconds;
    while (!atomic_load_explicit(&mon_stop, memory_order_relaxed)) {
        double left = end - mono_now();
        if (left <= 0)
            break;
        struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };
        nanosleep(&ts, NULL); /* a signal cuts it short: the loop looks at mon_stop */
    }
}

static int bad(const char *what, const char *arg)
{
    fprintf(stderr, "sluice-monitor: %s: '%s'\n", what, arg);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        char *end = NULL;
        if (!strcmp(a, "--once")) {
            opt.once = true;
        } else if (!strcmp(a, "--json")) {
            opt.json = true;
        } else if (!strcmp(a, "--clean")) {
            opt.clean = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--pid") && has) {
            opt.pid = strtol(argv[++i], &end, 10);
            if (*end || opt.pid <= 0)
                return bad("--pid takes a process id", argv[i]);
        } else if (!strcmp(a, "--job") && has) {
            opt.job = argv[++i];
        } else if (!strcmp(a, "--interval") && has) {
            opt.interval = strtod(argv[++i], &end);
            if (*end || !(opt.interval >= 0.05 && opt.interval <= 3600))
                return bad("--interval takes 0.05 to 3600 seconds", argv[i]);
        } else if (!strcmp(a, "--count") && has) {
            opt.count = strtol(argv[++i], &end, 10);
            if (*end || opt.count <= 0)
                return bad("--count takes a positive number", argv[i]);
        } else {
            bool wants_value = !strcmp(a, "--pid") || !strcmp(a, "--job") ||
                               !strcmp(a, "--interval") || !strcmp(a, "--count");
            return bad(wants_value ? "option without its value" : "unknown argument", a);
        }
    }
    if (opt.once && opt.count)
        return bad("--once and --count exclude each other", "--once");
    if (opt.clean)
        return clean();
    if (opt.once)
        opt.count = 1;

    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bool clear = !opt.json && !opt.once && isatty(STDOUT_FILENO);
    static mon_sample_t samples[2];
    mon_sample_t *a = &samples[0], *b = &samples[1];
    bool pid_refused = false, pid_seen = false;
    take_sample(a, &pid_refused);
    for (unsigned refresh = 1; !atomic_load_explicit(&mon_stop, memory_order_relaxed);
         refresh++) {
        pause_for(opt.interval);
        take_sample(b, &pid_refused);
        if (pid_refused) {
            fprintf(stderr, "sluice-monitor: pid %ld: its page is not yours: refused\n", opt.pid);
            return 1;
        }
        if (opt.pid && b->n == 0 && !pid_seen) {
            fprintf(stderr, "sluice-monitor: pid %ld: no status page of it in %s\n", opt.pid,
                    sluice_monitor_dir());
            return 1;
        }
        if (opt.pid && b->n == 0) {
            fprintf(stderr, "sluice-monitor: pid %ld: its page is gone (the process ended)\n",
                    opt.pid);
            return 0;
        }
        pid_seen = true;
        if (clear)
            fputs("\033[H\033[2J", stdout); /* home, clear: plain VT100, fine in tmux */
        else if (refresh > 1 && !opt.json)
            putchar('\n');
        if (opt.json)
            print_json(a, b);
        else
            print_text(a, b, refresh);
        fflush(stdout);
        if (opt.count && refresh >= (unsigned long)opt.count)
            break;
        mon_sample_t *t = a;
        a = b;
        b = t;
    }
    return 0;
}
