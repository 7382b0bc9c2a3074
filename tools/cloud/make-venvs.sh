#!/usr/bin/env bash
# Build the test cloud's three venvs under DIR (default .cloud) on a fresh
# machine, then install this project into them the way an operator would:
# a wheel built from the checkout, NOT an editable install, so the
# nova/virt/xen_stubdom loader shim lands inside Nova's package for real.
#
#   DIR/venv           nova 34, placement, uwsgi, PyMySQL + nova-xen-stubdom
#   DIR/venv-keystone  keystone, PyMySQL
#   DIR/venv-tempest   tempest + nova-xen-stubdom (--no-deps: only the
#                      tempest plugin is used there)
#
# A venv whose requirements have not changed is kept (stamp file); the
# project wheel is rebuilt and reinstalled every time.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-${NXS_CLOUD_DIR:-.cloud}}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PY=${PYTHON:-python3}
log() { printf '[venvs %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
# pip's own chatter (index mirror warnings) stays in the log file
pipq() { "$@" -q --disable-pip-version-check >>"$DIR/pip.log" 2>&1 ||
    { tail -20 "$DIR/pip.log"; return 1; }; }

# nova and placement as pinned for the tests; SQLAlchemy 2.1 breaks Nova 34
NOVA_REQS=(-r requirements.txt "nova==34.0.0" openstack-placement "SQLAlchemy<2.1"
    PyMySQL uwsgi)
KEYSTONE_REQS=(keystone PyMySQL)
TEMPEST_REQS=(tempest)

make_venv() {  # name, requirement args...
    local name=$1; shift
    local venv=$DIR/$name stamp want
    want=$(printf '%s\n' "$@" | cat - requirements.txt | sha256sum | cut -c1-16)
    stamp=$venv/.nxs-stamp
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        log "$name: up to date"
        return 0
    fi
    local t0=$SECONDS
    # build beside the old venv and swap only on success: a failed install
    # (say, the package index unreachable) keeps the venv that worked
    rm -rf "$venv.new"
    "$PY" -m venv "$venv.new"
    if ! pipq "$venv.new/bin/pip" install -U pip setuptools wheel ||
            ! pipq "$venv.new/bin/pip" install "$@"; then
        rm -rf "$venv.new"
        return 1
    fi
    rm -rf "$venv"
    mv "$venv.new" "$venv"
    # console scripts name their interpreter by absolute path: fix them up
    local f
    for f in "$venv"/bin/*; do
        [ -f "$f" ] && [ "$(head -c2 "$f")" = '#!' ] &&
            sed -i "1s|$venv.new/bin/|$venv/bin/|" "$f"
    done
    sed -i "s|$venv.new|$venv|g" "$venv/bin/activate" "$venv/pyvenv.cfg"
    echo "$want" > "$stamp"
    log "$name: built in $((SECONDS - t0)) s"
}

# three independent installs: overlap their downloads
make_venv venv "${NOVA_REQS[@]}" & p1=$!
make_venv venv-keystone "${KEYSTONE_REQS[@]}" & p2=$!
make_venv venv-tempest "${TEMPEST_REQS[@]}" & p3=$!
rc=0
for p in $p1 $p2 $p3; do
    wait "$p" || rc=1
done
[ "$rc" = 0 ] || { log "venv creation failed (see $DIR/pip.log)"; exit 1; }

t0=$SECONDS
rm -rf "$DIR/wheels"
pipq "$DIR/venv/bin/pip" wheel --no-deps -w "$DIR/wheels" .
whl=$(ls "$DIR"/wheels/nova_xen_stubdom-*.whl)
pipq "$DIR/venv/bin/pip" install --force-reinstall --no-deps "$whl"
"$DIR/venv/bin/pip" check >>"$DIR/pip.log" 2>&1 ||
    log "pip check reports conflicts in venv (see $DIR/pip.log)"
pipq "$DIR/venv-tempest/bin/pip" install --force-reinstall --no-deps "$whl"
log "installed $(basename "$whl") into venv and venv-tempest in $((SECONDS - t0)) s"
shim=$("$DIR/venv/bin/python" -c 'import nova.virt.xen_stubdom as m; print(m.__file__)')
case $shim in
    "$DIR"/venv/*) log "loader shim: $shim" ;;
    *) log "loader shim imported from $shim, not from the venv"; exit 1 ;;
esac
