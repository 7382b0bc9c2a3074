/*
 * xbzrle_bench.c - XBZRLE kernels page by page, in C, on five mixes:
 * unchanged, one byte, 5% and 30% of bytes changed, random.
 *
 * Prints, per mix, encode and decode throughput (GB/s of page input) of
 * every run-finder accelerator of ours beside memcpy measured in the same
 * run.  Built with -DWITH_QEMU and linked with QEMU's own
 * migration/xbzrle.c (tools/bench-xbzrle.sh does that when given a QEMU
 * checkout; no QEMU code is part of this project), it also times QEMU's
 * encoder and single-pass decoder on the same pages and checks that both
 * encoders produce the same bytes wherever both fit.
 *
 * Our decode is timed as the stream reader runs an XBZRLE_PAGES record
 * (emu_apply_xbzrle): validate every page's encoding, then apply them all
 * (a hostile stream must change nothing).
 *
 *   xbzrle-bench [REPS [MIX]]       MIX: one of the names below
 *
 * time_encode / time_decode are kept out of line so that valgrind's
 * callgrind can count their instructions alone (--toggle-collect), a
 * figure the machine's load does not move.
 */
#define _ISOC11_SOURCE
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#include "emucore.h"

#define PAGE 4096
#define NPAGES 4096                 /* 16 MiB of pages per mix */

#ifdef WITH_QEMU
int xbzrle_encode_buffer(uint8_t *old_buf, uint8_t *new_buf, int slen,
                         uint8_t *dst, int dlen);
int xbzrle_decode_buffer(uint8_t *src, int slen, uint8_t *dst, int dlen);
#endif

/* CPU time of this thread: with other processes sharing the cores (a CI
 * runner, helpers on a 2-core machine) wall-clock time counts the time
 * this thread waited for a core; this does not. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* xorshift64*: reproducible mixes without libc's rand state */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void make_mix(const char *mix, uint8_t *old, uint8_t *new_)
{
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < (size_t)NPAGES * PAGE; i++) {
        old[i] = (uint8_t)rnd(&s);
    }
    memcpy(new_, old, (size_t)NPAGES * PAGE);
    unsigned per_mille = !strcmp(mix, "5%") ? 50 : !strcmp(mix, "30%") ? 300 : 0;
    for (size_t p = 0; p < NPAGES; p++) {
        uint8_t *page = new_ + p * PAGE;
        if (!strcmp(mix, "1 byte")) {
            page[rnd(&s) % PAGE] ^= 0x5a;
        } else if (!strcmp(mix, "random")) {
            for (size_t i = 0; i < PAGE; i++) {
                page[i] = (uint8_t)rnd(&s);
            }
        } else if (per_mille) {
            for (size_t i = 0; i < PAGE; i++) {
                if (rnd(&s) % 1000 < per_mille) {
                    page[i] ^= (uint8_t)(1 + rnd(&s) % 255);
                }
            }
        }
    }
}

typedef long (*enc_fn)(const void *ctx, uint8_t *old, uint8_t *new_,
                       uint8_t *dst);

static long ours_enc(const void *ctx, uint8_t *old, uint8_t *new_, uint8_t *dst)
{
    return emu_xbzrle_encode(ctx, old, new_, PAGE, dst, PAGE);
}

#ifdef WITH_QEMU
static long qemu_enc(const void *ctx, uint8_t *old, uint8_t *new_, uint8_t *dst)
{
    (void)ctx;
    return xbzrle_encode_buffer(old, new_, PAGE, dst, PAGE);
}
#endif

/* best of reps: seconds to encode every page; lens[] gets each length */
__attribute__((noinline))
static double time_encode(enc_fn f, const void *ctx, uint8_t *old,
                          uint8_t *new_, uint8_t *enc, long *lens, int reps)
{
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t = now();
        for (size_t p = 0; p < NPAGES; p++) {
            lens[p] = f(ctx, old + p * PAGE, new_ + p * PAGE, enc + p * PAGE);
        }
        t = now() - t;
        best = t < best ? t : best;
    }
    return best;
}

static double time_memcpy(uint8_t *dst, const uint8_t *src, int reps)
{
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t = now();
        for (size_t p = 0; p < NPAGES; p++) {
            memcpy(dst + p * PAGE, src + p * PAGE, PAGE);
        }
        t = now() - t;
        best = t < best ? t : best;
    }
    return best;
}

