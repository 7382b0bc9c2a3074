/*
 * emucore.h - the pure C kernels behind nova_xen_stubdom._emucore.
 *
 * Nothing here includes Python.h: the same objects are linked into the
 * libFuzzer harness (tests/fuzz/) and the Python module (src/module.c).
 * No function keeps state between calls; which accelerator runs is chosen
 * by the caller (the module keeps its choice in module state).
 */
#ifndef EMUCORE_H
#define EMUCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emucore_stream.h"

/* ---- accelerator tables (const, ordered by preference) ---------------- */

typedef bool (*emu_zero_fn)(const void *buf, size_t len);
typedef uint32_t (*emu_crc_fn)(uint32_t crc, const void *buf, size_t len);
/* Bit i of mask[i / 64] set iff a[i] != b[i], for i < len (len <
 * EMU_XBZ_MAX_LEN); bits past len clear.  mask holds (len + 63) / 64
 * words.  Returns 0 when no byte differs, else a lower bound (>= 1) of
 * the XBZRLE encoding's size: the accelerators that count differing
 * bytes and runs cheaply return those plus two length bytes per run, so
 * a page that cannot fit is refused before it is walked. */
typedef size_t (*emu_diff_fn)(const uint8_t *a, const uint8_t *b, size_t len,
                              uint64_t *mask);

struct emu_accel {
    const char *name;
    const void *fn;            /* one of the *_fn types above */
    unsigned need;             /* EMU_CPU_* bits the host must have */
};

#define EMU_CPU_SSE2   (1u << 0)
#define EMU_CPU_SSE42  (1u << 1)
#define EMU_CPU_AVX2   (1u << 2)
#define EMU_CPU_POPCNT (1u << 3)
#define EMU_CPU_AVX512BW (1u << 4)

/* Feature bits of the running CPU (cpuid; 0 off x86). */
unsigned emu_cpu_features(void);

extern const struct emu_accel emu_zero_accels[];
extern const size_t emu_zero_accels_len;
extern const struct emu_accel emu_crc_accels[];
extern const size_t emu_crc_accels_len;
extern const struct emu_accel emu_diff_accels[];
extern const size_t emu_diff_accels_len;

/* Index of the first entry of table usable with features; the last entry
 * of every table is the portable one, needing nothing. */
size_t emu_accel_best(const struct emu_accel *table, size_t len, unsigned features);

/* The kernels one caller uses together. */
struct emu_kernels {
    emu_zero_fn zero;
    emu_crc_fn crc;
    emu_diff_fn diff;
};

/* ---- zero detection ---------------------------------------------------- */

/* Whether buf[0..len) is all zero.  The inline pre-check samples the first,
 * middle and last byte: a non-zero page almost always fails there, and those
 * three bytes sit in at most three cache lines, so the full scan (which
 * would pull the whole page through the cache) is skipped for most data. */
static inline bool emu_is_zero(const struct emu_kernels *k, const void *buf,
                               size_t len)
{
    const uint8_t *p = buf;
    if (len == 0) {
        return true;
    }
    if (p[0] | p[len / 2] | p[len - 1]) {
        return false;
    }
    return k->zero(buf, len);
}

/* ---- CRC32C ------------------------------------------------------------ */

/* crc32c of buf continuing from crc (0 to start), same convention as
 * zlib's crc32: pre- and post-inverted. */
static inline uint32_t emu_crc32c(const struct emu_kernels *k, uint32_t crc,
                                  const void *buf, size_t len)
{
    return ~k->crc(~crc, buf, len);
}

/* ---- XBZRLE ------------------------------------------------------------ */

/* Pages longer than this do not fit XBZRLE's 2-byte ULEB128 lengths. */
#define EMU_XBZ_MAX_LEN (1u << 14)

/* Encode new against old (len bytes each) into dst (dlen bytes).
 * Returns the encoded length, 0 when the pages are equal, -1 when the
 * encoding would not fit in dlen ("doesn't fit": send the page raw). */
long emu_xbzrle_encode(const struct emu_kernels *k, const uint8_t *old,
                       const uint8_t *new_, size_t len, uint8_t *dst,
                       size_t dlen);

/* Decode src (slen bytes) over dst (dlen bytes, holding the old page).
 * dst == NULL only validates.  Returns the length of page covered, or -1
 * with *err_off set to the offending byte of src. */
long emu_xbzrle_decode(const uint8_t *src, size_t slen, uint8_t *dst,
                       size_t dlen, size_t *err_off);

