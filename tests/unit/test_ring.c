/* SPDX-License-Identifier: MIT */
/* SPSC ring: FIFO order, full/empty, corrupt counters, and a two-thread stress that
 * fails, never hangs, when either side stops. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "../../src/ring.h"

/*
 * A loopback link for white-box ring tests: "the peer's inbox" is this
 * process's buffer, with the same memory orders as the shm transport.
 * It is not a transport the library uses; the MPI tests cover the real one.
 */
struct sl_link {
    char *mem;
};

static int lb_put(sl_link_t *l, size_t off, const void *src, size_t len)
{
    memcpy(l->mem + off, src, len);
    return 0;
}
static int lb_store64(sl_link_t *l, size_t off, uint64_t v)
{
    atomic_store_explicit((_Atomic uint64_t *)(void *)(l->mem + off), v, memory_order_release);
    return 0;
}
static int lb_load64(sl_link_t *l, size_t off, uint64_t *v)
{
    *v = atomic_load_explicit((_Atomic uint64_t *)(void *)(l->mem + off), memory_order_acquire);
    return 0;
}
static const sl_transport_ops_t lb_ops;
static bool lb_publish_fails; /* the next publish fails before storing anything, once */
static int lb_publish(sl_link_t *l, const sl_stamped_t *recs, size_t n)
{
    if (lb_publish_fails) {
        lb_publish_fails = false;
        return SLUICE_ETIMEDOUT; /* as RMA's does when the MPI guard stays held */
    }
    return sl_publish_in_order(&lb_ops, l, recs, n);
}
static const sl_transport_ops_t lb_ops = {
    .size = sizeof(sl_transport_ops_t), .name = "loopback",
    .put = lb_put, .store64 = lb_store64, .publish = lb_publish, .load64 = lb_load64,
};

#define DEPTH 8u

typedef struct ring_fixture {
    char *mem;
    struct sl_link link;
    sl_ring_tx_t tx;
    sl_ring_rx_t rx;
} ring_fixture_t;

static int setup(void **state)
{
    ring_fixture_t *f = calloc(1, sizeof *f);
    f->mem = aligned_alloc(64, SL_RING_CTRL_BYTES + DEPTH * SL_RECORD_BYTES);
    memset(f->mem, 0, SL_RING_CTRL_BYTES + DEPTH * SL_RECORD_BYTES);
    f->link.mem = f->mem;
    sl_ring_tx_init(&f->tx, 0, DEPTH);
    sl_ring_rx_init(&f->rx, f->mem, 0, DEPTH);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    ring_fixture_t *f = *state;
    free(f->mem);
    free(f);
    return 0;
}

static void empty_ring_says_retry(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t r;
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_EAGAIN);
}

static void records_come_out_in_order_and_full_ring_says_retry(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t r = { 0 };
    for (uint32_t lap = 0; lap < 3; lap++) {
        for (uint32_t i = 0; i < DEPTH; i++) {
            assert_ok(sl_ring_tx_room(&f->tx, &lb_ops, &f->link));
            r.seq = lap * DEPTH + i;
            assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &r));
        }
        assert_status(sl_ring_tx_room(&f->tx, &lb_ops, &f->link), SLUICE_EAGAIN);
        for (uint32_t i = 0; i < DEPTH; i++) {
            assert_ok(sl_ring_rx_peek(&f->rx, &r));
            assert_int_equal(r.seq, lap * DEPTH + i);
            sl_ring_rx_consume(&f->rx);
        }
        assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_EAGAIN);
    }
}

static void aux_size_beyond_the_maximum_is_corrupt(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t r = { .aux_size = 0 };
    assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &r));
    /* Overwrite the published record's aux_size in place, as a broken peer could. */
    uint32_t bad = SLUICE_AUX_MAX + 1;
    memcpy(f->mem + sl_ring_slots(0) + offsetof(sl_record_t, aux_size), &bad, sizeof bad);
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_ECORRUPT);
}

/* A stamp no producer stores (a record from laps ahead, or garbage) is corrupt. */
static void stamp_of_another_lap_is_corrupt(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t r;
    lb_store64(&f->link, sl_ring_slots(0), DEPTH + 1);
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_ECORRUPT);
    lb_store64(&f->link, sl_ring_slots(0), 0);
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_EAGAIN);
}

