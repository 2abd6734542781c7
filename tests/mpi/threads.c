/* SPDX-License-Identifier: MIT */
/* Several threads on one event: four receives at once with views released on another thread,
 * and two senders at once (reservations committed out of order beside product_send). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "harness.h"

enum {
    CR_STREAMS = 2,
    CR_EVENTS = 50,
    CR_FAN = 4,      /* instances to the source, received by one thread each */
    CR_PER_FAN = 2,  /* products of each of them per event */
    CR_PAIRS = 3,    /* reservation pairs per event of a reserving thread */
    CR_SENDS = 6,    /* products per event of a sending thread */
    CR_QUEUE = 4,    /* views waiting for the releaser */
};

/* Instances: I_FAN.. I_FAN + 3 to the source; each side's two sending threads use I_RESV and
 * I_SEND (controller to source) or I_RESV_BACK and I_SEND_BACK (source to controller). */
enum { I_FAN = 1, I_RESV = 5, I_SEND = 6, I_RESV_BACK = 15, I_SEND_BACK = 16 };

/* The fan-out products of one event, 0 bytes to 300 KiB, come to more than the arena: the
 * controller can only send them all once views the releaser let go are reused. */
#define CR_ARENA (512u << 10)
static const size_t cr_fan_sizes[CR_FAN][CR_PER_FAN] = {
    { 0, (300u << 10) + 8 },
    { 1, (64u << 10) + 3 },
    { (200u << 10) + 5, 7 },
    { 4096, 150u << 10 },
};
#define CR_MAX_BYTES ((300u << 10) + 8)

static size_t cr_size(uint64_t ev, uint32_t instance, uint32_t k)
{
    if (instance < I_FAN + CR_FAN)
        return cr_fan_sizes[instance - I_FAN][k];
    if ((ev + k) % 5 == 0)
        return 0; /* an empty product now and then, reserved or copied */
    return (size_t)((k * 7919u + ev * 131u + instance) % 20000u);
}

static uint64_t cr_seed(uint64_t ev, uint32_t instance, uint32_t k)
{
    return ev << 32 | (uint64_t)instance << 16 | k;
}

/* How many products of `instance` one event carries. */
static uint32_t cr_count(uint32_t instance)
{
    if (instance < I_FAN + CR_FAN)
        return CR_PER_FAN;
    return instance == I_RESV || instance == I_RESV_BACK ? 2 * CR_PAIRS : CR_SENDS;
}

/* ------------------------------------------------------------ the releaser */

typedef struct cr_held {
    sluice_view_t view;
    uint64_t sum; /* of its bytes when received */
} cr_held_t;

/* One thread that releases the views the receiving threads hand it, in arrival order. */
typedef struct cr_releaser {
    sluice_channel_t *ch;
    pthread_mutex_t m;
    pthread_cond_t c;
    cr_held_t q[CR_QUEUE];
    unsigned head, n;
    bool stop;
    uint64_t released;
    int failed;
    pthread_t th;
} cr_releaser_t;

static void cr_hand_over(cr_releaser_t *r, const sluice_view_t *v)
{
    cr_held_t h = { *v, h_checksum(v->data, v->bytes) };
    pthread_mutex_lock(&r->m);
    while (r->n == CR_QUEUE)
        pthread_cond_wait(&r->c, &r->m);
    r->q[(r->head + r->n++) % CR_QUEUE] = h;
    pthread_cond_broadcast(&r->c);
    pthread_mutex_unlock(&r->m);
}

static int cr_release(cr_releaser_t *r, cr_held_t *h)
{
    /* Held means held: the sender wrote nothing over it meanwhile. */
    H_TRUE(h_checksum(h->view.data, h->view.bytes) == h->sum,
           "a held view of %zu bytes changed before its release", h->view.bytes);
    H_OK(sluice_view_release(r->ch, &h->view));
    H_STATUS(sluice_view_release(r->ch, &h->view), SLUICE_EALREADY);
    return 0;
}

static void *cr_releaser_main(void *arg)
{
    cr_releaser_t *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->m);
        while (r->n == 0 && !r->stop)
            pthread_cond_wait(&r->c, &r->m);
        if (r->n == 0) {
            pthread_mutex_unlock(&r->m);
            return NULL;
        }
        cr_held_t h = r->q[r->head];
        r->head = (r->head + 1) % CR_QUEUE;
        r->n--;
        pthread_cond_broadcast(&r->c);
        pthread_mutex_unlock(&r->m);
        r->failed |= cr_release(r, &h);
        r->released++;
    }
}

