# shellcheck shell=sh
# Scenarios 1 and 2 with OUR stub-domain image and OUR dom0 side (sourced by
# dom0 /init in a subshell).  The image is build-stubdom's, built offline
# from the testbed (tests/realxen/ourstub.py); the daemon runs with
# backend=xen; the HVM guest's device model is our wrapper, started the way
# xenopsd starts it.  Steps, and what each `xl` step stands in for:
#  1. the daemon starts (its systemd unit on a host); /etc/nova-xen-stubdom/
#     agent.conf and /etc/xensource-inventory as installed;
#  2. `xl create` of the stub VM, running, not paused: XAPI's VM.start_on of
#     the stub VM (driver/vmstart.py: the stub starts before its guest); its
#     init waits for dom0's link;
#  3. the guest's disk onto the stub through blkback (rxstub.py attach-disk,
#     our XenDisks): XAPI's VBD.plug of the disk on the stub VM; a vif into
#     the stub (`xl network-attach`: XAPI's VIF.plug on the stub VM);
#  4. link_stubdom through a fresh plugin process: the driver's call;
#  5. `xl create` of the HVM guest with device_model_override=the shim that
#     becomes our wrapper with xenopsd's argv: XAPI's VM.start_on of the
#     guest (xenopsd VM_create, VM_build, VM_create_device_model via the
#     wrapper registered in /etc/xenopsd.conf, VM_unpause); the wrapper asks
#     the daemon for dm_launch (xc_domain_set_target + xs_set_target +
#     libxl's keys + dm-argv), waits for the stub's QEMU, registers as the
#     device model (qemu-pid, qemu-dm-<domid> on its command line), answers
#     libxl's QMP (query-chardev, cont) on /var/run/xen/qmp-libxl-<domid>;
#  6. the guest (stub/readsector.S) boots from the IDE disk the stub's QEMU
#     emulates on /dev/xvda, reads LBA 1 and prints its token on Xen's debug
#     port and on the COM1 of that QEMU (the stub's console, logged by
#     xenconsoled); no QEMU runs in dom0;
#  7. SIGTERM to the wrapper (xenopsd's Service.Qemu.stop in
#     VM_destroy_device_model), `xl destroy` of the guest (VM_destroy), the
#     disk unplugged (VBD.unplug), `xl destroy` of the stub, unlink_stubdom,
#     daemon stopped; leak check.
# EXPECT: S1O-DAEMON-UP S1O-STUB-WAITS S1O-DISK S1O-LINK S1O-CREATE S1O-DM-RUNNING S1O-WRAPPER S1O-MBR-VIA-STUB S1O-SERIAL-VIA-STUB S1O-NO-DM-IN-DOM0 S2-SECTOR-READ S2-BLKBACK S2-NIC S1O-TEARDOWN S1O-LEAK-CHECK S1O-DONE
# shellcheck disable=SC2046,SC2154
. /etc/realxen/lib.sh
s1o_t0=$(up)
rx_snapshot S1O
W=/tmp/s1o; rm -rf $W; mkdir -p $W
export PYTHONPATH=/opt/realxen/pkg
RUN=/var/run/nova-xen-stubdom; STATE=/var/lib/nova-xen-stubdom
IMG=/opt/realxen/stubdom
U=51051051-0000-4000-8000-000000000001
STUBLOG=/var/log/xen/console/guest-s1s.log
mkdir -p /etc/nova-xen-stubdom
cat > /etc/nova-xen-stubdom/agent.conf <<CONF
[agent]
backend = xen
socket_path = $RUN/agent.sock
state_dir = $STATE
CONF
export NOVA_XEN_STUBDOM_AGENT_CONF=/etc/nova-xen-stubdom/agent.conf
echo "INSTALLATION_UUID='5a1e0000-0000-4000-8000-0000000051a1'" > /etc/xensource-inventory
call() { "$RX_PYTHON" /opt/realxen/d1_daemon.py "$@"; }
# A heartbeat: the host takes 120 s of console silence for a stall.
( while :; do sleep 20; echo "s1o: heartbeat $(up)"; done ) & HB=$!

# -- 1+2: the daemon and the stub VM (in parallel: both take a while) ------
t=$(up)
"$RX_PYTHON" -m nova_xen_stubdom.dom0.daemon > $W/daemon.out 2> /out/s1o-daemon.log & DPID=$!
cat > $W/s1s.cfg <<CFG
name="s1s"
type="pv"
memory=192
vcpus=1
kernel="$IMG/nova-xen-stubdom-kernel"
ramdisk="$IMG/nova-xen-stubdom-rootfs.cpio.gz"
extra="console=hvc0 rootfstype=ramfs"
on_crash="preserve"
CFG
xl create $W/s1s.cfg > $W/create-s.log 2>&1; rcs=$?
S=$(xl domid s1s 2>/dev/null)
if rx_until 240 grep -q '^ready ' $W/daemon.out; then
  mark S1O-DAEMON-UP pid=$DPID took=$(el $t)
else
  tail -20 /out/s1o-daemon.log; mark S1O-DAEMON-UP FAILED after=$(el $t)
