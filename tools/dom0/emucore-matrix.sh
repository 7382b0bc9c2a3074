#!/usr/bin/env bash
# Build and load _emucore for every CPython 3.6 .. 3.13 this machine has
# (pyenv's, else pythonX.Y on PATH), each into a temporary directory that
# is removed afterwards; prints one line per version and a summary
# "emucore matrix: N built, N failed, N not run".  Interpreters without
# setuptools get it in a throw-away venv (the package index or the pip
# cache); a version with no interpreter is NOT RUN, never a failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
built=0; failed=0; notrun=0
for minor in 6 7 8 9 10 11 12 13; do
    v=3.$minor
    py=$(ls -d "$HOME"/.pyenv/versions/$v.*/bin/python$v 2>/dev/null | tail -1)
    [ -n "$py" ] || py=$(command -v python$v 2>/dev/null)
    if [ -z "$py" ]; then
        echo "  $v: NOT RUN (no interpreter)"; notrun=$((notrun + 1)); continue
    fi
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/nxs-emucore-$v-XXXXXX")
    if ! "$py" -c 'import setuptools' 2>/dev/null; then
        if "$py" -m venv "$tmp/venv" >/dev/null 2>&1 &&
           timeout 300 "$tmp/venv/bin/python" -m pip install -q setuptools \
               >/dev/null 2>&1; then
            py=$tmp/venv/bin/python
        else
            echo "  $v: NOT RUN (no setuptools and none installable)"
            notrun=$((notrun + 1)); rm -rf "$tmp"; continue
        fi
    fi
    if out=$(timeout 600 "$py" tools/dom0/build_emucore.py --check \
             "$tmp/lib" 2>&1); then
        echo "  $v: $(echo "$out" | tail -1)"; built=$((built + 1))
    else
        echo "$out" | tail -20; echo "  $v: FAILED"; failed=$((failed + 1))
    fi
    rm -rf "$tmp"
done
echo "emucore matrix: $built built, $failed failed, $notrun not run"
[ "$failed" = 0 ]
