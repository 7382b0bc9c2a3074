/*
 * accel.c - CPU feature detection and accelerator selection.
 *
 * Each kernel family has a const table ordered by preference whose last
 * entry is portable C.  The caller (module exec, the fuzz harness) asks for
 * the best entry once and keeps the choice in its own state, so there is no
 * process-global mutable selection here.
 */
#include "emucore.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

unsigned emu_cpu_features(void)
{
    unsigned a, b, c, d, f = 0;

    if (!__get_cpuid(1, &a, &b, &c, &d)) {
        return 0;
    }
    if (d & bit_SSE2) {
        f |= EMU_CPU_SSE2;
    }
    if (c & bit_SSE4_2) {
        f |= EMU_CPU_SSE42;
    }
    if (c & bit_POPCNT) {
        f |= EMU_CPU_POPCNT;
    }
    /* AVX2 needs the OS to save the YMM state (OSXSAVE + XCR0 bits 1,2). */
    if ((c & bit_OSXSAVE) && (c & bit_AVX)) {
        unsigned lo, hi;
        __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        if ((lo & 6) == 6 && __get_cpuid_max(0, NULL) >= 7) {
            __cpuid_count(7, 0, a, b, c, d);
            if (b & bit_AVX2) {
                f |= EMU_CPU_AVX2;
            }
            /* AVX-512 also needs the opmask and ZMM state (XCR0 5..7). */
            if ((b & bit_AVX512F) && (b & bit_AVX512BW) &&
                (lo & 0xe0) == 0xe0) {
                f |= EMU_CPU_AVX512BW;
            }
        }
    }
    return f;
}
#else
unsigned emu_cpu_features(void)
{
    return 0;
}
#endif /* __x86_64__ || __i386__ */

size_t emu_accel_best(const struct emu_accel *table, size_t len, unsigned features)
{
    for (size_t i = 0; i < len; i++) {
        if ((table[i].need & features) == table[i].need) {
            return i;
        }
    }
    return len - 1;
}
