"""Live migration through real Nova (API, conductor, scheduler, two
computes) with the driver and the simulator's two hosts."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import hashlib
import json
import threading
import time
from unittest import mock

import fixtures

from nova import context as nova_context
from nova import objects

from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.dom0 import migration_target
from nova_xen_stubdom.driver import migrationutils
from nova_xen_stubdom.driver import pv_guests
from nova_xen_stubdom.sim import devicemodel
from nova_xen_stubdom.sim import pv_drivers
from tests import guest_memory
from tests import waiting

MiB = 1 << 20


class TestLiveMigration(base.XenStubdomTestBase):

    def setUp(self):
        super().setUp()
        self.flags(group='xen_stubdom', live_migration_progress_interval=1,
                   live_migration_downtime_ms=50)
        self.flavor = self._create_flavor(memory_mb=128, vcpu=1, disk=1)

    def _boot(self):
        server = self._create_server(flavor_id=self.flavor, networks='none',
                                     host='host1')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        return server

    def _domain(self, server, host):
        guest, _stub = self.xapi_vms(server)
        hv = self.sim_host(host).hypervisor
        return hv, hv.domain(int(guest['domid']))

    def _fill(self, dom):
        mem = dom.memory()
        for pfn in range(0, dom.max_pfn, 7):
            mem[pfn * 4096:pfn * 4096 + 32] = hashlib.sha256(
                b'%d' % pfn).digest()
        mem.release()

    @staticmethod
    def _digest(dom):
        return guest_memory.digest(dom.memory(), dom.hvm_params)

    def _xenopsd_acted(self, compute):
        """What *compute*'s simulated xenopsd did on its own, once every
        check it had queued ran (they run on a thread of their own)."""
        xenopsd = self.sim_host(compute).xenopsd
        self.assertTrue(xenopsd.drain(), 'sim xenopsd still busy')
        return xenopsd.acted

    def _incoming_vms(self):
        x = self.xapi()
        return [r for r in x.VM.get_all_records().values()
                if r['other_config'].get('nova_xen_stubdom_role', '')
                .startswith('incoming')]

    def _wait_migration(self, server, statuses, timeout=90):
        """Like Nova's helper, with room for a loaded 2-core machine."""
        deadline = time.monotonic() + timeout
        while True:
            migs = self.admin_api.get_migrations()
            for m in migs:
                if m['instance_uuid'] == server['id'] and \
                        m['status'] in statuses:
                    return m
            self.assertLess(time.monotonic(), deadline,
                            'migration never reached %s: %s'
                            % (statuses, migs))
            time.sleep(0.1)

    def _start_live_migration(self, server):
        self.api.post_server_action(
            server['id'], {'os-migrateLive': {'host': 'host2',
                                              'block_migration': 'auto'}})

    def _migration_record(self, server):
        ctxt = nova_context.get_admin_context()
        migs = objects.MigrationList.get_by_filters(
            ctxt, {'instance_uuid': server['id']})
        return [m for m in migs if m.migration_type == 'live-migration'][-1]

    def test_live_migrate_moves_memory_and_device_state(self):
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        self._fill(dom)
        digest = self._digest(dom)
        qemu = devicemodel.device_state(hv1, dom.domid)
        self.assertTrue(qemu)

        self._start_live_migration(server)
        self._wait_migration(server, ['completed'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])

        guest, stub = self.xapi_vms(server)
        self.assertEqual(self.sim_host('host2').ref, guest['resident_on'])
        self.assertEqual(self.sim_host('host2').ref, stub['resident_on'])
        self.assertEqual('Running', guest['power_state'])
        hv2, dom2 = self._domain(server, 'host2')
        self.assertFalse(dom2.paused)
        self.assertEqual(digest, self._digest(dom2))
        self.assertEqual(qemu, devicemodel.device_state(hv2, dom2.domid))
        # the source is clean: no guest, no stub domain, no device model
        self.assertEqual([], [d for d in hv1.domains if d != 0])
        # ... removed through XAPI: its xenopsd never acted on its own
        # (a restart there would have been a second copy)
        self.assertEqual([], self._xenopsd_acted('host1'))
        self.assertEqual([], self._incoming_vms())
        # progress reached Nova's migration record, as libvirt reports it
        mig = self._migration_record(server)
        self.assertEqual(128 * MiB, mig.memory_total)
        self.assertEqual(0, mig.memory_remaining)
        self.assertGreater(mig.memory_processed, 0)
        self._delete_server(server)

    def test_paused_guest_arrives_paused(self):
        server = self._boot()
        self.api.post_server_action(server['id'], {'pause': None})
        server = self._wait_for_state_change(server, 'PAUSED')
        hv1, dom = self._domain(server, 'host1')
        self._fill(dom)
        digest = self._digest(dom)
        self._start_live_migration(server)
        self._wait_migration(server, ['completed'])
        server = self._wait_for_state_change(server, 'PAUSED')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        guest, _ = self.xapi_vms(server)
        self.assertEqual('Paused', guest['power_state'])
        hv2, dom2 = self._domain(server, 'host2')
        # never ran on the destination before its owner unpauses it
        self.assertTrue(dom2.paused)
        self.assertEqual(digest, self._digest(dom2))
        self.assertEqual([], [d for d in hv1.domains if d != 0])
        self.assertEqual(0, self._migration_record(server).memory_remaining)
        self.api.post_server_action(server['id'], {'unpause': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        guest, _ = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertFalse(dom2.paused)
        self._delete_server(server)

    def test_abort_keeps_the_guest_on_the_source(self):
        self.flags(group='xen_stubdom', live_migration_downtime_ms=1,
                   live_migration_max_rounds=10000,
                   live_migration_stall_rounds=10000,
                   live_migration_max_mem_factor=1000,
                   live_migration_bandwidth_mbps=8)
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        dom.dirty_rate = 64 * MiB
        self._start_live_migration(server)
        mig = self._wait_migration(server, ['running'])
        deadline = time.monotonic() + 20
        while not self._incoming_vms() or self.computes_by_name[
                'host1'].manager.driver._lm_sender._sending.get(
                    server['id']) is None:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.api.api_delete('/servers/%s/migrations/%s'
                            % (server['id'], mig['id']))
        self._wait_migration(server, ['cancelled'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        guest, _stub = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertFalse(hv1.domain(int(guest['domid'])).paused)
        # the destination's rollback is a cast: wait for it
        self.wait_for_xapi(lambda: not self._incoming_vms(), timeout=30,
                           what='incoming VMs removed')
        self.wait_for_xapi(lambda: [d for d in self.sim_host(
            'host2').hypervisor.domains if d != 0] == [], timeout=30,
            what='destination domains gone')
        self._delete_server(server)

    def test_force_complete(self):
        self.flags(group='xen_stubdom', live_migration_downtime_ms=1,
                   live_migration_max_rounds=10000,
                   live_migration_stall_rounds=10000,
                   live_migration_max_mem_factor=1000)
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        dom.dirty_rate = 64 * MiB
        self._start_live_migration(server)
        mig = self._wait_migration(server, ['running'])
        deadline = time.monotonic() + 20
        ops = self.computes_by_name['host1'].manager.driver._lm_sender
        while ops._sending.get(server['id']) is None:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.api.force_complete_migration(server['id'], mig['id'])
        self._wait_migration(server, ['completed'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self._delete_server(server)

    def test_source_xapi_restart_during_precopy(self):
        """XAPI restarts under a running pre-copy: the agents keep going,
        the driver logs in again and the migration completes."""
        self.flags(group='xen_stubdom', live_migration_downtime_ms=1,
                   live_migration_max_rounds=10000,
                   live_migration_stall_rounds=10000,
                   live_migration_max_mem_factor=1000)
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        dom.dirty_rate = 64 * MiB
        self._start_live_migration(server)
        mig = self._wait_migration(server, ['running'])
        ops = self.computes_by_name['host1'].manager.driver._lm_sender
        deadline = time.monotonic() + 20
        while ops._sending.get(server['id']) is None:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        host = self.sim_host('host1')
        self.sim.restart_toolstack(host)
        # the migration must cross the restart: wait until the driver has
        # met SESSION_INVALID and logged in again while pre-copy runs
        sessions = host.pool.sessions

        def logged_in_again():
            with sessions.lock:
                return any(s['epoch'] == host.toolstack_epoch
                           for s in sessions.live.values())
        waiting.wait_until(logged_in_again,
                           'the driver to log in again after the restart')
        self.api.force_complete_migration(server['id'], mig['id'])
        self._wait_migration(server, ['completed'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self._delete_server(server)

    def _assert_rolled_back(self, server):
        self._wait_migration(server, ['error', 'failed'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        guest, _stub = self.xapi_vms(server)
        hv1 = self.sim_host('host1').hypervisor
        self.assertEqual('Running', guest['power_state'])
        self.assertFalse(hv1.domain(int(guest['domid'])).paused)
        self.wait_for_xapi(lambda: not self._incoming_vms(), timeout=30,
                           what='incoming VMs removed')
        self.wait_for_xapi(lambda: [d for d in self.sim_host(
            'host2').hypervisor.domains if d != 0] == [], timeout=30,
            what='destination domains gone')
        return server

    def test_destination_receiver_dies_mid_stream(self):
        """The destination agent's receiver goes away during pre-copy."""
        self.flags(group='xen_stubdom', live_migration_downtime_ms=1,
                   live_migration_max_rounds=10000,
                   live_migration_stall_rounds=10000,
                   live_migration_max_mem_factor=1000)
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        dom.dirty_rate = 64 * MiB
        self._start_live_migration(server)
        self._wait_migration(server, ['running'])
        ops = self.computes_by_name['host1'].manager.driver._lm_sender
        deadline = time.monotonic() + 20
        while ops._sending.get(server['id']) is None:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        x = self.xapi()
        incoming = [r for r in x.VM.get_all_records().values()
                    if r['other_config'].get('nova_xen_stubdom_role') ==
                    migrationutils.ROLE_INCOMING_GUEST][0]
        self.dom0_call('host2', 'migrate_receive_cancel', id=incoming[
            'other_config'][migrationutils.OC_RECEIVE_JOB])
        server = self._assert_rolled_back(server)
        self._delete_server(server)

    def test_wrong_key_is_refused_and_rolled_back(self):
        dest_ops = self.computes_by_name['host2'].manager.driver._lm_prepare
        real = dest_ops.pre_live_migration

        def tampered(*args, **kwargs):
            data = real(*args, **kwargs)
            data.migration_key = 'ab' * 32     # not the receiver's key
            return data

        dest_ops.pre_live_migration = tampered
        server = self._boot()
        self._start_live_migration(server)
        server = self._assert_rolled_back(server)
        self._delete_server(server)

    # -- the switch-over's outcome: never lose a guest --------------------
    def _at_destination_phase(self, phase, action):
        """Run *action* on the destination's receiver thread when it
        reaches *phase* ("go": before the guest may start; "running": it
        has started, before the source is told).  The hook patches the
        dom0 code: the destination's agent runs in this process for the
        test (a daemon process would not see the patch)."""
        self.sim_host('host2').plugin_process = False
        real_init = migration_target.LiveMigrationTarget.__init__

        def init(target, *args, **kwargs):
            journal = kwargs.pop('on_phase', lambda p: None)

            def on_phase(p):
                journal(p)
                if p == phase:
                    action()
            real_init(target, *args, on_phase=on_phase, **kwargs)
        patcher = mock.patch.object(
            migration_target.LiveMigrationTarget, '__init__', init)
        patcher.start()
        self.addCleanup(patcher.stop)

    def _hold_destination(self, phase, then_fail=False):
        """Hold the destination's receiver at *phase* until the returned
        event is set; then it goes on, or fails when *then_fail*."""
        release = threading.Event()
        self.addCleanup(release.set)

        def hold():
            release.wait(120)
            if then_fail:
                raise RuntimeError('injected: destination fails after go')
        self._at_destination_phase(phase, hold)
        return release

    def _operator_drops_the_destination_copy(self, server):
        """The procedure's common end: the destination's incoming VMs
        removed with xe's calls, the server set ACTIVE again."""
        x = self.xapi()
        for rec in self._incoming_vms():
            ref = x.VM.get_by_uuid(rec['uuid'])
            if rec['power_state'] != 'Halted':
                x.VM.hard_shutdown(ref)
            x.VM.destroy(ref)
        self.admin_api.post_server_action(server['id'], {
            'os-resetState': {'state': 'active'}})
        return self._wait_for_state_change(server, 'ACTIVE')

    def _plugin(self, host, fn, **args):
        x = self.xapi()
        return json.loads(x.host.call_plugin(
            self.sim_host(host).ref, 'nova_xen_stubdom', fn, args))

    def test_unknown_switchover_keeps_both_copies_and_errors(self):
        """"go" is sent, "running" never comes back and the destination
        cannot say whether the guest runs there.  The old driver called
        Nova's rollback here: rollback_live_migration_at_source removed
        the destination copy, the source stayed paused and Nova showed
        ACTIVE.  Now: ERROR with a fault naming both hosts, both copies
        kept as they are."""
        self.flags(group='xen_stubdom', live_migration_confirm_timeout=8)
        server = self._boot()
        release = self._hold_destination('go', then_fail=True)
        self._start_live_migration(server)
        self._wait_migration(server, ['error'])
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        fault = server['fault']['message']
        self.assertIn('switch-over outcome unknown', fault)
        self.assertIn('host1', fault)
        self.assertIn('host2', fault)
        # the source copy: there, paused, untouched
        guest, stub = self.xapi_vms(server)
        self.assertEqual(self.sim_host('host1').ref, guest['resident_on'])
        hv1 = self.sim_host('host1').hypervisor
        self.assertTrue(hv1.domain(int(guest['domid'])).paused)
        self.assertIsNotNone(stub)
        # the destination copy: its VMs and domain are still there
        self.assertTrue(self._incoming_vms())
        self.assertTrue([d for d in self.sim_host('host2').hypervisor.domains
                         if d != 0])
        # The operator's procedure (doc/source/operations.rst, "Unknown
        # switch-over"), for a destination that never ran the guest.
        release.set()
        incoming = [r for r in self._incoming_vms() if r['other_config'][
            'nova_xen_stubdom_role'] == migrationutils.ROLE_INCOMING_GUEST][0]
        receive_job = incoming['other_config'][migrationutils.OC_RECEIVE_JOB]
        waiting.wait_until(
            lambda: self._plugin('host2', 'migrate_receive_status',
                                 id=receive_job)['state'] == 'failed',
            'the destination to settle as failed')
        send_job = fault.split('source job ', 1)[1].split(':', 1)[0]
        self.assertEqual('failed', self._plugin(
            'host1', 'migrate_resume_source', id=send_job)['state'])
        self.assertFalse(hv1.domain(int(guest['domid'])).paused)
        server = self._operator_drops_the_destination_copy(server)
        self._delete_server(server)

    def test_unknown_switchover_after_the_guest_ran_on_the_destination(self):
        """The guest started on the destination, then the destination
        became unreachable before anyone heard: ERROR with both copies;
        the operator keeps the destination's writes (step 4 of the
        procedure) and the guest boots again on the source."""
        self.flags(group='xen_stubdom', live_migration_confirm_timeout=8)
        server = self._boot()
        release = self._hold_destination('running')

        def unreachable(migrate_data):
            raise ConnectionRefusedError('injected: host2 unreachable')
        self.useFixture(fixtures.MonkeyPatch(
            'nova_xen_stubdom.driver.livemigration_send.LiveMigrationSender.'
            '_receive_state', lambda self, md: unreachable(md)))
        self._start_live_migration(server)
        self._wait_migration(server, ['error'])
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertIn('host2 cannot tell', server['fault']['message'])
        release.set()
        guest, _stub = self.xapi_vms(server)
        hv1 = self.sim_host('host1').hypervisor
        self.assertTrue(hv1.domain(int(guest['domid'])).paused)
        # step 4: the destination's copy goes, the source's boots again
        server = self._operator_drops_the_destination_copy(server)
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        self.api.post_server_action(server['id'], {'os-start': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        guest, _stub = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertFalse(hv1.domain(int(guest['domid'])).paused)
        self._delete_server(server)

    def test_destination_failure_after_go_resumes_the_source(self):
        """The destination fails after "go" before the guest ran there
        and says so: the source guest is resumed and the migration rolled
        back."""
        self.flags(group='xen_stubdom', live_migration_confirm_timeout=8)
        server = self._boot()

        def fail():
            raise RuntimeError('injected: destination fails after go')
        self._at_destination_phase('go', fail)
        self._start_live_migration(server)
        server = self._assert_rolled_back(server)
        self._delete_server(server)

    def test_destination_runs_but_the_source_did_not_hear(self):
        """The guest started on the destination but "running" did not
        reach the source in time: the destination's own word completes
        the migration."""
        self.flags(group='xen_stubdom', live_migration_confirm_timeout=8)
        server = self._boot()
        self._hold_destination('running')
        self._start_live_migration(server)
        self._wait_migration(server, ['completed'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual([], [d for d in self.sim_host(
            'host1').hypervisor.domains if d != 0])
        self._delete_server(server)

    def test_guest_with_pv_drivers_is_refused(self):
        """A guest whose PV drivers are loaded could only be stopped by its
        own suspend (control/shutdown), and xenopsd halts a VM that
        suspends outside its operations (sim/xenopsd_events.py): the
        source's pre-check refuses, pointing to cold migration, before the
        guest is asked anything; it runs on host1 as before."""
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        path = '/local/domain/%d/control/shutdown' % dom.domid
        writes = []
        hv1.xenstore.watch(path, lambda p: writes.append(
            hv1.xenstore.read(p)))
        pv_drivers.load(hv1, dom.domid)
        with mock.patch.object(
                pv_guests, 'check_live_migration',
                wraps=pv_guests.check_live_migration) as check:
            self._start_live_migration(server)
            self._wait_migration(server, ['error'])
        self.assertEqual(1, check.call_count)
        with self.assertRaisesRegex(
                Exception, 'instance %s has PV drivers loaded.*xenopsd halts'
                           '.*use cold migration' % server['id']):
            pv_guests.check_live_migration(*check.call_args[0])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        guest, _ = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertEqual(dom.domid, int(guest['domid']))
        self.assertFalse(dom.paused)
        self.assertIsNone(dom.shutdown_reason)
        self.assertEqual([], [w for w in writes if w is not None])
        self.assertEqual([], self._xenopsd_acted('host1'))
        self.assertEqual([], self._incoming_vms())
        self._delete_server(server)

    def test_pv_drivers_loaded_after_the_check_fail_the_move_safely(self):
        """The drivers load between the pre-check and the switch-over: the
        source agent refuses the suspend handshake itself
        (dom0/guest_suspend.py), the migration fails before "go", and the
        guest runs on host1 with XAPI none the wiser."""
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        path = '/local/domain/%d/control/shutdown' % dom.domid
        real = pv_guests.check_live_migration

        def check_then_load(*args):
            real(*args)
            pv_drivers.load(hv1, dom.domid)
        with mock.patch.object(pv_guests, 'check_live_migration',
                               side_effect=check_then_load):
            self._start_live_migration(server)
            self._wait_migration(server, ['error', 'failed'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        guest, _ = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertEqual(dom.domid, int(guest['domid']))
        waiting.wait_until(lambda: not dom.paused, 'the source guest to run')
        self.assertIsNone(dom.shutdown_reason)
        self.assertIsNone(hv1.xenstore.read(path))
        self.assertEqual([], self._xenopsd_acted('host1'))
        waiting.wait_until(lambda: not self._incoming_vms(),
                           'the incoming VMs to go')
        self._delete_server(server)

    def test_destination_lacking_cpu_features_is_refused(self):
        """host2's CPU lacks two features the guest sees: the pre-check
        refuses, naming them, before host1's guest is touched."""
        server = self._boot()
        hv1, dom = self._domain(server, 'host1')
        hv2 = self.sim_host('host2').hypervisor
        guest = dom.cpu.policy
        hv2.cpu_policy = cpu_policy.build(
            guest.vendor, [f for f in guest.features()
                           if f not in ('avx2', 'avx512f')])
        ops = self.computes_by_name['host1'].manager.driver._lm_checks
        with mock.patch.object(
                ops, '_check_cpu_policy',
                wraps=ops._check_cpu_policy) as check:
            self._start_live_migration(server)
            self._wait_migration(server, ['error'])
        self.assertEqual(1, check.call_count)
        with self.assertRaisesRegex(
                Exception, 'cannot offer the CPU instance %s sees: '
                           'features avx2 avx512f' % server['id']):
            ops._check_cpu_policy(*check.call_args[0])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        self.assertFalse(dom.paused)
        self.assertFalse(dom.logdirty)
        self.assertEqual([], [d for d in hv2.domains if d != 0])
        self.assertEqual([], self._incoming_vms())
        self._delete_server(server)

    def test_pci_guest_is_refused(self):
        # refused by the destination check with a message naming the cause
        ops = self.computes_by_name['host2'].manager.driver._lm_checks
        server = self._boot()
        inst = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), server['id'])
        inst.pci_devices = objects.PciDeviceList(objects=[
            objects.PciDevice(address='0000:81:00.0')])
        from nova import exception
        with self.assertRaisesRegex(exception.MigrationPreCheckError,
                                    'PCI pass-through'):
            ops.check_can_live_migrate_destination(None, inst, {}, {})
        self._delete_server(server)
