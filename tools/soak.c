/* SPDX-License-Identifier: MIT */
/*
 * sluice soak: a long, fully checked run of one channel under load, using the
 * public API only. S controller threads send events of several open lumis
 * with 0..P products (3) each way of 0..max bytes; S source threads answer; the
 * source checks the delivery order against the controller's schedule, and
 * every receiver rebuilds every product's bytes from the event number.
 *
 *   mpiexec -n 1 sluice-soak controller [options] : -n 1 sluice-soak source [options]
 *   options (the same on both sides): --events N --streams S --max-bytes B[K|M]
 *     --max-products P --seed X --lumi-events L --lumis-per-run R --progress SECONDS
 *     --quiet --mpi-threads multiple|serialized
 *     --corrupt-every N (a self-test: the sender flips a byte of every Nth event's products)
 *   channel options come from SLUICE_* (arena_bytes defaults to fit the products)
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/sluice.h>

/* ------------------------------------------------------------ configuration */

typedef struct soak_cfg {
    int is_ctrl;
    uint64_t events;
    uint32_t streams;
    uint64_t max_bytes;       /* largest product */
    uint64_t seed;
    uint32_t lumi_events;     /* mean events per lumi */
    uint32_t lumis_per_run;
    uint32_t max_products;    /* per event and direction: 0..max_products, 3 by default */
    double progress_s;
    int quiet;
    int mpi_threads;
    uint64_t corrupt_every;   /* > 0: the sender flips one byte of every product of every
                                 Nth event, to show that the checks catch it */
} soak_cfg_t;

static soak_cfg_t cfg = { .events = 1000000, .streams = 16, .max_bytes = 2u << 20, .seed = 1,
                          .lumi_events = 64, .lumis_per_run = 8, .max_products = 3, .progress_s = 5,
                          .mpi_threads = MPI_THREAD_MULTIPLE };

#define PLAN_CAP 64u          /* most products per event and direction (--max-products) */
#define FAIL_LINES 16         /* failure lines printed per process (the earliest: likely cause) */
#define MSG_MAX 320

/* Controller-to-source products go to instance 1 or 3, answers to 2 or 4:
 * two instances per direction let a receiver take them out of send order. */
typedef enum soak_dir { DIR_C2S = 0, DIR_S2C = 1 } soak_dir_t;
static const uint32_t dir_instance[2][2] = { { 1, 3 }, { 2, 4 } };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ failures */

static atomic_int g_failures;
static atomic_int g_stop;        /* set by the first failure: every loop winds down */
/* The first failure of a stream thread and of the main thread, each written
 * once and read after the joins. A stream's is the likelier cause: the main
 * thread mostly times out waiting for streams. */
static atomic_int g_have_first[2];
static char g_first[2][MSG_MAX];
static double g_t0;
static double g_stall_s;         /* how long a soak-side wait may see nothing move */
static const sluice_type_t *g_type; /* every instance carries this one type */

static int stopped(void) { return atomic_load(&g_stop); }

/* Record a failure of `who`; always returns 1 so callers can `return fail(...)`. */
static int fail(const char *who, const char *fmt, ...)
{
    char msg[MSG_MAX - 64]; /* room left in g_first[] for the name */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n = atomic_fetch_add(&g_failures, 1), is_main = strstr(who, "stream") == NULL;
    if (atomic_exchange(&g_have_first[is_main], 1) == 0)
        snprintf(g_first[is_main], sizeof g_first[is_main], "[%.48s] %s", who, msg);
    if (n < FAIL_LINES)
        fprintf(stderr, "soak: FAILED +%.3f s [%s] %s\n", now_s() - g_t0, who, msg);
    atomic_store(&g_stop, 1);
    return 1;
}

/* A sluice call returned `rc` where success was expected: name the call, the
 * status and the library's detailed message (read in this thread). */
static int fail_rc(const char *who, uint64_t e, const char *what, int rc)
{
    return fail(who, "event %" PRIu64 ": %s = %d %s (%s)", e, what, rc, sluice_strerror(rc),
                sluice_last_error());
}

/* ------------------------------------------------------------ determinism */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

enum { TAG_LUMI = 1, TAG_COUNT, TAG_SIZE, TAG_HOW, TAG_KEY, TAG_ORDER, TAG_CHECKER, TAG_AUX };

/* Both sides draw the same "random" choice for (tag, a, b): nothing is sent. */
static uint64_t rnd(uint32_t tag, uint64_t a, uint64_t b)
{
    return mix64(mix64(mix64(cfg.seed ^ ((uint64_t)tag << 56)) ^ a) ^ b);
}

/*
 * Product bytes: four interleaved xorshift64 word streams per product key
 * (word i from stream i mod 4), so the CPU runs the four independent
 * chains side by side: filling and checking then go at close to memory
 * speed, which is what lets 10^6 events of up to 2 MiB each way finish on
 * two cores.
 */
enum { LANES = 4 };

typedef struct payload_gen {
    uint64_t x[LANES];
} payload_gen_t;

static void payload_start(payload_gen_t *g, uint64_t key)
{
    for (int l = 0; l < LANES; l++)
        g->x[l] = mix64(key + (uint64_t)l) | 1;
}

static inline uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The next LANES words of the stream. */
static inline void payload_block(payload_gen_t *g, uint64_t w[LANES])
{
    for (int l = 0; l < LANES; l++)
        w[l] = xorshift(&g->x[l]);
}

static void payload_fill(void *data, size_t n, uint64_t key)
{
    unsigned char *p = data;
    payload_gen_t g;
    payload_start(&g, key);
    uint64_t w[LANES];
    size_t i = 0;
    for (; i + sizeof w <= n; i += sizeof w) {
        payload_block(&g, w);
        memcpy(p + i, w, sizeof w);
    }
    if (i < n) {
        payload_block(&g, w);
        memcpy(p + i, w, n - i);
    }
}

typedef struct payload_check {
    uint64_t want, got;       /* checksums of the expected and the received bytes */
    size_t first_bad;         /* offset of the first wrong byte, SIZE_MAX if none */
} payload_check_t;

/* FNV-1a over the expected (`expected` true) or the received bytes: only
 * for the failure message, so the common path never pays for it. */
static uint64_t payload_hash(const unsigned char *p, size_t n, uint64_t key, int expected)
{
    payload_gen_t g;
    payload_start(&g, key);
    uint64_t h = 0xcbf29ce484222325ull, w[LANES];
    for (size_t i = 0; i < n; i += sizeof w) {
        size_t m = n - i < sizeof w ? n - i : sizeof w;
        payload_block(&g, w);
        const unsigned char *b = expected ? (const unsigned char *)w : p + i;
        for (size_t k = 0; k < m; k++)
            h = (h ^ b[k]) * 0x100000001b3ull;
    }
    return h;
}

/* Rebuild the expected stream while reading the received one: one pass, no
 * second buffer, word compares. Returns nonzero on any difference, with the
 * first wrong byte and both checksums in `c`. */