/* The stamp of the record a lap before says "not yet", past the first lap too. */
static void stamp_of_the_lap_before_says_retry(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t r = { 0 };
    for (uint32_t i = 0; i < DEPTH; i++) {
        assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &r));
        assert_ok(sl_ring_rx_peek(&f->rx, &r));
        sl_ring_rx_consume(&f->rx);
    }
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_EAGAIN);
    assert_int_equal(sl_ring_rx_published(&f->rx), 0);
    assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &r));
    assert_int_equal(sl_ring_rx_published(&f->rx), 1);
}

/* Records pushed together come out in order, all of them at once. */
static void records_published_together(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t recs[3] = { 0 }, r;
    for (uint64_t k = 0; k < 3; k++)
        recs[k].seq = 100 + k;
    assert_ok(sl_ring_tx_push_n(&f->tx, &lb_ops, &f->link, recs, 3));
    assert_int_equal(sl_ring_rx_published(&f->rx), 3);
    for (uint64_t k = 0; k < 3; k++) {
        assert_ok(sl_ring_rx_peek(&f->rx, &r));
        assert_int_equal(r.seq, 100 + k);
        sl_ring_rx_consume(&f->rx);
    }
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_EAGAIN);
}

/*
 * A push that fails publishes nothing and leaves the head: the consumer
 * sees none of its records, a mark pushed next does not overwrite one it
 * took, and the retry delivers each record once, in order.
 */
static void failed_push_publishes_nothing_and_retry_delivers_once(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t recs[2] = { { .seq = 1 }, { .seq = 2 } }, mark = { .seq = 3 }, r;
    lb_publish_fails = true;
    assert_status(sl_ring_tx_push_n(&f->tx, &lb_ops, &f->link, recs, 2), SLUICE_ETIMEDOUT);
    assert_int_equal(f->tx.head, 0);
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_EAGAIN);
    assert_ok(sl_ring_tx_push_n(&f->tx, &lb_ops, &f->link, recs, 2));
    assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &mark));
    for (uint64_t k = 1; k <= 3; k++) {
        assert_ok(sl_ring_rx_peek(&f->rx, &r));
        assert_int_equal(r.seq, k);
        sl_ring_rx_consume(&f->rx);
    }
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_EAGAIN);
    assert_ok(sl_ring_tx_room(&f->tx, &lb_ops, &f->link));
}

/* A product record crosses in its first line; the copy's second line is zero, not stale. */
static void product_records_fill_line_two_with_zeros(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t r = { .kind = SL_REC_PRODUCT, .pos = 7, .bytes = 9 };
    assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &r));
    sl_record_t got;
    memset(&got, 0xa5, sizeof got);
    assert_ok(sl_ring_rx_peek(&f->rx, &got));
    assert_int_equal(got.pos, 7);
    assert_int_equal(got.bytes, 9);
    assert_int_equal(got.run, 0);
    assert_int_equal(got.dep, 0);
    sl_record_t t = { .kind = SLUICE_BEGIN_LUMI, .run = 3, .lumi = 4, .dep = 5 };
    sl_ring_rx_consume(&f->rx);
    assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &t));
    assert_ok(sl_ring_rx_peek(&f->rx, &got));
    assert_true(got.run == 3 && got.lumi == 4 && got.dep == 5);
}

static void tail_ahead_of_head_is_corrupt(void **state)
{
    ring_fixture_t *f = *state;
    sl_record_t r = { 0 };
    for (uint32_t i = 0; i < DEPTH; i++)
        assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &r));
    lb_store64(&f->link, SL_RING_TAIL_OFF, 1000);
    assert_status(sl_ring_tx_room(&f->tx, &lb_ops, &f->link), SLUICE_ECORRUPT);
}

#define N_STRESS 200000u

/*
 * The two-thread stress, with every wait bounded. Either side that fails
 * says why and raises `give_up`; the other stops at its next poll. A side
 * that stops without a word (stuck, or left behind by a failed assertion
 * that jumped out of the test) is caught by the deadline. So a broken ring
 * or a broken producer makes the test fail with a message, never hang.
 */
