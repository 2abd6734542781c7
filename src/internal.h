/* SPDX-License-Identifier: MIT */
/* Internal umbrella header of the sluice core. */
#ifndef SL_INTERNAL_H
#define SL_INTERNAL_H

/*
 * Naming rule: public symbols start with `sluice_` and live in
 * include/sluice/; internal symbols start with `sl_` and never leave the
 * library (it is built with hidden visibility; only `sluice_` functions are
 * exported).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/sluice.h>

#define SL_CACHELINE 64u

#if defined(__GNUC__)
#define SL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define SL_LIKELY(x) __builtin_expect(!!(x), 1)
#define SL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define SL_PRINTF(f, a)
#define SL_LIKELY(x) (x)
#define SL_UNLIKELY(x) (x)
#endif

/*
 * Record a failure: stores the formatted message as the calling thread's
 * sluice_last_error() and returns `status`, so a failing path reads
 * `return sl_fail(SLUICE_EINVAL, "stream %u out of range", s);`.
 */
int sl_fail(int status, const char *fmt, ...) SL_PRINTF(2, 3);

/*
 * A full (store-load) fence. TSan does not model fences (gcc refuses them
 * under -fsanitize=thread), so there a sequentially consistent read-modify-
 * write stands in: on every target we build for it is a full barrier too.
 */
static inline void sl_full_fence(void)
{
#if defined(__SANITIZE_THREAD__)
    static _Atomic int sl_fence_word;
    __atomic_fetch_add((int *)&sl_fence_word, 0, __ATOMIC_SEQ_CST);
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Round `x` up to a multiple of `a`, a power of two. */
static inline uint64_t sl_align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static inline bool sl_is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

/* 64-bit FNV-1a, continued from `h` (start with SL_FNV_OFFSET). */
#define SL_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t sl_fnv1a(uint64_t h, const void *data, size_t n);

/*
 * The caller's options as this build's full sluice_options_t: defaults, with
 * the fields that lie wholly inside `user->size` copied over them, so a
 * caller built against an older (shorter) struct keeps working; `out->size`
 * is sizeof(sluice_options_t). SLUICE_EINVAL names the size when it is too
 * small to hold any option or implausibly large; SLUICE_ERANGE names the
 * first field out of range. `out` is written only on success. Never blocks;
 * any thread.
 */
int sl_options_import(const sluice_options_t *user, sluice_options_t *out);

/* Type internals the channel needs. */
const sluice_custom_ops_t *sl_type_custom(const sluice_type_t *type);

#endif