static int payload_verify(const void *data, size_t n, uint64_t key, payload_check_t *c)
{
    const unsigned char *p = data;
    payload_gen_t g;
    payload_start(&g, key);
    uint64_t w[LANES];
    c->first_bad = SIZE_MAX;
    c->want = c->got = 0;
    size_t i = 0;
    for (; i + sizeof w <= n; i += sizeof w) {
        payload_block(&g, w);
        if (memcmp(p + i, w, sizeof w) != 0)
            break;
    }
    if (i < n) {
        if (i + sizeof w > n)
            payload_block(&g, w); /* the tail's words (a mismatch above has them already) */
        size_t m = n - i < sizeof w ? n - i : sizeof w;
        const unsigned char *b = (const unsigned char *)w;
        for (size_t k = 0; k < m && c->first_bad == SIZE_MAX; k++)
            if (p[i + k] != b[k])
                c->first_bad = i + k;
    }
    if (c->first_bad == SIZE_MAX)
        return 0;
    c->want = payload_hash(p, n, key, 1);
    c->got = payload_hash(p, n, key, 0);
    return 1;
}

/* Sizes 0..max: often empty, often small, often the largest, else spread. */
static size_t product_size(uint64_t r)
{
    uint64_t max = cfg.max_bytes, pick = r % 100, r2 = mix64(r);
    if (max == 0 || pick < 10)
        return 0;
    if (pick < 35)
        return (size_t)(1 + r2 % (max < 4096 ? max : 4096));
    if (pick < 45)
        return (size_t)(max - r2 % (max < 64 ? max : 64));
    if (pick < 70) { /* log-uniform: every power of two gets its share */
        unsigned bits = 64u - (unsigned)__builtin_clzll(max), k = (unsigned)(r2 % bits);
        uint64_t v = (1ull << k) + (mix64(r2) & ((1ull << k) - 1));
        return (size_t)(v > max ? max : v);
    }
    return (size_t)(1 + r2 % max);
}

typedef struct product_plan {
    uint32_t instance;
    size_t bytes;
    uint64_t key;             /* seeds the product's bytes */
    int zero_copy;            /* reserve + fill in place + commit, else sluice_product_send */
    int cancel_first;         /* reserve and cancel once before the real send */
} product_plan_t;

typedef struct event_plan {
    uint32_t n;
    product_plan_t p[PLAN_CAP];
    uint32_t rx_first;        /* which of the direction's two instances is received first */
    int hold_views;           /* keep every view until the end, release in reverse */
} event_plan_t;

/* What the sender of direction `dir` sends for event `e`; the receiver
 * computes the same plan to know what must arrive. */
static void plan_event(uint64_t e, soak_dir_t dir, event_plan_t *pl)
{
    pl->n = (uint32_t)(rnd(TAG_COUNT, e, dir) % (cfg.max_products + 1));
    for (uint32_t j = 0; j < pl->n; j++) {
        uint64_t id = (uint64_t)dir << 8 | j, how = rnd(TAG_HOW, e, id);
        pl->p[j] = (product_plan_t){ .instance = dir_instance[dir][how & 1],
                                     .bytes = product_size(rnd(TAG_SIZE, e, id)),
                                     .key = rnd(TAG_KEY, e, id),
                                     .zero_copy = (how >> 1) % 3 == 0,
                                     .cancel_first = (how >> 8) % 32 == 0 };
    }
    uint64_t order = rnd(TAG_ORDER, e, dir);
    pl->rx_first = (uint32_t)(order & 1);
    pl->hold_views = (int)(order >> 1 & 1);
}

/* Which side confirms, after the last planned product, that the peer sent
 * nothing more (SLUICE_ABSENT once the peer finished). Only one side per
 * event: both waiting for the other's finish would deadlock. */
static int checker_is_controller(uint64_t e) { return (int)(rnd(TAG_CHECKER, e, 0) & 1); }

/* ------------------------------------------------------------ schedule */

/* The job's shape, computed identically on both sides from the options. */
typedef struct lumi_info {
    uint64_t first, count;    /* its events: first .. first + count - 1 */
    uint32_t run, lumi;
    uint32_t g_begin, g_end;  /* indices of its BEGIN_LUMI and END_LUMI in the global list */
} lumi_info_t;

typedef struct global_info {
    sluice_transition_kind_t kind;
    uint32_t run, lumi, lidx;
} global_info_t;

typedef struct schedule {
    lumi_info_t *lumis;
    uint32_t n_lumis, n_runs, open_lumis;
    global_info_t *g;
    uint32_t n_g;
} schedule_t;

static schedule_t sched;

static uint32_t lumi_of(uint64_t e)
{
    /* The last lumi starting at or before e: empty lumis before it share its start. */
    uint32_t lo = 0, hi = sched.n_lumis;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sched.lumis[mid].first <= e)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void sched_push(sluice_transition_kind_t kind, uint32_t lidx)
{
    const lumi_info_t *l = &sched.lumis[lidx];
    global_info_t *x = &sched.g[sched.n_g];
    *x = (global_info_t){ kind, kind == SLUICE_END_JOB ? 0 : l->run,
                          kind == SLUICE_BEGIN_LUMI || kind == SLUICE_END_LUMI ? l->lumi : 0,
                          lidx };
    if (kind == SLUICE_BEGIN_LUMI)
        sched.lumis[lidx].g_begin = sched.n_g;
    if (kind == SLUICE_END_LUMI)
        sched.lumis[lidx].g_end = sched.n_g;
    sched.n_g++;
}

static void sched_begin(uint32_t i)
{
    if (i % cfg.lumis_per_run == 0)
        sched_push(SLUICE_BEGIN_RUN, i);
    sched_push(SLUICE_BEGIN_LUMI, i);
}

/*
 * Lumis of 0..2L-1 events (some empty), `lumis_per_run` to a run. The
 * controller keeps `open` lumis open: lumi i+open begins right after lumi i
 * ends, so BEGIN_LUMI of the next lumis always precedes END_LUMI of this one
 * and events of several lumis are in flight together. A run ends right after
 * its last lumi, while lumis of the next run may be open already.
 */
static int sched_build(uint32_t open)
{
    uint64_t cap = 0, assigned = 0;
    while (assigned < cfg.events) {
        if (sched.n_lumis == cap) {
            cap = cap ? 2 * cap : 1024;
            lumi_info_t *n = cap < UINT32_MAX / 4 ? realloc(sched.lumis, cap * sizeof *n) : NULL;
            if (!n)
                return -1;
            sched.lumis = n;
        }
        uint32_t i = sched.n_lumis++;
        uint64_t r = rnd(TAG_LUMI, i, 0);
        uint64_t n = r % 16 == 0 ? 0 : 1 + (r >> 4) % (2 * (uint64_t)cfg.lumi_events - 1);
        if (n > cfg.events - assigned)
            n = cfg.events - assigned;
        sched.lumis[i] = (lumi_info_t){ assigned, n, 1 + i / cfg.lumis_per_run,
                                        1 + i % cfg.lumis_per_run, 0, 0 };
        assigned += n;
    }
    sched.n_runs = sched.lumis[sched.n_lumis - 1].run;
    sched.open_lumis = open;
    sched.g = calloc(2 * (size_t)sched.n_lumis + 2 * (size_t)sched.n_runs + 1, sizeof *sched.g);
    if (!sched.g)
        return -1;
    for (uint32_t i = 0; i < sched.n_lumis && i < open; i++)
        sched_begin(i);
    for (uint32_t i = 0; i < sched.n_lumis; i++) {
        sched_push(SLUICE_END_LUMI, i);
        if (i % cfg.lumis_per_run == cfg.lumis_per_run - 1 || i == sched.n_lumis - 1)
            sched_push(SLUICE_END_RUN, i);
        if (i + open < sched.n_lumis)
            sched_begin(i + open);
    }
    sched_push(SLUICE_END_JOB, 0);
    return 0;
}

