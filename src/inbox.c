/* SPDX-License-Identifier: MIT */
/* Inbox geometry, initialisation and header checks. */
#include <string.h>
#include <unistd.h>

#include "inbox.h"
#include "liveness.h"

int sl_geometry_compute(uint32_t streams, const sluice_options_t *o, sl_geometry_t *g_p)
{
    sl_geometry_t g = { .streams = streams,
                        .ring_depth = o->ring_depth,
                        .global_depth = o->global_depth,
                        .arena_bytes = o->arena_bytes };
    g.global_off = sizeof(sl_inbox_header_t);
    uint64_t global_end = g.global_off + SL_RING_CTRL_BYTES +
                          (uint64_t)g.global_depth * SL_RECORD_BYTES;
    g.streams_off = sl_align_up(global_end, 4096);
    /* Each stream starts on a page so a stream's arena never shares a page
     * with another stream's control lines. */
    g.stream_stride = sl_align_up(SL_RING_CTRL_BYTES + (uint64_t)g.ring_depth * SL_RECORD_BYTES +
                                      g.arena_bytes, 4096);
    if (streams && g.stream_stride > (UINT64_MAX - g.streams_off) / streams)
        return sl_fail(SLUICE_ERANGE, "%u streams of %llu bytes overflow", streams,
                       (unsigned long long)g.stream_stride);
    g.inbox_bytes = g.streams_off + (uint64_t)streams * g.stream_stride;
    if (g.inbox_bytes > (uint64_t)SIZE_MAX / 2)
        return sl_fail(SLUICE_ERANGE, "inbox of %llu bytes is too large",
                       (unsigned long long)g.inbox_bytes);
    *g_p = g;
    return SLUICE_OK;
}

void sl_inbox_init(void *base, const sl_geometry_t *g, uint64_t device_bytes,
                   const void *device_handle)
{
    sl_inbox_header_t *h = base;
    memset(base, 0, g->streams_off);
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
    h->owner_pid = (int64_t)getpid();
    h->owner_start = sl_proc_start_time(getpid());
    atomic_init(&h->peer_closed, 0);
    if (device_handle) {
        h->device_bytes = device_bytes;
        memcpy(h->device_handle, device_handle, sizeof h->device_handle);
    }
    for (uint32_t s = 0; s < g->streams; s++)
        memset((char *)base + sl_stream_ctrl(g, s), 0, SL_RING_CTRL_BYTES);
    /* Release, last: a peer that reads the magic with acquire sees the
     * whole header (transport connect). */
    atomic_store_explicit((_Atomic uint64_t *)(void *)&h->magic, SL_INBOX_MAGIC,
                          memory_order_release);
}

int sl_inbox_check(const sl_inbox_header_t *h, uint64_t mapped_bytes, const sl_geometry_t *e)
{
    if (h->magic != SL_INBOX_MAGIC)
        return sl_fail(SLUICE_ECORRUPT, "peer inbox: bad magic 0x%016llx (expected 0x%016llx)",
                       (unsigned long long)h->magic, (unsigned long long)SL_INBOX_MAGIC);
    if (h->version != SL_INBOX_VERSION)
        return sl_fail(SLUICE_EVERSION, "peer inbox: layout version %u, this library speaks %u",
                       h->version, SL_INBOX_VERSION);
#define SL_CHECK_FIELD(field, want)                                                                \
    if ((uint64_t)h->field != (uint64_t)(want))                                                    \
        return sl_fail(SLUICE_ECORRUPT, "peer inbox: " #field " is %llu, expected %llu",          \
                       (unsigned long long)h->field, (unsigned long long)(want));
    SL_CHECK_FIELD(record_bytes, SL_RECORD_BYTES);
    SL_CHECK_FIELD(streams, e->streams);
    SL_CHECK_FIELD(ring_depth, e->ring_depth);
    SL_CHECK_FIELD(global_depth, e->global_depth);
    SL_CHECK_FIELD(arena_bytes, e->arena_bytes);
    SL_CHECK_FIELD(global_off, e->global_off);
    SL_CHECK_FIELD(streams_off, e->streams_off);
    SL_CHECK_FIELD(stream_stride, e->stream_stride);
    SL_CHECK_FIELD(inbox_bytes, e->inbox_bytes);
#undef SL_CHECK_FIELD
    if (h->inbox_bytes > mapped_bytes)
        return sl_fail(SLUICE_ECORRUPT, "peer inbox: header claims %llu bytes, only %llu mapped",
                       (unsigned long long)h->inbox_bytes, (unsigned long long)mapped_bytes);
    return SLUICE_OK;
}
