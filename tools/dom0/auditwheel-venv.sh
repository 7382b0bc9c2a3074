#!/usr/bin/env bash
# auditwheel (PyPI) in a venv of its own in the user cache, for checking the
# cp36 _emucore wheel against the manylinux policies:
#
#   tools/dom0/auditwheel-venv.sh      # prints the auditwheel executable
#
# The venv is ${XDG_CACHE_HOME:-~/.cache}/nova-xen-stubdom/auditwheel-venv
# (kept across clones on this machine, so a later run works offline).
# Exit 3 with the reason on stderr when auditwheel cannot be installed
# (no package index and nothing cached): the check reports itself skipped.
set -uo pipefail
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/nova-xen-stubdom
VENV=${AUDITWHEEL_VENV:-$CACHE/auditwheel-venv}
SPEC='auditwheel==6.8.2'
PY=${PYTHON:-python3}

# .ok is written last: a venv without it is a half-done install, redone
if [ ! -f "$VENV/.ok" ] || [ ! -x "$VENV/bin/auditwheel" ]; then
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >&2; then
        echo "cannot create a venv with $PY" >&2; exit 3
    fi
    if ! timeout 300 "$VENV/bin/pip" install -q "$SPEC" >&2; then
        rm -rf "$VENV"
        echo "cannot install $SPEC (package index unreachable?)" >&2
        exit 3
    fi
    touch "$VENV/.ok"
fi
echo "$VENV/bin/auditwheel"
