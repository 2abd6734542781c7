/* SPDX-License-Identifier: MIT */
/* Options: defaults are valid, env overrides apply, bad values are refused whole. */
#include <stdlib.h>
#include <string.h>

#include "check.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_valid),
        cmocka_unit_test(env_overrides_fields_with_suffixes),
        cmocka_unit_test(transport_accepts_names_and_numbers),
        cmocka_unit_test(non_power_of_two_ring_is_refused_and_nothing_changes),
        cmocka_unit_test(malformed_number_names_the_variable),
        cmocka_unit_test(out_of_range_fields_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
