# shellcheck shell=sh
# Scenario 3 with OUR stub-domain image (sourced by dom0 /init in a subshell,
# after s1-ourstub.sh, with the same image, wrapper and daemon): the guest's
# device model is the QEMU in our stub domain, and its device state leaves
# that QEMU through the dynamic state disk on save and enters the new stub
# domain's QEMU through it on restore (dom0/device_state.py; the stub
# init's handle_dm_command: stop + xen-save-devices-state, and stop +
# xen-load-devices-state + cont).  The guest is s35-guest.S (it counts in
# its memory), booted from an IDE disk the stub's QEMU emulates.
# xl stands in for XAPI/xenopsd as in s1-ourstub.sh (stub VM start, disk
# VBD.plug, link_stubdom, guest VM.start through the wrapper) and
# s3-saverestore.sh (`xl pause` only for the digest; after save_image the
# teardown of a suspended VM; `xl create -p` of the same config and UUID =
# xenopsd VM_restore's domain creation, its device model launched by the
# wrapper; restore_image; `xl unpause` = VM.unpause).
# EXPECT: S3O-DAEMON-UP S3O-STUB-WAITS S3O-LINK S3O-GUEST-UP S3O-DIGEST-BEFORE S3O-SAVE S3O-DESTROYED S3O-NEW-DOMAINS S3O-RESTORE S3O-DIGEST-AFTER S3O-CONTINUES S3O-LEAK-CHECK S3O-DONE
# shellcheck disable=SC2046,SC2154,SC3043
. /etc/realxen/lib.sh
s3o_t0=$(up)
rx_snapshot S3O
rx_agent s3o 5a1e0000-0000-4000-8000-0000000035a5 < /dev/null
# the wrapper (run by libxl) reads the host's inventory where XAPI keeps it
cp $W/inventory /etc/xensource-inventory
U=53035303-0000-4000-8000-000000000303
KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
IMG=/opt/realxen/stubdom
stublog() { echo "/var/log/xen/console/guest-$1.log"; }
( while :; do sleep 20; echo "s3o: heartbeat $(up)"; done ) & HB=$!

