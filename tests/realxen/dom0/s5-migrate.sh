# shellcheck shell=sh
# Scenario 5, local live migration (sourced by dom0 /init in a subshell):
# our dom0 daemon migrates the running, memory-dirtying guest of s35-guest.S
# to a new domain on the same host over loopback TLS (migrate_receive +
# migrate_send: dom0/live_migration.py, migration_target.py, the stream on
# migration_tls with this test's CA and a host certificate naming the host
# UUID; keys wrapped for key_offer as the driver sends them).  The guest
# counts on in the new domain; the source is gone; nothing left behind.
# Device model and stub as in scenario 3 (QEMU in dom0, d1_daemon.py
# responder playing each stub's QEMU in the state-disk protocol).
# xl stands in for XAPI/xenopsd: `xl create` = VM.start; `xl create -p` of
# the destination = xenopsd's VM_receive_memory domain creation (paused;
# on one host xenopsd gives the incoming domain a temporary VM id, as xl's
# localhost migration names it NAME--incoming: here a second VM UUID, as
# the agent finds domains by VM UUID); dm_stop/unlink + `xl destroy` of
# the source after the switch-over = xenopsd VM_migrate's Domain.destroy of
# the source.  The destination runs when our target unpauses it ("go").
# EXPECT: S5-GUESTS-UP S5-DAEMON-UP S5-LINKS S5-RECEIVE S5-SEND S5-MIGRATED S5-DEST-RUNNING S5-SOURCE-GONE S5-CONTINUES S5-LEAK-CHECK S5-DONE
# shellcheck disable=SC2046,SC2154,SC3043
. /etc/realxen/lib.sh
s5_t0=$(up)
rx_snapshot S5
HOST=5a1e0000-0000-4000-8000-0000000035a5
rx_agent s5 $HOST <<CONF
migration_tls_cert = /opt/realxen/pki/host.pem
migration_tls_ca = /opt/realxen/pki/ca.pem
migration_allow_loopback = true
CONF
U=55555555-0000-4000-8000-000000000005
U2=55555555-0000-4000-8000-0000000000d5
KEY=202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f

t=$(up)
s35_cfg s5g $U > $W/s5g.cfg; s35_cfg s5d $U2 > $W/s5d.cfg
xl create $W/s5g.cfg > $W/create-g.log 2>&1; rc=$?
G=$(xl domid s5g 2>/dev/null)
xl create -p $W/s5d.cfg > $W/create-d.log 2>&1; rcd=$?
G2=$(xl domid s5d 2>/dev/null)
if [ $rc = 0 ] && [ $rcd = 0 ] && rx_until 300 s35_count_at_least "$G" 2; then
  mark S5-GUESTS-UP source=$G dest=$G2 cnt=$(s35_count $G) took=$(el $t)
else cat $W/create-*.log; mark S5-GUESTS-UP FAILED rc=$rc rcd=$rcd; fi
# a heartbeat: nothing else writes to the console while the guest is paused
( while :; do sleep 20; echo "s5: heartbeat $(up) src=$(s35_count "$G" 2>/dev/null) dst=$(s35_count "$G2" 2>/dev/null)"; done ) & HB=$!
t=$(up)
if rx_daemon_start; then mark S5-DAEMON-UP pid=$DPID took=$(el $t)
else cat /out/s5-daemon.log; mark S5-DAEMON-UP FAILED; fi
t=$(up)
s35_stub s5s $G $U; rc1=$?; S1=$S
s35_stub s5t $G2 $U2; rc2=$?; S2=$S
if [ $rc1 = 0 ] && [ $rc2 = 0 ]; then mark S5-LINKS source_stub=$S1 dest_stub=$S2 took=$(el $t)
else mark S5-LINKS FAILED rc1=$rc1 rc2=$rc2; fi
rx_call responder $S1 $G answer 2> $W/responder-src.log & R1=$!
rx_call responder $S2 $G2 answer 2> $W/responder-dst.log & R2=$!

# -- migrate ------------------------------------------------------------------
# dom0's init leaves the loopback interface down (bind: EADDRNOTAVAIL)
ifconfig lo 127.0.0.1 up 2>/dev/null || ip link set lo up
rx_pcall plugin migrate_receive guest_vm_uuid=$U2 key=$KEY listen_address=127.0.0.1 \
  device_state_timeout=300; rc=$?
RID=$V_id; PORT=$V_port
mark S5-RECEIVE rc=$rc address=$V_address port=$PORT $([ $rc = 0 ] || echo FAILED)
t=$(up); c0=$(s35_count $G)
rx_pcall plugin migrate_send guest_vm_uuid=$U address=127.0.0.1 port=$PORT key=$KEY \
  dest_host_uuid=$HOST device_state_timeout=300; rc=$?
SID=$V_id
mark S5-SEND rc=$rc cnt=$c0 $([ $rc = 0 ] || echo FAILED)
sent_state() { rx_pcall plugin migrate_status id=$SID > /dev/null; [ "$V_state" != running ]; }
rx_until 480 sent_state
# the source's last count and the destination's first at once (Xen's
# console ring is small and dom0 writes to it too)
last_src=$(s35_count $G)
rx_until 120 s35_count_at_least "$G2" 1; first=$(s35_first $G2)
rx_pcall plugin migrate_status id=$SID
mark S5-MIGRATED state=$V_state downtime_s=$V_stats_downtime_s rounds=$V_stats_rounds \
  reason=$V_stats_reason bytes=$V_stats_bytes_sent pages_full=$V_stats_pages_full \
  pages_xbzrle=$V_stats_pages_xbzrle total_s=$V_stats_total_s channel=$(echo "$V_stats_channel" | tr ' ' _) \
  src_cnt_during=$(($(s35_count $G) - c0)) took=$(el $t) \
  $([ "$V_state" = completed ] || echo FAILED error=$(echo "$V_error" | tr ' ' _ | cut -c1-200))
rx_pcall plugin migrate_receive_status id=$RID
mark S5-DEST-RUNNING state=$V_state domid=$V_domid paused=$V_paused \
  xl_paused=$(xl list s5d 2>/dev/null | awk 'NR == 2 {print ($5 ~ /p/) ? 1 : 0}')
kill $R1 2>/dev/null; wait $R1 2>/dev/null
s35_unstub $G $U
xl destroy s5s; xl destroy s5g
mark S5-SOURCE-GONE source_domains=$(xl list | grep -c -E '^s5[gs] ') last_src=$last_src
t=$(up)
if rx_until 60 s35_count_at_least "$G2" $((last_src + 2)); then
  mark S5-CONTINUES dest=$G2 last_src=$last_src first=$first cnt=$(s35_count $G2) \
    booted=$(rx_debugport_count $G2 S35-GUEST-BOOTED) took=$(el $t)
else
  xl dmesg | tail -20
  mark S5-CONTINUES FAILED last_src=$last_src first=$first cnt=$(s35_count $G2)
fi

# -- clean up ---------------------------------------------------------------
rx_pcall plugin migrate_forget id=$SID; rx_pcall plugin migrate_forget id=$RID
kill $R2 2>/dev/null; wait $R2 2>/dev/null
s35_unstub $G2 $U2
rx_daemon_stop
xl destroy s5t 2>/dev/null; xl destroy s5d 2>/dev/null
for f in $W/*.log /var/log/xen/qemu-dm-s5?.log*; do cp "$f" "/out/s5-$(basename "$f")"; done 2>/dev/null
rm -rf $W $RUN $STATE
kill $HB; wait $HB 2>/dev/null
rx_leakcheck S5
mark S5-DONE took=$(el $s5_t0)
