/* SPDX-License-Identifier: MIT */
/* Behaviour cases that attack the data path: empty products, late finishes, closes seen while polling. */
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "harness.h"

static int h_end(sluice_channel_t *ch, uint32_t run)
{
    if (h_is_ctrl) {
        H_OK(h_send_global(ch, SLUICE_END_LUMI, run, 1));
        H_OK(h_send_global(ch, SLUICE_END_RUN, run, 0));
        H_OK(h_send_global(ch, SLUICE_END_JOB, 0, 0));
    } else {
        H_OK(h_expect_global(ch, SLUICE_END_LUMI, run, 1));
        H_OK(h_expect_global(ch, SLUICE_END_RUN, run, 0));
        H_OK(h_expect_global(ch, SLUICE_END_JOB, 0, 0));
    }
    return 0;
}

static int h_event(sluice_channel_t *ch, uint32_t run, uint64_t ev, sluice_token_t *tok)
{
    sluice_transition_t t = h_transition(SLUICE_EVENT, run, 1, ev);
    if (h_is_ctrl)
        H_OK(sluice_event_send(ch, 0, &t, 0, tok));
    else
        H_OK(sluice_event_next(ch, 0, &t, 0, tok));
    return 0;
}

/*
 * Review H3: an empty product, held by the receiver (it asks for a later
 * product first, so the empty one waits in the pending list), then a product
 * that only fits once an earlier one is released and so restarts the arena.
 * It must arrive intact, and the stream must go on.
 */
int case_zero_then_large(void)
{
    enum { A = 1, Z = 2, B = 3 };
    const size_t big = 40000; /* two do not fit in the 64 KiB arena */
    sluice_endpoint_t eps[3] = { { A, h_dir(1), T_BYTES }, { Z, h_dir(1), T_BYTES },
                                 { B, h_dir(1), T_BYTES } };
    sluice_options_t o = h_options();
    o.arena_bytes = 64u << 10;
    sluice_channel_t *ch;
    H_OK(h_open("zero_large", 1, eps, 3, &o, &ch));
    H_OK(h_begin(ch, 1));
    char *buf = malloc(big);
    H_TRUE(buf != NULL, "malloc");
    for (uint64_t ev = 0; ev < 4; ev++) {
        sluice_token_t tok;
        sluice_view_t v;
        H_OK(h_event(ch, 1, ev, &tok));
        if (h_is_ctrl) {
            h_fill(buf, big, ev);
            H_OK(sluice_product_send(&tok, A, buf, big, big, 0));
            H_OK(sluice_product_send(&tok, Z, NULL, 0, 0, 0));
            h_fill(buf, big, ev + 100);
            H_OK(sluice_product_send(&tok, B, buf, big, big, 0)); /* waits for A's release */
        } else {
            H_OK(sluice_product_receive(&tok, A, 0, &v));
            h_fill(buf, big, ev);
            H_TRUE(v.bytes == big && memcmp(v.data, buf, big) == 0, "A of event %llu",
                   (unsigned long long)ev);
            H_OK(sluice_view_release(ch, &v));
            /* B before Z: Z is taken in first and held while B arrives. */
            H_OK(sluice_product_receive(&tok, B, 0, &v));
            h_fill(buf, big, ev + 100);
            H_TRUE(v.bytes == big && memcmp(v.data, buf, big) == 0, "B of event %llu",
                   (unsigned long long)ev);
            H_OK(sluice_view_release(ch, &v));
            sluice_view_t zv;
            H_OK(sluice_product_receive(&tok, Z, 0, &zv));
            H_TRUE(zv.bytes == 0 && zv.count == 0, "Z of event %llu has %zu bytes",
                   (unsigned long long)ev, zv.bytes);
            H_OK(sluice_view_release(ch, &zv));
        }
        H_OK(sluice_event_finish(&tok));
    }
    free(buf);
    H_OK(h_end(ch, 1));
    H_OK(sluice_channel_close(ch));
    return 0;
}

/*
 * Review M7: the controller finishes an event without reading its results
 * and then stays away from sluice (in an MPI barrier). The source sends far
 * more than the controller's ring holds: it must not wait for a reader that
 * will never come; what it sends is dropped and counted.
 */
