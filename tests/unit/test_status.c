/* SPDX-License-Identifier: MIT */
/* Status codes: every code has its own constant string, unknown codes one generic string,
 * and the last-error message belongs to the thread whose call failed. */
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

/* Every code of status.h. A code added there without a string breaks the
 * build (-Wswitch in sluice_strerror); one added without a line here is
 * caught by every_named_code_is_in_this_list. */
static const int all_codes[] = {
    SLUICE_OK, SLUICE_ABSENT, SLUICE_EOF, SLUICE_OWNERDEAD, SLUICE_EINVAL, SLUICE_ERANGE, SLUICE_EAGAIN,
    SLUICE_ETIMEDOUT, SLUICE_EORDER, SLUICE_ELIMIT, SLUICE_EBUSY, SLUICE_EALREADY,
    SLUICE_ENOMEM, SLUICE_ENOTFOUND, SLUICE_ENOTSUP, SLUICE_ETYPE, SLUICE_ETOOBIG, SLUICE_EFAILED,
    SLUICE_ECANCELED,
    SLUICE_EPEERCLOSED, SLUICE_ECORRUPT, SLUICE_EVERSION, SLUICE_EPEERDEAD, SLUICE_EMPI, SLUICE_ESYS, SLUICE_EDEVICE,
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

/* Far outside every group of status.h (-79 .. 3). */
#define UNKNOWN_CODE (-9999)

static bool is_known(int code)
{
    for (size_t i = 0; i < N_CODES; i++)
        if (all_codes[i] == code)
            return true;
    return false;
}

static void every_code_has_a_distinct_non_empty_string(void **state)
{
    (void)state;
    const char *generic = sluice_strerror(UNKNOWN_CODE);
    for (size_t i = 0; i < N_CODES; i++) {
        const char *s = sluice_strerror(all_codes[i]);
        assert_non_null(s);
        if (s[0] == '\0')
            fail_msg("status %d has an empty string", all_codes[i]);
        if (strcmp(s, generic) == 0)
            fail_msg("status %d has only the generic string \"%s\"", all_codes[i], s);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s, sluice_strerror(all_codes[j])) == 0)
                fail_msg("statuses %d and %d share the string \"%s\"", all_codes[i], all_codes[j],
                         s);
    }
}

static void every_named_code_is_in_this_list(void **state)
{
    (void)state;
    /* Any code with a string of its own is a code of status.h: well past
     * the documented groups on both sides, every one must be listed above. */
    const char *generic = sluice_strerror(UNKNOWN_CODE);
    for (int code = -200; code <= 200; code++)
        if (strcmp(sluice_strerror(code), generic) != 0 && !is_known(code))
            fail_msg("status %d (\"%s\") is missing from all_codes", code, sluice_strerror(code));
}

static void unknown_codes_share_one_generic_non_empty_string(void **state)
{
    (void)state;
    static const int unknown[] = { UNKNOWN_CODE, -12, -19, -24, -44, -63, 4, 100,
                                   INT_MIN, INT_MAX };
    const char *generic = sluice_strerror(UNKNOWN_CODE);
    assert_non_null(generic);
    assert_true(generic[0] != '\0');
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        assert_string_equal(sluice_strerror(unknown[i]), generic);
    for (size_t i = 0; i < N_CODES; i++)
        assert_string_not_equal(sluice_strerror(all_codes[i]), generic);
}

static void *strerror_in_a_thread(void *arg)
{
    const char **out = arg;
    for (size_t i = 0; i < N_CODES; i++)
        out[i] = sluice_strerror(all_codes[i]);
    out[N_CODES] = sluice_strerror(UNKNOWN_CODE);
    return NULL;
}

static void strerror_gives_the_same_constant_string_in_every_thread(void **state)
{
    (void)state;
    /* A constant string, not a per-thread or per-call buffer: the pointer a
     * caller keeps stays valid and unchanged whoever calls next. */
    const char *theirs[N_CODES + 1];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, strerror_in_a_thread, theirs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    for (size_t i = 0; i < N_CODES; i++)
        assert_ptr_equal(sluice_strerror(all_codes[i]), theirs[i]);
    assert_ptr_equal(sluice_strerror(UNKNOWN_CODE), theirs[N_CODES]);
}

/* What a second thread saw of sluice_last_error(), copied out for the main
 * thread to assert on (cmocka's assertions must not run in another thread). */
typedef struct seen {
    char at_start[512];
    int status;
    char after_failing[512];
} seen_t;

static void *fail_in_a_thread(void *arg)
{
    seen_t *seen = arg;
    snprintf(seen->at_start, sizeof seen->at_start, "%s", sluice_last_error());
    sluice_options_t o;
    sluice_options_init(&o);
    o.ring_depth = 100; /* not a power of two */
    seen->status = sluice_options_validate(&o);
    snprintf(seen->after_failing, sizeof seen->after_failing, "%s", sluice_last_error());
    return NULL;
}

static void last_error_belongs_to_the_thread_whose_call_failed(void **state)
{
    (void)state;
    sluice_options_t o;
    sluice_options_init(&o);
    o.timeout_ms = 0;
    assert_status(sluice_options_validate(&o), SLUICE_ERANGE);
    const char *mine = sluice_last_error();
    assert_non_null(strstr(mine, "timeout_ms"));

    seen_t seen = { .status = SLUICE_OK };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fail_in_a_thread, &seen), 0);
    assert_int_equal(pthread_join(t, NULL), 0);

    /* A new thread starts with no message, not with this thread's. */
    assert_string_equal(seen.at_start, "");
    assert_status(seen.status, SLUICE_ERANGE);
    assert_non_null(strstr(seen.after_failing, "ring_depth"));
    /* Its failure left this thread's message as it was. */
    assert_non_null(strstr(sluice_last_error(), "timeout_ms"));
    assert_null(strstr(sluice_last_error(), "ring_depth"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_has_a_distinct_non_empty_string),
        cmocka_unit_test(every_named_code_is_in_this_list),
        cmocka_unit_test(unknown_codes_share_one_generic_non_empty_string),
        cmocka_unit_test(strerror_gives_the_same_constant_string_in_every_thread),
        cmocka_unit_test(last_error_belongs_to_the_thread_whose_call_failed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
