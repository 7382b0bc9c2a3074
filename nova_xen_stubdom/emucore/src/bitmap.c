/*
 * bitmap.c - log-dirty bitmaps: bit i of byte i/8 is pfn i, which is the
 * layout of Xen's unsigned-long bitmaps on little-endian hosts.  Words are
 * read with memcpy so any buffer alignment works; 2^28 pages is a 32 MiB
 * bitmap, well inside size_t.
 */
#include <string.h>

#include "emucore.h"

static inline uint64_t load_word(const uint8_t *bm, uint64_t w)
{
    uint64_t v;
    memcpy(&v, bm + w * 8, 8);
    return v;
}

/* Mask of the valid bits of the last (partial) byte/word. */
static inline uint8_t tail_mask8(uint64_t nbits)
{
    return (uint8_t)((1u << nbits) - 1);
}

uint64_t emu_bitmap_count(const uint8_t *bm, uint64_t npages)
{
    uint64_t nwords = npages / 64, total = 0;

    for (uint64_t w = 0; w < nwords; w++) {
        total += (uint64_t)__builtin_popcountll(load_word(bm, w));
    }
    for (uint64_t b = nwords * 8; b < npages / 8; b++) {
        total += (uint64_t)__builtin_popcount(bm[b]);
    }
    if (npages % 8) {
        total += (uint64_t)__builtin_popcount(bm[npages / 8] & tail_mask8(npages % 8));
    }
    return total;
}

void emu_bitmap_clear(uint8_t *bm, uint64_t npages)
{
    memset(bm, 0, npages / 8);
    if (npages % 8) {
        bm[npages / 8] &= (uint8_t)~tail_mask8(npages % 8);
    }
}

void emu_bitmap_merge(uint8_t *dst, const uint8_t *src, uint64_t npages)
{
    uint64_t nbytes = npages / 8, b = 0;

    for (; b + 8 <= nbytes; b += 8) {
        uint64_t x, y;
        memcpy(&x, dst + b, 8);
        memcpy(&y, src + b, 8);
        x |= y;
        memcpy(dst + b, &x, 8);
    }
    for (; b < nbytes; b++) {
        dst[b] |= src[b];
    }
    if (npages % 8) {
        dst[nbytes] |= src[nbytes] & tail_mask8(npages % 8);
    }
}

size_t emu_bitmap_pfns(const uint8_t *bm, uint64_t npages, uint64_t start,
                       uint64_t *out, size_t max, uint64_t *next)
{
    size_t n = 0;
    uint64_t pfn = start;

    while (pfn < npages && n < max) {
        uint64_t w;
        unsigned shift;
        if (npages - pfn >= 64 && (pfn % 8) == 0) {
            /* Fast path: 64 bits from a byte boundary. */
            memcpy(&w, bm + pfn / 8, 8);
            shift = 64;
        } else {
            /* Up to the next byte boundary or the end, bit by bit. */
            w = (uint64_t)(bm[pfn / 8] >> (pfn % 8));
            shift = 8 - (unsigned)(pfn % 8);
            if (npages - pfn < shift) {
                shift = (unsigned)(npages - pfn);
                w &= (1ULL << shift) - 1;
            }
        }
        while (w && n < max) {
            unsigned b = (unsigned)__builtin_ctzll(w);
            out[n++] = pfn + b;
            w &= w - 1;
            if (n == max) {
                /* Resume right after the last pfn returned. */
                *next = pfn + b + 1;
                return n;
            }
        }
        pfn += shift;
    }
    *next = pfn < npages ? pfn : npages;
    return n;
}