/* Fill aux bytes from `from` on, and history, from a key. */
static void fill_extras(sluice_transition_t *t, uint64_t key, uint32_t from)
{
    for (uint32_t i = from; i < t->aux_size; i++)
        t->aux[i] = (uint8_t)(mix64(key + i) >> 24);
    for (uint32_t i = 0; i < sizeof t->history; i++)
        t->history[i] = (uint8_t)(mix64(t->run * 131u + i) >> 8);
}

static sluice_transition_t global_transition(uint32_t g)
{
    const global_info_t *x = &sched.g[g];
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.kind = x->kind;
    t.run = x->run;
    t.lumi = x->lumi;
    t.timestamp = rnd(TAG_AUX, g, 1);
    t.aux_size = (uint32_t)(rnd(TAG_AUX, g, 2) % 33);
    fill_extras(&t, rnd(TAG_AUX, g, 3), 0);
    return t;
}

#define EVENT_AUX_HEAD 20u    /* stream (4), sequence on the stream (8), event number (8) */

/* Event e as the controller sends it as the `seq`-th event of `stream`. */
static sluice_transition_t event_transition(uint64_t e, uint32_t lidx, uint32_t stream,
                                            uint64_t seq)
{
    sluice_transition_t t;
    memset(&t, 0, sizeof t);
    t.kind = SLUICE_EVENT;
    t.run = sched.lumis[lidx].run;
    t.lumi = sched.lumis[lidx].lumi;
    t.event = e + 1;
    t.timestamp = rnd(TAG_AUX, e, 4);
    t.aux_size = EVENT_AUX_HEAD + (uint32_t)(rnd(TAG_AUX, e, 5) %
                                             (SLUICE_AUX_MAX - EVENT_AUX_HEAD + 1));
    memcpy(t.aux, &stream, 4);
    memcpy(t.aux + 4, &seq, 8);
    memcpy(t.aux + 12, &e, 8);
    fill_extras(&t, rnd(TAG_AUX, e, 6), EVENT_AUX_HEAD);
    return t;
}

/* Field by field: padding bytes of the struct carry nothing. */
static int transition_equal(const sluice_transition_t *a, const sluice_transition_t *b)
{
    return a->kind == b->kind && a->run == b->run && a->lumi == b->lumi &&
           a->event == b->event && a->timestamp == b->timestamp &&
           memcmp(a->history, b->history, sizeof a->history) == 0 && a->aux_size == b->aux_size &&
           a->aux_size <= SLUICE_AUX_MAX && memcmp(a->aux, b->aux, a->aux_size) == 0;
}

static const char *kind_name(sluice_transition_kind_t k)
{
    static const char *const names[] = { "?", "BEGIN_RUN", "BEGIN_LUMI", "EVENT",
                                         "END_LUMI", "END_RUN", "END_JOB" };
    return k >= SLUICE_BEGIN_RUN && k <= SLUICE_END_JOB ? names[k] : names[0];
}

/* ------------------------------------------------------------ waiting in the soak */

/* A soak-side wait (never inside sluice) gives up only when nothing it watches
 * has moved for g_stall_s: slow is fine, stuck is a failure. */
typedef struct stall {
    uint64_t seen;
    double deadline;
    unsigned rounds;
} stall_t;

static void stall_init(stall_t *s, uint64_t progress)
{
    *s = (stall_t){ progress, now_s() + g_stall_s, 0 };
}

