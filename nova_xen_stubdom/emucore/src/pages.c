/*
 * pages.c - page batches to records and back.
 *
 * Encoding writes the records of one batch (at most EMU_MAX_BATCH pages):
 *   compat: PAGE_DATA with every page.
 *   full:   PAGE_DATA (raw pages), ZERO_RUNS, XBZRLE_PAGES, BATCH_CRC32C,
 *           each only when it has something to carry.
 * Applying parses one record body from an untrusted stream.  Every apply
 * function validates the whole body first and writes only afterwards, so a
 * body either applies completely or not at all, and never writes outside
 * mem.  All multi-byte fields are little endian; this file assumes a
 * little-endian host, as Xen's x86 streams do.
 */
#include <stdio.h>
#include <string.h>

#include "emucore.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "emucore writes little-endian stream fields with memcpy: little-endian hosts only"
#endif /* little endian */

/* Encodings larger than this are not worth sending instead of the page
 * (the pfn and length words cost 10 bytes). */
#define XBZ_LIMIT (EMU_PAGE_SIZE - 64)

enum { CLS_RAW, CLS_ZERO, CLS_XBZ, CLS_UNCHANGED, CLS_RAW_MISS };

static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
/* Round up to the 8-byte record alignment. */
static inline size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

static long fail(struct emu_err *err, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#include <stdarg.h>
/* Fill err and return -1 (the one error exit of every parser). */
static long fail(struct emu_err *err, size_t off, const char *fmt, ...)
{
    va_list ap;
    err->offset = off;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

size_t emu_encode_bound(size_t n)
{
    return (16 + 8 * n + (size_t)EMU_PAGE_SIZE * n)      /* PAGE_DATA */
         + (16 + 16 * n)                                 /* ZERO_RUNS */
         + (16 + 10 * n + 8 + XBZ_LIMIT * n)             /* XBZRLE_PAGES */
         + 16                                            /* BATCH_CRC32C */
         + XBZ_LIMIT * n + EMU_PAGE_SIZE + 64;           /* xbzrle scratch */
}

/* Record header at p; returns the header size. */
static inline size_t put_hdr(uint8_t *p, uint32_t type, size_t length)
{
    put32(p, type);
    put32(p + 4, (uint32_t)length);
    return 8;
}

long emu_encode_batch(const struct emu_kernels *k, const uint8_t *mem,
                      size_t mem_len, const uint64_t *pfns, size_t n,
                      uint8_t *out, size_t out_cap, unsigned flags,
                      struct emu_xbz_cache *cache, struct emu_enc_stats *st,
                      struct emu_err *err)
{
    uint8_t cls[EMU_MAX_BATCH];
    uint16_t xlen[EMU_MAX_BATCH];
    size_t mem_pages = mem_len / EMU_PAGE_SIZE;
    size_t nraw = 0, nzero = 0, nxbz = 0, nruns = 0, xbytes = 0;
    size_t bound = emu_encode_bound(n);

    memset(st, 0, sizeof(*st));
    if (n == 0) {
        return 0;
    }
    if (n > EMU_MAX_BATCH) {
        return fail(err, 0, "batch of %zu pages, at most %u", n, EMU_MAX_BATCH);
    }
    if (out_cap < bound) {
        return fail(err, 0, "output buffer of %zu bytes, needs %zu", out_cap, bound);
    }
    if (!(flags & EMU_ENC_XBZRLE)) {
        cache = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (pfns[i] >= mem_pages) {
            return fail(err, i, "pfn %#llx at index %zu is beyond guest memory of %zu pages",
                        (unsigned long long)pfns[i], i, mem_pages);
        }
        /* In-batch duplicates would make the receiver apply a delta to a
         * page it receives raw later in the same batch: demand order. */
        if (cache && i && pfns[i] <= pfns[i - 1]) {
            return fail(err, i, "pfns must be strictly increasing with XBZRLE (index %zu)", i);
        }
    }

    uint8_t *scratch = out + out_cap - (XBZ_LIMIT * n + EMU_PAGE_SIZE + 64);

    /* Pass 1: classify; XBZRLE hits are encoded into scratch. */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *page = mem + pfns[i] * EMU_PAGE_SIZE;
        cls[i] = CLS_RAW;
        if ((flags & EMU_ENC_ZERO) && emu_is_zero(k, page, EMU_PAGE_SIZE)) {
            cls[i] = CLS_ZERO;
            nzero++;
            if (i == 0 || cls[i - 1] != CLS_ZERO || pfns[i] != pfns[i - 1] + 1) {
                nruns++;
            }
            if (cache) {
                emu_xbz_cache_invalidate(cache, pfns[i]);
            }
            continue;
        }
        if (cache) {
            size_t s = emu_xbz_slot(cache, pfns[i]);
            uint8_t *cpage = cache->pages + s * EMU_PAGE_SIZE;
            if (cache->tags[s] != pfns[i]) {
                cache->misses++;
                cls[i] = CLS_RAW_MISS;
                nraw++;
                continue;
            }
            cache->hits++;
            long r = emu_xbzrle_encode(k, cpage, page, EMU_PAGE_SIZE,
                                       scratch + xbytes, XBZ_LIMIT);
            if (r < 0) {
                cache->overflows++;
                st->overflow++;
                cls[i] = CLS_RAW_MISS;      /* raw, and re-cached from out */
                nraw++;
                continue;
            }
            /* The guest may be writing the page while we read it, so the
             * cache is not refreshed from the page: applying the delta to
             * the cached copy gives exactly what the receiver rebuilds
             * (bytes written meanwhile are dirty again and sent next
             * round).  It also touches only the changed bytes. */
            if (r > 0) {
                size_t bad;
                emu_xbzrle_decode(scratch + xbytes, (size_t)r, cpage, EMU_PAGE_SIZE, &bad);
            }
            cls[i] = r ? CLS_XBZ : CLS_UNCHANGED;
            xlen[i] = (uint16_t)r;
            xbytes += (size_t)r;
            nxbz++;
            continue;
        }
        nraw++;
    }

    /* Pass 2: the records, in the order PAGE_DATA, ZERO_RUNS, XBZRLE. */
    uint8_t *o = out;
    if (nraw) {
        size_t len = 8 + 8 * nraw + (size_t)EMU_PAGE_SIZE * nraw;
        o += put_hdr(o, EMU_LIBXC_REC_PAGE_DATA, len);
        put32(o, (uint32_t)nraw);
        put32(o + 4, 0);
        uint8_t *pw = o + 8, *pg = o + 8 + 8 * nraw;
        for (size_t i = 0; i < n; i++) {
            if (cls[i] != CLS_RAW && cls[i] != CLS_RAW_MISS) {
                continue;
            }
            put64(pw, pfns[i]);             /* type NOTAB: 0 in bits 60-63 */
            pw += 8;
            memcpy(pg, mem + pfns[i] * EMU_PAGE_SIZE, EMU_PAGE_SIZE);
            if (cache) {
                /* Cache what was sent, read back from the output. */
                size_t s = emu_xbz_slot(cache, pfns[i]);
                if (cache->tags[s] != EMU_XBZ_EMPTY && cache->tags[s] != pfns[i]) {
                    cache->evictions++;
                }
                cache->tags[s] = pfns[i];
                memcpy(cache->pages + s * EMU_PAGE_SIZE, pg, EMU_PAGE_SIZE);
            }
            pg += EMU_PAGE_SIZE;
        }
        o = pg;
    }
    if (nzero) {
        size_t len = 8 + 16 * nruns;
        o += put_hdr(o, EMU_REC_ZERO_RUNS, len);
        put32(o, (uint32_t)nruns);
        put32(o + 4, 0);
        uint8_t *r = o + 8;
        for (size_t i = 0; i < n; i++) {
            if (cls[i] != CLS_ZERO) {
                continue;
            }
            size_t j = i + 1;
            while (j < n && cls[j] == CLS_ZERO && pfns[j] == pfns[j - 1] + 1) {
                j++;
            }
            put64(r, pfns[i]);
            put64(r + 8, j - i);
            r += 16;
            i = j - 1;
        }
        o = r;
    }
    if (nxbz) {
        size_t head = pad8(8 + 10 * nxbz);
        size_t len = head + xbytes;
        o += put_hdr(o, EMU_REC_XBZRLE_PAGES, len);
        put32(o, (uint32_t)nxbz);
        put32(o + 4, 0);
        uint8_t *pw = o + 8, *lw = o + 8 + 8 * nxbz, *dw = o + head;
        memset(lw, 0, head - 8 - 8 * nxbz);
        size_t src = 0;
        for (size_t i = 0; i < n; i++) {
            if (cls[i] != CLS_XBZ && cls[i] != CLS_UNCHANGED) {
                continue;
            }
            put64(pw, pfns[i]);
            pw += 8;
            put16(lw, xlen[i]);
            lw += 2;
            if (cls[i] == CLS_XBZ) {
                st->xbzrle++;
                memmove(dw, scratch + src, xlen[i]);
                dw += xlen[i];
                src += xlen[i];
            } else {
                st->unchanged++;
            }
        }
        size_t padded = pad8(len);
        memset(dw, 0, padded - len);
        o += padded;
    }
    st->raw = nraw;
    st->zero = nzero;
    if (flags & EMU_ENC_CRC) {
        size_t covered = (size_t)(o - out);
        uint32_t crc = emu_crc32c(k, 0, out, covered);
        o += put_hdr(o, EMU_REC_BATCH_CRC32C, 8);
        put32(o, crc);
        put32(o + 4, (uint32_t)covered);
        o += 8;
    }
    return (long)(o - out);
}

/* ---- apply ------------------------------------------------------------ */

/* Whether a PAGE_DATA pfn word's type carries a page of data. */
static inline bool type_has_data(unsigned type)
{
    return (type & 7) <= 4;
}

long emu_apply_page_data(const uint8_t *body, size_t len, uint8_t *mem,
                         size_t mem_len, bool dry_run, struct emu_err *err)
{
    size_t mem_pages = mem_len / EMU_PAGE_SIZE, ndata = 0;

    if (len < 8) {
        return fail(err, 0, "PAGE_DATA body of %zu bytes, expected at least 8", len);
    }
    uint32_t count = get32(body), res = get32(body + 4);
    if (res != 0) {
        return fail(err, 4, "PAGE_DATA reserved field is %#x, expected 0", res);
    }
    if (count == 0 || count > EMU_MAX_BATCH) {
        return fail(err, 0, "PAGE_DATA count %u, expected 1..%u", count, EMU_MAX_BATCH);
    }
    if (len - 8 < 8 * (size_t)count) {
        return fail(err, 8, "PAGE_DATA body of %zu bytes cannot hold %u pfn words", len, count);
    }
    for (size_t i = 0; i < count; i++) {
        uint64_t w = get64(body + 8 + 8 * i);
        unsigned type = (unsigned)(w >> EMU_PFN_TYPE_SHIFT);
        if (w & EMU_PFN_RES_MASK) {
            return fail(err, 8 + 8 * i, "pfn[%zu] %#llx has reserved bits set", i,
                        (unsigned long long)w);
        }
        if (type >= 5 && type <= 8) {
            return fail(err, 8 + 8 * i, "pfn[%zu] has invalid type %u", i, type);
        }
        if (type_has_data(type)) {
            if ((w & EMU_PFN_MASK) >= mem_pages) {
                return fail(err, 8 + 8 * i,
                            "pfn[%zu] %#llx is beyond guest memory of %zu pages", i,
                            (unsigned long long)(w & EMU_PFN_MASK), mem_pages);
            }
            ndata++;
        }
    }
    size_t expect = 8 + 8 * (size_t)count + ndata * EMU_PAGE_SIZE;
    if (len != expect) {
        return fail(err, 0, "PAGE_DATA length: expected 8 + %u*8 + %zu*4096 = %zu, got %zu",
                    count, ndata, expect, len);
    }
    if (!dry_run) {
        const uint8_t *pg = body + 8 + 8 * (size_t)count;
        size_t i = 0;
        while (i < count) {
            uint64_t w = get64(body + 8 + 8 * i);
            if (!type_has_data((unsigned)(w >> EMU_PFN_TYPE_SHIFT))) {
                i++;
                continue;
            }
            /* One copy per run of consecutive data pages: a whole-memory
             * save is a single 4 MiB copy per record instead of 1024. */
            uint64_t pfn = w & EMU_PFN_MASK;
            size_t run = 1;
            while (i + run < count) {
                uint64_t nw = get64(body + 8 + 8 * (i + run));
                if (!type_has_data((unsigned)(nw >> EMU_PFN_TYPE_SHIFT)) ||
                    (nw & EMU_PFN_MASK) != pfn + run) {
                    break;
                }
                run++;
            }
            memcpy(mem + pfn * EMU_PAGE_SIZE, pg, run * EMU_PAGE_SIZE);
            pg += run * EMU_PAGE_SIZE;
            i += run;
        }
    }
    return (long)ndata;
}

long emu_apply_zero_runs(const struct emu_kernels *k, const uint8_t *body,
                         size_t len, uint8_t *mem, size_t mem_len,
                         bool dry_run, struct emu_err *err)
{
    size_t mem_pages = mem_len / EMU_PAGE_SIZE;
    uint64_t total = 0;

    if (len < 8) {
        return fail(err, 0, "ZERO_RUNS body of %zu bytes, expected at least 8", len);
    }
    uint32_t count = get32(body), res = get32(body + 4);
    if (res != 0) {
        return fail(err, 4, "ZERO_RUNS reserved field is %#x, expected 0", res);
    }
    if (count == 0 || count > EMU_MAX_BATCH) {
        return fail(err, 0, "ZERO_RUNS count %u, expected 1..%u", count, EMU_MAX_BATCH);
    }
    if (len != 8 + 16 * (size_t)count) {
        return fail(err, 0, "ZERO_RUNS length: expected %zu, got %zu",
                    8 + 16 * (size_t)count, len);
    }
    for (size_t i = 0; i < count; i++) {
        uint64_t start = get64(body + 8 + 16 * i), np = get64(body + 16 + 16 * i);
        if (np == 0 || np > EMU_MAX_BATCH) {
            return fail(err, 16 + 16 * i, "zero run %zu of %llu pages, expected 1..%u", i,
                        (unsigned long long)np, EMU_MAX_BATCH);
        }
        total += np;
        if (total > EMU_MAX_BATCH) {
            return fail(err, 16 + 16 * i, "ZERO_RUNS cover more than %u pages", EMU_MAX_BATCH);
        }
        if (start >= mem_pages || np > mem_pages - start) {
            return fail(err, 8 + 16 * i,
                        "zero run %zu (%#llx+%llu) is beyond guest memory of %zu pages", i,
                        (unsigned long long)start, (unsigned long long)np, mem_pages);
        }
    }
    if (!dry_run) {
        for (size_t i = 0; i < count; i++) {
            uint64_t start = get64(body + 8 + 16 * i), np = get64(body + 16 + 16 * i);
            for (uint64_t p = start; p < start + np; p++) {
                uint8_t *page = mem + p * EMU_PAGE_SIZE;
                /* Reading first keeps never-touched destination memory
                 * unallocated (it reads as the shared zero page). */
                if (!emu_is_zero(k, page, EMU_PAGE_SIZE)) {
                    memset(page, 0, EMU_PAGE_SIZE);
                }
            }
        }
    }
    return (long)total;
}

long emu_apply_xbzrle(const uint8_t *body, size_t len, uint8_t *mem,
                      size_t mem_len, bool dry_run, struct emu_err *err)
{
    size_t mem_pages = mem_len / EMU_PAGE_SIZE;

    if (len < 8) {
        return fail(err, 0, "XBZRLE_PAGES body of %zu bytes, expected at least 8", len);
    }
    uint32_t count = get32(body), res = get32(body + 4);
    if (res != 0) {
        return fail(err, 4, "XBZRLE_PAGES reserved field is %#x, expected 0", res);
    }
    if (count == 0 || count > EMU_MAX_BATCH) {
        return fail(err, 0, "XBZRLE_PAGES count %u, expected 1..%u", count, EMU_MAX_BATCH);
    }
    size_t head = pad8(8 + 10 * (size_t)count);
    if (len < head) {
        return fail(err, 0, "XBZRLE_PAGES body of %zu bytes, the index alone needs %zu",
                    len, head);
    }
    const uint8_t *lens = body + 8 + 8 * (size_t)count;
    for (size_t p = 8 + 10 * (size_t)count; p < head; p++) {
        if (body[p]) {
            return fail(err, p, "XBZRLE_PAGES index padding is not zero");
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t pfn = get64(body + 8 + 8 * i);
        if (pfn >= mem_pages) {
            return fail(err, 8 + 8 * i, "xbzrle pfn[%zu] %#llx is beyond guest memory of %zu pages",
                        i, (unsigned long long)pfn, mem_pages);
        }
        uint16_t l = get16(lens + 2 * i);
        if (l >= EMU_PAGE_SIZE) {
            return fail(err, (size_t)(lens - body) + 2 * i,
                        "xbzrle length[%zu] %u, expected < %u", i, l, EMU_PAGE_SIZE);
        }
        total += l;
    }
    if (len != head + total) {
        return fail(err, 0, "XBZRLE_PAGES length: expected %zu + %zu, got %zu", head, total, len);
    }
    /* The pages that changed: validated all, then applied all. */
    const uint8_t *src[EMU_MAX_BATCH];
    uint8_t *dst[EMU_MAX_BATCH];
    size_t slen[EMU_MAX_BATCH], at[EMU_MAX_BATCH], nch = 0, off = head;
    for (size_t i = 0; i < count; i++) {
        uint16_t l = get16(lens + 2 * i);
        if (l) {
            src[nch] = body + off;
            slen[nch] = l;
            dst[nch] = mem ? mem + get64(body + 8 + 8 * i) * EMU_PAGE_SIZE : NULL;
            at[nch++] = i;
        }
        off += l;
    }
    size_t first_bad = emu_xbzrle_check_pages(src, slen, nch, EMU_PAGE_SIZE);
    if (first_bad < nch) {
        size_t bad;
        emu_xbzrle_decode(src[first_bad], slen[first_bad], NULL, EMU_PAGE_SIZE, &bad);
        return fail(err, (size_t)(src[first_bad] - body) + bad,
                    "xbzrle encoding of page %zu is malformed", at[first_bad]);
    }
    if (!dry_run) {
        emu_xbzrle_apply_pages(src, slen, dst, nch);
    }
    return (long)count;
}
