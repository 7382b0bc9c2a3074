#!/bin/sh
# shellcheck shell=dash
#
# nova-xen-stubdom: init (PID 1) of the Linux stub domain, run by busybox sh.
#
# Follows libxl's Linux device-model stub domain conventions: the toolstack
# writes the guest's domid to ~/target and QEMU's arguments to ~/dm-argv
# (separated by ESC, 0x1b); the stub domain starts QEMU and reports "running"
# on ~/device-model/<guest>/state ("~" is /local/domain/<stub>, which is
# what relative xenstore paths resolve to inside the stub domain).
#
# Device state for save/restore travels on a virtual disk dom0 attaches for
# the operation, not on consoles (format: doc/source/stubdom.rst and
# nova_xen_stubdom/dom0/statedisk.py):
#   restore: dom0 attaches the disk before boot and writes
#            ~/nova-xen-stubdom/restore-disk = <vdev, e.g. xvdb>; the init
#            verifies it and gives the state to QEMU with -incoming in place
#            of libxl's "$STUBDOM_RESTORE_INCOMING_ARG" argument.
#   save:    dom0 pauses the guest, attaches the disk and writes
#            ~/nova-xen-stubdom/command = "<seq> save <vdev>"; the init stops
#            QEMU, has it write its device state (xen-save-devices-state),
#            writes header + state to the disk and answers on
#            ~/nova-xen-stubdom/result = "<seq> ok <length> <sha256>" or
#            "<seq> error <reason>".  "<seq> cont" resumes QEMU (a cancelled
#            save).
#
# Kernel command line: stubdom.selftest=1 runs the self-test instead
# (libraries resolve, QEMU runs, memory figures) and powers off.
#
# Tests source this file with STUBDOM_INIT_LIB=1 to call single functions.

QEMU=${STUBDOM_QEMU:-/usr/libexec/xen-qemu-system-i386}
CONF=${STUBDOM_CONF:-/etc/stubdom}
RUN=${STUBDOM_RUN:-/run}
DEV=${STUBDOM_DEV:-/dev}
CMDLINE=${STUBDOM_CMDLINE:-/proc/cmdline}
LOG=${STUBDOM_LOG:-/dev/console}
LDSO=${STUBDOM_LDSO:-/lib64/ld-linux-x86-64.so.2}
SYSNET=${STUBDOM_SYSNET:-/sys/class/net}
XS_NS=nova-xen-stubdom
MAGIC=NXSDSTAT
MARKER=NOVA-XEN-STUBDOM-SELFTEST
QMP_IN="$RUN/qmp.in"
QMP_OUT="$RUN/qmp.out"

log() {
    echo "stubdom-init: $*" >>"$LOG"
}

die() {
    log "FATAL: $*"
    return 1
}

# cmdline_value NAME: value of NAME=value on the kernel command line.
cmdline_value() {
    _cmdline=""
    read -r _cmdline <"$CMDLINE" 2>/dev/null
    for word in $_cmdline; do
        case "$word" in
            "$1="*) echo "${word#*=}"; return 0 ;;
        esac
    done
    return 1
}

mount_basics() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
    mkdir -p "$RUN" /tmp
}

on_xen() {
    [ "$(cat /sys/hypervisor/type 2>/dev/null)" = xen ] ||
        [ -d /sys/bus/xen/devices ]
}

load_modules() {
    while read -r mod; do
        [ -n "$mod" ] || continue
        insmod "$mod" 2>>"$LOG" || log "insmod $mod failed"
    done <"$CONF/modules"
    mkdir -p /proc/xen
    mount -t xenfs xenfs /proc/xen 2>/dev/null || true
}

# ---- NICs: QEMU's tap "ethN" <-> bridge "brN" <-> netfront N --------------
#
# The agent mirrors guest NIC N on the stub domain as netfront N (which
# Linux names ethN) and passes QEMU "-netdev type=tap,ifname=ethN,...".  The
# netfront is renamed nfN to free the name for QEMU's tap, and both join
# bridge brN, so the emulated NIC's frames leave through the PV NIC.

