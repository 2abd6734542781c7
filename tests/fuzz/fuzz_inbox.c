/* SPDX-License-Identifier: MIT */
/* Fuzzes sl_inbox_check: any peer header and mapped size against a geometry from valid options. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../src/inbox.h"

/*
 * Input: the options (streams, depths, arena size), the mapped size, then a
 * mask that is XORed onto a correct header. A mask of zeros (what a short
 * input reads as) leaves the header correct, so the fuzzer starts from the
 * accepting path and reaches each field's check by flipping bits; any header
 * at all is still reachable, since XOR with a mask is one-to-one.
 */

/* Inboxes up to this size are built by sl_inbox_init itself; larger ones by
 * hand, field by field, so that the fuzzer never allocates gigabytes. */
#define FZ_INIT_MAX (1u << 20)

static void fz_options(fz_input_t *in, uint32_t *streams_p, sluice_options_t *o)
{
    sluice_options_init(o);
    /* The channel allows 1..4096 streams; now and then try any count, to
     * reach the geometry's own overflow guards. */
    uint16_t s = fz_u16(in);
    *streams_p = s < 0xf000 ? 1u + s % 4096u : fz_u32(in);
    o->ring_depth = 1u << (1u + fz_u8(in) % 16u);   /* 2 .. 65536 */
    o->global_depth = 1u << (1u + fz_u8(in) % 16u); /* 2 .. 65536 */
    /* 4096 .. 2^40 in steps of a cache line, the whole valid range. */
    uint64_t lines = ((1ull << 40) - 4096u) / SL_CACHELINE + 1u;
    o->arena_bytes = 4096u + fz_u64(in) % lines * SL_CACHELINE;
}

/* What a valid geometry promises: every ring and arena inside the inbox, apart. */
static void fz_check_geometry(const sl_geometry_t *g)
{
    fz_check(g->global_off >= sizeof(sl_inbox_header_t), "global ring at %llu overlaps the header",
             (unsigned long long)g->global_off);
    fz_check(g->global_off + SL_RING_CTRL_BYTES + (uint64_t)g->global_depth * SL_RECORD_BYTES <=
                 g->streams_off,
             "global ring runs into stream 0 at %llu", (unsigned long long)g->streams_off);
    fz_check(g->streams_off % 4096 == 0 && g->stream_stride % 4096 == 0,
             "streams_off %llu / stride %llu not page aligned", (unsigned long long)g->streams_off,
             (unsigned long long)g->stream_stride);
    fz_check(g->stream_stride >=
                 SL_RING_CTRL_BYTES + (uint64_t)g->ring_depth * SL_RECORD_BYTES + g->arena_bytes,
             "stride %llu shorter than one stream", (unsigned long long)g->stream_stride);
    fz_check(g->streams == 0 ||
                 sl_stream_arena(g, g->streams - 1) + g->arena_bytes <= g->inbox_bytes,
             "last arena ends past the inbox of %llu", (unsigned long long)g->inbox_bytes);
    fz_check(sl_stream_arena(g, 0) % SL_CACHELINE == 0, "arena 0 at %llu not line aligned",
             (unsigned long long)sl_stream_arena(g, 0));
}

/* The correct header for `g`: from sl_inbox_init when small enough, else by hand. */
static void fz_fresh_header(const sl_geometry_t *g, sl_inbox_header_t *h)
{
    if (g->inbox_bytes <= FZ_INIT_MAX) {
        char *mem = aligned_alloc(4096, g->inbox_bytes);
        fz_check(mem != NULL, "no memory for an inbox of %llu", (unsigned long long)g->inbox_bytes);
        sl_inbox_init(mem, g, 0, NULL);
        memcpy(h, mem, sizeof *h);
        free(mem);
        int rc = sl_inbox_check(h, g->inbox_bytes, g);
        fz_check_status(rc, SLUICE_OK, "sl_inbox_check of a fresh sl_inbox_init header");
        return;
    }
    memset(h, 0, sizeof *h);
    h->magic = SL_INBOX_MAGIC;
    h->version = SL_INBOX_VERSION;
    h->record_bytes = SL_RECORD_BYTES;
    h->inbox_bytes = g->inbox_bytes;
    h->streams = g->streams;
    h->ring_depth = g->ring_depth;
    h->global_depth = g->global_depth;
    h->arena_bytes = g->arena_bytes;
    h->global_off = g->global_off;
    h->streams_off = g->streams_off;
    h->stream_stride = g->stream_stride;
}

