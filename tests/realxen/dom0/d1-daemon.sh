# shellcheck shell=sh
# Daemon scenario (sourced by dom0 /init in a subshell): our dom0 process
# model on real Xen 4.17.  The dom0 daemon (nova_xen_stubdom.dom0.daemon,
# backend=xen: XenBackend over libxenctrl/libxenstore/libxenforeignmemory)
# listens on its unix socket; each host.call_plugin is the installed XAPI
# plugin launcher in a fresh process (d1_daemon.py plugin, the stand-in
# XenAPIPlugin), each device-model wrapper request a fresh process too
# (d1_daemon.py dm).  A PV "stub" (the testbed guest kernel in its stubtest
# mode, created paused) is linked to a running HVM guest (MBR, device model
# in dom0) by link_stubdom + dm_launch: xc_domain_set_target + xs_set_target
# + libxl's xenstore keys, checked in xenstore, in the hypervisor and by the
# stub foreign-mapping the guest.  console_log reads the stub's console ring.
# save_image saves the HVM guest (foreign-mapped memory, HVM context, the
# dom0 QEMU's device state through the state-disk protocol, d1_daemon.py
# responder playing the stub's QEMU), verify_image checks it, undo_save
# resumes.  Then a second save is cut by kill -9 of the daemon while it
# waits for the device state; the restarted daemon must recover: guest
# running, state disk gone, link still there.  guest_pv_drivers answers
# false for the MBR guest, true once dom0 set HVM_PARAM_CALLBACK_IRQ on it
# as PV drivers would (a stand-in, not a PV-driver guest), and our suspend
# path (guest_suspend.stop) then refuses it; it runs on.  `xl create -p`/`unpause`/
# `destroy` stand in for XAPI's VM.start of the stub VM (paused: the driver
# links before the stub runs), VM.unpause and VM.hard_shutdown.
# EXPECT: D1-GUESTS-UP D1-DAEMON-UP D1-PYTHON D1-PLUGIN-ERROR D1-LINK D1-DM-LAUNCH D1-TARGET-XS D1-TARGET-HV D1-XS-TARGET-BAD D1-STUB-MAPS D1-CONSOLE D1-SAVE D1-VERIFY D1-UNDO-SAVE D1-KILL9-MIDSAVE D1-RESTART D1-RECOVERED D1-PV-NONE D1-PV-CALLBACK D1-PV-LOADED D1-PV-SUSPEND-REFUSED D1-DM-STOP D1-DAEMON-STOP D1-LEAK-CHECK D1-DONE
# shellcheck disable=SC2046,SC2154,SC3043
# (marker arguments are meant to split into words; R_*/V_* are set by the
# eval in pcall; dom0's busybox ash has `local`)
. /etc/realxen/lib.sh
d1_t0=$(up)
rx_snapshot D1
W=/tmp/d1; rm -rf $W; mkdir -p $W
# A heartbeat on the console: while the guest is paused for a save nothing
# else writes there, and the host takes 120 s of silence for a stall.
# It shows where the daemon is (CPU ticks user/system, kernel wait channel).
( while :; do sleep 20; p=$(cat $W/daemon.pid 2>/dev/null)
  echo "d1: heartbeat $(up) daemon=$p cpu=$(cut -d' ' -f14,15 /proc/$p/stat 2>/dev/null | tr ' ' /)" \
    "wchan=$(cat /proc/$p/wchan 2>/dev/null) rss_kb=$(sed -n 's/VmRSS: *//p' /proc/$p/status 2>/dev/null)"
done ) & HB=$!
export PYTHONPATH=/opt/realxen/pkg
RUN=/var/run/nova-xen-stubdom; STATE=/var/lib/nova-xen-stubdom
export NOVA_XEN_STUBDOM_AGENT_CONF=$W/agent.conf
cat > $W/agent.conf <<CONF
[agent]
backend = xen
socket_path = $RUN/agent.sock
state_dir = $STATE
CONF
echo "INSTALLATION_UUID='5a1e0000-0000-4000-8000-00000000d1d1'" > $W/inventory
U=d1d1d1d1-0000-4000-8000-000000000001
KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
call() { "$RX_PYTHON" /opt/realxen/d1_daemon.py "$@"; }
# the stub's QEMU stand-in in the background; $RPID is python's own PID (a
# function run with & would be a subshell, and killing it not kill python)
responder() { "$RX_PYTHON" /opt/realxen/d1_daemon.py responder $S $G $1 2> $W/responder-$2.log & RPID=$!; }
# pcall plugin|dm FN k=v...: one fresh process; sets R_status, R_code,
# R_took and V_<key> for each scalar of the JSON result (no python in here
# to parse it: every python start costs seconds under TCG); returns its rc.
pcall() {
  for v in $(set | sed -n 's/^\([RV]_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
  call "$@" > $W/last.out 2> $W/last.err; local rc=$?
  head -1 $W/last.out | cut -c1-300; tail -3 $W/last.err
  eval "$(tail -n +2 $W/last.out)"
  return $rc
}
daemon_start() {  # daemon_start N -> $DPID, D1-DAEMON-UP/D1-RESTART data
  "$RX_PYTHON" -m nova_xen_stubdom.dom0.daemon --config $W/agent.conf \
    --inventory $W/inventory > $W/daemon-$1.out 2> /out/d1-daemon-$1.log &
  DPID=$!; echo $DPID > $W/daemon.pid
  rx_until 240 grep -q '^ready ' $W/daemon-$1.out
}
ticks() { rx_debugport_count "$G" HVM-TICK; }
paused() { xl list d1g 2>/dev/null | awk 'NR == 2 {print ($5 ~ /p/) ? 1 : 0}'; }

# -- the guest and its (paused) stub ---------------------------------------
HVMMEM=32 hvmcfg d1g > $W/d1g.cfg; echo "uuid=\"$U\"" >> $W/d1g.cfg
t=$(up); xl create $W/d1g.cfg > $W/create-g.log 2>&1; rc=$?
G=$(xl domid d1g 2>/dev/null)
waitlog /var/log/xen/d1g-serial.log HVM-GUEST-MBR-BOOTED 300; rcg=$?
pvcfg d1s pv 128 "stubtest stub_target=$G stub_gfn=100" > $W/d1s.cfg
xl create -p $W/d1s.cfg > $W/create-s.log 2>&1; rcs=$?
S=$(xl domid d1s 2>/dev/null)
if [ $rc = 0 ] && [ $rcg = 0 ] && [ $rcs = 0 ]; then
  mark D1-GUESTS-UP guest=$G stub=$S took=$(el $t)
else
  cat $W/create-g.log $W/create-s.log
  mark D1-GUESTS-UP FAILED rc=$rc mbr=$rcg stub_rc=$rcs
fi

# -- the daemon --------------------------------------------------------------
t=$(up)
if daemon_start 1; then
  mark D1-DAEMON-UP pid=$DPID socket=$(stat -c %a $RUN/agent.sock) took=$(el $t)
  # the interpreter the daemon process runs (its /proc exe), and its version
  exe=$(readlink /proc/$DPID/exe)
  mark D1-PYTHON exe=$exe version=$("$exe" -V 2>&1 | cut -d' ' -f2)
else
  cat /out/d1-daemon-1.log; mark D1-DAEMON-UP FAILED after=$(el $t)
fi

# An unknown job through plugin process -> daemon -> registry: the agent's
# error code comes back as XAPI's XENAPI_PLUGIN_FAILURE status.
pcall plugin migrate_status id=no-such-job
if [ "$R_status" = Failure ] && [ "$R_code" = INVALID_ARGUMENT ]; then
  mark D1-PLUGIN-ERROR code=$R_code took=$R_took
else mark D1-PLUGIN-ERROR FAILED status=$R_status code=$R_code; fi

# -- link: the driver's link_stubdom, then the wrapper's dm_launch ----------
pcall plugin link_stubdom stubdom_domid=$S guest_vm_uuid=$U \
  'config={"memory_mb": 32, "vcpus": 1, "vga": "none"}'; rc=$?
mark D1-LINK rc=$rc pending=$(xenstore-read /nova-xen-stubdom/links/$U/stubdom-domid 2>/dev/null) took=$R_took
pcall dm dm_launch guest_domid=$G guest_vm_uuid=$U; rc=$?
mark D1-DM-LAUNCH rc=$rc mode=$V_mode stubdom=$V_stubdom_domid took=$R_took
xenstore-ls -fp /local/domain/$S 2>/dev/null | grep -E 'target|dm-argv|device-model' | cut -c1-160
xenstore-ls -fp /local/domain/$G/image 2>/dev/null
# read back with Xen's own client, not ours
tgt=$(xenstore-read /local/domain/$S/target 2>/dev/null)
dmd=$(xenstore-read /local/domain/$G/image/device-model-domid 2>/dev/null)
pcall plugin stubdom_wiring stubdom_domid=$S; wt=$V_target
if [ "$tgt" = "$G" ] && [ "$dmd" = "$S" ] && [ "$wt" = "$G" ]; then
  mark D1-TARGET-XS target=$tgt dm_domid=$dmd wiring_target=$wt dm_state=$V_state \
    argv_domid=$(xenstore-read -R /local/domain/$S/dm-argv | tr '\033' '\n' | grep -A1 -x -- -xen-domid | tail -1)
else mark D1-TARGET-XS FAILED target=$tgt dm_domid=$dmd wiring_target=$wt; fi
# The hypervisor holds the target: a second xc_domain_set_target -> EINVAL.
e=$(call hv-target $S $G | sed -n 's/^errno=//p')
if [ "$e" = 22 ]; then mark D1-TARGET-HV second_set_target_errno=$e
else mark D1-TARGET-HV FAILED second_set_target_errno=$e; fi
r=$(call xs-target-bad $S); echo "$r"
case "$r" in ok=0*) mark D1-XS-TARGET-BAD $r ;; *) mark D1-XS-TARGET-BAD FAILED $r ;; esac
# The stub runs: its privcmd finds the target, it foreign-maps the guest.
t=$(up); xl unpause d1s
if waitlog /var/log/xen/console/guest-d1s.log "FMAP dom$G gfn 0x100 OK" 180; then
  mark D1-STUB-MAPS stub=$S guest=$G took=$(el $t)
