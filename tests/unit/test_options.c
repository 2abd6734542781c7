/* SPDX-License-Identifier: MIT */
/* Options: defaults are valid, env overrides apply, bad values are refused whole,
 * and a caller's shorter (older) struct is read only up to its `size`. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "../../src/internal.h"

static void clear_env(void)
{
    for (size_t i = 0; sluice_option_info(i); i++)
        unsetenv(sluice_option_info(i)->env);
}

static void defaults_are_valid(void **state)
{
    (void)state;
    sluice_options_t o;
    sluice_options_init(&o);
    assert_int_equal(o.size, sizeof o);
    assert_ok(sluice_options_validate(&o));
    for (size_t i = 0; sluice_option_info(i); i++) {
        const sluice_option_info_t *in = sluice_option_info(i);
        assert_true(in->default_value >= in->min && in->default_value <= in->max);
        assert_non_null(in->help);
    }
}

static void env_overrides_fields_with_suffixes(void **state)
{
    (void)state;
    clear_env();
    setenv("SLUICE_RING_DEPTH", "256", 1);
    setenv("SLUICE_ARENA_BYTES", "16M", 1);
    setenv("SLUICE_TIMEOUT_MS", "1500", 1);
    sluice_options_t o;
    sluice_options_init(&o);
    assert_ok(sluice_options_from_env(&o));
    assert_int_equal(o.ring_depth, 256);
    assert_int_equal(o.arena_bytes, 16u << 20);
    assert_int_equal(o.timeout_ms, 1500);
    clear_env();
}

static void transport_accepts_names_and_numbers(void **state)
{
    (void)state;
    clear_env();
    sluice_options_t o;
    sluice_options_init(&o);
    assert_int_equal(o.transport, SLUICE_TRANSPORT_AUTO);
    setenv("SLUICE_TRANSPORT", "shm", 1);
    assert_ok(sluice_options_from_env(&o));
    assert_int_equal(o.transport, SLUICE_TRANSPORT_SHM);
    setenv("SLUICE_TRANSPORT", "2", 1);
    assert_ok(sluice_options_from_env(&o));
    assert_int_equal(o.transport, SLUICE_TRANSPORT_RMA);
    setenv("SLUICE_TRANSPORT", "carrier-pigeon", 1);
    assert_status(sluice_options_from_env(&o), SLUICE_EINVAL);
    assert_non_null(strstr(sluice_last_error(), "SLUICE_TRANSPORT"));
    clear_env();
}

static void device_path_accepts_names_and_numbers(void **state)
{
    (void)state;
    clear_env();
    sluice_options_t o;
    sluice_options_init(&o);
    assert_int_equal(o.device_path, SLUICE_DEVICE_PATH_AUTO);
    setenv("SLUICE_DEVICE_PATH", "staged", 1);
    assert_ok(sluice_options_from_env(&o));
    assert_int_equal(o.device_path, SLUICE_DEVICE_PATH_STAGED);
    setenv("SLUICE_DEVICE_PATH", "1", 1);
    assert_ok(sluice_options_from_env(&o));
    assert_int_equal(o.device_path, SLUICE_DEVICE_PATH_IPC);
    /* Names of another option are not names of this one. */
    setenv("SLUICE_DEVICE_PATH", "rma", 1);
    assert_status(sluice_options_from_env(&o), SLUICE_EINVAL);
    assert_non_null(strstr(sluice_last_error(), "SLUICE_DEVICE_PATH"));
    setenv("SLUICE_DEVICE_PATH", "3", 1);
    assert_status(sluice_options_from_env(&o), SLUICE_ERANGE);
    assert_int_equal(o.device_path, SLUICE_DEVICE_PATH_IPC);
    clear_env();
}

static void non_power_of_two_ring_is_refused_and_nothing_changes(void **state)
{
    (void)state;
    clear_env();
    setenv("SLUICE_TIMEOUT_MS", "1500", 1);
    setenv("SLUICE_RING_DEPTH", "100", 1);
    sluice_options_t o, before;
    sluice_options_init(&o);
    before = o;
    assert_status(sluice_options_from_env(&o), SLUICE_ERANGE);
    assert_non_null(strstr(sluice_last_error(), "ring_depth"));
    assert_memory_equal(&o, &before, sizeof o);
    clear_env();
}

static void malformed_number_names_the_variable(void **state)
{
    (void)state;
    clear_env();
    setenv("SLUICE_MAX_OPEN_LUMIS", "four", 1);
    sluice_options_t o;
    sluice_options_init(&o);
    assert_status(sluice_options_from_env(&o), SLUICE_EINVAL);
    assert_non_null(strstr(sluice_last_error(), "SLUICE_MAX_OPEN_LUMIS"));
    setenv("SLUICE_MAX_OPEN_LUMIS", "-3", 1);
    assert_status(sluice_options_from_env(&o), SLUICE_EINVAL);
    setenv("SLUICE_MAX_OPEN_LUMIS", "4x", 1);
    assert_status(sluice_options_from_env(&o), SLUICE_EINVAL);
    clear_env();
}

