/* SPDX-License-Identifier: MIT */
/* Status codes: every code has its own constant string; unknown codes too. */
#include <string.h>

#include "check.h"

static const int all_codes[] = {
    SLUICE_OK, SLUICE_ABSENT, SLUICE_EOF, SLUICE_EINVAL, SLUICE_ERANGE, SLUICE_EAGAIN,
    SLUICE_ETIMEDOUT, SLUICE_EORDER, SLUICE_ELIMIT, SLUICE_EBUSY, SLUICE_EALREADY,
    SLUICE_ENOMEM, SLUICE_ENOTFOUND, SLUICE_ENOTSUP, SLUICE_ETYPE, SLUICE_ETOOBIG,
    SLUICE_EPEERCLOSED, SLUICE_ECORRUPT, SLUICE_EVERSION, SLUICE_EMPI, SLUICE_ESYS,
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

static void every_code_has_a_distinct_string(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CODES; i++) {
        const char *s = sluice_strerror(all_codes[i]);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown status");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, sluice_strerror(all_codes[j]));
    }
}

static void unknown_code_gets_a_string_not_null(void **state)
{
    (void)state;
    assert_string_equal(sluice_strerror(-9999), "unknown status");
}

static void retry_timeout_and_peer_are_distinct(void **state)
{
    (void)state;
    assert_int_not_equal(SLUICE_EAGAIN, SLUICE_ETIMEDOUT);
    assert_int_not_equal(SLUICE_EAGAIN, SLUICE_EPEERCLOSED);
    assert_true(SLUICE_ABSENT > 0 && SLUICE_EOF > 0); /* informational, not failures */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_has_a_distinct_string),
        cmocka_unit_test(unknown_code_gets_a_string_not_null),
        cmocka_unit_test(retry_timeout_and_peer_are_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
