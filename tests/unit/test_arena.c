/* SPDX-License-Identifier: MIT */
/* Arena: regions never wrap, space returns only in order, bad regions are caught. */
#include "check.h"
#include "../../src/arena.h"

static void oversize_never_fits_and_full_says_retry(void **state)
{
    (void)state;
    uint64_t pos;
    assert_status(sl_arena_place(0, 0, 4096, 4097, &pos), SLUICE_ETOOBIG);
    assert_ok(sl_arena_place(0, 0, 4096, 4096, &pos));
    assert_int_equal(pos, 0);
    assert_status(sl_arena_place(4096, 0, 4096, 1, &pos), SLUICE_EAGAIN);
    assert_ok(sl_arena_place(4096, 64, 4096, 64, &pos));
}

static void region_that_would_wrap_starts_at_next_lap(void **state)
{
    (void)state;
    uint64_t pos;
    /* head 64 bytes before the end, everything before it released. */
    assert_ok(sl_arena_place(4032, 4032, 4096, 128, &pos));
    assert_int_equal(pos, 4096);
    /* A region that ends exactly at the end does not skip (64 bytes still held). */
    assert_ok(sl_arena_place(3968, 3904, 4096, 128, &pos));
    assert_int_equal(pos, 3968);
    /* Not enough room once the skipped gap counts as used. */
    assert_status(sl_arena_place(4032, 64, 4096, 256, &pos), SLUICE_EAGAIN);
}

static void empty_arena_takes_a_region_that_needs_the_skip(void **state)
{
    (void)state;
    uint64_t pos;
    /* 1000 bytes in, everything released: a 4032-byte region starts at the next lap. */
    assert_ok(sl_arena_place(1024, 1024, 4096, 4032, &pos));
    assert_int_equal(pos, 4096);
    /* Not while anything is still held. */
    assert_status(sl_arena_place(1024, 960, 4096, 4032, &pos), SLUICE_EAGAIN);
    /* And the consumer accepts it only when it, too, holds nothing. */
    sl_arena_rx_t a;
    sl_arena_rx_init(&a, 4096);
    uint64_t id;
    bool adv;
    assert_ok(sl_arena_rx_accept(&a, 0, 1024, &id));
    assert_status(sl_arena_rx_accept(&a, 4096, 4032, &id), SLUICE_ECORRUPT);
    assert_ok(sl_arena_rx_release(&a, 1, &adv));
    assert_ok(sl_arena_rx_accept(&a, 4096, 4032, &id));
    sl_arena_rx_fini(&a);
}

static void empty_arena_restarts_at_offset_zero(void **state)
{
    (void)state;
    uint64_t pos;
    /* Everything released: start over at the arena's first byte, which is
     * likely still in the caches, instead of walking on through cold memory. */
    assert_ok(sl_arena_place(1000 * 4096 + 192, 1000 * 4096 + 192, 4096, 64, &pos));
    assert_int_equal(pos, 1001 * 4096);
    /* Already at offset 0: stay. */
    assert_ok(sl_arena_place(4096, 4096, 4096, 64, &pos));
    assert_int_equal(pos, 4096);
}

static void out_of_order_release_returns_space_in_order(void **state)
{
    (void)state;
    sl_arena_rx_t a;
    sl_arena_rx_init(&a, 4096);
    uint64_t id1, id2, id3;
    bool adv;
    assert_ok(sl_arena_rx_accept(&a, 0, 100, &id1));   /* [0,128) */
    assert_ok(sl_arena_rx_accept(&a, 128, 64, &id2));  /* [128,192) */
    assert_ok(sl_arena_rx_accept(&a, 192, 0, &id3));   /* empty */
    assert_ok(sl_arena_rx_release(&a, id2, &adv));
    assert_false(adv);
    assert_int_equal(a.tail, 0);
    assert_ok(sl_arena_rx_release(&a, id1, &adv));
    assert_true(adv);
    assert_int_equal(a.tail, 192);
    assert_ok(sl_arena_rx_release(&a, id3, &adv));
    assert_int_equal(a.tail, 192);
    sl_arena_rx_fini(&a);
}

static void releasing_twice_is_refused(void **state)
{
    (void)state;
    sl_arena_rx_t a;
    sl_arena_rx_init(&a, 4096);
    uint64_t id1, id2;
    bool adv;
    assert_ok(sl_arena_rx_accept(&a, 0, 64, &id1));
    assert_ok(sl_arena_rx_accept(&a, 64, 64, &id2));
    assert_ok(sl_arena_rx_release(&a, id2, &adv));
    assert_status(sl_arena_rx_release(&a, id2, &adv), SLUICE_EALREADY); /* still queued */
    assert_ok(sl_arena_rx_release(&a, id1, &adv));
    assert_status(sl_arena_rx_release(&a, id1, &adv), SLUICE_EALREADY); /* already retired */
    assert_status(sl_arena_rx_release(&a, 99, &adv), SLUICE_EINVAL);
    assert_status(sl_arena_rx_release(&a, 0, &adv), SLUICE_EINVAL);
    sl_arena_rx_fini(&a);
}

static void impossible_regions_are_corrupt(void **state)
{
    (void)state;
    sl_arena_rx_t a;
    sl_arena_rx_init(&a, 4096);
    uint64_t id;
    assert_status(sl_arena_rx_accept(&a, 0, 5000, &id), SLUICE_ECORRUPT);   /* > capacity */
    assert_status(sl_arena_rx_accept(&a, 4032, 128, &id), SLUICE_ECORRUPT); /* wraps */
    assert_ok(sl_arena_rx_accept(&a, 128, 64, &id));
    assert_status(sl_arena_rx_accept(&a, 4096 + 128, 64, &id), SLUICE_ECORRUPT); /* on held bytes */
    assert_status(sl_arena_rx_accept(&a, 0, 64, &id), SLUICE_ECORRUPT);     /* goes backwards */
    assert_status(sl_arena_rx_accept(&a, UINT64_MAX - 4096, 64, &id), SLUICE_ECORRUPT); /* wraps 2^64 */
    sl_arena_rx_fini(&a);
}