else
  tail -5 /var/log/xen/console/guest-d1s.log; mark D1-STUB-MAPS FAILED after=$(el $t)
fi

# -- console_log: the stub's PV console ring, foreign-mapped -----------------
pcall plugin console_log domid=$S; rc=$?
printf '%s\n' "$V_log" > $W/console.txt
n=$(grep -c 'GUEST-TICK' $W/console.txt); f=$(grep -c "FMAP dom$G" $W/console.txt)
last=$(grep GUEST-TICK $W/console.txt | tail -1 | cut -d' ' -f1-2 | tr ' ' '_')
if [ $rc = 0 ] && [ "$n" -gt 0 ] && grep -q "$(echo $last | tr _ ' ')" /var/log/xen/console/guest-d1s.log; then
  mark D1-CONSOLE ticks=$n fmap_lines=$f bytes=$(wc -c < $W/console.txt) last=$last in_xenconsoled_log=1
else mark D1-CONSOLE FAILED rc=$rc ticks=$n; fi

# -- save_image through our engine, verify_image, undo_save -----------------
responder answer 1
t=$(up); before=$(ticks)
pcall plugin save_image guest_vm_uuid=$U path=$W/d1.img key=$KEY \
  device_state_timeout=300; rc=$?
src=$(xenstore-read /local/domain/$S/device-model/$G/source 2>/dev/null)
mark D1-SAVE rc=$rc bytes=$V_bytes_written pages=$V_pages zero_pages=$V_zero_pages \
  engine_s=$V_seconds device_state=$src paused=$(paused) took=$(el $t)
