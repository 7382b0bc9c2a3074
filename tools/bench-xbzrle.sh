#!/usr/bin/env bash
# XBZRLE kernels in C on five mixes (unchanged, 1 byte, 5%, 30%, random):
# every accelerator of ours beside memcpy measured in the same run, and --
# given QEMU's own migration/xbzrle.c -- beside QEMU's encoder (its AVX-512
# one where the CPU has avx512bw) and its single-pass decoder, with a check
# that both encoders write the same bytes.
#
#   tools/bench-xbzrle.sh [REPS [MIX]]                 ours only
#   CALLGRIND=1 tools/bench-xbzrle.sh 1 5%             instruction counts
#   QEMU_XBZRLE=/path/to/qemu/migration/xbzrle.c tools/bench-xbzrle.sh
#
# QEMU's file is compiled from where it lies, against the few shim headers
# written below (our own stand-ins for QEMU's osdep/cutils/cpuinfo); none
# of QEMU's code is part of this project.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
MIX=${2:-}
S=nova_xen_stubdom/emucore/src
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
CFLAGS=(-O2 -std=gnu11 -Wall -Wextra -fno-strict-aliasing
        -Inova_xen_stubdom/emucore/include)
srcs=(tests/bench/xbzrle_bench.c "$S/xbzrle.c" "$S/accel.c")
if [ -n "${QEMU_XBZRLE:-}" ]; then
    H=$OUT/include
    mkdir -p "$H/qemu" "$H/host"
    cat > "$H/qemu/osdep.h" <<'H'
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define g_assert assert
H
    cat > "$H/qemu/cutils.h" <<'H'
/* ULEB128 of values < 2^14, as XBZRLE uses them */
static inline int uleb128_encode_small(uint8_t *out, uint32_t n)
{
    if (n < 0x80) { out[0] = (uint8_t)n; return 1; }
    out[0] = (uint8_t)((n & 0x7f) | 0x80);
    out[1] = (uint8_t)(n >> 7);
    return 2;
}
static inline int uleb128_decode_small(const uint8_t *in, uint32_t *n)
{
    if (!(in[0] & 0x80)) { *n = in[0]; return 1; }
    if (in[1] & 0x80) { return -1; }
    *n = (uint32_t)(in[0] & 0x7f) | ((uint32_t)in[1] << 7);
    return 2;
}
H
    cat > "$H/qemu/host-utils.h" <<'H'
static inline int ctz64(uint64_t v) { return v ? __builtin_ctzll(v) : 64; }
H
    cat > "$H/host/cpuinfo.h" <<'H'
#define CPUINFO_AVX512BW 1u
static inline unsigned cpuinfo_init(void)
{
    return __builtin_cpu_supports("avx512bw") ? CPUINFO_AVX512BW : 0;
}
H
    cat > "$H/xbzrle.h" <<'H'
int xbzrle_encode_buffer(uint8_t *old_buf, uint8_t *new_buf, int slen,
                         uint8_t *dst, int dlen);
int xbzrle_decode_buffer(uint8_t *src, int slen, uint8_t *dst, int dlen);
H
    gcc -O2 -std=gnu11 -w -DCONFIG_AVX512BW_OPT -I"$H" -c "$QEMU_XBZRLE" \
        -o "$OUT/qemu-xbzrle.o"
    CFLAGS+=(-DWITH_QEMU)
    srcs+=("$OUT/qemu-xbzrle.o")
fi
gcc "${CFLAGS[@]}" "${srcs[@]}" -lm -o "$OUT/xbzrle-bench"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
if [ -n "${CALLGRIND:-}" ]; then
    # instruction counts of the timed loops alone, one mix, one repetition
    valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" \
        --toggle-collect='time_encode*' --toggle-collect='time_decode*' \
        --dump-instr=no "$OUT/xbzrle-bench" 1 "${MIX:-5%}" >/dev/null 2>&1
    callgrind_annotate --inclusive=yes "$OUT/cg.out" 2>/dev/null |
        grep -E 'PROGRAM TOTALS|xbzrle|time_(en|de)code|diff_' | head -20
    exit 0
fi
"$OUT/xbzrle-bench" "$REPS" ${MIX:+"$MIX"}