prepare_nics() {
    for _nf in "$SYSNET"/eth*; do
        [ -e "$_nf" ] || continue
        _n=${_nf##*/eth}
        ip link set "eth$_n" down
        ip link set "eth$_n" name "nf$_n"
        brctl addbr "br$_n"
        brctl addif "br$_n" "nf$_n"
        ip link set "nf$_n" up
        ip link set "br$_n" up
    done
}

# attach_taps: once QEMU has created its taps, put each in its bridge.
attach_taps() {
    for _br in "$SYSNET"/br*; do
        [ -e "$_br" ] || continue
        _n=${_br##*/br}
        if [ -e "$SYSNET/eth$_n" ]; then
            brctl addif "br$_n" "eth$_n"
            ip link set "eth$_n" up
            log "NIC $_n: QEMU tap eth$_n bridged to netfront nf$_n (br$_n)"
        else
            log "no QEMU tap eth$_n for bridge br$_n"
        fi
    done
}

# ---- state disk: 512-byte header (statedisk.py), then the state -----------

# le_bytes VALUE COUNT: VALUE as COUNT little-endian bytes, printf escapes.
le_bytes() {
    _v=$1 _i=0 _out=""
    while [ "$_i" -lt "$2" ]; do
        _out="$_out\\$(printf '%03o' $((_v & 255)))"
        _v=$((_v >> 8))
        _i=$((_i + 1))
    done
    echo "$_out"
}

# hex_bytes HEX: printf escapes for a hex string.
hex_bytes() {
    echo "$1" | sed 's/\(..\)/\\x\1/g'
}

# le_value FILE OFFSET COUNT: unsigned little-endian integer from FILE.
le_value() {
    _val=0 _shift=0
    for _b in $(od -A n -t u1 -j "$2" -N "$3" "$1"); do
        _val=$((_val + (_b << _shift)))
        _shift=$((_shift + 8))
    done
    echo "$_val"
}

# statedisk_write STATEFILE DISK: header + state onto DISK; prints
# "<length> <sha256>".
statedisk_write() {
    _len=$(wc -c <"$1")
    _len=$((_len + 0))
    _sha=$(sha256sum "$1" | cut -d' ' -f1)
    {
        # shellcheck disable=SC2059
        printf "$MAGIC$(le_bytes 1 4)$(le_bytes 512 4)$(le_bytes "$_len" 8)"
        # shellcheck disable=SC2059
        printf "$(hex_bytes "$_sha")"
        head -c 456 /dev/zero
        cat "$1"
        # Pad to a whole sector, as the Python writer does.
        head -c $(((512 - _len % 512) % 512)) /dev/zero
    } >"$2" || return 1
    sync
    echo "$_len $_sha"
}

# statedisk_read DISK OUTFILE: verify the header and the sha256, write the
# state bytes to OUTFILE.  Errors name what was expected and what was found.
statedisk_read() {
    _magic=$(head -c 8 "$1")
    [ "$_magic" = "$MAGIC" ] || { log "state disk $1: bad magic"; return 1; }
    _ver=$(le_value "$1" 8 4)
    [ "$_ver" = 1 ] || { log "state disk $1: version $_ver, expected 1"; return 1; }
    _hsize=$(le_value "$1" 12 4)
    [ "$_hsize" = 512 ] || { log "state disk $1: header size $_hsize"; return 1; }
    _len=$(le_value "$1" 16 8)
    _want=$(od -A n -t x1 -j 24 -N 32 "$1" | tr -d ' \n')
    dd if="$1" bs=512 skip=1 2>/dev/null | head -c "$_len" >"$2"
    _got_len=$(wc -c <"$2")
    [ "$((_got_len + 0))" = "$_len" ] ||
        { log "state disk $1: state truncated, $_got_len of $_len bytes"; return 1; }
    _got=$(sha256sum "$2" | cut -d' ' -f1)
    [ "$_got" = "$_want" ] ||
        { log "state disk $1: sha256 mismatch, header $_want, data $_got"; return 1; }
    log "state disk $1: $_len bytes of device state verified"
}

wait_for_dev() {
    _n=0
    while [ ! -b "$1" ] && [ ! -f "$1" ]; do
        _n=$((_n + 1))
        [ "$_n" -le "${2:-30}" ] || return 1
        sleep 1
    done
}

# ---- QMP over a pipe chardev (the init is QEMU's local monitor client) ----

qmp_open() {
    mkfifo "$QMP_IN" "$QMP_OUT" 2>/dev/null || true
    exec 3<>"$QMP_IN" 4<>"$QMP_OUT"
}

# qmp JSON: send one command, print its reply line; 1 on error/timeout.
qmp() {
    echo "$1" >&3
    # busybox ash has read -t (dash, which shellcheck checks, has not).
    # shellcheck disable=SC3045
    while read -r -t 60 _line <&4; do
        case "$_line" in
            *'"return"'*) echo "$_line"; return 0 ;;
            *'"error"'*) echo "$_line"; return 1 ;;
        esac
    done
    echo "no QMP reply"
    return 1
}

