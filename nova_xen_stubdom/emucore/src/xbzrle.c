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
 * The run finder is the hot loop: portable (8-byte words), SSE2 (16) and
 * AVX2 (32 bytes per compare), behind emu_run_accels.
 */
#include <string.h>

#include "emucore.h"

/* Index of the lowest byte that is zero (want_equal) / non-zero in the
 * xor word x, 8 when none.  Little endian: byte 0 is the lowest. */
static inline unsigned word_first(uint64_t x, bool want_equal)
{
    uint64_t m;
    if (want_equal) {
        /* Exact for the lowest zero byte (false hits only above it). */
        m = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
    } else {
        m = x;
    }
    return m ? (unsigned)(__builtin_ctzll(m) >> 3) : 8;
}

static size_t run_int(const uint8_t *a, const uint8_t *b, size_t off,
                      size_t len, bool want_equal)
{
    size_t i = off;

    while (i + 8 <= len) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        unsigned k = word_first(x ^ y, want_equal);
        if (k < 8) {
            return i + k;
        }
        i += 8;
    }
    for (; i < len; i++) {
        if ((a[i] == b[i]) == want_equal) {
            return i;
        }
    }
    return len;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("sse2")))
static size_t run_sse2(const uint8_t *a, const uint8_t *b, size_t off,
                       size_t len, bool want_equal)
{
    size_t i = off;
    /* movemask of cmpeq has a 1 for every equal byte; flip it when we
     * look for the first differing byte. */
    unsigned flip = want_equal ? 0 : 0xffff;

    while (i + 16 <= len) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(b + i));
        unsigned m = ((unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, y))) ^ flip;
        if (m) {
            return i + __builtin_ctz(m);
        }
        i += 16;
    }
    return run_int(a, b, i, len, want_equal);
}

__attribute__((target("avx2")))
static size_t run_avx2(const uint8_t *a, const uint8_t *b, size_t off,
                       size_t len, bool want_equal)
{
    size_t i = off;
    uint32_t flip = want_equal ? 0 : 0xffffffffu;

    /* Two vectors per step: changed pages are mostly long equal stretches. */
    while (i + 64 <= len) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i y0 = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(a + i + 32));
        __m256i y1 = _mm256_loadu_si256((const __m256i *)(b + i + 32));
        uint32_t m0 = ((uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x0, y0))) ^ flip;
        uint32_t m1 = ((uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x1, y1))) ^ flip;
        if (m0 | m1) {
            uint64_t m = ((uint64_t)m1 << 32) | m0;
            return i + (size_t)__builtin_ctzll(m);
        }
        i += 64;
    }
    return run_sse2(a, b, i, len, want_equal);
}
#endif /* __x86_64__ || __i386__ */

const struct emu_accel emu_run_accels[] = {
#if defined(__x86_64__) || defined(__i386__)
    { "avx2", (const void *)run_avx2, EMU_CPU_AVX2 | EMU_CPU_SSE2 },
    { "sse2", (const void *)run_sse2, EMU_CPU_SSE2 },
#endif /* __x86_64__ || __i386__ */
    { "int", (const void *)run_int, 0 },
};
const size_t emu_run_accels_len = sizeof(emu_run_accels) / sizeof(emu_run_accels[0]);

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

long emu_xbzrle_encode(const struct emu_kernels *k, const uint8_t *old,
                       const uint8_t *new_, size_t len, uint8_t *dst,
                       size_t dlen)
{
    size_t i = 0, d = 0;

    if (len >= (1u << 14)) {
        return -1;              /* lengths would not fit 2-byte ULEB128 */
    }
    while (i < len) {
        size_t j = k->run(old, new_, i, len, false);     /* end of zrun */
        if (j == len) {
            return (long)d;     /* trailing zrun omitted; 0 if all equal */
        }
        size_t e = k->run(old, new_, j, len, true);      /* end of nzrun */
        size_t zr = j - i, nz = e - j;
        size_t need = uleb_len(zr) + uleb_len(nz) + nz;
        if (need > dlen - d) {
            return -1;
        }
        d += uleb_put(dst + d, zr);
        d += uleb_put(dst + d, nz);
        memcpy(dst + d, new_ + j, nz);
        d += nz;
        i = e;
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
