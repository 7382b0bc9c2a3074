#!/usr/bin/env bash
# Build the test cloud's four venvs under DIR (default .cloud) on a fresh
# machine, then install this project into them the way an operator would:
# a wheel built from the checkout, NOT an editable install, so the
# nova/virt/xen_stubdom loader shim lands inside Nova's package for real.
#
#   DIR/venv           nova 34, placement, uwsgi, PyMySQL + nova-xen-stubdom
#   DIR/venv-keystone  keystone, PyMySQL
#   DIR/venv-glance    glance, PyMySQL (run by the nova venv's uwsgi)
#   DIR/venv-tempest   tempest + nova-xen-stubdom (--no-deps: only the
#                      tempest plugin is used there)
#
# A venv whose requirements have not changed is kept (stamp file); the
# project wheel is rebuilt and reinstalled every time.
#
# Offline fallback: every venv built here is also kept as a SEED under
# $NXS_VENV_SEEDS (default ~/.cache/nova-xen-stubdom/cloud-venvs/NAME).
# When the package index does not answer and a seed exists, the seed is
# copied in instead (loudly logged; its stamp is kept, so the next run with
# the index back rebuilds it if the requirements moved on), then the fresh
# project wheel goes in as usual.
#
# Exit status: 0 all four venvs ready; 2 the nova venv is ready but some of
# the others are not because the package index is unreachable and there is
# no seed: their names are then in DIR/venvs-unavailable, one a line (the CI
# tier runs the glance stand-in without venv-glance, and its degraded
# no-keystone REST checks instead of tempest without venv-keystone or
# venv-tempest); 3 not even the nova venv can be had (index unreachable,
# no seed: the tier reports the cloud NOT RUN); 1 anything else.
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
# Glance of the same cycle as Nova 34 shares its SQLAlchemy limit
GLANCE_REQS=(glance PyMySQL "SQLAlchemy<2.1")
TEMPEST_REQS=(tempest)
SEEDS=${NXS_VENV_SEEDS:-$HOME/.cache/nova-xen-stubdom/cloud-venvs}

# Whether pip can fetch from its index: asked of pip itself (a small
# download, no cache), so pip.conf, proxies and local mirrors count exactly
# as they will for the installs; no host of ours is probed.  Asked once up
# front: with the index down, pip retries every requirement for minutes.
# The probe is an OpenStack library the venvs need, not pip itself: a
# machine's local wheel directories (find-links, file:// extra indexes)
# often hold pip while the index that has OpenStack is out of reach.
PROBE=oslo.config
index_reachable() {
    local tmp rc
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --disable-pip-version-check --no-cache-dir \
        --no-deps --retries 0 --timeout 20 -d "$tmp" "$PROBE" >/dev/null 2>&1
    rc=$?
    rm -rf "$tmp"
    return $rc
}

