# shellcheck shell=sh
# realxen dom0 helpers (busybox sh), installed as /etc/realxen/lib.sh and
# sourced by every scenario script after the testbed's own lib (mark, up, el,
# waitlog, hvmcfg).  Markers: "XENPROBE <uptime> <NAME> key=value ...";
# tests/realxen/testbed.py parses them on the host.

# By-hand knobs from the host (tests/realxen/conftest.py build_overlay).
# shellcheck disable=SC1091
[ -f /etc/realxen/env ] && . /etc/realxen/env

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