static void many_regions_grow_the_list(void **state)
{
    (void)state;
    sl_arena_rx_t a;
    sl_arena_rx_init(&a, 1 << 20);
    uint64_t ids[1000];
    bool adv;
    for (int i = 0; i < 1000; i++)
        assert_ok(sl_arena_rx_accept(&a, (uint64_t)i * 64, 64, &ids[i]));
    for (int i = 999; i >= 0; i--)
        assert_ok(sl_arena_rx_release(&a, ids[i], &adv));
    assert_int_equal(a.tail, 64000);
    assert_int_equal(a.n, 0);
    sl_arena_rx_fini(&a);
}

/* The producer's side of one region: place, then commit as product.c does. */
typedef struct producer {
    uint64_t head, tail, cap;
} producer_t;

static int produce(producer_t *p, uint64_t len, uint64_t *pos_p)
{
    int rc = sl_arena_place(p->head, p->tail, p->cap, len, pos_p);
    if (rc == SLUICE_OK) {
        if (p->tail == p->head)
            p->tail = *pos_p; /* everything before an empty restart is free */
        p->head = *pos_p + sl_align_up(len, SL_ARENA_ALIGN);
    }
    return rc;
}

static void zero_length_region_held_then_large_one_is_accepted(void **state)
{
    (void)state;
    /* Review H3: A [0,1000), an empty product Z, A released while Z is held
     * (pending, or a view kept), then a product that needs the next lap. */
    producer_t p = { 0, 0, 4096 };
    sl_arena_rx_t a;
    sl_arena_rx_init(&a, 4096);
    uint64_t pos, ida, idz, idb;
    bool adv;
    assert_ok(produce(&p, 1000, &pos));
    assert_ok(sl_arena_rx_accept(&a, pos, 1000, &ida));
    assert_ok(produce(&p, 0, &pos));
    assert_ok(sl_arena_rx_accept(&a, pos, 0, &idz));
    assert_ok(sl_arena_rx_release(&a, ida, &adv));
    p.tail = a.tail; /* the producer reads the published tail */
    assert_ok(produce(&p, 4000, &pos));
    assert_int_equal(pos, 4096);
    assert_ok(sl_arena_rx_accept(&a, pos, 4000, &idb));
    /* Releasing the empty region later never moves the tail back. */
    uint64_t tail = a.tail;
    assert_ok(sl_arena_rx_release(&a, idz, &adv));
    assert_true(a.tail >= tail);
    assert_ok(sl_arena_rx_release(&a, idb, &adv));
    assert_int_equal(a.tail, 4096 + 4032);
    sl_arena_rx_fini(&a);
}

static void held_product_does_not_waste_the_lap_after_a_restart(void **state)
{
    (void)state;
    /* 4 MiB arena, everything released at 1 MiB in: a 1 MiB product restarts
     * at the next lap and is held; a second 1 MiB product must still fit
     * (the skipped 3 MiB are free, not counted as used). */
    const uint64_t M = 1u << 20;
    producer_t p = { M, M, 4 * M };
    sl_arena_rx_t a;
    sl_arena_rx_init(&a, 4 * M);
    a.tail = a.last_end = M; /* same history on the consumer */
    uint64_t pos, id1, id2;
    assert_ok(produce(&p, M, &pos));
    assert_int_equal(pos, 4 * M);
    assert_ok(sl_arena_rx_accept(&a, pos, M, &id1));
    assert_ok(produce(&p, M, &pos));
    assert_ok(sl_arena_rx_accept(&a, pos, M, &id2));
    /* The arena rule: held bytes from the oldest held region, plus the new
     * one, plus the largest, may fill the arena: a third fits, a fourth
     * (exactly filling it) too, a fifth does not. */
    assert_ok(produce(&p, M, &pos));
    assert_ok(produce(&p, M, &pos));
    assert_status(produce(&p, 64, &pos), SLUICE_EAGAIN);
    sl_arena_rx_fini(&a);
}

static void sizes_up_to_capacity_minus_largest_always_fit(void **state)
{
    (void)state;
    /* The documented rule, checked by brute force over start offsets:
     * products whose rounded sizes add up to cap minus the largest fit
     * together whatever the head offset, with nothing else held. */
    const uint64_t cap = 4096;
    const uint64_t sizes[] = { 1000, 0, 640, 64, 1, 300 }; /* rounded: 1024+0+640+64+64+320 */
    for (uint64_t start = 0; start < 2 * cap; start += 64) {
        producer_t p = { start, start > 64 ? start - 64 : start, cap }; /* 64 B still held */
        uint64_t pos;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            assert_ok(produce(&p, sizes[i], &pos));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(oversize_never_fits_and_full_says_retry),
        cmocka_unit_test(region_that_would_wrap_starts_at_next_lap),
        cmocka_unit_test(empty_arena_takes_a_region_that_needs_the_skip),
        cmocka_unit_test(empty_arena_restarts_at_offset_zero),
        cmocka_unit_test(out_of_order_release_returns_space_in_order),
        cmocka_unit_test(releasing_twice_is_refused),
        cmocka_unit_test(impossible_regions_are_corrupt),
        cmocka_unit_test(many_regions_grow_the_list),
        cmocka_unit_test(zero_length_region_held_then_large_one_is_accepted),
        cmocka_unit_test(held_product_does_not_waste_the_lap_after_a_restart),
        cmocka_unit_test(sizes_up_to_capacity_minus_largest_always_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