__attribute__((noinline))
static double time_decode(const uint8_t *enc, const long *lens, uint8_t *mem,
                          const uint8_t *old, int reps, int qemu)
{
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        memcpy(mem, old, (size_t)NPAGES * PAGE);
        double t = now();
#ifdef WITH_QEMU
        for (size_t p = 0; qemu && p < NPAGES; p++) {
            if (lens[p] > 0) {
                xbzrle_decode_buffer((uint8_t *)enc + p * PAGE, (int)lens[p],
                                     mem + p * PAGE, PAGE);
            }
        }
#endif
        /* ours, as emu_apply_xbzrle runs an XBZRLE_PAGES record of up to
         * EMU_MAX_BATCH pages: every page validated, then all applied */
        for (size_t b = 0; !qemu && b < NPAGES; b += EMU_MAX_BATCH) {
            const uint8_t *src[EMU_MAX_BATCH];
            uint8_t *dst[EMU_MAX_BATCH];
            size_t slen[EMU_MAX_BATCH], n = 0;
            for (size_t p = b; p < b + EMU_MAX_BATCH && p < NPAGES; p++) {
                if (lens[p] > 0) {
                    src[n] = enc + p * PAGE;
                    slen[n] = (size_t)lens[p];
                    dst[n++] = mem + p * PAGE;
                }
            }
            if (emu_xbzrle_check_pages(src, slen, n, PAGE) == n) {
                emu_xbzrle_apply_pages(src, slen, dst, n);
            }
        }
        t = now() - t;
        best = t < best ? t : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    const char *only = argc > 2 ? argv[2] : NULL;   /* one mix, by name */
    const char *mixes[] = {"unchanged", "1 byte", "5%", "30%", "random"};
    size_t bytes = (size_t)NPAGES * PAGE;
    /* page-aligned, as guest memory and the stream's page buffers are
     * (malloc's large blocks start 16 bytes into a page: every 64-byte
     * load would straddle two cache lines) */
    uint8_t *old = aligned_alloc(PAGE, bytes), *new_ = aligned_alloc(PAGE, bytes);
    uint8_t *mem = aligned_alloc(PAGE, bytes), *enc = aligned_alloc(PAGE, bytes);
    uint8_t *enc2 = aligned_alloc(PAGE, bytes);
    long *lens = malloc(NPAGES * sizeof(long)), *lens2 = malloc(NPAGES * sizeof(long));
    unsigned feat = emu_cpu_features();
    int rc = 0;

    if (!old || !new_ || !mem || !enc || !enc2 || !lens || !lens2) {
        return 2;
    }
    printf("%-10s %-10s %9s %9s %8s %8s\n", "mix", "encoder", "enc GB/s",
           "dec GB/s", "enc/cpy", "dec/cpy");
    for (size_t m = 0; m < sizeof(mixes) / sizeof(mixes[0]); m++) {
        if (only && strcmp(only, mixes[m])) {
            continue;
        }
        make_mix(mixes[m], old, new_);
        /* Repetitions interleave every kernel (best of each), so a burst
         * of load hits them all alike rather than one of them. */
        double cpy = 1e9, e[8], d[8];
#ifdef WITH_QEMU
        double qe = 1e9, qd = 1e9;
#endif
        size_t na = emu_diff_accels_len < 8 ? emu_diff_accels_len : 8;
        for (size_t a = 0; a < na; a++) {
            e[a] = d[a] = 1e9;
        }
        for (int r = 0; r < reps; r++) {
            cpy = fmin(cpy, time_memcpy(mem, new_, 1));
#ifdef WITH_QEMU
            qe = fmin(qe, time_encode(qemu_enc, NULL, old, new_, enc2, lens2, 1));
            qd = fmin(qd, time_decode(enc2, lens2, mem, old, 1, 1));
#endif
            for (size_t a = 0; a < na; a++) {
                const struct emu_accel *acc = &emu_diff_accels[a];
                if ((acc->need & feat) != acc->need) {
                    continue;
                }
                struct emu_kernels k = {0};
                k.diff = (emu_diff_fn)acc->fn;
                e[a] = fmin(e[a], time_encode(ours_enc, &k, old, new_, enc, lens, 1));
                d[a] = fmin(d[a], time_decode(enc, lens, mem, old, 1, 0));
            }
        }
        printf("%-10s %-10s %9.2f\n", mixes[m], "memcpy", bytes / cpy / 1e9);
#ifdef WITH_QEMU
        printf("%-10s %-10s %9.2f %9.2f %8.2f %8.2f\n", mixes[m], "qemu",
               bytes / qe / 1e9, bytes / qd / 1e9, cpy / qe, cpy / qd);
        /* (QEMU's decode of a mix without pages to decode times an empty
         * loop too; ours prints "-" there) */
#endif
        for (size_t a = 0; a < na; a++) {
            const struct emu_accel *acc = &emu_diff_accels[a];
            if ((acc->need & feat) != acc->need) {
                continue;
            }
            /* the outputs checked are this accelerator's own */
            struct emu_kernels k = {0};
            k.diff = (emu_diff_fn)acc->fn;
            time_encode(ours_enc, &k, old, new_, enc, lens, 1);
            time_decode(enc, lens, mem, old, 1, 0);
            /* no page to decode (unchanged; random: none fits): the
             * decode figures would time an empty loop */
            int some = 0;
            for (size_t p = 0; p < NPAGES && !some; p++) {
                some = lens[p] > 0;
            }
            if (some) {
                printf("%-10s %-10s %9.2f %9.2f %8.2f %8.2f", mixes[m], acc->name,
                       bytes / e[a] / 1e9, bytes / d[a] / 1e9, cpy / e[a], cpy / d[a]);
            } else {
                printf("%-10s %-10s %9.2f %9s %8.2f %8s", mixes[m], acc->name,
                       bytes / e[a] / 1e9, "-", cpy / e[a], "-");
            }
#ifdef WITH_QEMU
            if (some) {
                printf("   x qemu: enc %.2f dec %.2f", qe / e[a], qd / d[a]);
            } else {
                printf("   x qemu: enc %.2f", qe / e[a]);
            }
            for (size_t p = 0; p < NPAGES; p++) {
                if (lens[p] != lens2[p] ||
                    (lens[p] > 0 && memcmp(enc + p * PAGE, enc2 + p * PAGE,
                                           (size_t)lens[p]))) {
                    printf("  OUTPUT DIFFERS at page %zu", p);
                    rc = 1;
                    break;
                }
            }
#endif
            printf("\n");
            if (memcmp(mem, new_, bytes) && strcmp(mixes[m], "random")) {
                printf("  DECODE MISMATCH\n");
                rc = 1;
            }
        }
    }
    return rc;
}