# copy venv $1 to $2 (which must not exist) and point its scripts, activate
# and pyvenv.cfg at $3 (where it will live)
copy_venv() {
    local src=$1 dst=$2 final=$3 f
    cp -a "$src" "$dst"
    for f in "$dst"/bin/*; do
        [ -f "$f" ] && [ ! -L "$f" ] && [ "$(head -c2 "$f")" = '#!' ] &&
            sed -i "1s|$src/bin/|$final/bin/|" "$f"
    done
    sed -i "s|$src|$final|g" "$dst/bin/activate" "$dst/pyvenv.cfg"
}

save_seed() {  # name: keep a copy of DIR/name for offline rebuilds
    local name=$1 seed=$SEEDS/$1
    mkdir -p "$SEEDS"
    rm -rf "$seed.tmp"
    if copy_venv "$DIR/$name" "$seed.tmp" "$seed"; then
        rm -rf "$seed"
        mv "$seed.tmp" "$seed"
        log "$name: seed saved to $seed"
    else
        rm -rf "$seed.tmp"
        log "$name: could not save a seed to $seed (continuing)"
    fi
}

use_seed() {  # name: DIR/name from its seed; 1 when there is none
    local name=$1 seed=$SEEDS/$1 venv=$DIR/$1
    [ -x "$seed/bin/python" ] || return 1
    rm -rf "$venv.new"
    copy_venv "$seed" "$venv.new" "$venv"
    rm -rf "$venv"
    mv "$venv.new" "$venv"
    log "!!! $name: package index UNREACHABLE (pip says) -- using the SEED" \
        "copy $seed (built $(date -u -r "$seed/pyvenv.cfg" +%FT%TZ)), not a" \
        "fresh install"
    # no stamp (a seed saved by hand): say so; any stamp but the wanted one
    # makes the next run with the index back rebuild the venv
    [ -f "$venv/.nxs-stamp" ] || echo unknown > "$venv/.nxs-stamp"
    [ "$(cat "$venv/.nxs-stamp")" = "$2" ] ||
        log "!!! $name: the seed was built for other (or unknown)" \
            "requirements than the checkout's"
}

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
    if [ "$ONLINE" = 0 ]; then
        # a venv that worked before beats a seed copy of the same or older
        if [ -x "$venv/bin/python" ] && [ -f "$stamp" ]; then
            log "!!! $name: package index UNREACHABLE (pip says) -- keeping the" \
                "existing venv, built for other requirements than the" \
                "checkout's"
            return 0
        fi
        use_seed "$name" "$want" && return 0
        log "$name: package index unreachable (pip says) and no seed in $SEEDS"
        return 3
    fi
    # build beside the old venv and swap only on success: a failed install
    # (say, the package index unreachable) keeps the venv that worked
    rm -rf "$venv.new"
    "$PY" -m venv "$venv.new"
    if ! pipq "$venv.new/bin/pip" install -U pip setuptools wheel ||
            ! pipq "$venv.new/bin/pip" install "$@"; then
        rm -rf "$venv.new"
        if ! index_reachable; then
            use_seed "$name" "$want" && return 0
            log "$name: package index unreachable (pip says) and no seed in $SEEDS"
            return 3
        fi
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
    save_seed "$name"
}

ONLINE=1
index_reachable || { ONLINE=0; log "!!! package index unreachable (pip says)"; }

# four independent installs: overlap their downloads
UNAVAILABLE=$DIR/venvs-unavailable
rm -f "$UNAVAILABLE"
make_venv venv "${NOVA_REQS[@]}" & p1=$!
declare -A optional
make_venv venv-keystone "${KEYSTONE_REQS[@]}" & optional[venv-keystone]=$!
make_venv venv-glance "${GLANCE_REQS[@]}" & optional[venv-glance]=$!
make_venv venv-tempest "${TEMPEST_REQS[@]}" & optional[venv-tempest]=$!
rc=0
r=0
wait "$p1" || r=$?
if [ "$r" != 0 ]; then
    [ "$r" = 3 ] || { log "venv creation failed (see $DIR/pip.log)"; exit 1; }
    echo venv >> "$UNAVAILABLE"
    rc=3
fi
for name in venv-keystone venv-glance venv-tempest; do
    wait "${optional[$name]}" && continue
    r=$?
    if [ "$r" = 3 ]; then
        echo "$name" >> "$UNAVAILABLE"
        [ "$rc" = 0 ] && rc=2
    else
        rc=1
    fi
done
[ "$rc" = 1 ] && { log "venv creation failed (see $DIR/pip.log)"; exit 1; }
if [ "$rc" = 3 ]; then
    log "!!! the nova venv is UNAVAILABLE: package index unreachable (pip" \
        "says), no seed; no cloud can run (exit 3)"
    exit 3
fi

t0=$SECONDS
rm -rf "$DIR/wheels"
# offline, the build requirements (pbr, setuptools) come from the venv
iso=()
[ "$ONLINE" = 1 ] || iso=(--no-build-isolation)
# setuptools leaves nova_xen_stubdom.egg-info in the checkout: with the
# checkout on PYTHONPATH (as the test tiers run), pip then takes that for
# the installed distribution (tests/functional/driver/test_loader.py's
# uninstall left the shim behind).  Remove it unless it was there before.
egg=nova_xen_stubdom.egg-info
had_egg=0
[ -e "$egg" ] && had_egg=1
pipq "$DIR/venv/bin/pip" wheel --no-deps "${iso[@]}" -w "$DIR/wheels" .
[ "$had_egg" = 1 ] || rm -rf "$egg"
whl=$(ls "$DIR"/wheels/nova_xen_stubdom-*.whl)
pipq "$DIR/venv/bin/pip" install --force-reinstall --no-deps "$whl"
"$DIR/venv/bin/pip" check >>"$DIR/pip.log" 2>&1 ||
    log "pip check reports conflicts in venv (see $DIR/pip.log)"
if ! grep -qx venv-tempest "$UNAVAILABLE" 2>/dev/null; then
    pipq "$DIR/venv-tempest/bin/pip" install --force-reinstall --no-deps "$whl"
    log "installed $(basename "$whl") into venv and venv-tempest in $((SECONDS - t0)) s"
else
    log "installed $(basename "$whl") into venv in $((SECONDS - t0)) s"
fi
shim=$("$DIR/venv/bin/python" -c 'import nova.virt.xen_stubdom as m; print(m.__file__)')
case $shim in
    "$DIR"/venv/*) log "loader shim: $shim" ;;
    *) log "loader shim imported from $shim, not from the venv"; exit 1 ;;
esac
if [ "$rc" = 2 ]; then
    log "!!! UNAVAILABLE: $(tr '\n' ' ' < "$UNAVAILABLE")(package index" \
        "unreachable, no seed; listed in $UNAVAILABLE; exit 2)"
fi
exit "$rc"
