/*
 * fuzz_records.c - libFuzzer harness for the record parsers of emucore.
 *
 * Input layout: byte 0 picks the accelerator set (low 2 bits) and whether
 * to treat the rest as one record body or as a sequence of records (bit 2);
 * byte 1 picks the record type for single-body mode.  A sequence is parsed
 * like the libxc layer: {type, length} headers, bodies padded to 8, each
 * body handed to its apply function against 64 pages of guest memory.
 *
 * Invariants checked beyond "no sanitizer report":
 *  - a body that passes dry_run applies without error;
 *  - a body that fails leaves guest memory untouched;
 *  - xbzrle: decode(encode(old, new)) == new.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "emucore.h"

#define MEM_PAGES 64

static struct emu_kernels kernels_for(unsigned sel)
{
    unsigned f = emu_cpu_features();
    size_t z = emu_accel_best(emu_zero_accels, emu_zero_accels_len, f);
    size_t c = emu_accel_best(emu_crc_accels, emu_crc_accels_len, f);
    size_t r = emu_accel_best(emu_diff_accels, emu_diff_accels_len, f);
    /* sel steps down the tables, never past the portable last entry. */
    for (unsigned i = 0; i < sel; i++) {
        if (z + 1 < emu_zero_accels_len) z++;
        if (c + 1 < emu_crc_accels_len) c++;
        if (r + 1 < emu_diff_accels_len) r++;
    }
    struct emu_kernels k = {
        (emu_zero_fn)emu_zero_accels[z].fn,
        (emu_crc_fn)emu_crc_accels[c].fn,
        (emu_diff_fn)emu_diff_accels[r].fn,
    };
    return k;
}

static long apply(const struct emu_kernels *k, uint32_t type, const uint8_t *body,
                  size_t len, uint8_t *mem, bool dry, struct emu_err *err)
{
    switch (type) {
    case EMU_LIBXC_REC_PAGE_DATA:
        return emu_apply_page_data(body, len, mem, MEM_PAGES * EMU_PAGE_SIZE, dry, err);
    case EMU_REC_ZERO_RUNS:
        return emu_apply_zero_runs(k, body, len, mem, MEM_PAGES * EMU_PAGE_SIZE, dry, err);
    case EMU_REC_XBZRLE_PAGES:
        return emu_apply_xbzrle(body, len, mem, MEM_PAGES * EMU_PAGE_SIZE, dry, err);
    default:
        return 0;
    }
}

static void one_body(const struct emu_kernels *k, uint32_t type, const uint8_t *body,
                     size_t len, uint8_t *mem, uint8_t *shadow)
{
    struct emu_err err;
    /* Copy so that reads past the end are caught exactly by ASan. */
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, body, len);
    long dry = apply(k, type, copy, len, NULL, true, &err);
    if (dry >= 0) {
        /* dry_run with mem == NULL has no bound: re-check against real memory. */
        dry = apply(k, type, copy, len, mem, true, &err);
    }
    memcpy(shadow, mem, MEM_PAGES * EMU_PAGE_SIZE);
    long wet = apply(k, type, copy, len, mem, false, &err);
    if ((dry < 0) != (wet < 0)) {
        __builtin_trap();       /* validated body failed to apply, or v.v. */
    }
    if (wet < 0 && memcmp(shadow, mem, MEM_PAGES * EMU_PAGE_SIZE) != 0) {
        __builtin_trap();       /* a refused body wrote guest memory */
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[MEM_PAGES * EMU_PAGE_SIZE];
    static uint8_t shadow[MEM_PAGES * EMU_PAGE_SIZE];

    if (size < 2) {
        return 0;
    }
    struct emu_kernels k = kernels_for(data[0] & 3);
    unsigned mode = data[0] >> 2 & 3;
    uint8_t sel = data[1];
    data += 2;
    size -= 2;
    memset(mem, 0x5a, sizeof(mem));

    if (mode == 0) {
        static const uint32_t types[] = {EMU_LIBXC_REC_PAGE_DATA, EMU_REC_ZERO_RUNS,
                                         EMU_REC_XBZRLE_PAGES};
        one_body(&k, types[sel % 3], data, size, mem, shadow);
    } else if (mode == 1) {
        size_t off = 0;
        while (size - off >= 8) {
            uint32_t type, len;
            memcpy(&type, data + off, 4);
            memcpy(&len, data + off + 4, 4);
            off += 8;
            if (len > size - off) {
                break;
            }
            one_body(&k, type, data + off, len, mem, shadow);
            off += ((size_t)len + 7) & ~(size_t)7;
            if (off > size) {
                break;
            }
        }
    } else if (mode == 2) {
        /* Raw XBZRLE decode against a page, and encode/decode round trip. */
        uint8_t page[EMU_PAGE_SIZE], out[EMU_PAGE_SIZE + 64];
        size_t bad;
        memset(page, sel, sizeof(page));
        emu_xbzrle_decode(data, size, page, sizeof(page), &bad);
        uint8_t newp[EMU_PAGE_SIZE];
        memset(newp, sel, sizeof(newp));
        memcpy(newp, data, size < sizeof(newp) ? size : sizeof(newp));
        long n = emu_xbzrle_encode(&k, page, newp, EMU_PAGE_SIZE, out, sizeof(out));
        if (n > 0) {
            if (emu_xbzrle_decode(out, (size_t)n, page, sizeof(page), &bad) < 0 ||
                memcmp(page, newp, sizeof(page)) != 0) {
                __builtin_trap();
            }
        } else if (n == 0 && memcmp(page, newp, sizeof(page)) != 0) {
            __builtin_trap();
        }
    } else {
        /* Bitmap walk, zero scan and CRC on arbitrary bytes and sizes. */
        uint64_t pfns[64], next;
        uint64_t npages = (uint64_t)size * 8;
        uint64_t start = sel % (npages + 1);
        size_t n = emu_bitmap_pfns(data, npages, start, pfns, 64, &next);
        for (size_t i = 0; i < n; i++) {
            if (pfns[i] >= npages || !(data[pfns[i] / 8] >> (pfns[i] % 8) & 1)) {
                __builtin_trap();
            }
        }
        (void)emu_bitmap_count(data, npages);
        (void)emu_is_zero(&k, data, size);
        (void)emu_crc32c(&k, 0, data, size);
    }
    return 0;
}