pcall plugin verify_image path=$W/d1.img key=$KEY expected_vm_uuid=$U; rc=$?
mark D1-VERIFY rc=$rc device_state_bytes=$V_device_state_bytes took=$R_took
pcall plugin undo_save guest_vm_uuid=$U; rc=$?
if [ $rc = 0 ] && rx_until 60 rx_ticks_at_least "$G" $((before + 2)); then
  mark D1-UNDO-SAVE rc=$rc paused=$(paused) ticks_before=$before ticks=$(ticks)
else mark D1-UNDO-SAVE FAILED rc=$rc paused=$(paused) ticks=$(ticks); fi
kill $RPID 2>/dev/null; wait $RPID 2>/dev/null
rm -f $W/d1.img

# -- kill -9 mid-save, restart, recover -------------------------------------
responder hold 2
call plugin save_image guest_vm_uuid=$U path=$W/d1b.img key=$KEY \
  device_state_timeout=300 > $W/save2.out 2>&1 & SPID=$!
D=/local/domain/$S/device-model/$G
t=$(up)
if rx_until 300 sh -c "[ \"\$(xenstore-read $D/command 2>/dev/null)\" = save ]"; then
  p=$(paused); disk=$(xenstore-ls -f /local/domain/0/backend/vbd/$S 2>/dev/null | grep -c frontend-id)
  kill -9 $DPID; wait $DPID 2>/dev/null
  wait $SPID; head -1 $W/save2.out
  code=$(sed -n 's/^R_code=//p' $W/save2.out)
  mark D1-KILL9-MIDSAVE paused_at_kill=$p state_disks_at_kill=$disk plugin_error=$code \
    after=$(el $t) $( [ "$code" = DAEMON_UNAVAILABLE ] || echo FAILED)
