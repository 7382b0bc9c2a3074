/*
 * cache.c - the XBZRLE page cache: what was last sent for a pfn, so the
 * next round can send a delta.  Direct mapped (slot = hash(pfn) & mask),
 * like QEMU's page_cache: bounded memory, O(1), a colliding pfn simply
 * evicts the older one (it is then sent raw, which is always correct).
 */
#include <stdlib.h>
#include <string.h>

#include "emucore.h"

int emu_xbz_cache_init(struct emu_xbz_cache *c, size_t capacity_bytes)
{
    size_t n = 1;

    memset(c, 0, sizeof(*c));
    if (capacity_bytes < EMU_PAGE_SIZE) {
        return -1;
    }
    while (n * 2 * EMU_PAGE_SIZE <= capacity_bytes && n < ((size_t)1 << 40)) {
        n *= 2;
    }
    c->tags = malloc(n * sizeof(*c->tags));
    c->pages = malloc(n * EMU_PAGE_SIZE);
    if (!c->tags || !c->pages) {
        free(c->tags);
        free(c->pages);
        c->tags = NULL;
        c->pages = NULL;
        return -1;
    }
    c->nslots = n;
    c->shift = 64;
    for (size_t m = n; m > 1; m >>= 1) {
        c->shift--;
    }
    emu_xbz_cache_clear(c);
    return 0;
}

void emu_xbz_cache_free(struct emu_xbz_cache *c)
{
    free(c->tags);
    free(c->pages);
    memset(c, 0, sizeof(*c));
}

void emu_xbz_cache_clear(struct emu_xbz_cache *c)
{
    for (size_t i = 0; i < c->nslots; i++) {
        c->tags[i] = EMU_XBZ_EMPTY;
    }
    c->hits = c->misses = c->overflows = c->evictions = 0;
}

void emu_xbz_cache_invalidate(struct emu_xbz_cache *c, uint64_t pfn)
{
    size_t s = emu_xbz_slot(c, pfn);
    if (c->tags[s] == pfn) {
        c->tags[s] = EMU_XBZ_EMPTY;
    }
}

/* Slot of pfn: Fibonacci hashing (top bits of pfn * 2^64/phi), so runs of
 * consecutive pfns land in distinct slots and strides spread out. */
size_t emu_xbz_slot(const struct emu_xbz_cache *c, uint64_t pfn)
{
    if (c->nslots == 1) {
        return 0;
    }
    return (size_t)((pfn * 0x9e3779b97f4a7c15ULL) >> c->shift);
}

size_t emu_xbz_cache_used(const struct emu_xbz_cache *c)
{
    size_t used = 0;
    for (size_t i = 0; i < c->nslots; i++) {
        used += c->tags[i] != EMU_XBZ_EMPTY;
    }
    return used;
}