fi
if [ $rcs = 0 ] && rx_until 180 grep -q 'waiting for dom0 to link' $STUBLOG; then
  mark S1O-STUB-WAITS stub=$S kernel=$(grep -o 'Linux version [^ ]*' $STUBLOG | head -1 | cut -d' ' -f3) took=$(el $t)
else
  cat $W/create-s.log; tail -20 $STUBLOG; mark S1O-STUB-WAITS FAILED rc=$rcs after=$(el $t)
fi

# -- 3: the guest's disk onto the stub (blkback) ----------------------------
cp /opt/realxen/s2-disk.img $W/disk.img
r=$("$RX_PYTHON" /opt/realxen/rxstub.py attach-disk "$S" $W/disk.img xvda 2>$W/attach.err); rc=$?
cat $W/attach.err
if [ $rc = 0 ] && rx_until 60 sh -c "grep -q 'xvda' $STUBLOG || [ \"\$(xenstore-read /local/domain/0/backend/vbd/$S/51712/state 2>/dev/null)\" = 4 ]"; then
  mark S1O-DISK $r be_state=$(xenstore-read /local/domain/0/backend/vbd/$S/51712/state 2>/dev/null)
else mark S1O-DISK FAILED rc=$rc $r; fi

# -- 3b: a vif into the stub (netback in dom0, netfront in the stub) --------
# XAPI's VIF.plug on the stub VM; this dom0 has no bridge and no vif hotplug
# scripts, so libxl runs a no-op one (tests/realxen/ourstub.py VIF_SCRIPT):
# the vif carries no traffic, the stub's init bridges it to QEMU's tap.
timeout 90 xl network-attach s1s mac=00:16:3e:51:00:01 script=/opt/realxen/vif-noop \
  > $W/vif.log 2>&1; rcv=$?
[ $rcv = 0 ] || cat $W/vif.log

# -- 4: link_stubdom (the driver) --------------------------------------------
call plugin link_stubdom stubdom_domid=$S guest_vm_uuid=$U \
  'config={"memory_mb": 32, "vcpus": 1, "vga": "none", "serial": "console", "boot": "c", "disks": [{"bus": "ide", "index": 0}], "nics": [{"mac": "fa:16:3e:51:00:01", "model": "e1000", "index": 0}]}' \
  > $W/link.out 2>&1; rc=$?
head -1 $W/link.out | cut -c1-300
mark S1O-LINK rc=$rc pending=$(xenstore-read /nova-xen-stubdom/links/$U/stubdom-domid 2>/dev/null)

# -- 5: the HVM guest, its device model our wrapper --------------------------
rx_ourdm_cfg s1g "$U" > $W/s1g.cfg
t=$(up); timeout 200 xl -v create $W/s1g.cfg > $W/create-g.log 2>&1; rc=$?
G=$(xl domid s1g 2>/dev/null)
mark S1O-CREATE rc=$rc guest=$G stub=$S took=$(el $t)
[ $rc = 0 ] || { tail -30 $W/create-g.log; cat /var/log/xen/qemu-dm-s1g.log; }
state=$(xenstore-read /local/domain/$S/device-model/$G/state 2>/dev/null)
tgt=$(xenstore-read /local/domain/$S/target 2>/dev/null)
argv_domid=$(xenstore-read -R /local/domain/$S/dm-argv 2>/dev/null | tr '\033' '\n' | grep -A1 -x -- -xen-domid | tail -1)
if [ "$state" = running ] && [ "$tgt" = "$G" ] && [ "$argv_domid" = "$G" ]; then
  mark S1O-DM-RUNNING stub=$S target=$tgt argv_domid=$argv_domid \
    dm_domid=$(xenstore-read /local/domain/$G/image/device-model-domid 2>/dev/null)
else mark S1O-DM-RUNNING FAILED state=$state target=$tgt argv_domid=$argv_domid; fi
wpid=$(xenstore-read /local/domain/$G/qemu-pid 2>/dev/null)
wcmd=$(tr '\0' ' ' < /proc/${wpid:-0}/cmdline 2>/dev/null)
case "$wcmd" in
  *"qemu-dm-$G "*dm_wrapper*|*dm_wrapper*"qemu-dm-$G "*|*"--nxs-device-model qemu-dm-$G "*)
    mark S1O-WRAPPER pid=$wpid dom0_state=$(xenstore-read /local/domain/0/device-model/$G/state 2>/dev/null) \
      qmp=$(ls /var/run/xen/qmp-libxl-$G 2>/dev/null | wc -l) argv_head=$(echo "$wcmd" | sed 's/.*--nxs-device-model qemu-dm-[0-9]* //' | cut -d' ' -f1-3 | tr ' ' ,) ;;
  *) echo "wrapper pid=$wpid cmdline: $wcmd"; mark S1O-WRAPPER FAILED pid=$wpid ;;
esac

# -- 6: the guest reads its disk through the stub ----------------------------
if [ -n "$G" ] && rx_until 120 sh -c "xl dmesg | grep -q '(d$G) .*S2-SECTOR-1 '"; then
  mark S1O-MBR-VIA-STUB domid=$G took=$(el $t)
