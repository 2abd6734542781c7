/* SPDX-License-Identifier: MIT */
/* cmocka helpers that print the status string of an unexpected result. */
#ifndef SL_TEST_CHECK_H
#define SL_TEST_CHECK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <sluice/sluice.h>

#define assert_status(expr, want)                                                                  \
    do {                                                                                           \
        int got_ = (expr);                                                                         \
        if (got_ != (want))                                                                        \
            fail_msg("%s = %d (%s: %s), expected %d (%s)", #expr, got_, sluice_strerror(got_),     \
                     sluice_last_error(), (want), sluice_strerror(want));                         \
    } while (0)

#define assert_ok(expr) assert_status(expr, SLUICE_OK)

#endif