static int stall_wait(stall_t *s, uint64_t progress)
{
    double t = now_s();
    if (progress != s->seen) {
        s->seen = progress;
        s->deadline = t + g_stall_s;
    } else if (t > s->deadline) {
        return 1;
    }
    /* Yield first, then sleep up to 1 ms: 2S+2 threads share few cores. */
    if (s->rounds++ < 32) {
        sched_yield();
    } else {
        struct timespec ts = { 0, s->rounds < 64 ? 50000 : 1000000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* ------------------------------------------------------------ shared state */

typedef struct worker {
    sluice_channel_t *ch;
    uint32_t stream;
    char name[40];            /* "controller stream 3", for messages */
    unsigned char *scratch;   /* source bytes for sluice_product_send */
    uint64_t seq;             /* events on this stream so far */
    uint64_t events, products_sent, bytes_sent, products_received, bytes_received;
    pthread_t thread;
} worker_t;

/* Controller side. */
static _Atomic uint64_t c_next_event;     /* next event number a stream takes */
static _Atomic uint32_t c_begun;          /* lumis whose BEGIN_LUMI is published (in order) */
static _Atomic uint64_t *c_done;          /* per lumi: events finished */
static _Atomic uint64_t c_events_done, c_bytes_moved;

/* Source side. */
static _Atomic uint32_t s_g_started;      /* global transitions asked for by the main thread */
static _Atomic uint32_t s_g_done;         /* global transitions returned and checked */
static _Atomic uint64_t *s_taken;         /* per lumi: events returned by sluice_event_next */
static atomic_uchar *s_seen;              /* per event: returned once */
static atomic_int *s_inside;              /* per stream: inside sluice_event_next */

/* ------------------------------------------------------------ products, both sides */

static int reserve_and_cancel(worker_t *w, sluice_token_t *tok, uint64_t e,
                              const product_plan_t *p)
{
    sluice_reservation_t res;
    int rc = sluice_product_reserve(tok, p->instance, p->bytes, p->bytes, 0, &res);
    if (rc)
        return fail_rc(w->name, e, "sluice_product_reserve (to cancel)", rc);
    if ((rc = sluice_product_cancel(tok, &res)))
        return fail_rc(w->name, e, "sluice_product_cancel", rc);
    return 0;
}

/* --corrupt-every: one flipped byte in the middle of the product. */
static void corrupt_maybe(void *data, size_t n, uint64_t e)
{
    if (cfg.corrupt_every && n && e % cfg.corrupt_every == cfg.corrupt_every - 1)
        ((unsigned char *)data)[n / 2] ^= 0x20;
}

static int send_one(worker_t *w, sluice_token_t *tok, uint64_t e, uint32_t j,
                    const product_plan_t *p)
{
    char what[96];
    snprintf(what, sizeof what, "sending product %u (instance %u, %zu bytes, %s)", j,
             p->instance, p->bytes, p->zero_copy ? "reserve/commit" : "send");
    if (p->cancel_first && reserve_and_cancel(w, tok, e, p))
        return 1;
    int rc;
    if (p->zero_copy) {
        sluice_reservation_t res;
        if ((rc = sluice_product_reserve(tok, p->instance, p->bytes, p->bytes, 0, &res)))
            return fail_rc(w->name, e, what, rc);
        if (res.bytes != p->bytes || (p->bytes && (!res.data || (uintptr_t)res.data % 64)))
            return fail(w->name, "event %" PRIu64 ": %s: reservation of %zu bytes at %p",
                        e, what, res.bytes, res.data);
        payload_fill(res.data, p->bytes, p->key);
        corrupt_maybe(res.data, p->bytes, e);
        rc = sluice_product_commit(tok, &res);
    } else {
        payload_fill(w->scratch, p->bytes, p->key);
        corrupt_maybe(w->scratch, p->bytes, e);
        rc = sluice_product_send(tok, p->instance, w->scratch, p->bytes, p->bytes, 0);
    }
    if (rc)
        return fail_rc(w->name, e, what, rc);
    w->products_sent++;
    w->bytes_sent += p->bytes;
    return 0;
}

/* Send first: the pattern in which both sides fill each other's rings. */
static int send_products(worker_t *w, sluice_token_t *tok, uint64_t e, soak_dir_t dir)
{
    event_plan_t pl;
    plan_event(e, dir, &pl);
    for (uint32_t j = 0; j < pl.n; j++)
        if (send_one(w, tok, e, j, &pl.p[j]))
            return 1;
    return 0;
}

static int check_view(worker_t *w, uint64_t e, uint32_t j, uint32_t n, const product_plan_t *p,
                      const sluice_view_t *v)
{
    payload_check_t c;
    if (v->bytes != p->bytes || v->count != p->bytes || v->type != g_type ||
        (v->bytes && !v->data))
        return fail(w->name, "event %" PRIu64 ": product %u of %u (instance %u): %zu bytes, count "
                    "%" PRIu64 ", data %p; sent %zu bytes, count %zu",
                    e, j, n, p->instance, v->bytes, v->count, v->data, p->bytes, p->bytes);
    if (payload_verify(v->data, v->bytes, p->key, &c))
        return fail(w->name, "event %" PRIu64 ": product %u of %u (instance %u, %zu bytes): "
                    "checksum %016" PRIx64 ", expected %016" PRIx64 ", first wrong byte at %zu",
                    e, j, n, p->instance, p->bytes, c.got, c.want, c.first_bad);
    return 0;
}

static int release_views(worker_t *w, uint64_t e, sluice_view_t *views, uint32_t n)
{
    int failed = 0;
    for (uint32_t i = n; i-- > 0;) {
        int rc = sluice_view_release(w->ch, &views[i]);
        if (rc && !failed)
            failed = fail_rc(w->name, e, "sluice_view_release", rc);
    }
    return failed;
}

/* Receive every planned product, one instance after the other (so not in send
 * order), check each, and release every view, on failure too. */
static int receive_products(worker_t *w, sluice_token_t *tok, uint64_t e, soak_dir_t dir)
{
    event_plan_t pl;
    plan_event(e, dir, &pl);
    sluice_view_t held[PLAN_CAP];
    uint32_t n_held = 0;
    int failed = 0;
    for (int pass = 0; pass < 2 && !failed; pass++) {
        uint32_t inst = dir_instance[dir][pass == 0 ? pl.rx_first : !pl.rx_first];
        for (uint32_t j = 0; j < pl.n && !failed; j++) {
            if (pl.p[j].instance != inst)
                continue;
            sluice_view_t v;
            int rc = sluice_product_receive(tok, inst, 0, &v);
            if (rc) {
                char what[96];
                snprintf(what, sizeof what, "receiving product %u of %u (instance %u, %zu bytes)",
                         j, pl.n, inst, pl.p[j].bytes);
                failed = fail_rc(w->name, e, what, rc);
                break;
            }
            held[n_held++] = v;
            failed = check_view(w, e, j, pl.n, &pl.p[j], &v);
            w->products_received++;
            w->bytes_received += v.bytes;
            if (!pl.hold_views) {
                failed |= release_views(w, e, held, n_held);
                n_held = 0;
            }
        }
    }
    return release_views(w, e, held, n_held) | failed;
}

/* After the planned products, the peer must have sent nothing more: once it
 * finishes the event, each instance reports SLUICE_ABSENT. */
static int expect_no_more(worker_t *w, sluice_token_t *tok, uint64_t e, soak_dir_t dir)
{
    for (int i = 0; i < 2; i++) {
        uint32_t inst = dir_instance[dir][i];
        sluice_view_t v;
        int rc = sluice_product_receive(tok, inst, 0, &v);
        if (rc == SLUICE_ABSENT)
            continue;
        if (rc)
            return fail_rc(w->name, e, "receiving past the last product (want SLUICE_ABSENT)", rc);
        fail(w->name, "event %" PRIu64 ": an extra product of instance %u (%zu bytes) arrived "
             "after the planned ones", e, inst, v.bytes);
        release_views(w, e, &v, 1);
        return 1;
    }
    return 0;
}

/* One event's exchange, the same on both sides: send, receive, check, finish. */
static int event_exchange(worker_t *w, sluice_token_t *tok, uint64_t e)
{
    soak_dir_t out = cfg.is_ctrl ? DIR_C2S : DIR_S2C, in = cfg.is_ctrl ? DIR_S2C : DIR_C2S;
    if (send_products(w, tok, e, out) || receive_products(w, tok, e, in))
        return 1;
    if (checker_is_controller(e) == cfg.is_ctrl && expect_no_more(w, tok, e, in))
        return 1;
    int rc = sluice_event_finish(tok);
    if (rc)
        return fail_rc(w->name, e, "sluice_event_finish", rc);
    w->events++;
    return 0;
}

/* ------------------------------------------------------------ controller */

static int ctrl_wait_begun(worker_t *w, uint64_t e, uint32_t lidx)
{
    stall_t s;
    stall_init(&s, atomic_load(&c_events_done));
    while (atomic_load(&c_begun) <= lidx) {
        if (stopped())
            return 1;
        if (stall_wait(&s, atomic_load(&c_events_done)))
            return fail(w->name, "event %" PRIu64 ": lumi %u did not begin in %.0f s", e,
                        sched.lumis[lidx].lumi, g_stall_s);
    }
    return 0;
}

static int ctrl_event(worker_t *w, uint64_t e, uint32_t lidx)
{
    sluice_transition_t t = event_transition(e, lidx, w->stream, w->seq);
    sluice_token_t tok;
    int rc = sluice_event_send(w->ch, w->stream, &t, 0, &tok);
    if (rc)
        return fail_rc(w->name, e, "sluice_event_send", rc);
    w->seq++;
    uint64_t bytes = w->bytes_sent + w->bytes_received;
    if (event_exchange(w, &tok, e))
        return 1;
    atomic_fetch_add(&c_bytes_moved, w->bytes_sent + w->bytes_received - bytes);
    return 0;
}

/* Streams take events from one counter: numbers rise on each stream, and
 * events of the open lumis interleave across streams. */
static void *ctrl_stream(void *arg)
{
    worker_t *w = arg;
    while (!stopped()) {
        uint64_t e = atomic_fetch_add(&c_next_event, 1);
        if (e >= cfg.events)
            break;
        uint32_t lidx = lumi_of(e);
        if (ctrl_wait_begun(w, e, lidx) || ctrl_event(w, e, lidx))
            break;
        atomic_fetch_add(&c_done[lidx], 1);
        atomic_fetch_add(&c_events_done, 1);
    }
    return NULL;
}

typedef struct progress {
    double start, last;
    uint64_t last_events, last_bytes;
} progress_t;

static void progress_print(progress_t *p, uint32_t lidx, int force)
{
    double t = now_s();
    if (cfg.quiet || (!force && t - p->last < cfg.progress_s))
        return;
    uint64_t ev = atomic_load(&c_events_done), by = atomic_load(&c_bytes_moved);
    double dt = t - p->last > 0 ? t - p->last : 1e-9;
    printf("soak: %10" PRIu64 " / %" PRIu64 " events  %8.0f events/s  %8.1f MiB/s  "
           "(overall %.0f events/s)  lumi %u of %u\n",
           ev, cfg.events, (double)(ev - p->last_events) / dt,
           (double)(by - p->last_bytes) / dt / (1 << 20), (double)ev / (t - p->start),
           lidx + 1, sched.n_lumis);
    fflush(stdout);
    *p = (progress_t){ p->start, t, ev, by };
}

/* END_LUMI waits until every event of the lumi is finished here. */
static int ctrl_wait_lumi_done(uint32_t lidx, progress_t *p)
{
    stall_t s;
    stall_init(&s, atomic_load(&c_events_done));
    while (atomic_load(&c_done[lidx]) < sched.lumis[lidx].count) {
        if (stopped())
            return 1;
        progress_print(p, lidx, 0);
        if (stall_wait(&s, atomic_load(&c_events_done)))
            return fail("controller main", "no event finished for %.0f s (waiting to end run %u "
                        "lumi %u: %" PRIu64 " of %" PRIu64 " events done)",
                        g_stall_s, sched.lumis[lidx].run, sched.lumis[lidx].lumi,
                        atomic_load(&c_done[lidx]), sched.lumis[lidx].count);
    }
    return 0;
}

static void ctrl_globals(sluice_channel_t *ch, progress_t *p)
{
    for (uint32_t g = 0; g < sched.n_g && !stopped(); g++) {
        const global_info_t *x = &sched.g[g];
        if (x->kind == SLUICE_END_LUMI && ctrl_wait_lumi_done(x->lidx, p))
            return;
        sluice_transition_t t = global_transition(g);
        int rc = sluice_transition_send(ch, &t, 0);
        if (rc) {
            char what[96];
            snprintf(what, sizeof what, "sluice_transition_send(%s run %u lumi %u)",
                     kind_name(x->kind), x->run, x->lumi);
            fail_rc("controller main", 0, what, rc);
            return;
        }
        if (x->kind == SLUICE_BEGIN_LUMI)
            atomic_store(&c_begun, x->lidx + 1);
    }
}

static void ctrl_run(sluice_channel_t *ch, worker_t *w)
{
    c_done = calloc(sched.n_lumis, sizeof *c_done);
    if (!c_done) {
        fail("controller main", "out of memory");
        return;
    }
    for (uint32_t s = 0; s < cfg.streams; s++)
        pthread_create(&w[s].thread, NULL, ctrl_stream, &w[s]);
    progress_t p = { now_s(), now_s(), 0, 0 };
    ctrl_globals(ch, &p);
    for (uint32_t s = 0; s < cfg.streams; s++)
        pthread_join(w[s].thread, NULL);
    progress_print(&p, sched.n_lumis - 1, 1);
    free(c_done);
}

/* ------------------------------------------------------------ source: order oracle */

/*
 * The library marks a transition delivered inside the call that returns it,
 * so the checks below compare against what this process can prove: the main
 * thread counts global transitions asked for (s_g_started, before the call)
 * and returned (s_g_done, after its checks); a stream thread notes
 * s_g_done before sluice_event_next.
 */
static int src_check_gates(worker_t *w, uint64_t e, uint32_t lidx, uint32_t done_before)
{
    const lumi_info_t *l = &sched.lumis[lidx];
    /* Its BEGIN_LUMI must have been returned, or be in the call now returning it. */
    if (atomic_load(&s_g_started) <= l->g_begin)
        return fail(w->name, "event %" PRIu64 " of run %u lumi %u delivered before its "
                    "BEGIN_LUMI was even asked for (global transition #%u)",
                    e, l->run, l->lumi, l->g_begin);
    stall_t s;
    stall_init(&s, 0);
    while (atomic_load(&s_g_done) <= l->g_begin)
        if (stopped() || stall_wait(&s, 0))
            return stopped() ? 1 : fail(w->name, "event %" PRIu64 ": the call returning its "
                                        "BEGIN_LUMI did not return", e);
    /* Its END_LUMI must not have been returned before this call began. */
    if (done_before > l->g_end)
        return fail(w->name, "event %" PRIu64 " of run %u lumi %u delivered after that lumi's "
                    "END_LUMI", e, l->run, l->lumi);
    return 0;
}

/* The event is the one the controller sent as the next of this stream. */
static int src_check_event(worker_t *w, const sluice_transition_t *t, uint32_t done_before,
                           uint64_t *e_p, uint32_t *lidx_p)
{
    uint64_t e = t->event - 1;
    if (t->kind != SLUICE_EVENT || t->event == 0 || e >= cfg.events)
        return fail(w->name, "got kind %d event %" PRIu64 ", not an event of this job",
                    t->kind, t->event);
    uint32_t lidx = lumi_of(e);
    sluice_transition_t want = event_transition(e, lidx, w->stream, w->seq);
    if (!transition_equal(t, &want)) {
        uint32_t st = UINT32_MAX;
        uint64_t sq = UINT64_MAX;
        if (t->aux_size >= EVENT_AUX_HEAD) {
            memcpy(&st, t->aux, 4);
            memcpy(&sq, t->aux + 4, 8);
        }
        return fail(w->name, "event %" PRIu64 " (run %u lumi %u) arrived as #%" PRIu64 " of "
                    "stream %u; the controller sent it as #%" PRIu64 " of stream %u (run %u lumi "
                    "%u) or the record is damaged",
                    e, t->run, t->lumi, w->seq, w->stream, sq, st, want.run, want.lumi);
    }
    if (atomic_exchange(&s_seen[e], 1))
        return fail(w->name, "event %" PRIu64 " delivered twice", e);
    w->seq++;
    *e_p = e;
    *lidx_p = lidx;
    return src_check_gates(w, e, lidx, done_before);
}

static int src_next(worker_t *w, sluice_token_t *tok, uint64_t *e_p)
{
    sluice_transition_t t;
    atomic_store(&s_inside[w->stream], 1);
    uint32_t done_before = atomic_load(&s_g_done);
    int rc = sluice_event_next(w->ch, w->stream, &t, 0, tok);
    if (rc == SLUICE_EOF || rc) {
        atomic_store(&s_inside[w->stream], 0);
        if (rc == SLUICE_EOF)
            return SLUICE_EOF;
        return fail(w->name, "sluice_event_next for event #%" PRIu64 " of this stream = %d %s "
                    "(%s)", w->seq, rc, sluice_strerror(rc), sluice_last_error());
    }
    uint32_t lidx = 0;
    int failed = src_check_event(w, &t, done_before, e_p, &lidx);
    atomic_fetch_add(&s_taken[lidx], 1);
    atomic_store(&s_inside[w->stream], 0);
    return failed;
}

static void *src_stream(void *arg)
{
    worker_t *w = arg;
    while (!stopped()) {
        sluice_token_t tok;
        uint64_t e = 0;
        int rc = src_next(w, &tok, &e);
        if (rc == SLUICE_EOF || rc || event_exchange(w, &tok, e))
            break;
    }
    return NULL;
}

/* Nesting, checked from what arrived (independently of the expected list). */
typedef struct nest {
    unsigned char *run_state;  /* per run: 0 never begun, 1 open, 2 ended */
    unsigned char *lumi_state; /* per lumi index: the same */
    uint32_t *open_lumis;      /* per run */
    uint32_t open_runs;
} nest_t;

static int src_nest(nest_t *n, const sluice_transition_t *t, uint32_t g)
{
    const char *who = "source main";
    uint32_t r = t->run, lidx = (r - 1) * cfg.lumis_per_run + t->lumi - 1;
    int has_lumi = t->kind == SLUICE_BEGIN_LUMI || t->kind == SLUICE_END_LUMI;
    if (t->kind != SLUICE_END_JOB && (r == 0 || r > sched.n_runs))
        return fail(who, "%s of unknown run %u", kind_name(t->kind), r);
    if (has_lumi && (t->lumi == 0 || t->lumi > cfg.lumis_per_run || lidx >= sched.n_lumis))
        return fail(who, "%s of unknown lumi %u of run %u", kind_name(t->kind), t->lumi, r);
    switch (t->kind) {
    case SLUICE_BEGIN_RUN:
        if (n->run_state[r] != 0)
            return fail(who, "BEGIN_RUN %u: the run was begun before", r);
        n->run_state[r] = 1;
        n->open_runs++;
        return 0;
    case SLUICE_BEGIN_LUMI:
        if (n->run_state[r] != 1 || n->lumi_state[lidx] != 0)
            return fail(who, "BEGIN_LUMI run %u lumi %u: run not open or lumi begun before", r,
                        t->lumi);
        n->lumi_state[lidx] = 1;
        n->open_lumis[r]++;
        return 0;
    case SLUICE_END_LUMI:
        if (n->lumi_state[lidx] != 1)
            return fail(who, "END_LUMI run %u lumi %u: the lumi is not open", r, t->lumi);
        n->lumi_state[lidx] = 2;
        n->open_lumis[r]--;
        return 0;
    case SLUICE_END_RUN:
        if (n->run_state[r] != 1 || n->open_lumis[r] != 0)
            return fail(who, "END_RUN %u: run not open or %u of its lumis still open", r,
                        n->open_lumis[r]);
        n->run_state[r] = 2;
        n->open_runs--;
        return 0;
    case SLUICE_END_JOB:
        if (n->open_runs != 0 || g != sched.n_g - 1)
            return fail(who, "END_JOB with %u runs open, as global transition #%u of %u",
                        n->open_runs, g, sched.n_g);
        return 0;
    default:
        return fail(who, "global transition of kind %d", t->kind);
    }
}

/* At END_LUMI every event of the lumi must have been taken. A stream inside
 * sluice_event_next may hold one whose delivery it has not reported yet, so
 * only a shortfall larger than those streams proves a violation; an event
 * whose call began after the END is caught by src_check_gates. */
static int src_check_end(uint32_t lidx)
{
    const lumi_info_t *l = &sched.lumis[lidx];
    uint32_t inside = 0;
    for (uint32_t s = 0; s < cfg.streams; s++)
        inside += (uint32_t)atomic_load(&s_inside[s]); /* before s_taken: see above */
    uint64_t taken = atomic_load(&s_taken[lidx]);
    if (taken + inside < l->count)
        return fail("source main", "END_LUMI run %u lumi %u delivered when %" PRIu64 " of its "
                    "%" PRIu64 " events had been taken (%u streams inside sluice_event_next)",
                    l->run, l->lumi, taken, l->count, inside);
    return 0;
}

static int src_global(sluice_channel_t *ch, nest_t *n, uint32_t g)
{
    const global_info_t *x = &sched.g[g];
    sluice_transition_t t, want = global_transition(g);
    atomic_store(&s_g_started, g + 1);
    int rc = sluice_transition_next(ch, &t, 0);
    if (rc) {
        char what[96];
        snprintf(what, sizeof what, "sluice_transition_next (want #%u, %s run %u lumi %u)", g,
                 kind_name(x->kind), x->run, x->lumi);
        return fail_rc("source main", 0, what, rc);
    }
    if (!transition_equal(&t, &want))
        return fail("source main", "global transition #%u is %s run %u lumi %u, the controller "
                    "sent %s run %u lumi %u (or its payload is damaged)",
                    g, kind_name(t.kind), t.run, t.lumi, kind_name(want.kind), want.run,
                    want.lumi);
    if (src_nest(n, &t, g) || (t.kind == SLUICE_END_LUMI && src_check_end(x->lidx)))
        return 1;
    atomic_store(&s_g_done, g + 1);
    return 0;
}

static void src_globals(sluice_channel_t *ch)
{
    nest_t n = { calloc(sched.n_runs + 1, 1), calloc(sched.n_lumis, 1),
                 calloc(sched.n_runs + 1, sizeof(uint32_t)), 0 };
    if (!n.run_state || !n.lumi_state || !n.open_lumis)
        fail("source main", "out of memory"); /* stops the loops below */
    for (uint32_t g = 0; g < sched.n_g && !stopped(); g++)
        if (src_global(ch, &n, g))
            break;
    sluice_transition_t t;
    int rc;
    if (!stopped() && (rc = sluice_transition_next(ch, &t, 0)) != SLUICE_EOF)
        fail("source main", "after END_JOB sluice_transition_next = %d %s (%s), want SLUICE_EOF",
             rc, sluice_strerror(rc), rc < 0 ? sluice_last_error() : "");
    free(n.run_state);
    free(n.lumi_state);
    free(n.open_lumis);
}

/* After the job: every event exactly once, every lumi complete. */
static void src_final_checks(void)
{
    for (uint64_t e = 0; e < cfg.events && !stopped(); e++)
        if (!atomic_load(&s_seen[e]))
            fail("source main", "event %" PRIu64 " never delivered", e);
    for (uint32_t i = 0; i < sched.n_lumis && !stopped(); i++)
        if (atomic_load(&s_taken[i]) != sched.lumis[i].count)
            fail("source main", "run %u lumi %u: %" PRIu64 " events taken, %" PRIu64 " sent",
                 sched.lumis[i].run, sched.lumis[i].lumi, atomic_load(&s_taken[i]),
                 sched.lumis[i].count);
}

static void src_run(sluice_channel_t *ch, worker_t *w)
{
    s_taken = calloc(sched.n_lumis, sizeof *s_taken);
    s_seen = calloc(cfg.events, sizeof *s_seen);
    s_inside = calloc(cfg.streams, sizeof *s_inside);
    if (!s_taken || !s_seen || !s_inside) {
        fail("source main", "out of memory");
    } else {
        for (uint32_t s = 0; s < cfg.streams; s++)
            pthread_create(&w[s].thread, NULL, src_stream, &w[s]);
        src_globals(ch);
        for (uint32_t s = 0; s < cfg.streams; s++)
            pthread_join(w[s].thread, NULL);
        src_final_checks();
    }
    free(s_taken);
    free((void *)s_seen);
    free((void *)s_inside);
}

/* ------------------------------------------------------------ totals across both sides */

enum { T_EVENTS, T_PSENT, T_BSENT, T_PRECV, T_BRECV, T_LIB_PSENT, T_LIB_BSENT, T_LIB_PRECV,
       T_LIB_BRECV, T_LIB_TSENT, T_LIB_TRECV, T_LIB_DISCARDED, T_FAILURES, T_IS_CTRL, T_N };

typedef struct side {
    uint64_t v[T_N];
    char first[MSG_MAX];      /* that side's first failure */
} side_t;

static void side_collect(side_t *me, const worker_t *w, const sluice_channel_stats_t *st)
{
    memset(me, 0, sizeof *me);
    for (uint32_t s = 0; w && s < cfg.streams; s++) {
        me->v[T_EVENTS] += w[s].events;
        me->v[T_PSENT] += w[s].products_sent;
        me->v[T_BSENT] += w[s].bytes_sent;
        me->v[T_PRECV] += w[s].products_received;
        me->v[T_BRECV] += w[s].bytes_received;
    }
    me->v[T_LIB_PSENT] = st->products_sent;
    me->v[T_LIB_BSENT] = st->bytes_sent;
    me->v[T_LIB_PRECV] = st->products_received;
    me->v[T_LIB_BRECV] = st->bytes_received;
    me->v[T_LIB_TSENT] = st->transitions_sent;
    me->v[T_LIB_TRECV] = st->transitions_received;
    me->v[T_LIB_DISCARDED] = st->discarded;
    me->v[T_FAILURES] = (uint64_t)atomic_load(&g_failures);
    me->v[T_IS_CTRL] = (uint64_t)cfg.is_ctrl;
    memcpy(me->first, g_first[!atomic_load(&g_have_first[0])], sizeof me->first);
}

/* Products and bytes the plans call for in one direction, over the whole job. */
static void plan_totals(soak_dir_t dir, uint64_t *products_p, uint64_t *bytes_p)
{
    *products_p = *bytes_p = 0;
    for (uint64_t e = 0; e < cfg.events; e++) {
        event_plan_t pl;
        plan_event(e, dir, &pl);
        *products_p += pl.n;
        for (uint32_t j = 0; j < pl.n; j++)
            *bytes_p += pl.p[j].bytes;
    }
}

/* Counts that must agree once both sides are done; both sides run the same
 * checks on the same numbers, so they reach the same verdict. */
static int sides_agree(const side_t *c, const side_t *s, char *why, size_t n)
{
    uint64_t pc, bc, ps, bs, transitions = (uint64_t)sched.n_g + cfg.events;
    plan_totals(DIR_C2S, &pc, &bc);
    plan_totals(DIR_S2C, &ps, &bs);
    const struct { const char *what; uint64_t got, want; } rows[] = {
        { "controller events", c->v[T_EVENTS], cfg.events },
        { "source events", s->v[T_EVENTS], cfg.events },
        { "products controller->source sent", c->v[T_PSENT], pc },
        { "products controller->source received", s->v[T_PRECV], pc },
        { "bytes controller->source received", s->v[T_BRECV], bc },
        { "products source->controller sent", s->v[T_PSENT], ps },
        { "products source->controller received", c->v[T_PRECV], ps },
        { "bytes source->controller received", c->v[T_BRECV], bs },
        { "controller stats products_sent", c->v[T_LIB_PSENT], pc },
        { "controller stats bytes_sent", c->v[T_LIB_BSENT], bc },
        { "controller stats products_received", c->v[T_LIB_PRECV], ps },
        { "controller stats bytes_received", c->v[T_LIB_BRECV], bs },
        { "source stats products_sent", s->v[T_LIB_PSENT], ps },
        { "source stats bytes_sent", s->v[T_LIB_BSENT], bs },
        { "source stats products_received", s->v[T_LIB_PRECV], pc },
        { "source stats bytes_received", s->v[T_LIB_BRECV], bc },
        { "controller stats transitions_sent", c->v[T_LIB_TSENT], transitions },
        { "source stats transitions_received", s->v[T_LIB_TRECV], transitions },
        { "controller stats discarded", c->v[T_LIB_DISCARDED], 0 },
        { "source stats discarded", s->v[T_LIB_DISCARDED], 0 },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].got != rows[i].want) {
            snprintf(why, n, "%s = %" PRIu64 ", expected %" PRIu64, rows[i].what, rows[i].got,
                     rows[i].want);
            return 0;
        }
    return 1;
}

/* ------------------------------------------------------------ set-up */

static int parse_u64(const char *s, uint64_t *v_p)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
    if (end == s || *s == '-' || (shift && *++end) || *end)
        return -1;
    *v_p = (uint64_t)v << shift;
    return 0;
}

static int parse(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "controller") && strcmp(argv[1], "source")))
        return -1;
    cfg.is_ctrl = strcmp(argv[1], "controller") == 0;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        uint64_t v = 0;
        if (!strcmp(o, "--quiet")) {
            cfg.quiet = 1;
            continue;
        }
        if (i + 1 >= argc)
            return -1;
        const char *a = argv[++i];
        if (!strcmp(o, "--mpi-threads")) { /* serialized: for osc/pt2pt, as in sluice-demo */
            if (strcmp(a, "multiple") && strcmp(a, "serialized"))
                return -1;
            cfg.mpi_threads = strcmp(a, "multiple") ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE;
            continue;
        }
        if (parse_u64(a, &v))
            return -1;
        if (!strcmp(o, "--events") && v > 0)
            cfg.events = v;
        else if (!strcmp(o, "--streams") && v > 0 && v <= 4096)
            cfg.streams = (uint32_t)v;
        else if (!strcmp(o, "--max-bytes") && v <= (1ull << 32))
            cfg.max_bytes = v;
        else if (!strcmp(o, "--seed"))
            cfg.seed = v;
        else if (!strcmp(o, "--lumi-events") && v > 0 && v < (1u << 30))
            cfg.lumi_events = (uint32_t)v;
        else if (!strcmp(o, "--lumis-per-run") && v > 0 && v < (1u << 20))
            cfg.lumis_per_run = (uint32_t)v;
        else if (!strcmp(o, "--max-products") && v <= PLAN_CAP)
            cfg.max_products = (uint32_t)v;
        else if (!strcmp(o, "--progress") && v > 0)
            cfg.progress_s = (double)v;
        else if (!strcmp(o, "--corrupt-every") && v > 0)
            cfg.corrupt_every = v;
        else
            return -1;
    }
    return 0;
}