static void cr_releaser_start(cr_releaser_t *r, sluice_channel_t *ch)
{
    *r = (cr_releaser_t){ .ch = ch };
    pthread_mutex_init(&r->m, NULL);
    pthread_cond_init(&r->c, NULL);
    pthread_create(&r->th, NULL, cr_releaser_main, r);
}

/* Releases what is still queued, then stops. */
static void cr_releaser_stop(cr_releaser_t *r)
{
    pthread_mutex_lock(&r->m);
    r->stop = true;
    pthread_cond_broadcast(&r->c);
    pthread_mutex_unlock(&r->m);
    pthread_join(r->th, NULL);
    pthread_cond_destroy(&r->c);
    pthread_mutex_destroy(&r->m);
}

/* ------------------------------------------------------------ one thread's part of an event */

typedef struct cr_job {
    sluice_token_t *tok;
    uint64_t ev;
    uint32_t instance;
    cr_releaser_t *rel;
    unsigned char *buf; /* CR_MAX_BYTES of scratch */
    int (*run)(struct cr_job *);
    int failed;
    pthread_t th;
} cr_job_t;

/* Every product of the instance, in order and intact; the view goes to the releaser. */
static int cr_receive(cr_job_t *j)
{
    for (uint32_t k = 0; k < cr_count(j->instance); k++) {
        size_t n = cr_size(j->ev, j->instance, k);
        sluice_view_t v;
        H_OK(sluice_product_receive(j->tok, j->instance, 0, &v));
        H_TRUE(v.bytes == n && v.count == n && v.type == T_BYTES,
               "event %llu instance %u product %u: %zu bytes, count %llu, expected %zu",
               (unsigned long long)j->ev, j->instance, k, v.bytes, (unsigned long long)v.count,
               n);
        h_fill(j->buf, n, cr_seed(j->ev, j->instance, k));
        H_TRUE(memcmp(v.data, j->buf, n) == 0, "event %llu instance %u product %u: damaged",
               (unsigned long long)j->ev, j->instance, k);
        cr_hand_over(j->rel, &v);
    }
    return 0;
}

/* Pairs of reservations open at once; the younger is written and committed first. */
static int cr_send_reserved(cr_job_t *j)
{
    for (uint32_t p = 0; p < CR_PAIRS; p++) {
        uint32_t ka = 2 * p, kb = 2 * p + 1;
        size_t na = cr_size(j->ev, j->instance, ka), nb = cr_size(j->ev, j->instance, kb);
        sluice_reservation_t a, b;
        H_OK(sluice_product_reserve(j->tok, j->instance, na, na, 0, &a));
        H_OK(sluice_product_reserve(j->tok, j->instance, nb, nb, 0, &b));
        H_TRUE(a.bytes == na && b.bytes == nb && a.handle != b.handle,
               "reservations of %zu and %zu bytes: %zu and %zu, handles %llu and %llu", na, nb,
               a.bytes, b.bytes, (unsigned long long)a.handle, (unsigned long long)b.handle);
        h_fill(b.data, nb, cr_seed(j->ev, j->instance, kb));
        H_OK(sluice_product_commit(j->tok, &b));
        h_fill(a.data, na, cr_seed(j->ev, j->instance, ka));
        H_OK(sluice_product_commit(j->tok, &a));
    }
    return 0;
}

static int cr_send_copied(cr_job_t *j)
{
    for (uint32_t k = 0; k < CR_SENDS; k++) {
        size_t n = cr_size(j->ev, j->instance, k);
        h_fill(j->buf, n, cr_seed(j->ev, j->instance, k));
        H_OK(sluice_product_send(j->tok, j->instance, j->buf, n, n, 0));
    }
    return 0;
}

static void *cr_job_main(void *arg)
{
    cr_job_t *j = arg;
    j->failed = j->run(j);
    return NULL;
}

/* Run `n` jobs, each on its own thread, all on the same token; 0 when all passed. */
static int cr_run_jobs(cr_job_t *jobs, int n)
{
    for (int i = 0; i < n; i++)
        pthread_create(&jobs[i].th, NULL, cr_job_main, &jobs[i]);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(jobs[i].th, NULL);
        failed |= jobs[i].failed;
    }
    return failed;
}

/* ------------------------------------------------------------ the case */

