# shellcheck shell=sh
# Scenario 6, the PCI path without a physical device (sourced by dom0 /init
# in a subshell).  Two paused PV domains stand for the guest and its stub
# (`xl create -p`: XAPI's VM.start_on of each, paused; nothing needs to
# run).  The device is one the outer QEMU emulates for dom0 (its VGA: two
# memory BARs), a real PCI function as far as Xen knows.  rxstub.py
# pci-grants runs our pci_grants.attach_devices on XenBackend, as the
# daemon's dm_launch hook does: assign_device first (refused: this Xen has
# no IOMMU), the rollback leaves the stub's rangesets as they were; then
# the grants with assign_device recorded, the stub's "I/O Memory" rangeset
# read back from Xen (debug key q), revoked by detach_devices (the dm_stop
# hook) and read back empty; granted again and left for the destroy; after
# `xl destroy` of both (VM.hard_shutdown), pci-release (the dm_stop hook of
# a gone guest) finds nothing to revoke and removes the grant record.
# Only real hardware shows: assign_device through an IOMMU, the device's
# config space through pciback/pcifront in the stub, QEMU's
# xen-pci-passthrough mapping the BARs into the guest, interrupts (a PV
# dom0's sysfs irq is a Linux irq, which Xen's irq permission does not take
# as a pirq; this VGA has none), and a guest driver using the device.
# EXPECT: S6-DOMAINS S6-ASSIGN-REFUSED S6-GRANTED S6-REVOKED S6-RELEASED S6-LEAK-CHECK S6-DONE
# shellcheck disable=SC2046
. /etc/realxen/lib.sh
s6_t0=$(up)
rx_snapshot S6
W=/tmp/s6; rm -rf $W; mkdir -p $W
pvcfg s6g pv 128 > $W/g.cfg; pvcfg s6s pv 128 > $W/s.cfg
xl create -p $W/g.cfg > $W/create.log 2>&1 && xl create -p $W/s.cfg >> $W/create.log 2>&1; rc=$?
G=$(xl domid s6g 2>/dev/null); S=$(xl domid s6s 2>/dev/null)
mark S6-DOMAINS rc=$rc guest=$G stub=$S
[ $rc = 0 ] || cat $W/create.log
out=$("$RX_PYTHON" /opt/realxen/rxstub.py pci-grants "$G" "$S" 2>$W/grants.err); rc=$?
echo "$out"; tail -5 $W/grants.err
v() { echo "$out" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
if [ "$(v assign)" = refused ] && [ "$(v rollback_clean)" = 1 ]; then
  mark S6-ASSIGN-REFUSED sbdf=$(v sbdf) call=$(v assign_call) errno=$(v assign_errno) rollback_clean=1
else mark S6-ASSIGN-REFUSED FAILED rc=$rc assign=$(v assign) rollback_clean=$(v rollback_clean); fi
if [ -n "$(v granted_iomem)" ] && [ "$(v granted_iomem)" != "$(v before_iomem)" ] && [ "$(v record)" = 1 ]; then
  mark S6-GRANTED sbdf=$(v sbdf) bars=$(v iomem) calls=$(v calls) iomem="$(v granted_iomem)" pciback=$(v pciback)
else mark S6-GRANTED FAILED rc=$rc granted="$(v granted_iomem)" before="$(v before_iomem)"; fi
if [ "$(v revoked_clean)" = 1 ] && [ "$(v errors)" = 0 ] && [ "$(v record_after)" = 0 ]; then
  mark S6-REVOKED released=$(v released) iomem="$(v revoked_iomem)" regranted="$(v regranted_iomem)"
else mark S6-REVOKED FAILED revoked="$(v revoked_iomem)" errors=$(v errors) record_after=$(v record_after); fi
xl destroy s6s 2>/dev/null; xl destroy s6g 2>/dev/null
r=$("$RX_PYTHON" /opt/realxen/rxstub.py pci-release "$G" 2>>$W/grants.err); echo "$r"
case "$r" in *errors=0*record_left=0*) mark S6-RELEASED $r ;; *) tail -5 $W/grants.err; mark S6-RELEASED FAILED $r ;; esac
cp $W/grants.err /out/s6-grants.err 2>/dev/null
rm -rf $W
rx_leakcheck S6
mark S6-DONE took=$(el $s6_t0)
