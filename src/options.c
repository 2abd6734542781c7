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
           "product arena bytes per stream and direction (multiple of 64)"),
    SL_ROW(max_open_lumis, "SLUICE_MAX_OPEN_LUMIS", 4, 1, 64, 0,
           "luminosity blocks open at once (also bounds open runs)"),
    SL_ROW(timeout_ms, "SLUICE_TIMEOUT_MS", 30000, 1, 3600000, 0,
           "deadline of every blocking wait, in milliseconds"),
    SL_ROW(spin, "SLUICE_SPIN", 256, 0, 1000000, 0, "polls spent spinning before yielding"),
    SL_ROW(max_sleep_us, "SLUICE_MAX_SLEEP_US", 200, 1, 100000, 0,
           "longest sleep between polls once backed off, in microseconds"),
    SL_ROW(transport, "SLUICE_TRANSPORT", SLUICE_TRANSPORT_AUTO, 0, 2, 0,
           "transport: auto (0), shm (1) or rma (2)"),
};

/* Names accepted for enumerated options, in value order. */
static const char *const sl_transport_names[] = { "auto", "shm", "rma" };

#define SL_N_OPTIONS (sizeof sl_option_rows / sizeof sl_option_rows[0])

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

int sluice_options_validate(const sluice_options_t *options)
{
    if (!options || options->size < sizeof(sluice_options_t))
        return sl_fail(SLUICE_EINVAL, "options not initialised with sluice_options_init");
    for (size_t i = 0; i < SL_N_OPTIONS; i++) {
        int rc = sl_option_check(&sl_option_rows[i], sl_option_get(options, &sl_option_rows[i]),
                                 "field");
        if (rc)
            return rc;
    }
    if (options->arena_bytes % SL_CACHELINE)
        return sl_fail(SLUICE_ERANGE, "option arena_bytes = %llu must be a multiple of %u",
                       (unsigned long long)options->arena_bytes, SL_CACHELINE);
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
    if (!options || options->size < sizeof(sluice_options_t))
        return sl_fail(SLUICE_EINVAL, "options not initialised with sluice_options_init");
    sluice_options_t next = *options;
    for (size_t i = 0; i < SL_N_OPTIONS; i++) {
        const sl_option_row_t *r = &sl_option_rows[i];
        const char *s = getenv(r->info.env);
        if (!s)
            continue;
        uint64_t v;
        bool named = false;
        if (r->offset == offsetof(sluice_options_t, transport)) {
            for (uint64_t k = 0; k < 3; k++) {
                if (strcmp(s, sl_transport_names[k]) == 0) {
                    v = k;
                    named = true;
                }
            }
        }
        if (!named && sl_parse_size(s, &v))
            return sl_fail(SLUICE_EINVAL, "%s=\"%s\" is not a number (digits, optional K/M/G)",
                           r->info.env, s);
        int rc = sl_option_check(r, v, r->info.env);
        if (rc)
            return rc;
        sl_option_set(&next, r, v);
    }
    int rc = sluice_options_validate(&next);
    if (rc)
        return rc;
    *options = next;
    return SLUICE_OK;
}