/* One stream's events, driven by a thread of its own; both streams share the releaser. */
typedef struct cr_stream {
    sluice_channel_t *ch;
    cr_releaser_t *rel;
    uint32_t stream;
    unsigned char *bufs[CR_FAN];
    uint64_t sent, received, bytes_sent;
    int failed;
    pthread_t th;
} cr_stream_t;

static cr_job_t cr_job(cr_stream_t *s, sluice_token_t *tok, uint64_t ev, uint32_t instance, int i,
                       int (*run)(cr_job_t *))
{
    return (cr_job_t){ .tok = tok, .ev = ev, .instance = instance, .rel = s->rel,
                       .buf = s->bufs[i], .run = run };
}

/* This side's two sending threads, at once, on `a` (reserving) and `b` (copying). */
static int cr_two_senders(cr_stream_t *s, sluice_token_t *tok, uint64_t ev, uint32_t a,
                          uint32_t b)
{
    cr_job_t jobs[2] = { cr_job(s, tok, ev, a, 0, cr_send_reserved),
                         cr_job(s, tok, ev, b, 1, cr_send_copied) };
    for (uint32_t i = 0; i < 2; i++) {
        uint32_t inst = i ? b : a;
        s->sent += cr_count(inst);
        for (uint32_t k = 0; k < cr_count(inst); k++)
            s->bytes_sent += cr_size(ev, inst, k);
    }
    return cr_run_jobs(jobs, 2);
}

/* One receiving thread per instance, all at once. */
static int cr_receivers(cr_stream_t *s, sluice_token_t *tok, uint64_t ev, const uint32_t *inst,
                        int n)
{
    cr_job_t jobs[CR_FAN];
    for (int i = 0; i < n; i++) {
        jobs[i] = cr_job(s, tok, ev, inst[i], i, cr_receive);
        s->received += cr_count(inst[i]);
    }
    return cr_run_jobs(jobs, n);
}

static int cr_event(cr_stream_t *s, uint64_t ev)
{
    static const uint32_t fan[CR_FAN] = { I_FAN, I_FAN + 1, I_FAN + 2, I_FAN + 3 };
    static const uint32_t to_src[2] = { I_RESV, I_SEND }, to_ctl[2] = { I_RESV_BACK, I_SEND_BACK };
    static const uint32_t src_in[CR_FAN + 2] = { I_FAN,     I_FAN + 1, I_FAN + 2,
                                                 I_FAN + 3, I_RESV,    I_SEND };
    sluice_token_t tok;
    H_DO(h_start_event(s->ch, s->stream, 1, ev, &tok));
    /* A thread's failure is printed where it happens; here it only stops the case. */
    if (h_is_ctrl) {
        /* Eight products of four instances, while four threads there receive them. */
        for (uint32_t k = 0; k < CR_PER_FAN; k++) {
            for (uint32_t i = 0; i < CR_FAN; i++) {
                size_t n = cr_size(ev, fan[i], k);
                h_fill(s->bufs[0], n, cr_seed(ev, fan[i], k));
                H_OK(sluice_product_send(&tok, fan[i], s->bufs[0], n, n, 0));
                s->sent++;
                s->bytes_sent += n;
            }
        }
        if (cr_two_senders(s, &tok, ev, I_RESV, I_SEND) || cr_receivers(s, &tok, ev, to_ctl, 2))
            return 1;
    } else {
        if (cr_receivers(s, &tok, ev, fan, CR_FAN) || cr_receivers(s, &tok, ev, to_src, 2) ||
            cr_two_senders(s, &tok, ev, I_RESV_BACK, I_SEND_BACK))
            return 1;
    }
    /* The side that finishes last first finds nothing more on any instance it receives. */
    if (h_is_ctrl == (int)(ev / CR_STREAMS & 1)) {
        const uint32_t *in = h_is_ctrl ? to_ctl : src_in;
        for (int i = 0; i < (h_is_ctrl ? 2 : CR_FAN + 2); i++) {
            sluice_view_t v;
            H_STATUS(sluice_product_receive(&tok, in[i], 0, &v), SLUICE_ABSENT);
        }
    }
    H_OK(sluice_event_finish(&tok));
    return 0;
}

static void *cr_stream_main(void *arg)
{
    cr_stream_t *s = arg;
    for (uint64_t ev = s->stream; ev < CR_EVENTS && !s->failed; ev += CR_STREAMS)
        s->failed = cr_event(s, ev);
    return NULL;
}

