/* SPDX-License-Identifier: MIT */
/* The HLT demonstrator's event data and reconstruction (hlt.h). */
#include <string.h>
#include <time.h>

#include "hlt_data.h"

uint32_t hlt_fed_words(size_t raw_bytes, uint32_t feds)
{
    size_t per_fed = raw_bytes / feds;
    size_t words = per_fed > sizeof(hlt_fed_header_t) ? (per_fed - sizeof(hlt_fed_header_t)) / 4 : 0;
    const size_t unit = (size_t)HLT_WORDS_PER_HIT * HLT_HITS_PER_CLUSTER;
    words = (words + unit / 2) / unit * unit; /* the nearest whole number of clusters */
    return (uint32_t)(words ? words : unit);
}

size_t hlt_raw_bytes(uint32_t feds, uint32_t words)
{
    return (size_t)feds * (sizeof(hlt_fed_header_t) + (size_t)words * 4);
}

uint64_t hlt_rechits(uint32_t feds, uint32_t words)
{
    return (uint64_t)feds * (words / HLT_WORDS_PER_HIT);
}

uint64_t hlt_clusters(uint32_t feds, uint32_t words)
{
    return hlt_rechits(feds, words) / HLT_HITS_PER_CLUSTER;
}

void hlt_make_raw(void *raw, uint32_t feds, uint32_t words, uint32_t client, uint64_t event)
{
    char *p = raw;
    for (uint32_t f = 0; f < feds; f++) {
        hlt_fed_header_t h = { .fed = f, .words = words, .event = event };
        memcpy(p, &h, sizeof h);
        p += sizeof h;
        uint64_t x = (event * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)client << 48) ^ (f + 1u);
        uint32_t *w = (uint32_t *)(void *)p;
        for (uint32_t i = 0; i < words; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w[i] = (uint32_t)x;
        }
        p += (size_t)words * 4;
    }
}

int hlt_unpack(const void *raw, size_t bytes, uint64_t event, uint32_t feds, uint32_t words,
               const hlt_rechit_cols_t *out)
{
    if (bytes != hlt_raw_bytes(feds, words))
        return -1;
    const char *p = raw;
    uint64_t hit = 0;
    for (uint32_t f = 0; f < feds; f++) {
        hlt_fed_header_t h;
        memcpy(&h, p, sizeof h);
        if (h.fed != f || h.words != words || h.event != event)
            return -1;
        p += sizeof h;
        const uint32_t *w = (const void *)p;
        for (uint32_t k = 0; k < words / HLT_WORDS_PER_HIT; k++, hit++) {
            uint32_t adc = 0, tdc = 0;
            for (uint32_t i = 0; i < HLT_WORDS_PER_HIT; i++) {
                uint32_t v = w[k * HLT_WORDS_PER_HIT + i];
                adc += v & 0xfff;
                tdc += v >> 12 & 0xff;
            }
            out->detid[hit] = f << 16 | k;
            out->energy[hit] = (float)adc * 0.01f;
            out->time[hit] = (float)tdc * (0.5f / HLT_WORDS_PER_HIT);
        }
        p += (size_t)words * 4;
    }
    return 0;
}

void hlt_cluster(const hlt_rechit_cols_t *hits, uint64_t n_hits, const hlt_cluster_cols_t *out)
{
    for (uint64_t c = 0; c < n_hits / HLT_HITS_PER_CLUSTER; c++) {
        float e = 0, eta = 0, phi = 0;
        for (uint64_t i = c * HLT_HITS_PER_CLUSTER; i < (c + 1) * HLT_HITS_PER_CLUSTER; i++) {
            float ei = hits->energy[i];
            e += ei;
            eta += ei * (float)(hits->detid[i] & 0xffff);
            phi += ei * (float)(hits->detid[i] >> 16);
        }
        out->energy[c] = e;
        out->eta[c] = e > 0 ? eta / e : 0;
        out->phi[c] = e > 0 ? phi / e : 0;
        out->hits[c] = HLT_HITS_PER_CLUSTER;
    }
}

double hlt_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void hlt_burn(double us)
{
    double until = hlt_thread_cpu() + us * 1e-6;
    volatile uint64_t sink = 0;
    uint64_t x = 88172645463325252ull;
    do {
        for (int i = 0; i < 4096; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        sink += x;
    } while (hlt_thread_cpu() < until);
    (void)sink;
}