# s3o_stub NAME: our stub VM, running, waiting for its link; its disk (the
# guest's boot sector) on xvda; link_stubdom.  Sets S.
s3o_stub() {
  cat > "$W/$1.cfg" <<CFG
name="$1"
type="pv"
memory=192
vcpus=1
kernel="$IMG/nova-xen-stubdom-kernel"
ramdisk="$IMG/nova-xen-stubdom-rootfs.cpio.gz"
extra="console=hvc0 rootfstype=ramfs"
on_crash="preserve"
CFG
  rm -f "$(stublog "$1")"
  xl create "$W/$1.cfg" > "$W/create-$1.log" 2>&1 || { cat "$W/create-$1.log"; return 1; }
  S=$(xl domid "$1" 2>/dev/null)
  rx_until 180 grep -q 'waiting for dom0 to link' "$(stublog "$1")" || { tail -20 "$(stublog "$1")"; return 1; }
  python3 /opt/realxen/rxstub.py attach-disk "$S" "$W/disk.img" xvda || return 1
  # (as s1-ourstub.sh: the stub's blkfront names the disk, or blkback
  # reports Connected); both ends' nodes into /out either way
  S3O_ROUND=$((${S3O_ROUND:-0} + 1))
  if rx_until 60 sh -c "grep -q 'xvda' $(stublog "$1") || [ \"\$(xenstore-read /local/domain/0/backend/vbd/$S/51712/state 2>/dev/null)\" = 4 ]"; then
    rx_vbd_dump "/out/s3o-vbd-$S3O_ROUND-stub$S.txt" "$S"
  else
    rx_vbd_dump "/out/s3o-vbd-$S3O_ROUND-stub$S-FAILED.txt" "$S"
    echo "s3o: disk on stub $S: be_state=$(xenstore-read /local/domain/0/backend/vbd/$S/51712/state 2>&1) fe_state=$(xenstore-read /local/domain/$S/device/vbd/51712/state 2>&1)"
    tail -20 "$(stublog "$1")"; return 1
  fi
  rx_pcall plugin link_stubdom stubdom_domid=$S guest_vm_uuid=$U \
    'config={"memory_mb": 32, "vcpus": 1, "vga": "none", "serial": "console", "boot": "c", "disks": [{"bus": "ide", "index": 0}]}'
}
# s3o_down NAME: xenopsd's teardown order (s1-ourstub.sh step 7).
s3o_down() {
  local wpid; wpid=$(xenstore-read /local/domain/$G/qemu-pid 2>/dev/null)
  [ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null
  rx_until 60 sh -c "! kill -0 ${wpid:-0} 2>/dev/null"
  xl destroy s3og 2>/dev/null
  python3 /opt/realxen/rxstub.py detach-disk "$S" xvda
  cp "$(stublog "$1")" "/out/s3o-$1-$2.log" 2>/dev/null
  xl destroy "$1" 2>/dev/null
  rx_pcall plugin unlink_stubdom guest_vm_uuid=$U > /dev/null
}
rx_ourdm_cfg s3og "$U" > $W/s3og.cfg
cp /opt/realxen/s35-guest.img $W/disk.img

# -- the daemon, our stub, its link, the guest --------------------------------
t=$(up)
if rx_daemon_start; then mark S3O-DAEMON-UP pid=$DPID took=$(el $t)
else tail -20 /out/s3o-daemon.log; mark S3O-DAEMON-UP FAILED; fi
t=$(up)
if s3o_stub s3os; then mark S3O-STUB-WAITS stub=$S took=$(el $t)
else mark S3O-STUB-WAITS FAILED stub=$S; fi
mark S3O-LINK stub=$S pending=$(xenstore-read /nova-xen-stubdom/links/$U/stubdom-domid 2>/dev/null)
t=$(up)
timeout 200 xl -v create $W/s3og.cfg > $W/create-g.log 2>&1; rc=$?
G=$(xl domid s3og 2>/dev/null)
if [ $rc = 0 ] && rx_until 300 s35_count_at_least "$G" 2; then
  mark S3O-GUEST-UP guest=$G stub=$S dm_domid=$(xenstore-read /local/domain/$G/image/device-model-domid 2>/dev/null) \
    cnt=$(s35_count $G) took=$(el $t)
else tail -30 $W/create-g.log; mark S3O-GUEST-UP FAILED rc=$rc guest=$G cnt=$(s35_count "$G"); fi

# -- digest of the still guest, save_image through our stub ------------------
s35_digest_before S3O s3og "$G"
t=$(up)
rx_pcall plugin save_image guest_vm_uuid=$U path=$W/s3.img key=$KEY \
  device_state_timeout=300; rc=$?
saved=$(sed -n 's/.*device state saved to [^:]*: \([0-9]*\) \([0-9a-f]\{12\}\).*/\1:\2/p' "$(stublog s3os)" | tail -1)
mark S3O-SAVE rc=$rc bytes=$V_bytes_written pages=$V_pages engine_s=$V_seconds \
  stub_saved=$saved took=$(el $t) $([ $rc = 0 ] && [ -n "$saved" ] || echo FAILED)
[ $rc = 0 ] || rx_vbd_dump /out/s3o-vbd-save-FAILED.txt "$S"
s3o_down s3os save
left=$(xl list | awk 'NR > 1' | wc -l)
mark S3O-DESTROYED domains=$left image_bytes=$(stat -c %s $W/s3.img 2>/dev/null)

# -- new stub + guest (paused), restore_image, unpause -----------------------
t=$(up)
s3o_stub s3os; rcs=$?
timeout 200 xl -v create -p $W/s3og.cfg > $W/create-g2.log 2>&1; rc=$?
G=$(xl domid s3og 2>/dev/null)
if [ $rcs = 0 ] && [ $rc = 0 ]; then mark S3O-NEW-DOMAINS guest=$G stub=$S took=$(el $t)
else tail -30 $W/create-g2.log; mark S3O-NEW-DOMAINS FAILED rc=$rc stub_rc=$rcs guest=$G stub=$S; fi
t=$(up)
rx_pcall plugin restore_image guest_vm_uuid=$U path=$W/s3.img key=$KEY \
  expected_vm_uuid=$U device_state_timeout=300; rc=$?
loaded=$(grep -c 'device state loaded from' "$(stublog s3os)")
verified=$(sed -n 's/.*state disk [^:]*: \([0-9]*\) bytes of device state verified.*/\1/p' "$(stublog s3os)" | tail -1)
mark S3O-RESTORE rc=$rc domid=$V_domid stub_loaded=$loaded stub_verified=$verified \
  dm_state=$(xenstore-read /local/domain/$S/device-model/$G/state 2>/dev/null) took=$(el $t) \
  $([ $rc = 0 ] && [ "$loaded" = 1 ] || echo FAILED) $([ $rc = 0 ] || cut -c1-200 $W/last.out | tr ' ' _)
[ $rc = 0 ] || { tail -20 "$(stublog s3os)"; rx_vbd_dump /out/s3o-vbd-restore-FAILED.txt "$S"; }
s35_after_restore S3O s3og "$G" "$(stublog s3os)"

# -- clean up ---------------------------------------------------------------
s3o_down s3os restore
rx_daemon_stop
for f in $W/*.log /var/log/xen/qemu-dm-s3og.log*; do cp "$f" "/out/s3o-$(basename "$f")"; done 2>/dev/null
rm -f /etc/xensource-inventory
kill $HB; wait $HB 2>/dev/null
rm -rf $W $RUN $STATE
rx_leakcheck S3O
mark S3O-DONE took=$(el $s3o_t0)
