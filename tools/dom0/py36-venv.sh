#!/usr/bin/env bash
# A Python 3.6 virtual environment for the dom0 payload's tests:
# build/py36-venv with pytest 7.0.x (the last series for 3.6) and nothing
# else -- the payload itself needs only the standard library.
#
#   tools/dom0/py36-venv.sh            # prints the venv's python on success
#
# The interpreter is $PYTHON36, else pyenv's 3.6 (`pyenv versions`), else
# python3.6 on PATH.  The wheels are kept in a wheelhouse in the user cache
# (${XDG_CACHE_HOME:-~/.cache}/nova-xen-stubdom/py36-wheels), so a fresh
# clone on the same machine installs offline; with no package index and an
# empty wheelhouse the script exits 3 and says why (the tier: NOT RUN).
set -uo pipefail
cd "$(dirname "$0")/../.."
VENV=${PY36_VENV:-$PWD/build/py36-venv}
PYTEST_SPEC='pytest==7.0.1'
PIP_SPEC='pip==21.3.1'
CONSTRAINTS=$PWD/tools/dom0/py36-constraints.txt
WHEELS=${XDG_CACHE_HOME:-$HOME/.cache}/nova-xen-stubdom/py36-wheels
# a copy of the last venv that installed cleanly, for offline fresh clones
# (as tools/setup.sh keeps one of the project venv)
SEED=${XDG_CACHE_HOME:-$HOME/.cache}/nova-xen-stubdom/py36-venv-seed

find_py36() {
    local c
    for c in "${PYTHON36:-}" "$HOME"/.pyenv/versions/3.6*/bin/python3.6 \
             "$(command -v python3.6 2>/dev/null)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            echo "$c"; return 0
        fi
    done
    return 1
}

PY36=$(find_py36) || { echo "no Python 3.6 interpreter (set PYTHON36)" >&2
                       exit 2; }
if [ ! -x "$VENV/bin/python" ]; then
    "$PY36" -m venv "$VENV" || { echo "cannot create $VENV" >&2; exit 2; }
fi
offline_install() {
    ls "$WHEELS"/pytest-7.0*.whl >/dev/null 2>&1 || return 1
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" \
        "$PIP_SPEC" >&2 2>/dev/null || true
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" \
        -c "$CONSTRAINTS" "$PYTEST_SPEC" >&2
}
online_install() {
    mkdir -p "$WHEELS"
    # pip 18 (3.6's bundled one) picks wheels that need a newer Python;
    # 21.3 honours Requires-Python
    timeout 300 "$VENV/bin/python" -m pip install -q "$PIP_SPEC" >&2 &&
    timeout 300 "$VENV/bin/python" -m pip download -q -d "$WHEELS" \
        -c "$CONSTRAINTS" "$PIP_SPEC" "$PYTEST_SPEC" >&2 &&
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" \
        -c "$CONSTRAINTS" "$PYTEST_SPEC" >&2
}
# copy venv $1 to $2 and point its scripts and pyvenv.cfg at $2
copy_venv() {
    local f
    rm -rf "$2" && cp -a "$1" "$2" || return 1
    for f in "$2"/bin/*; do
        [ -f "$f" ] && [ ! -L "$f" ] && [ "$(head -c2 "$f")" = '#!' ] &&
            sed -i "1s|$1/bin/|$2/bin/|" "$f"
    done
    sed -i "s|$1|$2|g" "$2/pyvenv.cfg" "$2/bin/activate" 2>/dev/null
    return 0
}
seed_install() {
    [ -x "$SEED/bin/python" ] || return 1
    echo "py36-venv: no package index and no wheels: using the venv copy" \
         "kept in $SEED" >&2
    copy_venv "$SEED" "$VENV" && "$VENV/bin/python" -c 'import pytest'
}
if ! "$VENV/bin/python" -c 'import pytest' 2>/dev/null; then
    if offline_install || online_install; then
        copy_venv "$VENV" "$SEED" ||
            echo "py36-venv: could not keep a copy in $SEED" >&2
    elif ! seed_install; then
        echo "cannot install $PYTEST_SPEC into $VENV (no package index," \
             "no wheels in $WHEELS, no venv copy in $SEED)" >&2
        exit 3
    fi
fi
echo "$VENV/bin/python"