/* The independent model of the check: the first field that disagrees. */
static int fz_expected(const sl_inbox_header_t *h, uint64_t mapped, const sl_geometry_t *g,
                       const char **what_p)
{
    struct {
        const char *name;
        uint64_t got, want;
    } fields[] = {
        { "record_bytes", h->record_bytes, SL_RECORD_BYTES },
        { "streams", h->streams, g->streams },
        { "ring_depth", h->ring_depth, g->ring_depth },
        { "global_depth", h->global_depth, g->global_depth },
        { "arena_bytes", h->arena_bytes, g->arena_bytes },
        { "global_off", h->global_off, g->global_off },
        { "streams_off", h->streams_off, g->streams_off },
        { "stream_stride", h->stream_stride, g->stream_stride },
        { "inbox_bytes", h->inbox_bytes, g->inbox_bytes },
    };
    *what_p = "magic";
    if (h->magic != SL_INBOX_MAGIC)
        return SLUICE_ECORRUPT;
    *what_p = "version";
    if (h->version != SL_INBOX_VERSION)
        return SLUICE_EVERSION;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        *what_p = fields[i].name;
        if (fields[i].got != fields[i].want)
            return SLUICE_ECORRUPT;
    }
    *what_p = "mapped";
    if (h->inbox_bytes > mapped)
        return SLUICE_ECORRUPT;
    *what_p = NULL;
    return SLUICE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input_t in = { data, size };
    uint32_t streams;
    sluice_options_t o;
    fz_options(&in, &streams, &o);
    int rc = sluice_options_validate(&o);
    fz_check_status(rc, SLUICE_OK, "sluice_options_validate of generated options");
    sl_geometry_t g;
    rc = sl_geometry_compute(streams, &o, &g);
    if (streams <= 4096) {
        /* Even 4096 streams of 2^40-byte arenas fit in 64 bits: valid
         * options give a geometry for any stream count a channel allows. */
        fz_check_status(rc, SLUICE_OK, "sl_geometry_compute of valid options");
    } else if (rc != SLUICE_OK) {
        fz_check_status(rc, SLUICE_ERANGE, "sl_geometry_compute of too many streams");
        fz_check(strstr(sluice_last_error(), "streams") || strstr(sluice_last_error(), "inbox"),
                 "message names neither streams nor the inbox");
        return 0;
    }
    fz_check_geometry(&g);

    /* The mapped size: near the inbox size (both sides of it), or anything. */
    uint8_t how = fz_u8(&in);
    uint64_t d = fz_u16(&in);
    uint64_t mapped = how % 3 == 0 ? g.inbox_bytes - (d < g.inbox_bytes ? d : g.inbox_bytes)
                    : how % 3 == 1 ? g.inbox_bytes + d
                                   : fz_u64(&in);

    sl_inbox_header_t h;
    fz_fresh_header(&g, &h);
    uint8_t mask[sizeof h];
    fz_take(&in, mask, sizeof mask);
    unsigned char *hb = (unsigned char *)&h;
    for (size_t i = 0; i < sizeof h; i++)
        hb[i] ^= mask[i];

    const char *what;
    int want = fz_expected(&h, mapped, &g, &what);
    rc = sl_inbox_check(&h, mapped, &g);
    fz_check(rc == want, "sl_inbox_check returned %d (%s), the model expects %d (%s) for %s", rc,
             sluice_strerror(rc), want, sluice_strerror(want), what ? what : "a correct header");
    if (rc != SLUICE_OK) {
        /* Error messages name the thing (STYLE.md): the first bad field. */
        fz_check(strstr(sluice_last_error(), what) != NULL, "message does not name %s", what);
        return 0;
    }
    /* Accepted: what the reader will trust lies inside what is mapped. */
    fz_check(h.streams_off + (uint64_t)h.streams * h.stream_stride <= h.inbox_bytes &&
                 h.inbox_bytes <= mapped,
             "accepted header describes %llu bytes of streams past %llu mapped",
             (unsigned long long)(h.streams_off + (uint64_t)h.streams * h.stream_stride),
             (unsigned long long)mapped);
    return 0;
}