static void out_of_range_fields_are_refused(void **state)
{
    (void)state;
    sluice_options_t o;
    sluice_options_init(&o);
    o.max_open_lumis = 0;
    assert_status(sluice_options_validate(&o), SLUICE_ERANGE);
    sluice_options_init(&o);
    o.timeout_ms = 0;
    assert_status(sluice_options_validate(&o), SLUICE_ERANGE);
    sluice_options_init(&o);
    o.arena_bytes = 4096 + 8; /* not a multiple of a cache line */
    assert_status(sluice_options_validate(&o), SLUICE_ERANGE);
    sluice_options_init(&o);
    o.size = 0; /* not initialised */
    assert_status(sluice_options_validate(&o), SLUICE_EINVAL);
}

/*
 * The first `n` bytes of `full`, with `size` set to `n`, placed so that they
 * end at an inaccessible page (rounded up to 8 bytes, so `size` stays
 * aligned): reading or writing past the caller's struct crashes the test
 * instead of passing by luck, in every build, not only under ASan.
 */
static sluice_options_t *guarded_copy(const sluice_options_t *full, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + page, page, PROT_NONE), 0);
    size_t room = n < sizeof(size_t) ? sizeof(size_t) : (n + 7) & ~(size_t)7;
    char *p = map + page - room;
    memcpy(p, full, n < sizeof *full ? n : sizeof *full);
    sluice_options_t *o = (sluice_options_t *)(void *)p;
    o->size = n;
    return o;
}

static void guarded_free(sluice_options_t *o)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap((void *)((uintptr_t)o & ~(uintptr_t)(page - 1)), 2 * page);
}

static void struct_cut_before_transport_gets_the_default_transport(void **state)
{
    (void)state;
    sluice_options_t full;
    sluice_options_init(&full);
    full.ring_depth = 128;
    full.timeout_ms = 1500;
    full.transport = SLUICE_TRANSPORT_RMA; /* not copied: past the caller's size */
    sluice_options_t *old = guarded_copy(&full, offsetof(sluice_options_t, transport));
    sluice_options_t out;
    assert_ok(sl_options_import(old, &out));
    assert_int_equal(out.size, sizeof out);
    assert_int_equal(out.ring_depth, 128);
    assert_int_equal(out.timeout_ms, 1500);
    assert_int_equal(out.transport, SLUICE_TRANSPORT_AUTO);
    assert_int_equal(old->size, offsetof(sluice_options_t, transport)); /* caller's untouched */
    guarded_free(old);
}

static void full_struct_is_imported_field_for_field(void **state)
{
    (void)state;
    sluice_options_t in, out;
    sluice_options_init(&in);
    in.ring_depth = 1024;
    in.global_depth = 8;
    in.arena_bytes = 1u << 20;
    in.max_open_lumis = 2;
    in.timeout_ms = 77;
    in.spin = 0;
    in.max_sleep_us = 5;
    in.transport = SLUICE_TRANSPORT_SHM;
    assert_ok(sl_options_import(&in, &out));
    assert_memory_equal(&in, &out, sizeof in);
}

static void size_zero_is_refused_naming_the_size(void **state)
{
    (void)state;
    sluice_options_t in, out;
    sluice_options_init(&in);
    in.size = 0; /* as from a caller that forgot sluice_options_init */
    assert_status(sl_options_import(&in, &out), SLUICE_EINVAL);
    assert_non_null(strstr(sluice_last_error(), "size 0"));
    assert_status(sl_options_import(NULL, &out), SLUICE_EINVAL);
}

static void size_without_a_whole_first_option_is_refused(void **state)
{
    (void)state;
    size_t first_end = offsetof(sluice_options_t, ring_depth) + sizeof(uint32_t);
    sluice_options_t full, out;
    sluice_options_init(&full);
    full.ring_depth = 16;
    full.global_depth = 3; /* past the smallest struct: must not be read */
    sluice_options_t *tiny = guarded_copy(&full, first_end - 1);
    assert_status(sl_options_import(tiny, &out), SLUICE_EINVAL);
    assert_status(sluice_options_validate(tiny), SLUICE_EINVAL);
    guarded_free(tiny);
    /* Exactly `size` and the first option: that one option, defaults for the rest. */
    sluice_options_t *smallest = guarded_copy(&full, first_end);
    assert_ok(sl_options_import(smallest, &out));
    assert_int_equal(out.ring_depth, 16);
    assert_int_equal(out.global_depth, sluice_option_info(1)->default_value);
    guarded_free(smallest);
}