qmp_handshake() {
    _n=0
    until qmp '{"execute":"qmp_capabilities"}' >/dev/null; do
        _n=$((_n + 1))
        [ "$_n" -lt 3 ] || return 1
    done
}

# ---- dm-argv ----------------------------------------------------------------

# dm_args ARGV [INCOMING]: print QEMU's arguments one per line, from the
# ESC-separated dm-argv, with libxl's restore placeholder replaced by the
# INCOMING migration URI.  A leading program name is dropped (we start the
# packaged QEMU).  Arguments cannot hold newlines (nor can they in libxl's
# scheme, which QEMU's option syntax never needs).
dm_args() {
    _incoming=${2:-}
    _esc=$(printf '\033')
    _old_ifs=$IFS
    IFS=$_esc
    set -f
    # shellcheck disable=SC2086
    set -- $1
    set +f
    IFS=$_old_ifs
    case "${1:-}" in -*|"") ;; *) shift ;; esac
    _prev=""
    for _a in "$@"; do
        # VNC only on a unix socket: a TCP listener in the stub domain
        # would face the guest's bridged networks
        if [ "${_prev:-}" = -vnc ]; then
            case "$_a" in
                unix:*) ;;
                *) echo "dm-argv asks for VNC on $_a: only unix: is allowed" >&2
                   return 1 ;;
            esac
        fi
        _prev=$_a
        # shellcheck disable=SC2016 # the literal placeholder, not expanded
        if [ "$_a" = '$STUBDOM_RESTORE_INCOMING_ARG' ]; then
            if [ -z "$_incoming" ]; then
                echo "dm-argv asks for a restore but there is no state disk" >&2
                return 1
            fi
            _a=$_incoming
        fi
        printf '%s\n' "$_a"
    done
}

# ---- VNC: QEMU's unix socket, bridged to dom0 over a vchan ----------------
#
# start_vnc_bridge ARGS...: when QEMU serves VNC on "unix:PATH", offer PATH
# to dom0 as the vchan server at ~/device-model/<target>/vnc-vchan, the way
# libxl carries a Linux stub domain's QMP (vchan-socket-proxy); dom0's end
# listens on /var/run/xen/vnc-<target> for XAPI's console proxy.
start_vnc_bridge() {
    _vnc=""
    _prev=""
    for _a in "$@"; do
        [ "$_prev" = -vnc ] && _vnc=$_a
        _prev=$_a
    done
    case "$_vnc" in
        unix:*) ;;
        *) return 0 ;;
    esac
    _sock=${_vnc#unix:}
    _sock=${_sock%%,*}
    if ! command -v vchan-socket-proxy >/dev/null 2>&1; then
        log "no vchan-socket-proxy in the image: VNC stays inside the stub domain"
        return 0
    fi
    vchan-socket-proxy --mode=server 0 \
        "/local/domain/$domid/device-model/$target/vnc-vchan" "$_sock" \
        >>"$LOG" 2>&1 &
    log "VNC of guest $target bridged to dom0 (vchan-socket-proxy $!)"
}

