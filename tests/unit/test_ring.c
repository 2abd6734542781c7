/* SPDX-License-Identifier: MIT */
/* SPSC ring: FIFO order, full/empty, corrupt counters, and a two-thread stress. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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
static const sl_transport_ops_t lb_ops = {
    .size = sizeof(sl_transport_ops_t), .name = "loopback",
    .put = lb_put, .store64 = lb_store64, .load64 = lb_load64,
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

static void head_running_too_far_ahead_is_corrupt(void **state)
{
    ring_fixture_t *f = *state;
    lb_store64(&f->link, SL_RING_HEAD_OFF, DEPTH + 5);
    sl_record_t r;
    assert_status(sl_ring_rx_peek(&f->rx, &r), SLUICE_ECORRUPT);
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

static _Atomic int consumer_quit;

static void *consumer(void *arg)
{
    ring_fixture_t *f = arg;
    sl_record_t r;
    for (uint64_t want = 0; want < N_STRESS;) {
        if (sl_ring_rx_peek(&f->rx, &r) != SLUICE_OK)
            continue;
        /* Every field written by the producer must be seen whole, aux included. */
        if (r.seq != want || r.event != want * 3 || r.aux_size != 101 ||
            r.aux[100] != (uint8_t)want) {
            atomic_store(&consumer_quit, 1);
            return (void *)1;
        }
        sl_ring_rx_consume(&f->rx);
        want++;
    }
    return NULL;
}

static void two_threads_pass_every_record_intact(void **state)
{
    ring_fixture_t *f = *state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, consumer, f), 0);
    sl_record_t r = { .aux_size = 101 };
    for (uint64_t i = 0; i < N_STRESS && !atomic_load(&consumer_quit);) {
        if (sl_ring_tx_room(&f->tx, &lb_ops, &f->link) != SLUICE_OK)
            continue;
        r.seq = i;
        r.event = i * 3;
        r.aux[100] = (uint8_t)i;
        assert_ok(sl_ring_tx_push(&f->tx, &lb_ops, &f->link, &r));
        i++;
    }
    void *res;
    pthread_join(t, &res);
    assert_null(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(empty_ring_says_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(records_come_out_in_order_and_full_ring_says_retry, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(head_running_too_far_ahead_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(aux_size_beyond_the_maximum_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(tail_ahead_of_head_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(two_threads_pass_every_record_intact, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
