/*
 * xbzrle.c - XBZRLE in QEMU's format (docs/xbzrle.txt):
 *
 *   page  = zrun nzrun | zrun nzrun page
 *   zrun  = length                 (bytes equal in old and new)
 *   nzrun = length byte...         (bytes that differ; the NEW bytes)
 *   length = ULEB128, at most 2 bytes (runs are < 16 KiB)
 *
 * A trailing zrun is omitted; a zrun may be empty only at the start; an
 * nzrun is never empty.  Runs are byte exact, so every encoder produces the
 * same bytes, which the golden vectors in tests/native check.
 *
 * The hot loop is the byte-difference mask of a page: portable (8-byte
 * words), SSE2 (16), AVX2 (32) and AVX-512BW (64 bytes per compare),
 * behind emu_diff_accels; run boundaries come from that mask.
 */
#include <string.h>

#include "emucore.h"

/* Bit i of mask (word i / 64, bit i % 64) is set when a[i] != b[i], for
 * i < len; the bits past len in the last word are clear.  The encoder then
 * finds every run boundary with a count-trailing-zeros on these words, so a
 * page costs one vector pass plus a few instructions per run -- instead of
 * a fresh scan from every boundary, which short runs (a page with 5% or 30%
 * of its bytes changed) turn into a scalar loop. */

/* Differing bytes of 8 bytes as 8 bits (portable): a byte's top bit after
 * ((x & 0x7f..) + 0x7f..) | x is set iff the byte is non-zero; the
 * multiply gathers the eight top bits into the high byte. */
static inline unsigned diff8(uint64_t x)
{
    const uint64_t lo7 = 0x7f7f7f7f7f7f7f7fULL;
    uint64_t y = (((x & lo7) + lo7) | x) & ~lo7;
    return (unsigned)(((y >> 7) * 0x0102040810204080ULL) >> 56);
}

static uint64_t diff_tail(const uint8_t *a, const uint8_t *b, size_t from,
                          size_t len, uint64_t *mask)
{
    uint64_t any = 0;
    for (size_t i = from; i < len; i++) {
        if (a[i] != b[i]) {
            mask[i >> 6] |= 1ULL << (i & 63);
            any = 1;
        }
    }
    return any;
}

/* After whole 64-byte words from i (a multiple of 64): clear the words
 * left and mark the tail's bytes. */
static inline uint64_t diff_rest(const uint8_t *a, const uint8_t *b, size_t i,
                                 size_t len, size_t words, uint64_t *mask)
{
    if (i >= len) {
        return 0;
    }
    memset(mask + (i >> 6), 0, (words - (i >> 6)) * sizeof(*mask));
    return diff_tail(a, b, i, len, mask);
}

static bool diff_int(const uint8_t *a, const uint8_t *b, size_t len,
                     uint64_t *mask)
{
    size_t words = (len + 63) / 64, i;

    uint64_t any = 0;

    memset(mask, 0, words * sizeof(*mask));
    for (i = 0; i + 8 <= len; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        any |= x ^ y;
        mask[i >> 6] |= (uint64_t)diff8(x ^ y) << (i & 63);
    }
    return (any | diff_tail(a, b, i, len, mask)) != 0;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("sse2")))
static bool diff_sse2(const uint8_t *a, const uint8_t *b, size_t len,
                      uint64_t *mask)
{
    size_t words = (len + 63) / 64, i;

    uint64_t any = 0;

    memset(mask, 0, words * sizeof(*mask));
    for (i = 0; i + 16 <= len; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(b + i));
        uint64_t m = (~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, y))) & 0xffffu;
        any |= m;
        mask[i >> 6] |= m << (i & 63);
    }
    return (any | diff_tail(a, b, i, len, mask)) != 0;
}

__attribute__((target("avx2")))
static bool diff_avx2(const uint8_t *a, const uint8_t *b, size_t len,
                      uint64_t *mask)
{
    size_t words = (len + 63) / 64, i;
    uint64_t any = 0;

    /* one word per step: two 32-byte compares */
    for (i = 0; i + 64 <= len; i += 64) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i y0 = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(a + i + 32));
        __m256i y1 = _mm256_loadu_si256((const __m256i *)(b + i + 32));
        uint32_t m0 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x0, y0));
        uint32_t m1 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x1, y1));
        uint64_t m = ~(((uint64_t)m1 << 32) | m0);
        any |= m;
        mask[i >> 6] = m;
    }
    return (any | diff_rest(a, b, i, len, words, mask)) != 0;
}

__attribute__((target("avx512f,avx512bw")))
static bool diff_avx512(const uint8_t *a, const uint8_t *b, size_t len,
                        uint64_t *mask)
{
    size_t words = (len + 63) / 64, i;
    uint64_t any = 0;

    for (i = 0; i + 64 <= len; i += 64) {
        __m512i x = _mm512_loadu_si512((const void *)(a + i));
        __m512i y = _mm512_loadu_si512((const void *)(b + i));
        uint64_t m = _mm512_cmpneq_epi8_mask(x, y);
        any |= m;
        mask[i >> 6] = m;
    }
    return (any | diff_rest(a, b, i, len, words, mask)) != 0;
}
#endif /* __x86_64__ || __i386__ */

const struct emu_accel emu_diff_accels[] = {
#if defined(__x86_64__) || defined(__i386__)
    { "avx512bw", (const void *)diff_avx512, EMU_CPU_AVX512BW | EMU_CPU_AVX2 | EMU_CPU_SSE2 },
    { "avx2", (const void *)diff_avx2, EMU_CPU_AVX2 | EMU_CPU_SSE2 },
    { "sse2", (const void *)diff_sse2, EMU_CPU_SSE2 },
#endif /* __x86_64__ || __i386__ */
    { "int", (const void *)diff_int, 0 },
};
const size_t emu_diff_accels_len = sizeof(emu_diff_accels) / sizeof(emu_diff_accels[0]);

