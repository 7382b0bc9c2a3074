#!/usr/bin/env bash
# Native tier: the emucore C extension.
#   1. normal build, tests/native + tests/fuzz (every accelerator, golden
#      vectors, Xen's verify-stream-v2 on our compatible streams)
#   2. the same tests against an AddressSanitizer+UBSan build (clang)
#   3. libFuzzer on the record parsers, ~60 s (FUZZ_SECONDS), seed corpus in
#      tests/fuzz/corpus; any crash fails the tier
# Xen's verifier comes from Debian's xen-utils-4.17 (`apt-get download`,
# unpacked under build/, no root install) or ../shared/xen-testbed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
B=$ROOT/build
rc=0
step() { printf '\n--- native: %s\n' "$*"; }
fail() { echo "FAILED: $*"; rc=1; }
# a failed step that is no pytest test (pytest records its own failures)
fail_check() { fail "$*"; report failed "$*"; }
. tools/ci/report.sh

step "build (normal)"
mkdir -p "$B"
"$PY" setup.py -q build_ext --inplace > "$B/build.log" 2>&1 || { cat "$B/build.log"; echo "build failed"; exit 1; }

step "Xen verify-stream-v2 (xen-utils-4.17)"
# Debian's package when apt-get can download it (kept in the user cache, as
# the stubdom builder does, so a fresh clone on the same machine needs no
# network); else the same Xen 4.17.7 files that ../shared/xen-testbed
# carries; else the verifier checks are reported NOT RUN.  Only apt-get's
# own verdict counts -- no probe of a mirror host.
XEN=$B/xen-utils-4.17
XEN_LIB=$XEN/usr/lib/xen-4.17
DEB_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/nova-xen-stubdom/debs
SHARED_VERIFIER=$ROOT/../shared/xen-testbed/verifier
if [ ! -f "$XEN_LIB/bin/verify-stream-v2" ]; then
    mkdir -p "$B/debs" "$DEB_CACHE"
    cp "$DEB_CACHE"/xen-utils-4.17_*.deb /var/cache/apt/archives/xen-utils-4.17_*.deb \
        "$B/debs/" 2>/dev/null
    if ! ls "$B"/debs/xen-utils-4.17_*.deb >/dev/null 2>&1; then
        # the package lists may be missing on a fresh machine: update once
        (cd "$B/debs" && apt-get download xen-utils-4.17 >"$B/apt.log" 2>&1) || {
            SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
            $SUDO apt-get update -qq >>"$B/apt.log" 2>&1
            (cd "$B/debs" && apt-get download xen-utils-4.17 >>"$B/apt.log" 2>&1) ||
                echo "apt-get download xen-utils-4.17: $(grep -E '^(E|W):' "$B/apt.log" | tail -1)"
        }
    fi
    deb=$(ls "$B"/debs/xen-utils-4.17_*.deb 2>/dev/null | head -1)
    if [ -n "$deb" ]; then
        cp -n "$deb" "$DEB_CACHE/" 2>/dev/null
        dpkg-deb -x "$deb" "$XEN"
    fi
fi
if [ -f "$XEN_LIB/bin/verify-stream-v2" ]; then
    export XEN_VERIFY_STREAM=$XEN_LIB/bin/verify-stream-v2
    export XEN_PYTHONPATH=$XEN_LIB/lib/python
    export REQUIRE_XEN_VERIFIER=1
    echo "verify-stream-v2: Debian's xen-utils-4.17 ($XEN_VERIFY_STREAM)"
elif [ -f "$SHARED_VERIFIER/verify-stream-v2" ]; then
    export XEN_VERIFY_STREAM=$SHARED_VERIFIER/verify-stream-v2
    export XEN_PYTHONPATH=$SHARED_VERIFIER
    export REQUIRE_XEN_VERIFIER=1
    echo "verify-stream-v2: the Xen 4.17.7 copy in ../shared/xen-testbed/verifier"
else
    export REQUIRE_XEN_VERIFIER=0
    report notrun "Xen verify-stream-v2 checks" \
        "xen-utils-4.17 could not be downloaded and is in no cache; no ../shared copy"
fi

step "pytest tests/native tests/fuzz (normal build)"
"$PY" -m pytest -q -p no:cacheprovider tests/native tests/fuzz tests/bench/test_emucore_bench.py ||
    fail "tests (normal build)"

step "build + pytest under AddressSanitizer/UBSan (clang)"
ASAN_RT=$(clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null)
if [ ! -f "$ASAN_RT" ]; then
    fail_check "clang ASan runtime not found (Debian: clang libclang-rt-14-dev)"
else
    # A private copy of the package, so the in-place build others import
    # stays untouched while the sanitized one is tested.
    T=$B/asan-tree
    rm -rf "$T" && mkdir -p "$T"
    cp -r nova_xen_stubdom "$T/"
    find "$T" -name '*.so' -delete
    SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
    if CC=clang LDSHARED="clang -shared" CFLAGS="$SAN" LDFLAGS="-fsanitize=address,undefined" \
        "$PY" setup.py -q build_ext --build-temp "$B/asan-tmp" --build-lib "$T" >/dev/null 2>&1 &&
        ls "$T"/nova_xen_stubdom/_emucore*.so >/dev/null 2>&1; then
        export_env="PYTHONPATH=$T LD_PRELOAD=$ASAN_RT ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
        where=$(env $export_env "$PY" -c 'import nova_xen_stubdom._emucore as e; print(e.__file__)')
        case "$where" in
            "$T"/*) echo "sanitized module: $where" ;;
            *) fail_check "sanitized module not picked up ($where)" ;;
        esac
        # --import-mode=append keeps the checkout behind the sanitized copy.
        env $export_env "$PY" -m pytest -q -p no:cacheprovider --import-mode=append \
            tests/native tests/fuzz || fail "tests (ASan/UBSan build)"
    else
        fail_check "ASan/UBSan build"
    fi
fi

step "libFuzzer on the record parsers (${FUZZ_SECONDS}s)"
S=nova_xen_stubdom/emucore/src
mkdir -p "$B/fuzz/corpus"
if clang -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -fno-omit-frame-pointer -Inova_xen_stubdom/emucore/include tests/fuzz/fuzz_records.c \
    $S/accel.c $S/zero.c $S/crc32c.c $S/xbzrle.c $S/bitmap.c $S/cache.c $S/pages.c \
    -o "$B/fuzz/fuzz_records"; then
    # New inputs go to build/fuzz/corpus; the committed seeds are read-only.
    if "$B/fuzz/fuzz_records" -max_total_time="$FUZZ_SECONDS" -max_len=20000 \
        -print_final_stats=1 -artifact_prefix="$B/fuzz/" \
        "$B/fuzz/corpus" tests/fuzz/corpus > "$B/fuzz/log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$B/fuzz/log"
        report passed "libFuzzer on the record parsers (${FUZZ_SECONDS} s)"
    else
        tail -40 "$B/fuzz/log"
        fail_check "libFuzzer found a crash (artifact in build/fuzz/)"
    fi
else
    fail_check "libFuzzer build"
fi
exit $rc
