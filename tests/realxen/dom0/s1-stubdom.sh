# shellcheck shell=sh
# Scenario 1, libxl-linked variant (sourced by dom0 /init in a subshell): an
# HVM guest whose device model is the testbed's QEMU 8.0.3 running in a PV
# stub domain.  libxl builds and links both (device_model_stubdomain_override:
# both created paused, xc_domain_set_target + xenstore "target" before the
# stub runs, the QEMU arguments under <vm>/image/dm-argv, QMP over a vchan);
# our stub init (tests/realxen/stub/init) starts QEMU with those arguments.
# Shown: QEMU in the stub reports "running", hvmloader + SeaBIOS find the
# PCI devices and the IDE disk it emulates (over PV blkfront in the stub,
# qdisk in dom0) and boot the MBR, whose marker reaches Xen's debug port;
# no device model for the guest runs in dom0.  `xl create` stands in for
# XAPI's VM.start (xenopsd: domain build, then the device model).
# EXPECT: S1-CREATE S1-DM-RUNNING S1-MBR-VIA-STUB S1-SERIAL-VIA-STUB S1-NO-DM-IN-DOM0 S1-LEAK-CHECK S1-DONE
. /etc/realxen/lib.sh
s1_t0=$(up)
rx_snapshot S1
W=/tmp/s1; rm -rf $W; mkdir -p $W
# The guest's serial port: libxl hands it to the stub as console 3
# (-serial /dev/hvc3), but the stub's extra consoles fail to connect here
# (dom0 QEMU: "xen be: console-N: initialise() failed"; stub: xenconsole
# probe -22), so the stub init routes it to its own console 0, which dom0
# logs in /var/log/xen/qemu-dm-s1g.log.  The MBR writes its marker to COM1
# (emulated by the stub's QEMU) and to Xen's debug port (xl dmesg).
HVMMEM=32 hvmcfg s1g > $W/s1g.cfg
# The stub kernel is the testbed's 6.1.20 (privcmd built in), not the
# Debian 6.1.187 guest kernel: that one's privcmd carries XSA-482 (restricted
# to the target from open), which refuses the DOMID_INVALID probe of
# libxendevicemodel 4.17, so QEMU gets no ioreq server (doc: realxen.rst).
cat >> $W/s1g.cfg <<CFG
device_model_stubdomain_override=1
stubdomain_kernel="${RX_STUB_KERNEL:-/opt/realxen/stub-vmlinuz}"
stubdomain_ramdisk="/guest/initrd.gz"
stubdomain_cmdline="console=hvc0 rdinit=/init rxstub"
stubdomain_memory=256
CFG
t=$(up); timeout 200 xl create $W/s1g.cfg > $W/create.log 2>&1; rc=$?
G=$(xl domid s1g 2>/dev/null); S=$(xl domid s1g-dm 2>/dev/null)
mark S1-CREATE rc=$rc guest=$G stub=$S took=$(el $t)
[ $rc = 0 ] || tail -25 $W/create.log
state=$(xenstore-read /local/domain/$S/device-model/$G/state 2>/dev/null)
if [ "$state" = running ]; then mark S1-DM-RUNNING stub=$S target=$(xenstore-read /local/domain/$S/target)
else mark S1-DM-RUNNING FAILED state=$state; fi
if [ -n "$G" ] && rx_until 120 sh -c "xl dmesg | grep -q '(d$G) .*HVM-GUEST-MBR-BOOTED'"; then
  mark S1-MBR-VIA-STUB domid=$G \
    disk=$(xl dmesg | grep -c "(d$G) .*ata0-0: QEMU HARDDISK") took=$(el $t)
else
  mark S1-MBR-VIA-STUB FAILED domid=$G after=$(el $t)
fi
xl dmesg | grep -E "\(d${G:-x}\) .*(HVM Loader|pci dev|SeaBIOS \(|ata0-0|Booting|HVM-GUEST)"
if [ -n "$G" ] && rx_until 30 grep -q HVM-GUEST-MBR-BOOTED /var/log/xen/qemu-dm-s1g.log; then
  mark S1-SERIAL-VIA-STUB log=qemu-dm-s1g.log
else
  mark S1-SERIAL-VIA-STUB FAILED
fi
ps -o pid,args | grep -v grep | grep qemu-system
if ps -o args | grep -v grep | grep qemu-system | grep -q -- "-xen-domid ${G:-x} "; then
  mark S1-NO-DM-IN-DOM0 FAILED
else
  mark S1-NO-DM-IN-DOM0 ok=1 dom0_qemu_for_stub=$(ps -o args | grep -v grep | grep -c -- "-xen-domid ${S:-x} ")
fi
for f in /var/log/xen/qemu-dm-s1g.log /var/log/xen/qemu-dm-s1g-dm.log; do
  [ -f "$f" ] && cp "$f" "/out/s1-$(basename "$f")"; done
cp $W/create.log /out/s1-create.log
xl destroy s1g 2>/dev/null; xl destroy s1g-dm 2>/dev/null
rm -rf $W
rx_leakcheck S1
mark S1-DONE took=$(el $s1_t0)