/* Every event carried all of it, each way, and the channel counted the same. */
static int cr_verdict(sluice_channel_t *ch, const cr_releaser_t *rel, uint64_t sent,
                      uint64_t received, uint64_t bytes_sent)
{
    const uint64_t out = CR_FAN * CR_PER_FAN + 2 * CR_PAIRS + CR_SENDS;
    const uint64_t back = 2 * CR_PAIRS + CR_SENDS;
    H_TRUE(sent == CR_EVENTS * (h_is_ctrl ? out : back) &&
               received == CR_EVENTS * (h_is_ctrl ? back : out),
           "%llu products sent and %llu received in %d events", (unsigned long long)sent,
           (unsigned long long)received, CR_EVENTS);
    H_TRUE(rel->released == received, "%llu views released of %llu received",
           (unsigned long long)rel->released, (unsigned long long)received);
    sluice_channel_stats_t st;
    sluice_channel_stats(ch, &st);
    H_TRUE(st.products_sent == sent && st.products_received == received &&
               st.bytes_sent == bytes_sent && st.discarded == 0,
           "stats: %llu sent (%llu expected), %llu received (%llu), %llu bytes sent (%llu), "
           "%llu discarded",
           (unsigned long long)st.products_sent, (unsigned long long)sent,
           (unsigned long long)st.products_received, (unsigned long long)received,
           (unsigned long long)st.bytes_sent, (unsigned long long)bytes_sent,
           (unsigned long long)st.discarded);
    return 0;
}

/*
 * CR_EVENTS events over two streams, each stream driven by its own thread.
 * In every event, on the same token: the controller sends eight products of
 * four instances (0 bytes to 300 KiB) that four source threads receive at
 * once, each its own instance, handing every view to one releasing thread;
 * then two controller threads send at once (one reserves pairs and commits
 * the younger first, one copies), the source receiving each instance in
 * order; then the same from two source threads back to the controller.
 */
int case_concurrent_receives(void)
{
    sluice_endpoint_t eps[CR_FAN + 4];
    for (uint32_t i = 0; i < CR_FAN; i++)
        eps[i] = (sluice_endpoint_t){ I_FAN + i, h_dir(1), T_BYTES };
    eps[CR_FAN] = (sluice_endpoint_t){ I_RESV, h_dir(1), T_BYTES };
    eps[CR_FAN + 1] = (sluice_endpoint_t){ I_SEND, h_dir(1), T_BYTES };
    eps[CR_FAN + 2] = (sluice_endpoint_t){ I_RESV_BACK, h_dir(0), T_BYTES };
    eps[CR_FAN + 3] = (sluice_endpoint_t){ I_SEND_BACK, h_dir(0), T_BYTES };
    sluice_options_t o = h_options();
    o.arena_bytes = CR_ARENA;
    sluice_channel_t *ch;
    H_OK(h_open("concurrent", CR_STREAMS, eps, CR_FAN + 4, &o, &ch));
    H_DO(h_begin(ch, 1));
    cr_releaser_t rel;
    cr_releaser_start(&rel, ch);
    cr_stream_t s[CR_STREAMS];
    for (uint32_t i = 0; i < CR_STREAMS; i++) {
        s[i] = (cr_stream_t){ .ch = ch, .rel = &rel, .stream = i };
        for (int b = 0; b < CR_FAN; b++)
            H_TRUE((s[i].bufs[b] = malloc(CR_MAX_BYTES)) != NULL, "malloc");
        pthread_create(&s[i].th, NULL, cr_stream_main, &s[i]);
    }
    uint64_t sent = 0, received = 0, bytes_sent = 0;
    int failed = 0;
    for (uint32_t i = 0; i < CR_STREAMS; i++) {
        pthread_join(s[i].th, NULL);
        for (int b = 0; b < CR_FAN; b++)
            free(s[i].bufs[b]);
        failed |= s[i].failed;
        sent += s[i].sent;
        received += s[i].received;
        bytes_sent += s[i].bytes_sent;
    }
    cr_releaser_stop(&rel);
    failed = failed || rel.failed || cr_verdict(ch, &rel, sent, received, bytes_sent);
    failed = failed || h_end_job(ch, 1);
    /* Closed on failure too: the peer's next wait then ends at once. */
    int crc = sluice_channel_close(ch);
    H_TRUE(failed || crc == SLUICE_OK, "close: %s", sluice_strerror(crc));
    return failed;
}