int case_late_finish(void)
{
    enum { R = 5 };
    const uint64_t n = 500; /* ring depth is 64 by default */
    sluice_endpoint_t ep = { R, h_dir(0), T_BYTES };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_OK(h_open("late_finish", 1, &ep, 1, &o, &ch));
    H_OK(h_begin(ch, 1));
    sluice_token_t tok;
    H_OK(h_event(ch, 1, 0, &tok));
    if (h_is_ctrl) {
        H_OK(sluice_event_finish(&tok));
        h_sync(); /* the source learns the event went out and was finished */
        h_sync(); /* idle, outside sluice, while the source sends */
    } else {
        h_sync();
        char blk[1024] = { 0 };
        for (uint64_t k = 0; k < n; k++)
            H_OK(sluice_product_send(&tok, R, blk, sizeof blk, k, 0));
        H_OK(sluice_product_send_absent(&tok, R));
        H_OK(sluice_event_finish(&tok));
        sluice_channel_stats_t s;
        sluice_channel_stats(ch, &s);
        H_TRUE(s.discarded > 0 && s.discarded + s.products_sent == n,
               "%llu sent, %llu dropped of %llu", (unsigned long long)s.products_sent,
               (unsigned long long)s.discarded, (unsigned long long)n);
        h_sync();
    }
    /* The stream goes on: one more event with a result that is read. */
    H_OK(h_event(ch, 1, 1, &tok));
    uint64_t v = 0xfeed;
    if (h_is_ctrl) {
        sluice_view_t view;
        H_OK(sluice_product_receive(&tok, R, 0, &view));
        H_TRUE(view.bytes == 8 && memcmp(view.data, &v, 8) == 0, "result after the flood");
        H_OK(sluice_view_release(ch, &view));
    } else {
        H_OK(sluice_product_send(&tok, R, &v, sizeof v, 8, 0));
    }
    H_OK(sluice_event_finish(&tok));
    H_OK(h_end(ch, 1));
    H_OK(sluice_channel_close(ch));
    return 0;
}

