# shellcheck shell=sh
# realxen dom0 helpers (busybox sh), installed as /etc/realxen/lib.sh and
# sourced by every scenario script after the testbed's own lib (mark, up, el,
# waitlog, hvmcfg).  Markers: "XENPROBE <uptime> <NAME> key=value ...";
# tests/realxen/testbed.py parses them on the host.

# By-hand knobs from the host (tests/realxen/conftest.py build_overlay).
# shellcheck disable=SC1091
[ -f /etc/realxen/env ] && . /etc/realxen/env
# The interpreter our dom0 payload runs on (tests/realxen/dom0py.py: Python
# 3.6, as XCP-ng 8.3's dom0, where the host has one; else the testbed's 3.11).
RX_PYTHON=${RX_PYTHON:-python3}

# Bounded wait for a condition: rx_until TIMEOUT_S CMD... -> 0 as soon as CMD
# succeeds (polled every 0.5 s), 1 after TIMEOUT_S.
rx_until() {
  local end; end=$(awk "BEGIN{print $(up) + $1}"); shift
  while :; do
    "$@" && return 0
    awk "BEGIN{exit !($(up) >= $end)}" && return 1
    sleep 0.5
  done
}

# Number of lines guest DOMID wrote to Xen's debug port (0xe9) matching TEXT:
# Xen prints them as "(dDOMID) TEXT" on its console (xl dmesg).
rx_debugport_count() { xl dmesg 2>/dev/null | grep -c "(d$1) .*$2"; }
rx_ticks_at_least() { [ "$(rx_debugport_count "$1" HVM-TICK)" -ge "$2" ]; }

# Leak check: what a scenario may leave behind, snapshotted before it runs and
# compared after it cleaned up: domains (xl list), xenstore paths (values
# change, paths must not), device-model processes, files under Xen's run and
# lib directories, /tmp and /dev/shm.  Not leaks, and so left out: the
# container nodes libxl creates with the first domain and never removes
# (/libxl, /vm, /local/domain/0/device-model; their per-domain children do
# count), and libxl's domid history (/var/run/xen/domid-history, written on
# every destroy by libxl_domain.c libxl__mark_domid_recent so that a domid is
# not reused at once).  Likewise our own container nodes /nova-xen-stubdom and
# /nova-xen-stubdom/links (stubdom_link.LINKS_ROOT; each link under it counts).
rx_state() {
  echo "## domains"; xl list 2>/dev/null | awk 'NR > 1 {print $1}' | sort
  echo "## xenstore"; xenstore-ls -f / 2>/dev/null | sed 's/ = .*//' |
    grep -v -x -E '/libxl|/vm|/local/domain/0/device-model|/nova-xen-stubdom|/nova-xen-stubdom/links' | sort
  echo "## processes"; ps -o args 2>/dev/null | grep -E 'qemu|xl |vchan' | grep -v grep | sort
  echo "## files"; find /var/run/xen /var/lib/xen /tmp /dev/shm 2>/dev/null |
    grep -v -x -E '/tmp/rx-state-.*|/var/run/xen/domid-history' | sort
}
rx_snapshot() { rx_state > "/tmp/rx-state-$1.before"; }
# rx_settled NAME: the state equals the snapshot (xl's per-domain monitor
# processes and libxl's xenstore clean-up finish shortly after `xl destroy`).
rx_settled() { rx_state > "/tmp/rx-state-$1.now"; cmp -s "/tmp/rx-state-$1.now" "/tmp/rx-state-$1.before"; }
# rx_leakcheck NAME -> marks NAME-LEAK-CHECK ok, or FAILED with the diff in
# /out/NAME-leaks.txt
rx_leakcheck() {
  rx_until 30 rx_settled "$1"
  rx_state > "/tmp/rx-state-$1.after"
  if diff "/tmp/rx-state-$1.before" "/tmp/rx-state-$1.after" > "/out/$1-leaks.txt"; then
    mark "$1-LEAK-CHECK" ok=1 domains=$(xl list | awk 'NR > 1' | wc -l) \
      xs_paths=$(grep -c '^/' "/tmp/rx-state-$1.after")
    rm -f "/out/$1-leaks.txt"
  else
    cat "/out/$1-leaks.txt"
    mark "$1-LEAK-CHECK" FAILED diff_lines=$(grep -c '^[-+][^-+]' "/out/$1-leaks.txt")
  fi
  rm -f "/tmp/rx-state-$1".*
}