/* Room for one event's products plus one more, all of the largest size,
 * doubled: a region never wraps, and the bytes skipped at the end of a lap
 * count as used until the receiver passes them. A power of two, >= 64 KiB. */
static uint64_t arena_default(void)
{
    uint64_t per = (cfg.max_bytes + 63) & ~63ull, a = 65536;
    uint64_t want = 2 * (cfg.max_products + 1) * per;
    while (a < want)
        a <<= 1;
    return a;
}

static int open_channel(sluice_context_t *ctx, sluice_options_t *o, sluice_channel_t **ch_p)
{
    sluice_endpoint_t eps[4];
    for (uint32_t i = 0; i < 4; i++) {
        int sends = (i % 2 == 0) == cfg.is_ctrl; /* odd instances flow from the controller */
        eps[i] = (sluice_endpoint_t){ i + 1, sends ? SLUICE_SEND : SLUICE_RECEIVE, g_type };
    }
    sluice_channel_desc_t d = { .size = sizeof d, .name = "soak",
                                .role = cfg.is_ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE,
                                .peer = cfg.is_ctrl ? "source" : "controller",
                                .streams = cfg.streams, .endpoints = eps, .n_endpoints = 4,
                                .options = o };
    int rc = sluice_channel_open(ctx, &d, ch_p);
    return rc ? fail_rc(cfg.is_ctrl ? "controller main" : "source main", 0,
                        "sluice_channel_open", rc) : 0;
}