/* A polling (SLUICE_NONBLOCK) source learns that the controller closed. */
int case_nonblock_after_close(void)
{
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_OK(h_open("nb_close", 1, NULL, 0, &o, &ch));
    if (h_is_ctrl) {
        H_OK(h_send_global(ch, SLUICE_BEGIN_RUN, 1, 0));
        H_OK(sluice_channel_close(ch));
        return 0;
    }
    H_OK(h_expect_global(ch, SLUICE_BEGIN_RUN, 1, 0)); /* published before the close: seen */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc;
    sluice_transition_t tr;
    sluice_token_t tok;
    do {
        rc = sluice_transition_next(ch, &tr, SLUICE_NONBLOCK);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (rc == SLUICE_EAGAIN && t.tv_sec - t0.tv_sec < 10);
    H_STATUS(rc, SLUICE_EPEERCLOSED);
    H_STATUS(sluice_event_next(ch, 0, &tr, SLUICE_NONBLOCK, &tok), SLUICE_EPEERCLOSED);
    H_OK(sluice_channel_close(ch));
    return 0;
}

/*
 * Review M3: END_JOB needs room on every ring. With one stream ring full it
 * publishes nothing under SLUICE_NONBLOCK (no STREAM_END, no END_JOB), and a
 * later retry publishes it all.
 */
int case_end_job_retry(void)
{
    sluice_options_t o = h_options();
    o.ring_depth = 4;
    sluice_channel_t *ch;
    H_OK(h_open("endjob", 2, NULL, 0, &o, &ch));
    H_OK(h_begin(ch, 1));
    sluice_transition_t t;
    sluice_token_t tok;
    if (h_is_ctrl) {
        for (uint64_t ev = 0; ev < 2; ev++) { /* EVENT + EVENT_END twice: stream 1 is full */
            t = h_transition(SLUICE_EVENT, 1, 1, ev);
            H_OK(sluice_event_send(ch, 1, &t, 0, &tok));
            H_OK(sluice_event_finish(&tok));
        }
        H_OK(h_send_global(ch, SLUICE_END_LUMI, 1, 1));
        H_OK(h_send_global(ch, SLUICE_END_RUN, 1, 0));
        t = h_transition(SLUICE_END_JOB, 0, 0, 0);
        H_STATUS(sluice_transition_send(ch, &t, SLUICE_NONBLOCK), SLUICE_EAGAIN);
        h_sync(); /* the source checks nothing of the end arrived, then reads stream 1 */
        h_sync();
        H_OK(sluice_transition_send(ch, &t, 0));
    } else {
        h_sync();
        H_STATUS(sluice_event_next(ch, 0, &t, SLUICE_NONBLOCK, &tok), SLUICE_EAGAIN);
        for (uint64_t ev = 0; ev < 2; ev++) {
            H_OK(sluice_event_next(ch, 1, &t, 0, &tok));
            H_OK(sluice_event_finish(&tok));
        }
        H_OK(h_expect_global(ch, SLUICE_END_LUMI, 1, 1));
        H_OK(h_expect_global(ch, SLUICE_END_RUN, 1, 0));
        H_STATUS(sluice_transition_next(ch, &t, SLUICE_NONBLOCK), SLUICE_EAGAIN);
        h_sync();
        H_OK(h_expect_global(ch, SLUICE_END_JOB, 0, 0));
        H_STATUS(sluice_event_next(ch, 0, &t, 0, &tok), SLUICE_EOF);
        H_STATUS(sluice_event_next(ch, 1, &t, 0, &tok), SLUICE_EOF);
    }
    H_OK(sluice_channel_close(ch));
    return 0;
}

/*
 * Review H6: a block or SoA product's element count must fit in its bytes,
 * or receivers that index columns by it read past the region. The sender
 * refuses such a product and publishes nothing.
 */
int case_bad_count(void)
{
    enum { H = 4 };
    sluice_endpoint_t ep = { H, h_dir(1), T_HITS };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_OK(h_open("bad_count", 1, &ep, 1, &o, &ch));
    H_OK(h_begin(ch, 1));
    sluice_token_t tok;
    H_OK(h_event(ch, 1, 0, &tok));
    size_t bytes;
    H_OK(sluice_type_bytes(T_HITS, 10, &bytes));
    char *buf = calloc(1, bytes);
    H_TRUE(buf != NULL, "calloc");
    if (h_is_ctrl) {
        sluice_reservation_t res;
        H_STATUS(sluice_product_send(&tok, H, buf, bytes, 11, 0), SLUICE_EINVAL);
        H_TRUE(strstr(sluice_last_error(), "11 elements"), "message: %s", sluice_last_error());
        H_STATUS(sluice_product_reserve(&tok, H, bytes, UINT64_MAX / 2, 0, &res), SLUICE_EINVAL);
        H_OK(sluice_product_send(&tok, H, buf, bytes, 10, 0));
    } else {
        sluice_view_t v;
        H_OK(sluice_product_receive(&tok, H, 0, &v));
        H_TRUE(v.count == 10 && v.bytes == bytes, "the one valid product: count %llu",
               (unsigned long long)v.count);
        H_OK(sluice_view_release(ch, &v));
        H_STATUS(sluice_product_receive(&tok, H, 0, &v), SLUICE_ABSENT);
    }
    free(buf);
    H_OK(sluice_event_finish(&tok));
    H_OK(h_end(ch, 1));
    H_OK(sluice_channel_close(ch));
    return 0;
}

/* ------------------------------------------------------------ opening and closing late */

static double h_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void h_sleep_ms(long ms)
{
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000 };
    nanosleep(&t, NULL);
}

/* One transition through a freshly opened channel, then close. */
static int h_one_exchange(sluice_channel_t *ch)
{
    if (h_is_ctrl)
        H_OK(h_send_global(ch, SLUICE_BEGIN_RUN, 3, 0));
    else
        H_OK(h_expect_global(ch, SLUICE_BEGIN_RUN, 3, 0));
    return 0;
}

/*
 * Review H2: the source opens two timeouts after the controller gave up.
 * Its open must not act on the controller's stale declaration: it fails
 * cleanly at its own deadline. Then a retry on both sides succeeds.
 */
int case_late_open(void)
{
    sluice_options_t o = h_options();
    o.timeout_ms = 300;
    sluice_channel_t *ch = NULL;
    if (h_is_ctrl) {
        H_STATUS(h_open("late", 1, NULL, 0, &o, &ch), SLUICE_ETIMEDOUT);
    } else {
        h_sleep_ms(2 * 300 + 100);
        double t0 = h_now();
        H_STATUS(h_open("late", 1, NULL, 0, &o, &ch), SLUICE_ETIMEDOUT);
        H_TRUE(h_now() - t0 < 3 * 0.3 + 1.0, "the late open took %.2f s", h_now() - t0);
    }
    H_TRUE(ch == NULL, "channel handle set on failure");
    h_sync();
    o = h_options();
    H_OK(h_open("late", 1, NULL, 0, &o, &ch));
    H_OK(h_one_exchange(ch));
    H_OK(sluice_channel_close(ch));
    return 0;
}

