# shellcheck shell=sh
# Scenario 3, save and restore (sourced by dom0 /init in a subshell): our
# dom0 daemon (backend xen) saves a running HVM guest -- memory over foreign
# mappings, HVM context, device state through the state-disk protocol --,
# both domains are destroyed, and our restore engine (restore_image:
# dom0/saverestore.py restore_domain over XenBackend) restores it into new
# ones; the guest counts on from where it was, and its RAM digest after the
# restore equals the one before the save.
# The device model: the guest's QEMU runs in dom0 (libxl's qemu-xen), not
# in the stub domain; the stub is the linked PV domain of d1, and
# d1_daemon.py responder plays the stub's QEMU in the state-disk protocol
# with the dom0 QEMU's real device state (QMP xen-save-devices-state); on
# restore it checks the state that came back through the image and the
# state disk but does not load it into the new dom0 QEMU
# (doc/source/realxen.rst, scenario 3: what QEMU 8.0.3 and libxl allow).
# xl stands in for XAPI/xenopsd: `xl create` = VM.start (xenopsd VM_create
# + VM_build + the device model); `xl pause` = VM.pause (only to take the
# digest of a still guest); after save_image, dm_stop/unlink + `xl destroy`
# = the driver's teardown of a suspended VM (xenopsd's VM_suspend ends in
# Domain.destroy); `xl create -p` of the same config and UUID = xenopsd
# VM_restore's domain creation (VM_create + Domain.make, paused) -- xl also
# builds the domain (hvmloader loaded, VM_build), which restore_image then
# overwrites page by page --; `xl unpause` = VM.unpause.
# EXPECT: S3-GUEST-UP S3-DAEMON-UP S3-LINK S3-DIGEST-BEFORE S3-SAVE S3-DESTROYED S3-NEW-DOMAINS S3-RESTORE S3-DIGEST-AFTER S3-CONTINUES S3-LEAK-CHECK S3-DONE
# shellcheck disable=SC2046,SC2154,SC3043
. /etc/realxen/lib.sh
s3_t0=$(up)
rx_snapshot S3
rx_agent s3 5a1e0000-0000-4000-8000-0000000035a5 < /dev/null
U=53535353-0000-4000-8000-000000000003
KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f

t=$(up)
s35_cfg s3g $U > $W/s3g.cfg
xl create $W/s3g.cfg > $W/create-g.log 2>&1; rc=$?
G=$(xl domid s3g 2>/dev/null)
if [ $rc = 0 ] && rx_until 300 s35_count_at_least "$G" 2; then
  mark S3-GUEST-UP guest=$G cnt=$(s35_count $G) took=$(el $t)
else cat $W/create-g.log; mark S3-GUEST-UP FAILED rc=$rc cnt=$(s35_count "$G"); fi
# a heartbeat: nothing else writes to the console while the guest is paused
( while :; do sleep 20; echo "s3: heartbeat $(up) cnt=$(s35_count "$G" 2>/dev/null)"; done ) & HB=$!
t=$(up)
if rx_daemon_start; then mark S3-DAEMON-UP pid=$DPID took=$(el $t)
else cat /out/s3-daemon.log; mark S3-DAEMON-UP FAILED; fi
t=$(up)
if s35_stub s3s $G $U; then mark S3-LINK stub=$S took=$(el $t)
else mark S3-LINK FAILED stub=$S; fi
rx_call responder $S $G answer 2> $W/responder-1.log & RPID=$!

# -- the digest of the still guest, then save_image --------------------------
s35_digest_before S3 s3g "$G"
t=$(up)
rx_pcall plugin save_image guest_vm_uuid=$U path=$W/s3.img key=$KEY \
  device_state_timeout=300; rc=$?
src=$(xenstore-read /local/domain/$S/device-model/$G/source 2>/dev/null)
mark S3-SAVE rc=$rc bytes=$V_bytes_written pages=$V_pages zero_pages=$V_zero_pages \
  engine_s=$V_seconds device_state=$src took=$(el $t) $([ $rc = 0 ] || echo FAILED)
kill $RPID 2>/dev/null; wait $RPID 2>/dev/null
s35_unstub $G $U
xl destroy s3s; xl destroy s3g
left=$(xl list | awk 'NR > 1' | wc -l)
mark S3-DESTROYED domains=$left image_bytes=$(stat -c %s $W/s3.img 2>/dev/null)

# -- new domains, restore_image, unpause ------------------------------------
t=$(up)
xl create -p $W/s3g.cfg > $W/create-g2.log 2>&1; rc=$?
G2=$(xl domid s3g 2>/dev/null)
if [ $rc = 0 ] && s35_stub s3s $G2 $U; then
  mark S3-NEW-DOMAINS guest=$G2 stub=$S took=$(el $t)
else cat $W/create-g2.log; mark S3-NEW-DOMAINS FAILED rc=$rc guest=$G2 stub=$S; fi
rx_call responder $S $G2 answer 2> $W/responder-2.log & RPID=$!
t=$(up)
rx_pcall plugin restore_image guest_vm_uuid=$U path=$W/s3.img key=$KEY \
  expected_vm_uuid=$U device_state_timeout=300; rc=$?
src=$(xenstore-read /local/domain/$S/device-model/$G2/source 2>/dev/null)
mark S3-RESTORE rc=$rc domid=$V_domid pages=$V_pages populated=$V_populated device_state=$src took=$(el $t) \
  $([ $rc = 0 ] || echo FAILED) $([ $rc = 0 ] || cut -c1-200 $W/last.out | tr ' ' _)
s35_after_restore S3 s3g "$G2"

# -- clean up ---------------------------------------------------------------
kill $RPID 2>/dev/null; wait $RPID 2>/dev/null
s35_unstub $G2 $U
rx_daemon_stop
xl destroy s3s 2>/dev/null; xl destroy s3g 2>/dev/null
for f in $W/*.log /var/log/xen/qemu-dm-s3g.log*; do cp "$f" "/out/s3-$(basename "$f")"; done 2>/dev/null
rm -rf $W $RUN $STATE
kill $HB; wait $HB 2>/dev/null
rx_leakcheck S3
mark S3-DONE took=$(el $s3_t0)