# ---- commands from dom0 ------------------------------------------------------

# dm_save DISK: stop QEMU, have it write its device state, put header +
# state on DISK; prints "<length> <sha256>", or the reason and 1.
dm_save() {
    _state="$RUN/dm-save.state"
    rm -f "$_state"
    wait_for_dev "$1" 30 || { echo "no disk $1"; return 1; }
    qmp '{"execute":"stop"}' >/dev/null || { echo "QMP stop failed"; return 1; }
    _r=$(qmp "{\"execute\":\"xen-save-devices-state\",\"arguments\":{\"filename\":\"$_state\",\"live\":false}}") ||
        { echo "xen-save-devices-state: $_r"; return 1; }
    _res=$(statedisk_write "$_state" "$1") || { echo "writing $1 failed"; return 1; }
    rm -f "$_state"
    log "device state saved to $1: $_res"
    echo "$_res"
}

# dm_restore DISK: verify the state on DISK and give it to a new QEMU with
# -incoming, as libxl does on a restore (the guest is paused by dom0 while
# its memory is restored).  Not stop + xen-load-devices-state into the
# running QEMU: QEMU 8.0.3 aborts there on real Xen
# ("util/yank.c:105: yank_unregister_instance: Assertion `entry' failed":
# qmp_xen_load_devices_state ends in migration_incoming_state_destroy,
# which unregisters a yank instance it never registered).  Sets _why and
# returns 1 on failure.
dm_restore() {
    _state="$RUN/dm-restore.state"
    wait_for_dev "$1" 30 || { _why="no disk $1"; return 1; }
    statedisk_read "$1" "$_state" ||
        { _why="state disk $1: $(tail -1 "$LOG" 2>/dev/null | sed 's/.*state disk [^:]*: //')"; return 1; }
    kill "$qemu_pid" 2>/dev/null
    wait "$qemu_pid" 2>/dev/null
    start_qemu "$args
-incoming
exec:cat $_state" || { _why="QEMU with -incoming did not start"; return 1; }
    # the load is asynchronous: done when QEMU leaves "inmigrate"
    _n=0
    while _st=$(qmp '{"execute":"query-status"}') && case "$_st" in *inmigrate*) true ;; *) false ;; esac; do
        _n=$((_n + 1))
        [ "$_n" -lt 120 ] || { _why="QEMU still loading after 60 s"; return 1; }
        sleep 0.5
    done
    case "$_st" in
        *'"return"'*) ;;
        *) _why="QEMU failed to load the state: $_st"; return 1 ;;
    esac
    rm -f "$_state"
    log "device state loaded from $1 (QEMU $qemu_pid started with -incoming)"
}

# handle_dm_command DIR CMD: dom0's daemon's protocol (dom0/device_state.py)
# under DIR = device-model/<guest>: "save" / "restore" with DIR/state-disk
# naming the attached disk, "continue"; the answer is DIR/state (saved,
# running; error with DIR/error), then DIR/command removed.
handle_dm_command() {
    _disk="$DEV/$(xenstore-read "$1/state-disk" 2>/dev/null)"
    case "$2" in
        save) _r=$(dm_save "$_disk") && _new=saved ;;
        restore) _why=""; dm_restore "$_disk" && _new=running; _r=$_why; [ -z "$_why" ] ;;
        continue) _r=$(qmp '{"execute":"cont"}') && _new=running ;;
        *) _r="unknown command $2"; false ;;
    esac || { _new=error; xenstore-write "$1/error" "$2: $_r"; log "$2 failed: $_r"; }
    xenstore-write "$1/state" "$_new"
    xenstore-rm "$1/command"
}