/*
 * Review H1: the source closes well after the controller's close deadline.
 * Neither side hangs; both make the same choice (free, or leave the window
 * to MPI_Finalize), and MPI_Finalize returns afterwards (main calls it).
 */
int case_close_skew(void)
{
    sluice_options_t o = h_options();
    o.timeout_ms = 300;
    sluice_channel_t *ch;
    H_OK(h_open("skew", 1, NULL, 0, &o, &ch));
    H_OK(h_one_exchange(ch));
    int collective = strcmp(sluice_channel_transport(ch), "rma") == 0;
    if (!h_is_ctrl)
        h_sleep_ms(3 * 300);
    double t0 = h_now();
    int rc = sluice_channel_close(ch);
    double took = h_now() - t0;
    /* Shared memory closes locally. RMA frees its window collectively: after
     * this skew both sides agree to leave it (ETIMEDOUT), unless emulated
     * RMA held the controller's close-flag put until the source entered MPI
     * (then both arrive together and free). Either way they agree, below. */
    if (collective)
        H_TRUE(rc == SLUICE_OK || rc == SLUICE_ETIMEDOUT, "close: %s", sluice_strerror(rc));
    else
        H_OK(rc);
    H_TRUE(took < 0.3 + 1.5, "close took %.2f s", took);
    int verdict = rc, peer_verdict;
    MPI_Sendrecv(&verdict, 1, MPI_INT, h_is_ctrl, 0, &peer_verdict, 1, MPI_INT, h_is_ctrl, 0,
                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    H_TRUE(verdict == peer_verdict, "the sides chose differently: %d and %d", verdict,
           peer_verdict);
    return 0;
}

/* ------------------------------------------------------------ a peer killed */

/*
 * Review M4: the process named by SLUICE_TEST_VICTIM ("source" or
 * "controller") kills itself with SIGKILL in the middle of an event while
 * the survivor waits for its product. The survivor gets SLUICE_EPEERDEAD
 * within the liveness period plus a second, at once on later calls, then
 * closes and finalizes normally (run under mpirun --enable-recovery).
 */
int case_peer_killed(void)
{
    enum { P = 6 };
    const char *victim = getenv("SLUICE_TEST_VICTIM");
    int i_die = victim && strcmp(victim, h_role) == 0;
    sluice_endpoint_t eps[2] = { { P, h_dir(1), T_BYTES }, { P, h_dir(0), T_BYTES } };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_OK(h_open("killed", 1, eps, 2, &o, &ch));
    H_OK(h_begin(ch, 1));
    sluice_token_t tok;
    for (uint64_t ev = 0; ev < 5; ev++) {
        sluice_view_t v;
        H_OK(h_event(ch, 1, ev, &tok));
        H_OK(sluice_product_send(&tok, P, &ev, sizeof ev, 8, 0));
        H_OK(sluice_product_receive(&tok, P, 0, &v));
        H_OK(sluice_view_release(ch, &v));
        H_OK(sluice_event_finish(&tok));
    }
    H_OK(h_event(ch, 1, 99, &tok));
    h_sync(); /* the last barrier both take */
    if (i_die) {
        h_sleep_ms(200);
        raise(SIGKILL);
    }
    double t0 = h_now();
    sluice_view_t v;
    H_STATUS(sluice_product_receive(&tok, P, 0, &v), SLUICE_EPEERDEAD);
    double took = h_now() - t0;
    H_TRUE(took < 0.2 + o.liveness_ms / 1000.0 + 1.0, "death seen after %.2f s", took);
    t0 = h_now();
    H_STATUS(sluice_product_receive(&tok, P, 0, &v), SLUICE_EPEERDEAD);
    /* Room is there, so nothing to wait for: it succeeds (and changes
     * nothing the dead peer will see), or, where publishing needs the peer
     * (RMA), fails at once. */
    int frc = sluice_event_finish(&tok);
    H_TRUE(frc == SLUICE_OK || frc == SLUICE_EPEERDEAD, "event_finish: %s", sluice_strerror(frc));
    sluice_transition_t t = h_transition(SLUICE_EVENT, 1, 1, 100);
    if (h_is_ctrl) {
        /* Fill the dead source's stream ring: the wait for room says dead. */
        int src = SLUICE_OK;
        for (int k = 0; k < 200 && src == SLUICE_OK; k++)
            if ((src = sluice_event_send(ch, 0, &t, 0, &tok)) == SLUICE_OK)
                src = sluice_event_finish(&tok);
        H_STATUS(src, SLUICE_EPEERDEAD);
    } else {
        H_STATUS(sluice_event_next(ch, 0, &t, 0, &tok), SLUICE_EPEERDEAD);
    }
    H_TRUE(h_now() - t0 < 0.1, "later calls took %.3f s", h_now() - t0);
    int rc = sluice_channel_close(ch);
    H_TRUE(rc == SLUICE_OK || rc == SLUICE_ETIMEDOUT, "close: %s", sluice_strerror(rc));
    printf("[%s] survivor: death seen after %.3f s (liveness %llu ms)\n", h_role, took,
           (unsigned long long)o.liveness_ms);
    return 0;
}

/* ------------------------------------------------------------ opening beside running streams */

typedef struct busy_stream {
    sluice_channel_t *ch;
    uint32_t stream;
    int failed;
} busy_stream_t;

enum { BUSY_EVENTS = 150, BUSY_P = 7 };

static int busy_loop(busy_stream_t *b)
{
    for (uint64_t k = 0; k < BUSY_EVENTS; k++) {
        uint64_t ev = (uint64_t)b->stream << 32 | k, got;
        sluice_transition_t t = h_transition(SLUICE_EVENT, 1, 1, ev);
        sluice_token_t tok;
        sluice_view_t v;
        if (h_is_ctrl)
            H_OK(sluice_event_send(b->ch, b->stream, &t, 0, &tok));
        else
            H_OK(sluice_event_next(b->ch, b->stream, &t, 0, &tok));
        H_OK(sluice_product_send(&tok, BUSY_P, &t.event, sizeof t.event, 8, 0));
        H_OK(sluice_product_receive(&tok, BUSY_P, 0, &v));
        memcpy(&got, v.data, sizeof got);
        H_TRUE(got == t.event, "stream %u: product of event %llu says %llu", b->stream,
               (unsigned long long)t.event, (unsigned long long)got);
        H_OK(sluice_view_release(b->ch, &v));
        H_OK(sluice_event_finish(&tok));
    }
    return 0;
}

static void *busy_thread(void *arg)
{
    busy_stream_t *b = arg;
    b->failed = busy_loop(b);
    return NULL;
}

/*
 * Review H5: channels open and close while another channel's streams run,
 * from other threads. Under MPI_THREAD_SERIALIZED (the rma.pt2pt line) every
 * MPI call must go through the one guard; the events and products of the
 * busy channel must all arrive intact meanwhile.
 */
int case_open_while_streaming(void)
{
    sluice_endpoint_t eps[2] = { { BUSY_P, h_dir(1), T_BYTES }, { BUSY_P, h_dir(0), T_BYTES } };
    sluice_options_t o = h_options();
    sluice_channel_t *busy;
    H_OK(h_open("busy", 2, eps, 2, &o, &busy));
    H_OK(h_begin(busy, 1));
    busy_stream_t b[2] = { { busy, 0, 0 }, { busy, 1, 0 } };
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, busy_thread, &b[i]);
    int failed = 0;
    for (int k = 0; k < 4 && !failed; k++) {
        char name[32];
        snprintf(name, sizeof name, "side-%d", k);
        sluice_channel_t *side;
        failed = h_open(name, 1, NULL, 0, &o, &side) != SLUICE_OK;
        if (!failed)
            failed = h_one_exchange(side) || sluice_channel_close(side) != SLUICE_OK;
        if (failed)
            fprintf(stderr, "[%s] side channel %d: %s\n", h_role, k, sluice_last_error());
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    H_TRUE(!failed && !b[0].failed && !b[1].failed, "side channels %s, streams %d %d",
           failed ? "failed" : "ok", b[0].failed, b[1].failed);
    H_OK(h_end(busy, 1));
    H_OK(sluice_channel_close(busy));
    return 0;
}