static void workers_destroy(worker_t *w)
{
    for (uint32_t s = 0; w && s < cfg.streams; s++)
        free(w[s].scratch);
    free(w);
}

static worker_t *workers_create(sluice_channel_t *ch)
{
    worker_t *w = calloc(cfg.streams, sizeof *w);
    for (uint32_t s = 0; w && s < cfg.streams; s++) {
        w[s].ch = ch;
        w[s].stream = s;
        snprintf(w[s].name, sizeof w[s].name, "%s stream %u",
                 cfg.is_ctrl ? "controller" : "source", s);
        w[s].scratch = aligned_alloc(64, (cfg.max_bytes + 64) & ~63ull);
        if (!w[s].scratch) {
            workers_destroy(w);
            return NULL;
        }
    }
    return w;
}

static void print_header(const sluice_options_t *o, sluice_channel_t *ch)
{
    if (!cfg.is_ctrl || cfg.quiet)
        return;
    printf("soak: %u streams, %" PRIu64 " events in %u lumis of %u runs (%u open at once), "
           "0..%u products of 0..%" PRIu64 " bytes each way per event\n",
           cfg.streams, cfg.events, sched.n_lumis, sched.n_runs, sched.open_lumis, cfg.max_products,
           cfg.max_bytes);
    printf("soak: arena_bytes %" PRIu64 " per stream and direction, ring_depth %u, "
           "timeout %u ms, transport %s, seed %" PRIu64 "\n",
           o->arena_bytes, o->ring_depth, o->timeout_ms, sluice_channel_transport(ch), cfg.seed);
    fflush(stdout);
}

