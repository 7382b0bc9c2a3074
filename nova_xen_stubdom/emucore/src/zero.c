/*
 * zero.c - is a buffer all zero?  Portable, SSE2 and AVX2 variants behind
 * one contract (any alignment, any length), chosen at run time.
 */
#include <string.h>

#include "emucore.h"

/* Portable: bytes up to 8-byte alignment, then words 4 at a time. */
static bool zero_int(const void *buf, size_t len)
{
    const uint8_t *p = buf, *end = p + len;

    while (p < end && ((uintptr_t)p & 7)) {
        if (*p++) {
            return false;
        }
    }
    while (end - p >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8);
        memcpy(&w1, p + 8, 8);
        memcpy(&w2, p + 16, 8);
        memcpy(&w3, p + 24, 8);
        if (w0 | w1 | w2 | w3) {
            return false;
        }
        p += 32;
    }
    while (p < end) {
        if (*p++) {
            return false;
        }
    }
    return true;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* SSE2: 64 bytes per step with unaligned loads; the tail is one last
 * overlapping 64-byte block, so no byte loop for long buffers. */
__attribute__((target("sse2")))
static bool zero_sse2(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    const __m128i z = _mm_setzero_si128();

    if (len < 64) {
        return zero_int(buf, len);
    }
    const uint8_t *last = p + len - 64;
    for (;;) {
        __m128i v = _mm_or_si128(
            _mm_or_si128(_mm_loadu_si128((const __m128i *)p),
                         _mm_loadu_si128((const __m128i *)(p + 16))),
            _mm_or_si128(_mm_loadu_si128((const __m128i *)(p + 32)),
                         _mm_loadu_si128((const __m128i *)(p + 48))));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(v, z)) != 0xffff) {
            return false;
        }
        if (p == last) {
            return true;
        }
        p += 64;
        if (p > last) {
            p = last;
        }
    }
}

/* AVX2: 128 bytes per step, same overlapping tail. */
__attribute__((target("avx2")))
static bool zero_avx2(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    if (len < 128) {
        return zero_sse2(buf, len);
    }
    const uint8_t *last = p + len - 128;
    for (;;) {
        __m256i v = _mm256_or_si256(
            _mm256_or_si256(_mm256_loadu_si256((const __m256i *)p),
                            _mm256_loadu_si256((const __m256i *)(p + 32))),
            _mm256_or_si256(_mm256_loadu_si256((const __m256i *)(p + 64)),
                            _mm256_loadu_si256((const __m256i *)(p + 96))));
        if (!_mm256_testz_si256(v, v)) {
            return false;
        }
        if (p == last) {
            return true;
        }
        p += 128;
        if (p > last) {
            p = last;
        }
    }
}
#endif /* __x86_64__ || __i386__ */

const struct emu_accel emu_zero_accels[] = {
#if defined(__x86_64__) || defined(__i386__)
    { "avx2", (const void *)zero_avx2, EMU_CPU_AVX2 | EMU_CPU_SSE2 },
    { "sse2", (const void *)zero_sse2, EMU_CPU_SSE2 },
#endif /* __x86_64__ || __i386__ */
    { "int", (const void *)zero_int, 0 },
};
const size_t emu_zero_accels_len = sizeof(emu_zero_accels) / sizeof(emu_zero_accels[0]);
