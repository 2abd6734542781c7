/* SPDX-License-Identifier: MIT */
/* Inbox header: a fresh header passes; corrupt or other-version headers are refused. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../../src/inbox.h"

static sl_geometry_t geometry(void)
{
    sluice_options_t o;
    sluice_options_init(&o);
    o.arena_bytes = 64 * 1024;
    sl_geometry_t g;
    assert_ok(sl_geometry_compute(4, &o, &g));
    return g;
}

static sl_inbox_header_t *fresh(const sl_geometry_t *g)
{
    char *mem = aligned_alloc(4096, g->inbox_bytes);
    sl_inbox_init(mem, g, 0, NULL);
    return (sl_inbox_header_t *)mem;
}

static void layout_is_inside_the_inbox_and_lines_apart(void **state)
{
    (void)state;
    sl_geometry_t g = geometry();
    assert_true(g.global_off >= sizeof(sl_inbox_header_t));
    assert_int_equal(g.streams_off % 4096, 0);
    assert_int_equal(g.stream_stride % 4096, 0);
    assert_true(sl_stream_arena(&g, 3) + g.arena_bytes <= g.inbox_bytes);
    assert_int_equal(sl_stream_arena(&g, 0) % 64, 0);
    assert_true(SL_ARENA_TAIL_OFF - SL_RING_TAIL_OFF >= SL_CACHELINE);
    assert_int_equal(sl_ring_slots(0) % SL_CACHELINE, 0); /* each record's line 1 is one line */
}

static void fresh_header_passes(void **state)
{
    (void)state;
    sl_geometry_t g = geometry();
    sl_inbox_header_t *h = fresh(&g);
    assert_ok(sl_inbox_check(h, g.inbox_bytes, &g));
    free(h);
}

static void bad_magic_is_corrupt(void **state)
{
    (void)state;
    sl_geometry_t g = geometry();
    sl_inbox_header_t *h = fresh(&g);
    h->magic ^= 1;
    assert_status(sl_inbox_check(h, g.inbox_bytes, &g), SLUICE_ECORRUPT);
    assert_non_null(strstr(sluice_last_error(), "magic"));
    free(h);
}

static void other_version_is_refused(void **state)
{
    (void)state;
    sl_geometry_t g = geometry();
    sl_inbox_header_t *h = fresh(&g);
    h->version = SL_INBOX_VERSION + 1;
    assert_status(sl_inbox_check(h, g.inbox_bytes, &g), SLUICE_EVERSION);
    free(h);
}

static void offsets_or_sizes_that_disagree_are_corrupt(void **state)
{
    (void)state;
    sl_geometry_t g = geometry();
    sl_inbox_header_t *h = fresh(&g);
    h->stream_stride += 4096;
    assert_status(sl_inbox_check(h, g.inbox_bytes, &g), SLUICE_ECORRUPT);
    assert_non_null(strstr(sluice_last_error(), "stream_stride"));
    free(h);
    h = fresh(&g);
    assert_status(sl_inbox_check(h, g.inbox_bytes - 4096, &g), SLUICE_ECORRUPT); /* short map */
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layout_is_inside_the_inbox_and_lines_apart),
        cmocka_unit_test(fresh_header_passes),
        cmocka_unit_test(bad_magic_is_corrupt),
        cmocka_unit_test(other_version_is_refused),
        cmocka_unit_test(offsets_or_sizes_that_disagree_are_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