else
  mark S1O-MBR-VIA-STUB FAILED domid=$G after=$(el $t)
fi
xl dmesg | grep -E "\(d${G:-x}\) .*(HVM Loader|pci dev|SeaBIOS \(|ata0-0|Booting|S2-)" | tail -20
# (Xen stamps each debug-port line: "(dN) [ uptime] text")
tok=$(xl dmesg | sed -n "s/.*(d$G) .*S2-SECTOR-1 token=\([0-9a-f]*\).*/\1/p" | tail -1)
if [ -n "$G" ] && rx_until 30 grep -q "S2-SECTOR-1 token=$tok" $STUBLOG && [ -n "$tok" ]; then
  mark S1O-SERIAL-VIA-STUB log=$(basename $STUBLOG)
else
  tail -15 $STUBLOG; mark S1O-SERIAL-VIA-STUB FAILED
fi
ps -o pid,args | grep -v grep | grep -E 'qemu|dm_wrapper'
if ps -o args | grep -v grep | grep -q qemu-system; then
  mark S1O-NO-DM-IN-DOM0 FAILED
else
  mark S1O-NO-DM-IN-DOM0 ok=1 dom0_qemu=0
fi
hdd=$(xl dmesg | grep -c "(d$G) .*ata0-0: QEMU HARDDISK")
if [ -n "$tok" ]; then mark S2-SECTOR-READ token=$tok ide_disk=$hdd
else mark S2-SECTOR-READ FAILED ide_disk=$hdd; fi
B=/local/domain/0/backend/vbd/$S/51712
mark S2-BLKBACK be_state=$(xenstore-read $B/state 2>/dev/null) fe_state=$(xenstore-read /local/domain/$S/device/vbd/51712/state 2>/dev/null) \
  physical_device=$(xenstore-read $B/physical-device 2>/dev/null) \
  argv_disk=$(xenstore-read -R /local/domain/$S/dm-argv 2>/dev/null | tr '\033' '\n' | grep -c '^file=/dev/xvda,if=ide')

V=/local/domain/0/backend/vif/$S/0
vstate=$(xenstore-read $V/state 2>/dev/null); bridged=$(grep -c 'NIC 0: QEMU tap eth0 bridged to netfront nf0' $STUBLOG)
nicdev=$(xenstore-read -R /local/domain/$S/dm-argv 2>/dev/null | tr '\033' '\n' | grep -c '^e1000,id=nic0')
if [ $rcv = 0 ] && [ "$vstate" = 4 ] && [ "$bridged" = 1 ] && [ "$nicdev" = 1 ]; then
  mark S2-NIC be_state=$vstate bridged=$bridged argv_e1000=$nicdev dom0_vif=$(ls /sys/class/net | grep -c "^vif$S\.0$")
else
  grep -i -E 'nic|tap|eth|br0|netfront' $STUBLOG | tail -8
  mark S2-NIC FAILED attach_rc=$rcv be_state=$vstate bridged=$bridged argv_e1000=$nicdev
fi

# -- 7: teardown in xenopsd's order -------------------------------------------
t=$(up)
[ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null
rx_until 60 sh -c "! kill -0 ${wpid:-0} 2>/dev/null"; wgone=$?
tleft=$(xenstore-read /local/domain/$S/target 2>/dev/null || echo none)
xl destroy s1g 2>/dev/null
stub_after_guest=$(xl domid s1s >/dev/null 2>&1 && echo 1 || echo 0)
"$RX_PYTHON" /opt/realxen/rxstub.py detach-disk "$S" xvda; rcd=$?
xl destroy s1s 2>/dev/null
call plugin unlink_stubdom guest_vm_uuid=$U > /dev/null 2>&1; rcu=$?
kill -TERM $DPID; ( sleep 30; kill -9 $DPID 2>/dev/null ) & WD=$!
wait $DPID; rcdm=$?; kill $WD 2>/dev/null; wait $WD 2>/dev/null
if [ $wgone = 0 ] && [ "$tleft" = none ] && [ $rcd = 0 ] && [ $rcu = 0 ] && [ "$stub_after_guest" = 1 ]; then
  mark S1O-TEARDOWN wrapper_exit=1 target_left=$tleft stub_after_guest=$stub_after_guest daemon_rc=$rcdm took=$(el $t)
else
  mark S1O-TEARDOWN FAILED wrapper_gone=$wgone target_left=$tleft detach_rc=$rcd unlink_rc=$rcu stub_after_guest=$stub_after_guest
fi
for f in /var/log/xen/qemu-dm-s1g.log $STUBLOG $W/create-g.log $W/create-s.log; do
  [ -f "$f" ] && cp "$f" "/out/s1o-$(basename "$f")"; done
kill $HB; wait $HB 2>/dev/null
rm -rf $W $RUN $STATE /etc/nova-xen-stubdom /etc/xensource-inventory
rx_leakcheck S1O
mark S1O-DONE took=$(el $s1o_t0)
