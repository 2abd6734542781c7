/* SPDX-License-Identifier: MIT */
/* The reservation queue over every transport: products published in reservation order, and a
 * send queued behind an open reservation. */
#include <stdlib.h>

#include "harness.h"

enum { R_DATA = 1 };

/* Bytes of product k; big enough that emulated RMA reads its origin buffer late. */
static size_t r_size(uint32_t k) { return (64u << 10) + 8 * k; }

/*
 * Regression test (failed at c832583 on rma.pt2pt, fixed since): over RMA, sluice_product_send
 * puts straight from the caller's buffer (MPI_Put) and MPI completes the put
 * at the next flush, which publishing the record does. A send queued behind
 * an open reservation publishes nothing yet, so nothing flushes, and the
 * call returns while MPI may still read the buffer: the caller reuses it (it
 * may: the send has returned) and the receiver gets the new bytes.
 *
 * The controller reserves A and B, commits B, sends C from a buffer it then
 * overwrites, sends D, commits A; the source must see A, B, C, D in that
 * order and intact. Committing A settles all four: they must go out in one
 * publication (one counter, one flush over RMA), not four.
 */
static int r_controller(sluice_channel_t *ch, uint64_t ev, unsigned char *out[2])
{
    sluice_token_t tok;
    sluice_reservation_t a, b;
    H_DO(h_start_event(ch, 0, 1, ev, &tok));
    H_OK(sluice_product_reserve(&tok, R_DATA, r_size(0), r_size(0), 0, &a));
    H_OK(sluice_product_reserve(&tok, R_DATA, r_size(1), r_size(1), 0, &b));
    h_fill(b.data, r_size(1), ev << 8 | 1);
    H_OK(sluice_product_commit(&tok, &b));
    for (uint32_t k = 2; k < 4; k++) {
        unsigned char *src = out[k % 2];
        h_fill(src, r_size(k), ev << 8 | k);
        H_OK(sluice_product_send(&tok, R_DATA, src, r_size(k), r_size(k), 0));
        memset(src, 0xee, r_size(k)); /* the send returned: the buffer is ours again */
    }
    h_fill(a.data, r_size(0), ev << 8 | 0);
    sluice_channel_stats_t before, after;
    sluice_channel_stats(ch, &before);
    H_OK(sluice_product_commit(&tok, &a));
    sluice_channel_stats(ch, &after);
    H_TRUE(after.products_sent - before.products_sent == 4 &&
               after.product_publications - before.product_publications == 1,
           "event %llu: committing A published %llu products in %llu publications (expected 4 "
           "in 1)", (unsigned long long)ev,
           (unsigned long long)(after.products_sent - before.products_sent),
           (unsigned long long)(after.product_publications - before.product_publications));
    H_OK(sluice_event_finish(&tok));
    return 0;
}

static int r_source(sluice_channel_t *ch, uint64_t ev, unsigned char *want)
{
    sluice_token_t tok;
    H_DO(h_start_event(ch, 0, 1, ev, &tok));
    for (uint32_t k = 0; k < 4; k++) {
        sluice_view_t v;
        H_OK(sluice_product_receive(&tok, R_DATA, 0, &v));
        H_TRUE(v.bytes == r_size(k), "event %llu: product %u has %zu bytes: out of order",
               (unsigned long long)ev, k, v.bytes);
        h_fill(want, r_size(k), ev << 8 | k);
        const unsigned char *got = v.data;
        size_t bad = 0;
        while (bad < v.bytes && got[bad] == want[bad])
            bad++;
        H_TRUE(bad == v.bytes, "event %llu: product %u of %zu bytes differs from byte %zu on "
               "(0x%02x there%s)", (unsigned long long)ev, k, v.bytes, bad, got[bad],
               got[bad] == 0xee ? ": what the sender wrote into its buffer after the send returned"
                                : "");
        H_OK(sluice_view_release(ch, &v));
    }
    H_OK(sluice_event_finish(&tok));
    return 0;
}

int case_send_behind_reservation(void)
{
    sluice_endpoint_t ep = { R_DATA, h_dir(1), T_BYTES };
    sluice_options_t o = h_options();
    sluice_channel_t *ch;
    H_OK(h_open("behind", 1, &ep, 1, &o, &ch));
    unsigned char *want = malloc(r_size(4)), *out[2] = { malloc(r_size(4)), malloc(r_size(4)) };
    int failed = !want || !out[0] || !out[1] || h_begin(ch, 1);
    for (uint64_t ev = 0; ev < 4 && !failed; ev++)
        failed = h_is_ctrl ? r_controller(ch, ev, out) : r_source(ch, ev, want);
    free(want);
    free(out[0]);
    free(out[1]);
    failed = failed || h_end_job(ch, 1);
    /* Closed on failure too: the peer's next wait then ends at once. */
    int crc = sluice_channel_close(ch);
    H_TRUE(failed || crc == SLUICE_OK, "close: %s", sluice_strerror(crc));
    return failed;
}