# handle_command "SEQ VERB [ARG]": run one dom0 command, print the result.
handle_command() {
    _seq=${1%% *}
    _rest=${1#* }
    _verb=${_rest%% *}
    _arg=${_rest#"$_verb"}
    _arg=${_arg# }
    case "$_verb" in
        save)
            _disk="$DEV/$_arg"
            _state="$RUN/dm-save.state"
            rm -f "$_state"
            _res=$(dm_save "$_disk") || { echo "$_seq error $_res"; return; }
            echo "$_seq ok $_res"
            ;;
        cont)
            if qmp '{"execute":"cont"}' >/dev/null; then
                echo "$_seq ok"
            else
                echo "$_seq error QMP cont failed"
            fi
            ;;
        *)
            echo "$_seq error unknown command $_verb"
            ;;
    esac
}

# ---- self-test ---------------------------------------------------------------

selftest() {
    _fail=""
    echo "$MARKER: begin (kernel $(uname -r))"
    while read -r bin; do
        [ -n "$bin" ] || continue
        if _out=$("$LDSO" --list "$bin" 2>&1) && ! echo "$_out" | grep -q 'not found'; then
            echo "$MARKER: libs ok $bin ($(echo "$_out" | wc -l) entries)"
        else
            echo "$_out"
            echo "$MARKER: libs MISSING for $bin"
            _fail="$_fail libs:$bin"
        fi
    done <"$CONF/binaries"
    while read -r mod; do
        [ -f "$mod" ] || _fail="$_fail module:$mod"
    done <"$CONF/modules"
    # Every ROM we ship must be on QEMU's firmware search path (-L help),
    # and every device model the agent configures must be built in.
    _romdirs=" "
    for _p in $("$QEMU" -L help 2>/dev/null); do
        _r=$(readlink -f "$_p" 2>/dev/null) && _romdirs="$_romdirs$_r "
    done
    while read -r rom; do
        if [ ! -f "$rom" ]; then
            _fail="$_fail rom:$rom"
            continue
        fi
        case "$_romdirs" in
            *" ${rom%/*} "*) ;;
            *) _fail="$_fail rom-path:$rom" ;;
        esac
    done <"$CONF/firmware"
    _devs=$("$QEMU" -device help 2>&1)
    _ndev=0
    while read -r dev; do
        # A name or an alias (ahci is ich9-ahci's alias) both work in -device.
        if echo "$_devs" | grep -qE "(name|alias) \"$dev\""; then
            _ndev=$((_ndev + 1))
        else
            _fail="$_fail device:$dev"
        fi
    done <"$CONF/devices"
    echo "$MARKER: firmware search path:$_romdirs"
    echo "$MARKER: $_ndev device models present"
    if _ver=$("$QEMU" --version 2>&1); then
        echo "$_ver" | sed "s/^/$MARKER: qemu: /"
    else
        echo "$_ver"
        _fail="$_fail qemu-version"
    fi
    grep -E '^(MemTotal|MemFree|MemAvailable|Buffers|Cached|Shmem):' /proc/meminfo |
        sed "s/^/$MARKER: meminfo: /"
    _total=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    _avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    _free=$(awk '/^MemFree:/ {print $2}' /proc/meminfo)
    echo "$MARKER: memory used kB: $((_total - _free)) (MemTotal-MemFree)," \
        "$((_total - _avail)) (MemTotal-MemAvailable)"
    echo "$MARKER: uptime $(cut -d' ' -f1 /proc/uptime) s"
    if [ -z "$_fail" ]; then
        echo "$MARKER: PASS"
    else
        echo "$MARKER: FAIL:$_fail"
    fi
}

# ---- normal operation --------------------------------------------------------