/* Apply src over dst once emu_xbzrle_decode(src, slen, NULL, dlen, ...)
 * has validated it against the same dlen: the second pass of "validate,
 * then apply" (a hostile stream changes nothing) skips every check. */
void emu_xbzrle_apply_valid(const uint8_t *src, size_t slen, uint8_t *dst);

/* "Validate, then apply" for n pages at once, two pages' walks in step
 * (their chains of dependent loads overlap).  check: the index of the
 * first page whose src[p] (slen[p] bytes) is not a valid encoding of a
 * dlen-byte page (emu_xbzrle_decode tells where), n when all are.
 * apply: each validated src[p] over dst[p]. */
size_t emu_xbzrle_check_pages(const uint8_t *const *src, const size_t *slen,
                              size_t n, size_t dlen);
void emu_xbzrle_apply_pages(const uint8_t *const *src, const size_t *slen,
                            uint8_t *const *dst, size_t n);

/* ---- dirty bitmaps (bit i of byte i/8 is pfn i) ----------------------- */

uint64_t emu_bitmap_count(const uint8_t *bm, uint64_t npages);
void emu_bitmap_clear(uint8_t *bm, uint64_t npages);
void emu_bitmap_merge(uint8_t *dst, const uint8_t *src, uint64_t npages);
/* Up to max pfns of set bits in [start, npages) into out; *next is where
 * to resume (npages when done).  Returns how many were stored. */
size_t emu_bitmap_pfns(const uint8_t *bm, uint64_t npages, uint64_t start,
                       uint64_t *out, size_t max, uint64_t *next);

/* ---- XBZRLE page cache (direct mapped by pfn) ------------------------- */

struct emu_xbz_cache {
    uint64_t *tags;            /* pfn stored in each slot, EMU_XBZ_EMPTY if none */
    uint8_t *pages;            /* nslots * EMU_PAGE_SIZE */
    size_t nslots;             /* power of two */
    unsigned shift;            /* 64 - log2(nslots) */
    uint64_t hits, misses, overflows, evictions;
};
#define EMU_XBZ_EMPTY UINT64_MAX

int emu_xbz_cache_init(struct emu_xbz_cache *c, size_t capacity_bytes);
void emu_xbz_cache_free(struct emu_xbz_cache *c);
void emu_xbz_cache_clear(struct emu_xbz_cache *c);
/* Slot that pfn maps to. */
size_t emu_xbz_slot(const struct emu_xbz_cache *c, uint64_t pfn);
void emu_xbz_cache_invalidate(struct emu_xbz_cache *c, uint64_t pfn);
size_t emu_xbz_cache_used(const struct emu_xbz_cache *c);

/* ---- page batches ------------------------------------------------------ */

#define EMU_ENC_ZERO   (1u << 0)   /* zero pages as ZERO_RUNS */
#define EMU_ENC_XBZRLE (1u << 1)   /* XBZRLE_PAGES against the cache */
#define EMU_ENC_CRC    (1u << 2)   /* BATCH_CRC32C after the batch */

struct emu_enc_stats {
    size_t raw, zero, xbzrle, unchanged, overflow;
};

struct emu_err {
    size_t offset;             /* byte offset inside the record body / input */
    char msg[200];
};

/* Bytes emu_encode_batch may need for n pages (records + scratch). */
size_t emu_encode_bound(size_t n);

/* Encode the pages pfns[0..n) of mem (page p at p * 4096) as the records
 * of one batch into out.  Returns bytes written, or -1 with err filled. */
long emu_encode_batch(const struct emu_kernels *k, const uint8_t *mem,
                      size_t mem_len, const uint64_t *pfns, size_t n,
                      uint8_t *out, size_t out_cap, unsigned flags,
                      struct emu_xbz_cache *cache, struct emu_enc_stats *st,
                      struct emu_err *err);

/* Apply one record body to mem (dry_run: validate only, write nothing).
 * Return the number of pages it covers, or -1 with err filled; a body that
 * validated with dry_run never fails when applied. */
long emu_apply_page_data(const uint8_t *body, size_t len, uint8_t *mem,
                         size_t mem_len, bool dry_run, struct emu_err *err);
long emu_apply_zero_runs(const struct emu_kernels *k, const uint8_t *body,
                         size_t len, uint8_t *mem, size_t mem_len,
                         bool dry_run, struct emu_err *err);
long emu_apply_xbzrle(const uint8_t *body, size_t len, uint8_t *mem,
                      size_t mem_len, bool dry_run, struct emu_err *err);

#endif /* EMUCORE_H */
