/* SPDX-License-Identifier: MIT */
/* Shared helpers of the libFuzzer targets: an input cursor and a failing check. */
#ifndef SL_FUZZ_H
#define SL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

/* libFuzzer calls this once per input; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Reads the fuzzer's bytes front to back. Past the end every read yields
 * zeros, so a short input is still a complete (if dull) scenario and the
 * fuzzer never has to learn a length field.
 */
typedef struct fz_input {
    const uint8_t *p;
    size_t left;
} fz_input_t;

static inline void fz_take(fz_input_t *in, void *dst, size_t n)
{
    size_t k = n < in->left ? n : in->left;
    memcpy(dst, in->p, k);
    memset((char *)dst + k, 0, n - k);
    in->p += k;
    in->left -= k;
}

static inline uint8_t fz_u8(fz_input_t *in)
{
    uint8_t v;
    fz_take(in, &v, sizeof v);
    return v;
}

static inline uint16_t fz_u16(fz_input_t *in)
{
    uint16_t v;
    fz_take(in, &v, sizeof v);
    return v;
}

static inline uint32_t fz_u32(fz_input_t *in)
{
    uint32_t v;
    fz_take(in, &v, sizeof v);
    return v;
}

static inline uint64_t fz_u64(fz_input_t *in)
{
    uint64_t v;
    fz_take(in, &v, sizeof v);
    return v;
}

/*
 * A broken invariant: print what broke, with the library's last error, and
 * abort so that libFuzzer saves the input as a crash artifact. (The library
 * itself never aborts; the fuzzer is a test, and abort is how it reports.)
 */
#define fz_check(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n  ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n  last error: %s\n", sluice_last_error());                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A status that must be `want`; names both statuses when it is not. */
#define fz_check_status(got, want, what)                                                           \
    fz_check((got) == (want), "%s returned %d (%s), expected %d (%s)", (what), (got),              \
             sluice_strerror(got), (want), sluice_strerror(want))

#endif