typedef struct stress {
    ring_fixture_t *f;
    uint64_t deadline_ns;       /* CLOCK_MONOTONIC time at which both sides give up */
    uint32_t deadline_ms;       /* the same, for messages */
    uint64_t tx_fails_at;       /* the producer fails here, as a failed push would */
    uint64_t tx_stalls_at;      /* the producer stops here without a word */
    uint64_t rx_stalls_at;      /* the consumer stops taking records here */
    _Atomic int give_up;
    char tx_error[256];         /* the producer's failure, "" if none */
    char rx_error[256];         /* the consumer's failure, "" if none */
} stress_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void stress_init(stress_t *s, ring_fixture_t *f, uint32_t deadline_ms)
{
    memset(s, 0, sizeof *s);
    s->f = f;
    s->deadline_ms = deadline_ms;
    s->deadline_ns = now_ns() + (uint64_t)deadline_ms * 1000000u;
    s->tx_fails_at = s->tx_stalls_at = s->rx_stalls_at = UINT64_MAX;
}

typedef enum { STRESS_POLL_AGAIN, STRESS_PEER_GAVE_UP, STRESS_LATE } stress_wait_t;

/*
 * After an empty poll: spin a little, then yield, so that both sides and a
 * parallel ctest share a 2-core machine. The clock is read every 64 polls,
 * and whenever the peer gave up: a peer gives up at the deadline too, so a
 * side that finds both says it was late itself rather than staying silent.
 */
static stress_wait_t stress_wait(stress_t *s, uint32_t *polls)
{
    bool peer_gave_up = atomic_load_explicit(&s->give_up, memory_order_relaxed);
    if (!peer_gave_up && ++*polls % 64 != 0)
        return STRESS_POLL_AGAIN;
    sched_yield();
    if (now_ns() >= s->deadline_ns)
        return STRESS_LATE;
    return peer_gave_up ? STRESS_PEER_GAVE_UP : STRESS_POLL_AGAIN;
}

static void *stress_consumer(void *arg)
{
    stress_t *s = arg;
    sl_record_t r;
    uint32_t polls = 0;
    for (uint64_t want = 0; want < N_STRESS;) {
        int rc = want < s->rx_stalls_at ? sl_ring_rx_peek(&s->f->rx, &r) : SLUICE_EAGAIN;
        if (rc == SLUICE_EAGAIN) {
            stress_wait_t w = stress_wait(s, &polls);
            if (w == STRESS_POLL_AGAIN)
                continue;
            if (w == STRESS_LATE)
                snprintf(s->rx_error, sizeof s->rx_error,
                         "consumer: record %llu did not arrive within %u ms",
                         (unsigned long long)want, s->deadline_ms);
            break;
        }
        if (rc != SLUICE_OK) {
            snprintf(s->rx_error, sizeof s->rx_error, "consumer: peek of record %llu: %s (%s)",
                     (unsigned long long)want, sluice_strerror(rc), sluice_last_error());
            break;
        }
        /* Every field written by the producer must be seen whole, aux included. */
        if (r.seq != want || r.event != want * 3 || r.aux_size != 101 ||
            r.aux[100] != (uint8_t)want) {
            snprintf(s->rx_error, sizeof s->rx_error,
                     "consumer: record %llu came as seq %llu, event %llu, aux_size %u, "
                     "aux[100] %u",
                     (unsigned long long)want, (unsigned long long)r.seq,
                     (unsigned long long)r.event, (unsigned)r.aux_size, (unsigned)r.aux[100]);
            break;
        }
        sl_ring_rx_consume(&s->f->rx);
        want++;
        polls = 0;
    }
    atomic_store_explicit(&s->give_up, 1, memory_order_relaxed);
    return NULL;
}