else
  kill -9 $DPID; wait $DPID 2>/dev/null; wait $SPID
  mark D1-KILL9-MIDSAVE FAILED reason=no-save-command after=$(el $t)
fi
kill $RPID 2>/dev/null; wait $RPID 2>/dev/null
responder answer 3
t=$(up)
if daemon_start 2; then
  mark D1-RESTART pid=$DPID took=$(el $t) recovered=$(grep -c 'was running when' /out/d1-daemon-2.log)
else
  cat /out/d1-daemon-2.log; mark D1-RESTART FAILED after=$(el $t)
fi
before=$(ticks)
rx_until 60 rx_ticks_at_least "$G" $((before + 1))
leftover=$(find /tmp -maxdepth 1 -name 'nxs-state-*' | wc -l)
disk=$(xenstore-ls -f /local/domain/0/backend/vbd/$S 2>/dev/null | grep -c frontend-id)
loops=$(losetup -a 2>/dev/null | wc -l)
cmd=$(xenstore-read $D/command 2>/dev/null)
pcall plugin stubdom_wiring stubdom_domid=$S; wt=$V_target
gd=$(xl domid d1g 2>/dev/null)
if [ "$gd" = "$G" ] && [ "$(paused)" = 0 ] && [ "$leftover" = 0 ] && [ "$disk" = 0 ] && \
   [ "$loops" = 0 ] && [ -z "$cmd" ] && [ "$wt" = "$G" ] && rx_ticks_at_least "$G" $((before + 1)); then
  mark D1-RECOVERED guest=$gd paused=0 state_files=0 state_disks=0 loops=0 wiring_target=$wt ticks=$(ticks)
else
  losetup -a; ls -l /tmp; xenstore-ls -f /local/domain/0/backend 2>/dev/null | head -20
  mark D1-RECOVERED FAILED guest=$gd paused=$(paused) state_files=$leftover state_disks=$disk \
    loops=$loops command=$cmd wiring_target=$wt ticks_before=$before ticks=$(ticks)
fi
kill $RPID 2>/dev/null; wait $RPID 2>/dev/null

# -- PV drivers: guest_pv_drivers, and our suspend path refusing -------------
# The driver asks guest_pv_drivers before a live migration or a suspend
# (driver/pv_guests.py) and refuses a guest whose PV drivers are loaded;
# the switch-over's guest_suspend.stop refuses it too (toolstack_managed:
# xenopsd halts a VM that suspends outside its operations).  The MBR guest
# has no PV drivers: HVM_PARAM_CALLBACK_IRQ is 0 (libxl_domain.c
# libxl__domain_pvcontrol_available reads the same parameter).
pcall plugin guest_pv_drivers guest_vm_uuid=$U; rc=$?
mark D1-PV-NONE rc=$rc pv_drivers=$V_pv_drivers domid=$V_domid took=$R_took \
  $([ "$V_pv_drivers" = False ] || echo FAILED)
