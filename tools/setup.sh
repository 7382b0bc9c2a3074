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
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    $PY -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt test-requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "pip install (nova and test dependencies; about a minute)"
    .venv/bin/pip install -q -U pip setuptools wheel
    .venv/bin/pip install -q -r requirements.txt -r test-requirements.txt
    echo "$want" > "$stamp"
fi
log "installing nova-xen-stubdom (editable) and building the C extension"
.venv/bin/pip install -q --no-build-isolation --no-deps -e .
# Editable installs do not ship the root-level .pth that registers the
# project's versioned objects in every Nova service (see setup.py).
cp nova_xen_stubdom/objects/nova_xen_stubdom-objects.pth \
    "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
.venv/bin/python setup.py -q build_ext --inplace >/dev/null
log "ready: $(.venv/bin/python -c 'import nova, sys; print("nova", nova.__version__ if hasattr(nova, "__version__") else "", sys.version.split()[0])')"
