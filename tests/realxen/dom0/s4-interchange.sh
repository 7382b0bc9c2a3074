# shellcheck shell=sh
# Scenario 4, interchange with Xen's tools (sourced by dom0 /init in a subshell).
# An HVM guest (the testbed's MBR: marker on COM1 and port 0xe9, then HVM-TICK
# on 0xe9 about every 5 s) is saved by `xl save`; our reader parses the file
# and our writer writes two compatible-mode streams behind xl's header
# (s4_interchange.py); Xen's verify-stream-v2 accepts both; `xl restore` of
# each brings the guest back under a new domid and it keeps ticking without
# booting again.  `xl create`/`save`/`restore`/`destroy` stand in for XAPI's
# VM.start/suspend/resume/hard_shutdown (xenopsd's domain builder, its
# save/restore through emu-manager) where there is no XAPI.
# EXPECT: S4-GUEST-UP S4-XL-SAVE S4-OURS-WRITTEN S4-VERIFY-REWRITTEN S4-VERIFY-FROM-MEMORY S4-RESTORE-REWRITTEN S4-TICKING-REWRITTEN S4-RESTORE-FROM-MEMORY S4-TICKING-FROM-MEMORY S4-LEAK-CHECK S4-DONE
. /etc/realxen/lib.sh
s4_t0=$(up)
rx_snapshot S4
W=/tmp/s4; rm -rf $W; mkdir -p $W
export PYTHONPATH=/opt/realxen/pkg
HVMMEM=${RX_HVMMEM:-32} hvmcfg s4g > $W/s4g.cfg
t=$(up); xl create $W/s4g.cfg > $W/create.log 2>&1; rc=$?
if [ $rc = 0 ] && waitlog /var/log/xen/s4g-serial.log HVM-GUEST-MBR-BOOTED 300; then
  mark S4-GUEST-UP domid=$(xl domid s4g) mem_mb=${RX_HVMMEM:-32} took=$(el $t)
else
  cat $W/create.log; mark S4-GUEST-UP FAILED rc=$rc after=$(el $t)
fi
D1=$(xl domid s4g 2>/dev/null)
t=$(up); xl save s4g $W/xl.save > $W/save.log 2>&1; rc=$?
mark S4-XL-SAVE rc=$rc bytes=$(stat -c %s $W/xl.save 2>/dev/null) took=$(el $t)
[ $rc = 0 ] || cat $W/save.log
t=$(up); "$RX_PYTHON" /opt/realxen/s4_interchange.py $W/xl.save $W > /out/s4-interchange.json 2> $W/py.err; rc=$?
cat /out/s4-interchange.json $W/py.err
mark S4-OURS-WRITTEN rc=$rc took=$(el $t)
for v in rewritten from-memory; do
  V=$(echo $v | tr a-z A-Z)
  t=$(up); PYTHONPATH=/opt/realxen/verifier python3 /opt/realxen/verifier/verify-stream-v2 -f xl \
      -i $W/ours-$v.save > $W/verify-$v.log 2>&1; rc=$?
  tail -3 $W/verify-$v.log
  mark S4-VERIFY-$V rc=$rc took=$(el $t)
done
for v in rewritten from-memory; do
  V=$(echo $v | tr a-z A-Z)
  t=$(up); xl restore $W/ours-$v.save > $W/restore-$v.log 2>&1; rc=$?
  D=$(xl domid s4g 2>/dev/null)
  mark S4-RESTORE-$V rc=$rc domid=$D took=$(el $t)
  [ $rc = 0 ] || cat $W/restore-$v.log
  # Two ticks from the new domain, and no second boot: it continued.
  if [ -n "$D" ] && rx_until 60 rx_ticks_at_least "$D" 2; then
    mark S4-TICKING-$V domid=$D ticks=$(rx_debugport_count "$D" HVM-TICK) \
      reboots=$(rx_debugport_count "$D" HVM-GUEST-MBR-BOOTED) took=$(el $t)
  else
    mark S4-TICKING-$V FAILED domid=$D after=$(el $t)
  fi
  xl destroy s4g 2>/dev/null
done
for f in $W/*.log; do mv "$f" "/out/s4-$(basename "$f")"; done 2>/dev/null
rm -rf $W /etc/xen/s4g.cfg
rx_leakcheck S4
mark S4-DONE took=$(el $s4_t0)