# wait_for_link: XAPI runs the stub VM before its guest exists (the driver's
# VM.start_on of the stub, link_stubdom, then VM.start_on of the guest,
# driver/vmstart.py); dom0 writes ~/target and, last, ~/dm-argv when the
# guest's device model is launched (dom0/stubdom_link.py attach_target).
# Until then there is nothing to serve: poll (the stub has no xenstore
# watch client that outlives a read; the driver destroys a stub whose
# guest never comes).
wait_for_link() {
    _n=0
    until xenstore-read dm-argv >/dev/null 2>&1; do
        [ $((_n % 120)) = 0 ] && log "waiting for dom0 to link a guest (~/dm-argv)"
        _n=$((_n + 1))
        sleep "${STUBDOM_LINK_POLL:-0.5}"
    done
}

# start_qemu ARGS: QEMU with ARGS (one per line) and the init's monitor;
# sets qemu_pid; 1 (QEMU killed) if it does not answer on its monitor.
start_qemu() {
    set -f
    _old_ifs=$IFS
    IFS='
'
    # shellcheck disable=SC2086
    set -- $1
    IFS=$_old_ifs
    set +f
    log "starting $QEMU $*"
    "$QEMU" "$@" -chardev "pipe,id=nxsqmp,path=$RUN/qmp" \
        -mon chardev=nxsqmp,mode=control >>"$LOG" 2>&1 &
    qemu_pid=$!
    qmp_handshake && return 0
    kill "$qemu_pid" 2>/dev/null
    return 1
}

run_stubdom() {
    load_modules
    domid=$(xenstore-read domid) || { die "cannot read my domid"; return 1; }
    wait_for_link
    target=$(xenstore-read target) || { die "no ~/target"; return 1; }
    # -R: the raw value; Xen's client escapes non-printable bytes, ESC (the
    # separator) included, which left QEMU without arguments on Xen
    argv=$(xenstore-read -R dm-argv) || { die "no ~/dm-argv"; return 1; }
    state_node="device-model/$target/state"
    log "stub domain $domid for guest $target"

    incoming=""
    if rdisk=$(xenstore-read "$XS_NS/restore-disk" 2>/dev/null) && [ -n "$rdisk" ]; then
        wait_for_dev "$DEV/$rdisk" 30 || { die "restore disk $DEV/$rdisk missing"; return 1; }
        statedisk_read "$DEV/$rdisk" "$RUN/dm-restore.state" || {
            xenstore-write "$state_node" error
            return 1
        }
        incoming="exec:cat $RUN/dm-restore.state"
    fi

    args=$(dm_args "$argv" "$incoming") || { die "bad dm-argv"; return 1; }
    prepare_nics
    qmp_open
    start_qemu "$args" || {
        log "QEMU did not answer on its monitor"
        xenstore-write "$state_node" error
        return 1
    }
    attach_taps
    set -f
    _old_ifs=$IFS
    IFS='
'
    # shellcheck disable=SC2086
    start_vnc_bridge $args
    IFS=$_old_ifs
    set +f
    xenstore-write "$state_node" running
    log "QEMU $qemu_pid running for guest $target"

    last=""
    while kill -0 "$qemu_pid" 2>/dev/null; do
        cmd=$(xenstore-read "$XS_NS/command" 2>/dev/null) || cmd=""
        if [ -n "$cmd" ] && [ "$cmd" != "$last" ]; then
            last=$cmd
            log "command: $cmd"
            xenstore-write "$XS_NS/result" "$(handle_command "$cmd")"
        fi
        dmcmd=$(xenstore-read "device-model/$target/command" 2>/dev/null) || dmcmd=""
        if [ -n "$dmcmd" ]; then
            log "device-model command: $dmcmd"
            handle_dm_command "device-model/$target" "$dmcmd"
        fi
        sleep 1
    done
    wait "$qemu_pid"
    log "QEMU exited with status $?"
    return 0
}

main() {
    mount_basics
    exec >>"$LOG" 2>&1
    if [ "$(cmdline_value stubdom.selftest)" = 1 ]; then
        selftest
    elif on_xen; then
        run_stubdom || log "stub domain failed"
    else
        log "not running on Xen and no stubdom.selftest=1: nothing to do"
    fi
    sync
    poweroff -f
}

if [ "${STUBDOM_INIT_LIB:-0}" != 1 ]; then
    main
fi
