#!/usr/bin/env bash
# Set up a fresh machine for the demo and the tests: Debian packages from
# tools/apt-packages.txt, the project venv in .venv with Nova and the test
# dependencies, and the package itself (editable, C extension built in place).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

wanted() { grep -v '^\s*#' tools/apt-packages.txt | tr -s ' \n' ' '; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=""; optional=""
for p in $(wanted); do
    case "$p" in
        \?*) installed "${p#?}" || optional="$optional ${p#?}" ;;
        *) installed "$p" || missing="$missing $p" ;;
    esac
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
apt_install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends "$@" >/dev/null
}
if [ -n "$missing" ]; then
    log "apt-get install:$missing"
    # The Debian mirror is sometimes briefly unreachable: retry before failing.
    for attempt in 1 2 3 4; do
        $SUDO apt-get update -qq || true
        # shellcheck disable=SC2086 # one word per package
        apt_install $missing && break
        if [ "$attempt" = 4 ]; then
            log "ERROR: could not install Debian packages:$missing"
            exit 1
        fi
        log "apt-get failed (attempt $attempt), retrying in $((attempt * 20))s"
        sleep $((attempt * 20))
    done
fi
if [ -n "$optional" ]; then
    log "apt-get install (optional):$optional"
    $SUDO apt-get update -qq || true
    # shellcheck disable=SC2086 # one word per package
    if ! apt_install $optional; then
        log "WARNING: optional Debian packages not installed:$optional;"
        log "WARNING: the checks that need them will be reported SKIPPED"
    fi
fi

PY=${PYTHON:-python3}
# A copy of the last venv that installed cleanly on this machine: when the
# package index cannot be reached, a fresh checkout starts from it instead
# of failing (pip then proves, with --no-index, that it satisfies every
# requirement).
SEED=${NXS_VENV_SEED:-$HOME/.cache/nova-xen-stubdom/venv-seed}
VENV=$PWD/.venv

relocate() {  # a venv copied from $1 to $2: fix the paths it records
    local f
    for f in "$2"/bin/*; do
        [ -f "$f" ] && [ "$(head -c2 "$f")" = '#!' ] &&
            sed -i "1s|$1/bin/|$2/bin/|" "$f"
    done
    sed -i "s|$1|$2|g" "$2/bin/activate" "$2/pyvenv.cfg"
}
pip_reqs() { "$VENV/bin/pip" install -q "$@" -r requirements.txt -r test-requirements.txt; }

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    $PY -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt test-requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "pip install (nova and test dependencies; about a minute)"
    if .venv/bin/pip install -q -U pip setuptools wheel && pip_reqs; then
        echo "$want" > "$stamp"
        log "keeping a copy of this venv in $SEED for offline set-ups"
        rm -rf "$SEED.new" && mkdir -p "$(dirname "$SEED")"
        cp -a "$VENV" "$SEED.new" && relocate "$VENV" "$SEED.new"
        rm -rf "$SEED" && mv "$SEED.new" "$SEED" && relocate "$SEED.new" "$SEED"
    elif [ -x "$SEED/bin/python" ]; then
        log "WARNING: the package index is unreachable; starting from the"
        log "WARNING: venv copy kept in $SEED"
        rm -rf "$VENV" && cp -a "$SEED" "$VENV" && relocate "$SEED" "$VENV"
        pip_reqs --no-index || { log "ERROR: $SEED lacks requirements"; exit 1; }
        echo "$want" > "$stamp"
    else
        log "ERROR: pip install failed and no venv copy exists in $SEED"
        exit 1
    fi
fi
log "installing nova-xen-stubdom (editable) and building the C extension"
.venv/bin/pip install -q --no-build-isolation --no-deps -e .
# Editable installs do not ship the root-level .pth that registers the
# project's versioned objects in every Nova service (see setup.py).
cp nova_xen_stubdom/objects/nova_xen_stubdom-objects.pth \
    "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
.venv/bin/python setup.py -q build_ext --inplace >/dev/null
log "ready: $(.venv/bin/python -c 'import nova, sys; print("nova", nova.__version__ if hasattr(nova, "__version__") else "", sys.version.split()[0])')"