# rx_vbd_dump FILE STUB: both ends of STUB's PV disks as xenstore holds them
# (backend in dom0, frontend in the stub, with permissions), xenbus error
# nodes, the backend devices dom0's kernel has bound (a backend node with no
# device here was unregistered by blkback), the loop devices and blkback's
# log lines: written for every stub-disk attach of the stub-image scenarios,
# so that a disk that does not connect explains itself beside one that did.
rx_vbd_dump() {
  {
    echo "## $(up) xenstore-ls -fp /local/domain/0/backend/vbd/$2"
    xenstore-ls -fp "/local/domain/0/backend/vbd/$2" 2>&1
    echo "## xenstore-ls -fp /local/domain/$2/device/vbd"
    xenstore-ls -fp "/local/domain/$2/device/vbd" 2>&1
    echo "## xenstore-ls -fp /local/domain/0/error"
    xenstore-ls -fp /local/domain/0/error 2>&1
    echo "## /sys/bus/xen-backend/devices"
    for d in /sys/bus/xen-backend/devices/*; do
      [ -e "$d" ] || continue
      echo "$(basename "$d") driver=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null) nodename=$(cat "$d/nodename" 2>/dev/null) physical_device=$(cat "$d/physical_device" 2>/dev/null)"
    done
    echo "## losetup -a"; losetup -a 2>&1
    echo "## dmesg: blkback, xenbus, loop"
    dmesg 2>/dev/null | grep -E 'blkback|xen-backend|xenbus|vbd|loop[0-9]' | tail -40
  } > "$1" 2>&1
}

# -- our dom0 daemon, for the scenarios that drive it (s3, s5) ---------------
# rx_agent NAME HOST_UUID < EXTRA_CONF: W=/tmp/NAME, agent.conf (backend xen
# plus EXTRA_CONF lines of [agent]) and the XAPI inventory of this "host".
rx_agent() {
  RX_AGENT=$1; W=/tmp/$1; rm -rf "$W"; mkdir -p "$W"
  RUN=/var/run/nova-xen-stubdom; STATE=/var/lib/nova-xen-stubdom
  export PYTHONPATH=/opt/realxen/pkg NOVA_XEN_STUBDOM_AGENT_CONF=$W/agent.conf
  { printf '[agent]\nbackend = xen\nsocket_path = %s/agent.sock\nstate_dir = %s\n' $RUN $STATE
    cat; } > "$W/agent.conf"
  echo "INSTALLATION_UUID='$2'" > "$W/inventory"
}
rx_call() { "$RX_PYTHON" /opt/realxen/d1_daemon.py "$@"; }
# rx_pcall plugin|dm FN k=v...: as d1-daemon.sh's pcall (R_*, V_* set).
rx_pcall() {
  for v in $(set | sed -n 's/^\([RV]_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
  rx_call "$@" > "$W/last.out" 2> "$W/last.err"; local rc=$?
  head -1 "$W/last.out" | cut -c1-300; tail -3 "$W/last.err"
  eval "$(tail -n +2 "$W/last.out")"
  return $rc
}
rx_daemon_start() {  # -> $DPID; log /out/NAME-daemon.log
  "$RX_PYTHON" -m nova_xen_stubdom.dom0.daemon --config "$W/agent.conf" \
    --inventory "$W/inventory" > "$W/daemon.out" 2> "/out/$RX_AGENT-daemon.log" &
  DPID=$!
  rx_until 240 grep -q '^ready ' "$W/daemon.out"
}
rx_daemon_stop() {  # SIGTERM, SIGKILL after 30 s (a watchdog, not a wait)
  kill -TERM $DPID; ( sleep 30; kill -9 $DPID 2>/dev/null ) & local wd=$!
  wait $DPID; local rc=$?; kill $wd 2>/dev/null; wait $wd 2>/dev/null
  return $rc
}
# Scenarios 3 and 5's guest (tests/realxen/dom0/s35-guest.S, 32 MiB, its
# device model the testbed's qemu-xen in dom0) on its own copy of the disk:
# s35_cfg NAME UUID.
s35_cfg() {
  cp /opt/realxen/s35-guest.img "$W/$1.img"
  HVMMEM=32 hvmcfg "$1" | sed "s#target=/guest/hvm-disk.img#target=$W/$1.img#"
  echo "uuid=\"$2\""
}
# s35_count DOMID -> the guest's last counter (decimal; empty if none yet);
# s35_first DOMID -> its first.  (Xen prints "(dN) [ uptime ] TEXT" with
# console_timestamps=boot.)
s35_counts() { xl dmesg 2>/dev/null | sed -n "s/.*(d$1) .*S35-CNT \([0-9A-F]\{4\}\).*/\1/p"; }
s35_count() { local h; h=$(s35_counts "$1" | tail -1); [ -n "$h" ] && echo $((0x$h)); }
s35_first() { local h; h=$(s35_counts "$1" | head -1); [ -n "$h" ] && echo $((0x$h)); }
s35_count_at_least() { [ "$(s35_count "$1")" -ge "$2" ] 2>/dev/null; }
# s35_stub NAME GUEST UUID: the guest's stub domain, linked to it by the
# driver's link_stubdom and the wrapper's dm_launch (as d1); sets S.  It
# stays paused (xl create -p = XAPI's VM.start of the stub VM, paused): it
# runs no QEMU here (d1_daemon.py responder plays its side of the state
# disk from dom0), it only holds the link and the state disk's frontend;
# d1 shows a running stub foreign-mapping its guest.
s35_stub() {
  pvcfg "$1" pv 128 "stubtest stub_target=$2 stub_gfn=100" > "$W/$1.cfg"
  xl create -p "$W/$1.cfg" > "$W/create-$1.log" 2>&1 || cat "$W/create-$1.log"
  S=$(xl domid "$1" 2>/dev/null)
  rx_pcall plugin link_stubdom stubdom_domid=$S guest_vm_uuid=$3 \
    'config={"memory_mb": 32, "vcpus": 1, "vga": "none"}' &&
  rx_pcall dm dm_launch guest_domid=$2 guest_vm_uuid=$3
}
# s35_unstub GUEST UUID: the wrapper's dm_stop and the driver's unlink.
s35_unstub() {
  rx_pcall dm dm_stop guest_domid=$1 guest_vm_uuid=$2
  rx_pcall plugin unlink_stubdom guest_vm_uuid=$2
}
# s35_digest_before PREFIX NAME DOMID: the guest paused (`xl pause` = XAPI's
# VM.pause, only for a still memory), its last count and RAM digest marked
# PREFIX-DIGEST-BEFORE; sets S35_BEFORE (the count) and S35_DIGEST for
# s35_after_restore (scenarios 3 in dom0 and 3 with our stub).  The digest
# is the test's own instrument, not our payload: it runs on the testbed's
# python3 (3.11), quicker under TCG than dom0's 3.6 (S3O-DIGEST-BEFORE 6.6-
# 7.7 s on 3.11 against 11.7-13.3 s on 3.6, scenario alone; 30 s on 3.6 in
# the whole tier at load ~6).
s35_digest() { python3 /opt/realxen/s35_state.py digest "$1" 32; }
s35_digest_before() {
  xl pause "$2"
  S35_BEFORE=$(s35_count "$3")
  S35_DIGEST=$(s35_digest "$3")
  mark "$1-DIGEST-BEFORE" guest="$3" cnt="$S35_BEFORE" $S35_DIGEST
}
# s35_after_restore PREFIX NAME DOMID [LOG]: the restored, still paused
# guest's RAM digest equal to S35_DIGEST (PREFIX-DIGEST-AFTER); `xl unpause`
# (VM.unpause) and its count goes on from S35_BEFORE without a second boot
# (PREFIX-CONTINUES); on failure Xen's last lines and LOG's (the stub's
# console) are printed.
# (the marker's words split on purpose; busybox sh has local)
# shellcheck disable=SC2046,SC3043
s35_after_restore() {
  local d r1 r2 t first
  d=$(s35_digest "$3")
  r1=$(echo "$S35_DIGEST" | sed 's/ .*//'); r2=$(echo "$d" | sed 's/ .*//')
  mark "$1-DIGEST-AFTER" guest="$3" equal=$([ "$r1" = "$r2" ] && echo 1 || echo 0) $d \
    $([ "$r1" = "$r2" ] || echo FAILED)
  xl unpause "$2"
  t=$(up)
  # the first count at once (Xen's console ring is small and dom0 writes
  # to it)
  rx_until 120 s35_count_at_least "$3" 1; first=$(s35_first "$3")
  if rx_until 60 s35_count_at_least "$3" $((S35_BEFORE + 2)); then
    mark "$1-CONTINUES" guest="$3" before="$S35_BEFORE" first="$first" cnt="$(s35_count "$3")" \
      booted="$(rx_debugport_count "$3" S35-GUEST-BOOTED)" took="$(el "$t")"
  else
    xl dmesg | tail -20; [ -z "$4" ] || tail -20 "$4"
    mark "$1-CONTINUES" FAILED before="$S35_BEFORE" first="$first" cnt="$(s35_count "$3")" \
      booted="$(rx_debugport_count "$3" S35-GUEST-BOOTED)"
  fi
}
# rx_ourdm_cfg NAME UUID: xl config of the stub-image scenarios' HVM guest
# (32 MiB, booting from the IDE disk its stub's QEMU emulates) whose device
# model is our wrapper, reached through the xenopsd-dm shim as xenopsd runs
# it (tests/realxen/ourstub.py DM_SHIM).
rx_ourdm_cfg() {
  cat <<CFG
name="$1"
type="hvm"
uuid="$2"
memory=32
vcpus=1
device_model_version="qemu-xen"
device_model_override="/opt/realxen/xenopsd-dm"
vga="none"
vnc=0
sdl=0
boot="c"
on_crash="preserve"
CFG
}