/* Produce N_STRESS records against stress_consumer; returns once both sides stopped. */
static void stress_run(stress_t *s)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stress_consumer, s), 0);
    sl_record_t r = { .aux_size = 101 };
    uint32_t polls = 0;
    for (uint64_t i = 0; i < N_STRESS;) {
        if (i == s->tx_stalls_at)
            break; /* silently: the consumer is not told */
        if (i == s->tx_fails_at) {
            snprintf(s->tx_error, sizeof s->tx_error, "producer: failed at record %llu",
                     (unsigned long long)i);
            atomic_store_explicit(&s->give_up, 1, memory_order_relaxed);
            break;
        }
        int rc = sl_ring_tx_room(&s->f->tx, &lb_ops, &s->f->link);
        if (rc == SLUICE_EAGAIN) {
            stress_wait_t w = stress_wait(s, &polls);
            if (w == STRESS_POLL_AGAIN)
                continue;
            if (w == STRESS_LATE) {
                snprintf(s->tx_error, sizeof s->tx_error,
                         "producer: no room for record %llu within %u ms",
                         (unsigned long long)i, s->deadline_ms);
                atomic_store_explicit(&s->give_up, 1, memory_order_relaxed);
            }
            break;
        }
        r.seq = i;
        r.event = i * 3;
        r.aux[100] = (uint8_t)i;
        if (rc == SLUICE_OK)
            rc = sl_ring_tx_push(&s->f->tx, &lb_ops, &s->f->link, &r);
        if (rc != SLUICE_OK) {
            snprintf(s->tx_error, sizeof s->tx_error, "producer: record %llu: %s (%s)",
                     (unsigned long long)i, sluice_strerror(rc), sluice_last_error());
            atomic_store_explicit(&s->give_up, 1, memory_order_relaxed);
            break;
        }
        i++;
        polls = 0;
    }
    /* Bounded: the consumer stops at the last record, when told, or at the deadline. */
    assert_int_equal(pthread_join(t, NULL), 0);
}

/* Long enough for TSan on a loaded 2-core machine; a healthy run takes milliseconds. */
#define STRESS_DEADLINE_MS 60000u
/* For the cases that are meant to stall. */
#define STALL_DEADLINE_MS 200u

static void two_threads_pass_every_record_intact(void **state)
{
    stress_t s;
    stress_init(&s, *state, STRESS_DEADLINE_MS);
    stress_run(&s);
    if (s.tx_error[0] || s.rx_error[0])
        fail_msg("%s%s%s", s.tx_error, s.tx_error[0] && s.rx_error[0] ? "; " : "", s.rx_error);
}

static void failing_producer_stops_the_consumer_at_once(void **state)
{
    stress_t s;
    stress_init(&s, *state, STRESS_DEADLINE_MS);
    s.tx_fails_at = 1000;
    uint64_t t0 = now_ns();
    stress_run(&s);
    assert_non_null(strstr(s.tx_error, "failed at record 1000"));
    /* The consumer stopped because it was told, not by reaching its deadline. */
    if (s.rx_error[0])
        fail_msg("consumer did not stop when the producer failed: %s", s.rx_error);
    assert_true(now_ns() - t0 < (uint64_t)STRESS_DEADLINE_MS * 1000000u);
}

static void silent_producer_makes_the_consumer_fail_at_its_deadline(void **state)
{
    stress_t s;
    stress_init(&s, *state, STALL_DEADLINE_MS);
    s.tx_stalls_at = 5;
    stress_run(&s);
    assert_string_equal(s.tx_error, "");
    assert_non_null(strstr(s.rx_error, "record 5 did not arrive within 200 ms"));
}

static void stalled_consumer_makes_the_producer_fail_at_its_deadline(void **state)
{
    stress_t s;
    stress_init(&s, *state, STALL_DEADLINE_MS);
    s.rx_stalls_at = 3;
    stress_run(&s);
    /* Three records taken and DEPTH in the ring: record DEPTH + 3 finds no room. */
    char want[64];
    snprintf(want, sizeof want, "no room for record %u within 200 ms", DEPTH + 3);
    assert_non_null(strstr(s.tx_error, want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(empty_ring_says_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(records_come_out_in_order_and_full_ring_says_retry, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(stamp_of_another_lap_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(stamp_of_the_lap_before_says_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(records_published_together, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_push_publishes_nothing_and_retry_delivers_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(product_records_fill_line_two_with_zeros, setup, teardown),
        cmocka_unit_test_setup_teardown(aux_size_beyond_the_maximum_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(tail_ahead_of_head_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(two_threads_pass_every_record_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(failing_producer_stops_the_consumer_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(silent_producer_makes_the_consumer_fail_at_its_deadline,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(stalled_consumer_makes_the_producer_fail_at_its_deadline,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