static void implausibly_large_size_is_refused_naming_the_size(void **state)
{
    (void)state;
    sluice_options_t in, out;
    sluice_options_init(&in);
    in.size = (size_t)1 << 20; /* uninitialised memory, not a newer header */
    assert_status(sl_options_import(&in, &out), SLUICE_EINVAL);
    assert_non_null(strstr(sluice_last_error(), "1048576"));
    assert_status(sluice_options_validate(&in), SLUICE_EINVAL);
}

static void newer_longer_struct_is_accepted_and_unknown_fields_ignored(void **state)
{
    (void)state;
    /* A caller built against a later header with one more 8-byte field. */
    struct {
        sluice_options_t known;
        uint64_t later_field;
    } newer;
    sluice_options_init(&newer.known);
    newer.known.size = sizeof newer;
    newer.known.ring_depth = 512;
    newer.later_field = 0xdeadbeef;
    sluice_options_t out;
    assert_ok(sl_options_import(&newer.known, &out));
    assert_int_equal(out.size, sizeof out);
    assert_int_equal(out.ring_depth, 512);
}

static void size_ending_inside_a_field_leaves_that_field_at_its_default(void **state)
{
    (void)state;
    sluice_options_t full, out;
    sluice_options_init(&full);
    full.arena_bytes = 1u << 20;
    /* Half of arena_bytes inside the size: a partial field is not present. */
    sluice_options_t *cut = guarded_copy(&full, offsetof(sluice_options_t, arena_bytes) + 4);
    assert_ok(sl_options_import(cut, &out));
    assert_int_equal(out.arena_bytes, 4u << 20);
    guarded_free(cut);
}

static void short_struct_validates_only_the_fields_it_holds(void **state)
{
    (void)state;
    sluice_options_t full;
    sluice_options_init(&full);
    sluice_options_t *old = guarded_copy(&full, offsetof(sluice_options_t, timeout_ms));
    assert_ok(sluice_options_validate(old));
    old->ring_depth = 100; /* present and not a power of two */
    assert_status(sluice_options_validate(old), SLUICE_ERANGE);
    assert_non_null(strstr(sluice_last_error(), "ring_depth"));
    guarded_free(old);
    /* A bad value past `size` is not the caller's, so it is not judged. */
    full.timeout_ms = 0;
    full.size = offsetof(sluice_options_t, timeout_ms);
    assert_ok(sluice_options_validate(&full));
}

static void import_of_a_bad_field_names_it_and_leaves_out_untouched(void **state)
{
    (void)state;
    sluice_options_t in, out, before;
    sluice_options_init(&in);
    in.max_sleep_us = 0;
    memset(&out, 0x5a, sizeof out);
    before = out;
    assert_status(sl_options_import(&in, &out), SLUICE_ERANGE);
    assert_non_null(strstr(sluice_last_error(), "max_sleep_us"));
    assert_memory_equal(&out, &before, sizeof out);
}

static void env_overrides_only_the_fields_a_short_struct_holds(void **state)
{
    (void)state;
    clear_env();
    setenv("SLUICE_RING_DEPTH", "256", 1);
    setenv("SLUICE_TRANSPORT", "rma", 1); /* the short struct has no transport */
    sluice_options_t full;
    sluice_options_init(&full);
    size_t n = offsetof(sluice_options_t, transport);
    sluice_options_t *old = guarded_copy(&full, n);
    assert_ok(sluice_options_from_env(old));
    assert_int_equal(old->ring_depth, 256);
    assert_int_equal(old->size, n);
    sluice_options_t out;
    assert_ok(sl_options_import(old, &out));
    assert_int_equal(out.ring_depth, 256);
    assert_int_equal(out.transport, SLUICE_TRANSPORT_AUTO);
    guarded_free(old);
    clear_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_valid),
        cmocka_unit_test(env_overrides_fields_with_suffixes),
        cmocka_unit_test(transport_accepts_names_and_numbers),
        cmocka_unit_test(device_path_accepts_names_and_numbers),
        cmocka_unit_test(non_power_of_two_ring_is_refused_and_nothing_changes),
        cmocka_unit_test(malformed_number_names_the_variable),
        cmocka_unit_test(out_of_range_fields_are_refused),
        cmocka_unit_test(struct_cut_before_transport_gets_the_default_transport),
        cmocka_unit_test(full_struct_is_imported_field_for_field),
        cmocka_unit_test(size_zero_is_refused_naming_the_size),
        cmocka_unit_test(size_without_a_whole_first_option_is_refused),
        cmocka_unit_test(implausibly_large_size_is_refused_naming_the_size),
        cmocka_unit_test(newer_longer_struct_is_accepted_and_unknown_fields_ignored),
        cmocka_unit_test(size_ending_inside_a_field_leaves_that_field_at_its_default),
        cmocka_unit_test(short_struct_validates_only_the_fields_it_holds),
        cmocka_unit_test(import_of_a_bad_field_names_it_and_leaves_out_untouched),
        cmocka_unit_test(env_overrides_only_the_fields_a_short_struct_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