/* Bytes ULEB128 needs for v (v < 2^14). */
static inline size_t uleb_len(size_t v)
{
    return v < 0x80 ? 1 : 2;
}

/* Write v (< 2^14) as ULEB128 at p; returns bytes written. */
static inline size_t uleb_put(uint8_t *p, size_t v)
{
    if (v < 0x80) {
        p[0] = (uint8_t)v;
        return 1;
    }
    p[0] = (uint8_t)((v & 0x7f) | 0x80);
    p[1] = (uint8_t)(v >> 7);
    return 2;
}

/* Read a ULEB128 of at most 2 bytes from p[0..avail); -1 when malformed. */
static inline int uleb_get(const uint8_t *p, size_t avail, size_t *v)
{
    if (avail < 1) {
        return -1;
    }
    if (!(p[0] & 0x80)) {
        *v = p[0];
        return 1;
    }
    if (avail < 2 || (p[1] & 0x80)) {
        return -1;
    }
    *v = (size_t)(p[0] & 0x7f) | ((size_t)p[1] << 7);
    return 2;
}

/* Copy n bytes: runs of changed bytes are mostly short, and a call to
 * memcpy with a variable length costs more than the copy itself; up to 16
 * bytes go as two overlapping fixed-size copies, within [0, n) only. */
static inline void copy_run(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++) {
            dst[i] = src[i];
        }
    } else {
        memcpy(dst, src, n);
    }
}

/* Append one zrun (zr bytes) and nzrun (nz bytes of new_ from j) to dst;
 * false when they do not fit in dlen. */
static inline bool put_runs(uint8_t *dst, size_t dlen, size_t *d, size_t zr,
                            const uint8_t *new_, size_t j, size_t nz)
{
    size_t at = *d;
    if (uleb_len(zr) + uleb_len(nz) + nz > dlen - at) {
        return false;
    }
    at += uleb_put(dst + at, zr);
    at += uleb_put(dst + at, nz);
    copy_run(dst + at, new_ + j, nz);
    *d = at + nz;
    return true;
}

long emu_xbzrle_encode(const struct emu_kernels *k, const uint8_t *old,
                       const uint8_t *new_, size_t len, uint8_t *dst,
                       size_t dlen)
{
    uint64_t mask[EMU_XBZ_MAX_LEN / 64];
    size_t words = (len + 63) / 64, d = 0;
    size_t zstart = 0, nzstart = 0;     /* where the current runs began */
    bool in_nz = false;
    uint64_t carry = 0;                 /* bit 63 of the previous word */

    if (len >= EMU_XBZ_MAX_LEN) {
        return -1;              /* lengths would not fit 2-byte ULEB128 */
    }
    if (!k->diff(old, new_, len, mask)) {
        return 0;               /* unchanged: no walk over the mask */
    }
    /* Each set bit of t is a boundary: the mask changes there from equal
     * to differing (an nzrun starts) or back (it ends), alternately. */
    for (size_t w = 0; w < words; w++) {
        uint64_t x = mask[w];
        uint64_t t = x ^ ((x << 1) | carry);
        carry = x >> 63;
        while (t) {
            size_t p = (w << 6) + (size_t)__builtin_ctzll(t);
            t &= t - 1;
            if (!in_nz) {
                nzstart = p;
            } else {
                if (!put_runs(dst, dlen, &d, nzstart - zstart, new_,
                              nzstart, p - nzstart)) {
                    return -1;
                }
                zstart = p;
            }
            in_nz = !in_nz;
        }
    }
    /* an nzrun reaching the end (the bits past len are clear, so one that
     * ends at len inside the last word was closed above); a trailing
     * zrun is omitted; 0 when all equal */
    if (in_nz && !put_runs(dst, dlen, &d, nzstart - zstart, new_, nzstart,
                           len - nzstart)) {
        return -1;
    }
    return (long)d;
}

long emu_xbzrle_decode(const uint8_t *src, size_t slen, uint8_t *dst,
                       size_t dlen, size_t *err_off)
{
    size_t i = 0, d = 0, v;
    int n;

    while (i < slen) {
        n = uleb_get(src + i, slen - i, &v);
        if (n < 0 || (i != 0 && v == 0) || v > dlen - d) {
            *err_off = i;       /* bad zrun: malformed, empty mid-page, or past the page */
            return -1;
        }
        i += (size_t)n;
        d += v;
        n = uleb_get(src + i, slen - i, &v);
        if (n < 0 || v == 0 || v > dlen - d || v > slen - i - (size_t)n) {
            *err_off = i;       /* bad nzrun: malformed, empty, past page or input */
            return -1;
        }
        i += (size_t)n;
        if (dst) {
            memcpy(dst + d, src + i, v);
        }
        d += v;
        i += v;
    }
    return (long)d;
}

void emu_xbzrle_apply_valid(const uint8_t *src, size_t slen, uint8_t *dst)
{
    size_t i = 0, d = 0, v;

    while (i < slen) {
        /* validated: every length is well formed and in bounds */
        v = src[i];
        if (v & 0x80) {
            v = (v & 0x7f) | ((size_t)src[i + 1] << 7);
            i += 2;
        } else {
            i += 1;
        }
        d += v;
        v = src[i];
        if (v & 0x80) {
            v = (v & 0x7f) | ((size_t)src[i + 1] << 7);
            i += 2;
        } else {
            i += 1;
        }
        copy_run(dst + d, src + i, v);
        d += v;
        i += v;
    }
}