# "PV drivers loaded" as Xen sees it: the boot sector makes no hypercalls,
# so dom0 sets HVM_PARAM_CALLBACK_IRQ for it, as a guest's drivers set it
# when they load (this is NOT a guest with real PV drivers: no Linux HVM
# guest boots in this testbed in reasonable time).  The value is a GSI-type
# via (HVM_PARAM_CALLBACK_TYPE_GSI, public/hvm/params.h) on GSI 28: an
# I/O APIC pin, which Xen masks at reset (vioapic.c vioapic_reset) and
# nothing in this guest unmasks, and above the 16 the i8259 PIC sees, so
# the guest never gets an interrupt from it.  The same process then runs
# guest_suspend.stop as the switch-over calls it (by default the domain is
# a toolstack's): refused before anything is asked of the guest.
r=$(call pv-callback $G 28 suspend); echo "$r"
before=$(ticks)
cb=$(echo "$r" | sed -n 1p); sr=$(echo "$r" | sed -n 2p)
case "$cb" in *errno=0*) mark D1-PV-CALLBACK $cb ;; *) mark D1-PV-CALLBACK FAILED $cb ;; esac
pcall plugin guest_pv_drivers guest_vm_uuid=$U; rc=$?
mark D1-PV-LOADED rc=$rc pv_drivers=$V_pv_drivers domid=$V_domid took=$R_took \
  $([ "$V_pv_drivers" = True ] || echo FAILED)
# The guest runs on after the refusal: the same domain, not paused, not
# shut down, control/shutdown never written, and it ticks after the count
# taken once the refusal had returned.
rx_until 60 rx_ticks_at_least "$G" $((before + 1))
cs=$(xenstore-read /local/domain/$G/control/shutdown 2>/dev/null) || cs=absent
st=$(xl list d1g 2>/dev/null | awk 'NR == 2 {print $5}')
case "$sr" in refused=1*) ok=1 ;; *) ok=0 ;; esac
mark D1-PV-SUSPEND-REFUSED $sr guest=$(xl domid d1g 2>/dev/null) paused=$(paused) \
  state=$st shutdown=$(case "$st" in *s*) echo 1 ;; *) echo 0 ;; esac) \
  control_shutdown=${cs:-empty} ticks_before=$before ticks=$(ticks) \
  $([ $ok = 1 ] && rx_ticks_at_least "$G" $((before + 1)) || echo FAILED)

# -- the wrapper's dm_stop, the driver's unlink, a clean daemon stop --------
pcall dm dm_stop guest_domid=$G guest_vm_uuid=$U; rc=$?
mark D1-DM-STOP rc=$rc target_left=$(xenstore-read /local/domain/$S/target 2>/dev/null || echo none)
pcall plugin unlink_stubdom guest_vm_uuid=$U
# (a watchdog, not a wait: SIGKILL if SIGTERM did not stop it in 30 s)
kill -TERM $DPID; ( sleep 30; kill -9 $DPID 2>/dev/null ) & WD=$!
wait $DPID; rc=$?; kill $WD 2>/dev/null; wait $WD 2>/dev/null
mark D1-DAEMON-STOP rc=$rc socket_left=$([ -e $RUN/agent.sock ] && echo 1 || echo 0)
xl destroy d1s 2>/dev/null; xl destroy d1g 2>/dev/null
cp /var/log/xen/console/guest-d1s.log /out/d1-guest-d1s.log 2>/dev/null
for f in $W/*.log; do cp "$f" "/out/d1-$(basename "$f")"; done 2>/dev/null
rm -rf $W $RUN $STATE
kill $HB; wait $HB 2>/dev/null
rx_leakcheck D1
mark D1-DONE took=$(el $d1_t0)
