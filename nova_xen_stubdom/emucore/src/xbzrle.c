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
 * words), SSE2 (16) and AVX2 (32 bytes per compare), behind
 * emu_diff_accels; run boundaries come from that mask.  An AVX-512BW
 * entry (64 bytes per compare) was measured in the same runs as AVX2 and
 * was never faster on any mix (1-10% slower where the pass is bound by
 * memory: unchanged, 1 byte, random pages; equal where the walk over the
 * runs dominates), so it was dropped: no wider path slower than a
 * narrower one.
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

static size_t diff_int(const uint8_t *a, const uint8_t *b, size_t len,
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
static size_t diff_sse2(const uint8_t *a, const uint8_t *b, size_t len,
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

/* The bound of one mask word m (p: the word before it): its differing
 * bytes plus two for every run starting in it. */
#define WORD_BOUND(m, p) \
    ((size_t)__builtin_popcountll(m) \
     + 2 * (size_t)__builtin_popcountll((m) & ~(((m) << 1) | ((p) >> 63))))

/* The tail's share of the bound: its bits are already in mask, and the
 * word before the tail's is the last whole one. */
static inline size_t tail_bound(uint64_t any, const uint64_t *mask, size_t i,
                                size_t len)
{
    if (!any || i >= len) {
        return 0;
    }
    uint64_t m = mask[i >> 6], p = i ? mask[(i >> 6) - 1] : 0;
    return (size_t)__builtin_popcountll(m) + 2 * (size_t)__builtin_popcountll(m & ~((m << 1) | (p >> 63)));
}

__attribute__((target("avx2,popcnt")))
static size_t diff_avx2(const uint8_t *a, const uint8_t *b, size_t len,
                        uint64_t *mask)
{
    size_t words = (len + 63) / 64, i, bound = 0;
    uint64_t prev = 0;

    /* one word per step: two 32-byte compares */
    for (i = 0; i + 64 <= len; i += 64) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i y0 = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(a + i + 32));
        __m256i y1 = _mm256_loadu_si256((const __m256i *)(b + i + 32));
        uint32_t m0 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x0, y0));
        uint32_t m1 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x1, y1));
        uint64_t m = ~(((uint64_t)m1 << 32) | m0);
        if (m) {                /* rare on the pages worth walking */
            bound += WORD_BOUND(m, prev);
        }
        prev = m;
        mask[i >> 6] = m;
    }
    uint64_t tail = diff_rest(a, b, i, len, words, mask);
    return bound + tail_bound(tail, mask, i, len);
}

#endif /* __x86_64__ || __i386__ */