/* Open, run one side, collect its counts, close. */
static void run_side(sluice_context_t *ctx, sluice_options_t *o, side_t *me)
{
    const char *who = cfg.is_ctrl ? "controller main" : "source main";
    sluice_channel_t *ch = NULL;
    worker_t *w = NULL;
    sluice_channel_stats_t st = { 0 };
    if (open_channel(ctx, o, &ch) == 0) {
        if (!(w = workers_create(ch))) {
            fail(who, "out of memory");
        } else {
            print_header(o, ch);
            if (cfg.is_ctrl)
                ctrl_run(ch, w);
            else
                src_run(ch, w);
        }
        sluice_channel_stats(ch, &st);
        int rc = sluice_channel_close(ch);
        if (rc)
            fail_rc(who, 0, "sluice_channel_close", rc);
    }
    side_collect(me, w, &st);
    workers_destroy(w);
}

/* Both sides must build the same schedule: compare a digest of the options.
 * Collective, so both sides call it whatever happened before. */
static int options_agree(uint32_t open, int env_rc)
{
    const uint64_t fields[] = { cfg.events, cfg.streams, cfg.max_bytes, cfg.seed,
                                cfg.lumi_events, cfg.lumis_per_run, cfg.max_products, open,
                                (uint64_t)env_rc };
    uint64_t d = 0, lo, hi;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        d = mix64(d ^ fields[i]);
    MPI_Allreduce(&d, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&d, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

/* The verdict, printed by the controller; the exit status of both sides. */
static int verdict(const side_t *me, double seconds)
{
    side_t both[2];
    MPI_Allgather(me, (int)sizeof *me, MPI_BYTE, both, (int)sizeof *me, MPI_BYTE,
                  MPI_COMM_WORLD);
    const side_t *c = both[0].v[T_IS_CTRL] ? &both[0] : &both[1];
    const side_t *s = both[0].v[T_IS_CTRL] ? &both[1] : &both[0];
    char why[MSG_MAX] = "";
    int ok = c->v[T_FAILURES] == 0 && s->v[T_FAILURES] == 0 &&
             c->v[T_IS_CTRL] != s->v[T_IS_CTRL] && sides_agree(c, s, why, sizeof why);
    if (cfg.is_ctrl && ok) {
        uint64_t bytes = c->v[T_BSENT] + c->v[T_BRECV];
        printf("soak: OK %" PRIu64 " events, %" PRIu64 " bytes, %.2f s (%.0f events/s, "
               "%.1f MiB/s)\n", c->v[T_EVENTS], bytes, seconds, (double)c->v[T_EVENTS] / seconds,
               (double)bytes / seconds / (1 << 20));
    } else if (cfg.is_ctrl) {
        printf("soak: FAILED after %.2f s; controller: %" PRIu64 " failures%s%s; source: %" PRIu64
               " failures%s%s%s%s\n", seconds, c->v[T_FAILURES], c->first[0] ? ", first " : "",
               c->first, s->v[T_FAILURES], s->first[0] ? ", first " : "", s->first,
               why[0] ? "; totals disagree: " : "", why);
    }
    fflush(stdout);
    return ok ? 0 : 1;
}

/* Options, schedule, context and types; every collective call is made by
 * both sides, so a failure on one side never leaves the other waiting. */
static int setup(const char *role, sluice_options_t *o, sluice_context_t **ctx_p,
                 sluice_registry_t **reg_p)
{
    sluice_options_init(o);
    o->arena_bytes = arena_default();
    int rc = sluice_options_from_env(o);
    g_stall_s = 2.0 * o->timeout_ms / 1000.0 + 10.0;
    if (rc)
        fail(role, "SLUICE_* environment: %s (%s)", sluice_strerror(rc), sluice_last_error());
    if (!options_agree(o->max_open_lumis, rc) && !rc)
        fail(role, "the two sides were given different options (or SLUICE_* settings)");
    if (!stopped() && sched_build(o->max_open_lumis))
        fail(role, "out of memory for the schedule");
    int go = !stopped();
    MPI_Allreduce(MPI_IN_PLACE, &go, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (!go)
        return 1;
    if ((rc = sluice_context_create(MPI_COMM_WORLD, role, ctx_p)))
        return fail_rc(role, 0, "sluice_context_create", rc);
    if ((rc = sluice_registry_create(reg_p)))
        return fail_rc(role, 0, "sluice_registry_create", rc);
    sluice_type_desc_t bytes = { .size = sizeof bytes, .name = "soak::Bytes",
                                 .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1, .align = 1 };
    if ((rc = sluice_registry_add(*reg_p, &bytes, &g_type)))
        return fail_rc(role, 0, "sluice_registry_add", rc);
    return 0;
}

int main(int argc, char **argv)
{
    int bad_args = parse(argc, argv), provided, size;
    MPI_Init_thread(&argc, &argv, cfg.mpi_threads, &provided);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (bad_args || size != 2) {
        fprintf(stderr, "usage: mpiexec -n 1 sluice-soak controller [options] : -n 1 sluice-soak "
                        "source [options]\n  options: --events N --streams S --max-bytes B[K|M] "
                        "--max-products P --seed X --lumi-events L --lumis-per-run R "
                        "--progress SECONDS --quiet --mpi-threads multiple|serialized "
                        "--corrupt-every N\n");
        MPI_Finalize();
        return 2;
    }
    sluice_options_t o;
    sluice_context_t *ctx = NULL;
    sluice_registry_t *reg = NULL;
    g_t0 = now_s();
    int set_up = setup(argv[1], &o, &ctx, &reg) == 0;
    side_t me;
    MPI_Barrier(MPI_COMM_WORLD); /* start the clocks of both sides together */
    g_t0 = now_s();
    if (set_up)
        run_side(ctx, &o, &me);
    else
        side_collect(&me, NULL, &(sluice_channel_stats_t){ 0 });
    int status = verdict(&me, now_s() - g_t0);
    if (reg)
        sluice_registry_destroy(reg);
    if (ctx)
        sluice_context_destroy(ctx);
    free(sched.lumis);
    free(sched.g);
    MPI_Finalize();
    return status;
}
