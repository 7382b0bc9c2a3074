/*
 * crc32c.c - CRC32C (Castagnoli) for the per-batch checksum record.
 * The SSE4.2 crc32 instruction where present, slicing-by-8 tables else.
 * Functions take and return the *raw* register (caller inverts).
 */
#include <string.h>

#include "emucore.h"
#include "crc32c_tables.inc"

static uint32_t crc_table(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc32c_tab[0][(crc ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        /* Little-endian word: byte 0 is the low byte of w. */
        w ^= crc;
        crc = crc32c_tab[7][w & 0xff] ^ crc32c_tab[6][(w >> 8) & 0xff] ^
              crc32c_tab[5][(w >> 16) & 0xff] ^ crc32c_tab[4][(w >> 24) & 0xff] ^
              crc32c_tab[3][(w >> 32) & 0xff] ^ crc32c_tab[2][(w >> 40) & 0xff] ^
              crc32c_tab[1][(w >> 48) & 0xff] ^ crc32c_tab[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) {
        crc = (crc >> 8) ^ crc32c_tab[0][(crc ^ *p++) & 0xff];
    }
    return crc;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc_sse42(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t c = crc;

    while (len && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    while (len >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8);
        memcpy(&w1, p + 8, 8);
        memcpy(&w2, p + 16, 8);
        memcpy(&w3, p + 24, 8);
        c = _mm_crc32_u64(c, w0);
        c = _mm_crc32_u64(c, w1);
        c = _mm_crc32_u64(c, w2);
        c = _mm_crc32_u64(c, w3);
        p += 32;
        len -= 32;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    while (len--) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
    }
    return (uint32_t)c;
}
#endif /* __x86_64__ */

const struct emu_accel emu_crc_accels[] = {
#if defined(__x86_64__)
    { "sse4.2", (const void *)crc_sse42, EMU_CPU_SSE42 },
#endif /* __x86_64__ */
    { "table", (const void *)crc_table, 0 },
};
const size_t emu_crc_accels_len = sizeof(emu_crc_accels) / sizeof(emu_crc_accels[0]);
