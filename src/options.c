/* SPDX-License-Identifier: MIT */
/* The option table: defaults, ranges, environment overrides. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* One row per field; `offset`/`width` locate the field in sluice_options_t. */
typedef struct sl_option_row {
    sluice_option_info_t info;
    size_t offset;
    size_t width;
} sl_option_row_t;

#define SL_ROW(field, env, def, lo, hi, p2, help)                                                  \
    { { #field, env, def, lo, hi, p2, help }, offsetof(sluice_options_t, field),                   \
      sizeof(((sluice_options_t *)0)->field) }

static const sl_option_row_t sl_option_rows[] = {
    SL_ROW(ring_depth, "SLUICE_RING_DEPTH", 64, 2, 65536, 1,
           "records per stream ring (events, products, event ends)"),
    SL_ROW(global_depth, "SLUICE_GLOBAL_DEPTH", 64, 2, 65536, 1,
           "records in the global ring (run and lumi transitions)"),
    SL_ROW(arena_bytes, "SLUICE_ARENA_BYTES", 4u << 20, 4096, 1ull << 40, 0,
           "product arena bytes per stream and direction (multiple of 64); products whose sizes, "
           "each rounded up to 64, add up to it minus the largest of them always fit together"),
    SL_ROW(max_open_lumis, "SLUICE_MAX_OPEN_LUMIS", 4, 1, 64, 0,
           "luminosity blocks open at once (also bounds open runs)"),
    SL_ROW(timeout_ms, "SLUICE_TIMEOUT_MS", 30000, 1, 3600000, 0,
           "deadline of every blocking wait, in milliseconds"),
    SL_ROW(spin, "SLUICE_SPIN", 256, 0, 1000000, 0, "polls spent spinning before yielding"),
    SL_ROW(max_sleep_us, "SLUICE_MAX_SLEEP_US", 200, 1, 100000, 0,
           "longest sleep between polls once backed off, in microseconds"),
    SL_ROW(transport, "SLUICE_TRANSPORT", SLUICE_TRANSPORT_AUTO, 0, 2, 0,
           "transport: auto (0), shm (1) or rma (2)"),
    SL_ROW(liveness_ms, "SLUICE_LIVENESS_MS", 1000, 10, 600000, 0,
           "a waiting call learns that the peer process died within this many milliseconds "
           "(peers on this node; see docs/design.md for other nodes)"),
    SL_ROW(device_path, "SLUICE_DEVICE_PATH", SLUICE_DEVICE_PATH_AUTO, 0, 2, 0,
           "device products: auto (0), ipc (1) or staged (2); see docs/gpu.md"),
};

/* Names accepted for enumerated options, in value order. */
static const char *const sl_transport_names[] = { "auto", "shm", "rma", NULL };
static const char *const sl_device_path_names[] = { "auto", "ipc", "staged", NULL };

#define SL_N_OPTIONS (sizeof sl_option_rows / sizeof sl_option_rows[0])

/* The names an option's environment variable accepts besides numbers, or NULL. */
static const char *const *sl_option_names(const sl_option_row_t *r)
{
    if (r->offset == offsetof(sluice_options_t, transport))
        return sl_transport_names;
    if (r->offset == offsetof(sluice_options_t, device_path))
        return sl_device_path_names;
    return NULL;
}

static uint64_t sl_option_get(const sluice_options_t *o, const sl_option_row_t *r)
{
    const char *p = (const char *)o + r->offset;
    if (r->width == sizeof(uint64_t)) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void sl_option_set(sluice_options_t *o, const sl_option_row_t *r, uint64_t v)
{
    char *p = (char *)o + r->offset;
    if (r->width == sizeof(uint64_t)) {
        memcpy(p, &v, sizeof v);
    } else {
        uint32_t w = (uint32_t)v;
        memcpy(p, &w, sizeof w);
    }
}

const sluice_option_info_t *sluice_option_info(size_t i)
{
    return i < SL_N_OPTIONS ? &sl_option_rows[i].info : NULL;
}

void sluice_options_init(sluice_options_t *options)
{
    memset(options, 0, sizeof *options);
    options->size = sizeof *options;
    for (size_t i = 0; i < SL_N_OPTIONS; i++)
        sl_option_set(options, &sl_option_rows[i], sl_option_rows[i].info.default_value);
}

static int sl_option_check(const sl_option_row_t *r, uint64_t v, const char *origin)
{
    const sluice_option_info_t *in = &r->info;
    if (v < in->min || v > in->max)
        return sl_fail(SLUICE_ERANGE, "option %s (%s) = %llu is out of range [%llu, %llu]", in->name,
                       origin, (unsigned long long)v, (unsigned long long)in->min,
                       (unsigned long long)in->max);
    if (in->power_of_two && !sl_is_pow2(v))
        return sl_fail(SLUICE_ERANGE, "option %s (%s) = %llu must be a power of two", in->name,
                       origin, (unsigned long long)v);
    return SLUICE_OK;
}

/*
 * The ABI promise of options.h: the library reads only the first `size`
 * bytes, so a caller built against an older, shorter sluice_options_t keeps
 * working. A field counts as present only when it lies wholly inside `size`;
 * the rest keep their defaults. (This holds only while a field added later
 * starts at or past the previous sizeof: one placed in today's tail padding
 * would be read from an older caller's padding.)
 *
 * Sizes outside [SL_OPTIONS_MIN_SIZE, SL_OPTIONS_MAX_SIZE] are refused: below
 * the minimum the struct holds no option at all, so it was never set by any
 * sluice_options_init; far above sizeof it is almost surely uninitialised
 * memory rather than a newer header (a newer caller's extra fields, which
 * this library does not know, are ignored).
 */
#define SL_OPTIONS_MIN_SIZE (offsetof(sluice_options_t, ring_depth) + sizeof(uint32_t))
#define SL_OPTIONS_MAX_SIZE ((size_t)1024)

static bool sl_option_present(const sl_option_row_t *r, size_t size)
{
    return r->offset + r->width <= size;
}

/* For tools that print the table next to the values in force (sluice-info). */
int sluice_option_value(const sluice_options_t *options, size_t i, uint64_t *value_p)
{
    if (!options || i >= SL_N_OPTIONS || !sl_option_present(&sl_option_rows[i], options->size))
        return sl_fail(SLUICE_EINVAL, "option row %zu is not in the table or not in the struct", i);
    *value_p = sl_option_get(options, &sl_option_rows[i]);
    return SLUICE_OK;
}

static int sl_options_check_size(const sluice_options_t *options)
{
    if (!options)
        return sl_fail(SLUICE_EINVAL, "options must not be NULL");
    if (options->size < SL_OPTIONS_MIN_SIZE || options->size > SL_OPTIONS_MAX_SIZE)
        return sl_fail(SLUICE_EINVAL,
                       "sluice_options_t size %zu is outside [%zu, %zu]: not initialised with "
                       "sluice_options_init",
                       options->size, SL_OPTIONS_MIN_SIZE, SL_OPTIONS_MAX_SIZE);
    return SLUICE_OK;
}

int sluice_options_validate(const sluice_options_t *options)
{
    int rc = sl_options_check_size(options);
    if (rc)
        return rc;
    /* Only the fields the caller's struct holds: the bytes past `size` are
     * not the caller's options, and may not even be readable. */
    for (size_t i = 0; i < SL_N_OPTIONS; i++) {
        const sl_option_row_t *r = &sl_option_rows[i];
        if (!sl_option_present(r, options->size))
            continue;
        if ((rc = sl_option_check(r, sl_option_get(options, r), "field")))
            return rc;
    }
    size_t arena_end = offsetof(sluice_options_t, arena_bytes) + sizeof options->arena_bytes;
    if (options->size >= arena_end && options->arena_bytes % SL_CACHELINE)
        return sl_fail(SLUICE_ERANGE, "option arena_bytes = %llu must be a multiple of %u",
                       (unsigned long long)options->arena_bytes, SL_CACHELINE);
    return SLUICE_OK;
}

/* Defaults, then the fields present in `user` over them; no range checks. */
static int sl_options_overlay(const sluice_options_t *user, sluice_options_t *out)
{
    int rc = sl_options_check_size(user);
    if (rc)
        return rc;
    sluice_options_init(out);
    size_t n = user->size < sizeof *out ? user->size : sizeof *out;
    memcpy(out, user, n);
    out->size = sizeof *out;
    /* A size that ends inside a field copied only part of it: that field is
     * not present, so it goes back to its default whole. */
    for (size_t i = 0; i < SL_N_OPTIONS; i++) {
        const sl_option_row_t *r = &sl_option_rows[i];
        if (!sl_option_present(r, user->size))
            sl_option_set(out, r, r->info.default_value);
    }
    return SLUICE_OK;
}

int sl_options_import(const sluice_options_t *user, sluice_options_t *out)
{
    sluice_options_t next;
    int rc = sl_options_overlay(user, &next);
    if (rc)
        return rc;
    if ((rc = sluice_options_validate(&next)))
        return rc;
    *out = next;
    return SLUICE_OK;
}

/* Parse a decimal unsigned integer with an optional K/M/G (binary) suffix. */
static int sl_parse_size(const char *s, uint64_t *v_p)
{
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    default: break;
    }
    if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *v_p = (uint64_t)v << shift;
    return 0;
}

int sluice_options_from_env(sluice_options_t *options)
{
    sluice_options_t next;
    int rc = sl_options_overlay(options, &next);
    if (rc)
        return rc;
    for (size_t i = 0; i < SL_N_OPTIONS; i++) {
        const sl_option_row_t *r = &sl_option_rows[i];
        const char *s = getenv(r->info.env);
        /* A field the caller's (older) struct does not hold cannot take the
         * override: it keeps its default when the struct is imported. */
        if (!s || !sl_option_present(r, options->size))
            continue;
        uint64_t v;
        bool named = false;
        const char *const *names = sl_option_names(r);
        for (uint64_t k = 0; names && names[k]; k++) {
            if (strcmp(s, names[k]) == 0) {
                v = k;
                named = true;
            }
        }
        if (!named && sl_parse_size(s, &v))
            return sl_fail(SLUICE_EINVAL, "%s=\"%s\" is not a number (digits, optional K/M/G)",
                           r->info.env, s);
        if ((rc = sl_option_check(r, v, r->info.env)))
            return rc;
        sl_option_set(&next, r, v);
    }
    if ((rc = sluice_options_validate(&next)))
        return rc;
    /* Write back field by field: the caller's struct may be shorter than
     * ours, and its `size` must stay what the caller's build set. */
    for (size_t i = 0; i < SL_N_OPTIONS; i++) {
        const sl_option_row_t *r = &sl_option_rows[i];
        if (sl_option_present(r, options->size))
            sl_option_set(options, r, sl_option_get(&next, r));
    }
    return SLUICE_OK;
}