const struct emu_accel emu_diff_accels[] = {
#if defined(__x86_64__) || defined(__i386__)
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

/* Copy n (>= 1) bytes: runs of changed bytes are mostly short, and a call
 * to memcpy with a variable length costs more than the copy itself; up to
 * 16 bytes go as overlapping fixed-size copies within [0, n) only, and 1-3
 * bytes (most runs of a page with 5% or 30% of its bytes changed) as three
 * byte moves without a loop whose trip count the CPU would mispredict. */
static inline void copy_run(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n < 4) {
        dst[0] = src[0];
        dst[n >> 1] = src[n >> 1];
        dst[n - 1] = src[n - 1];
    } else if (n <= 8) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else if (n <= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
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
    size_t least = k->diff(old, new_, len, mask);
    if (!least) {
        return 0;               /* unchanged: no walk over the mask */
    }
    if (least > dlen) {
        return -1;              /* cannot fit (a random page): no walk */
    }
    /* Each set bit of t is a boundary: the mask changes there from equal
     * to differing (an nzrun starts) or back (it ends), alternately. */
    for (size_t w = 0; w < words; w++) {
        uint64_t x = mask[w];
        if (!(x | carry)) {
            continue;           /* equal bytes inside a zrun */
        }
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

/* One ULEB128 length at src[*i] (at most 2 bytes, in [0, slen)): its value,
 * or SIZE_MAX when malformed or cut off; *i moves past it.  Lengths of
 * 128 and more are rare in both runs (zruns of 5%/30% mixes, nzruns of
 * any mix), so the one branch is well predicted. */
static inline size_t uleb_next(const uint8_t *src, size_t slen, size_t *i)
{
    size_t at = *i, v = src[at];
    if (v & 0x80) {
        if (slen - at < 2 || (src[at + 1] & 0x80)) {
            return SIZE_MAX;
        }
        v = (v & 0x7f) | ((size_t)src[at + 1] << 7);
        at++;
    }
    *i = at + 1;
    return v;
}

/* One page's walk.  Each run's place depends on the lengths read before
 * it, so a walk is a chain of dependent loads: a single walk leaves the
 * core idle for most of a load's latency.  Stepping two pages' walks in
 * turn lets the CPU overlap the two chains (the pages are independent);
 * this is what lets "validate every page, then apply" keep up with a
 * decoder that applies as it goes. */
struct walk {
    const uint8_t *src;
    size_t slen, i, d;
    unsigned bad;
};

/* One length at w->src[w->i] (at most 2 bytes, validated or checked by
 * the caller); w->i moves past it.  Lengths >= 128 are rare in both kinds
 * of run, so the branch is well predicted. */
static inline size_t walk_len(struct walk *w)
{
    size_t v = w->src[w->i];
    if (v & 0x80) {
        v = (v & 0x7f) | ((size_t)w->src[w->i + 1] << 7);
        w->i++;
    }
    w->i++;
    return v;
}

/* Whether the length at w->src[w->i] is there and well formed (the
 * first byte present, the second too when the first asks for it, and no
 * third). */
static inline bool len_ok(const struct walk *w)
{
    return w->i < w->slen &&
           (!(w->src[w->i] & 0x80) ||
            (w->slen - w->i >= 2 && !(w->src[w->i + 1] & 0x80)));
}

/* Validation step (one zrun, one nzrun): it writes nothing, so the
 * page's bound (d only grows) and the input's (i only grows) are checked
 * once at the end, and empty runs are gathered into one flag; a length
 * cut off or malformed ends the walk at once. */
static inline void check_step(struct walk *w)
{
    size_t at = w->i, v;
    if (!len_ok(w)) {
        goto bad;
    }
    v = walk_len(w);
    w->bad |= (v == 0) & (at != 0);     /* only the first zrun may be empty */
    w->d += v;
    if (!len_ok(w)) {
        goto bad;                       /* nzrun missing or cut off */
    }
    v = walk_len(w);
    w->bad |= v == 0;
    w->d += v;
    w->i += v;
    return;
bad:
    w->bad = 1;
    w->i = w->slen;
}

static inline bool walk_ok(const struct walk *w, size_t dlen)
{
    return !w->bad && w->i == w->slen && w->d <= dlen;
}

/* Apply step over a validated encoding. */
static inline void apply_step(struct walk *w, uint8_t *dst)
{
    w->d += walk_len(w);
    size_t v = walk_len(w);
    copy_run(dst + w->d, w->src + w->i, v);
    w->d += v;
    w->i += v;
}

size_t emu_xbzrle_check_pages(const uint8_t *const *src, const size_t *slen,
                              size_t n, size_t dlen)
{
    size_t p = 0;

    for (; p + 1 < n; p += 2) {
        struct walk a = {src[p], slen[p], 0, 0, 0};
        struct walk b = {src[p + 1], slen[p + 1], 0, 0, 0};
        while (a.i < a.slen && b.i < b.slen) {
            check_step(&a);
            check_step(&b);
        }
        while (a.i < a.slen) {
            check_step(&a);
        }
        while (b.i < b.slen) {
            check_step(&b);
        }
        if (!walk_ok(&a, dlen)) {
            return p;
        }
        if (!walk_ok(&b, dlen)) {
            return p + 1;
        }
    }
    if (p < n) {
        struct walk a = {src[p], slen[p], 0, 0, 0};
        while (a.i < a.slen) {
            check_step(&a);
        }
        if (!walk_ok(&a, dlen)) {
            return p;
        }
    }
    return n;
}

void emu_xbzrle_apply_pages(const uint8_t *const *src, const size_t *slen,
                            uint8_t *const *dst, size_t n)
{
    size_t p = 0;

    for (; p + 1 < n; p += 2) {
        struct walk a = {src[p], slen[p], 0, 0, 0};
        struct walk b = {src[p + 1], slen[p + 1], 0, 0, 0};
        while (a.i < a.slen && b.i < b.slen) {
            apply_step(&a, dst[p]);
            apply_step(&b, dst[p + 1]);
        }
        while (a.i < a.slen) {
            apply_step(&a, dst[p]);
        }
        while (b.i < b.slen) {
            apply_step(&b, dst[p + 1]);
        }
    }
    if (p < n) {
        struct walk a = {src[p], slen[p], 0, 0, 0};
        while (a.i < a.slen) {
            apply_step(&a, dst[p]);
        }
    }
}

long emu_xbzrle_decode(const uint8_t *src, size_t slen, uint8_t *dst,
                       size_t dlen, size_t *err_off)
{
    size_t i = 0, d = 0, v;

    if (!dst) {
        struct walk w = {src, slen, 0, 0, 0};
        while (w.i < w.slen) {
            check_step(&w);
        }
        if (walk_ok(&w, dlen)) {
            return (long)w.d;
        }
        /* invalid: the precise walk below finds where */
    }
    while (i < slen) {
        size_t at = i;
        v = uleb_next(src, slen, &i);
        /* bad zrun: malformed, empty mid-page, or past the page (SIZE_MAX
         * fails the last test) */
        if ((at != 0 && v == 0) || v > dlen - d) {
            *err_off = at;
            return -1;
        }
        d += v;
        at = i;
        v = i < slen ? uleb_next(src, slen, &i) : SIZE_MAX;
        /* bad nzrun: missing, malformed, empty, past page or input */
        if (v == 0 || v > dlen - d || v > slen - i) {
            *err_off = at;
            return -1;
        }
        if (dst) {
            copy_run(dst + d, src + i, v);
        }
        d += v;
        i += v;
    }
    return (long)d;
}

void emu_xbzrle_apply_valid(const uint8_t *src, size_t slen, uint8_t *dst)
{
    emu_xbzrle_apply_pages(&src, &slen, &dst, 1);
}
