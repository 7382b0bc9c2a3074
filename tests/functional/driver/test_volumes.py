"""Cinder volumes through Nova: iSCSI connection_info (what Cinder's LVM /
iSCSI drivers return) pointing at the simulator's iSCSI array, attached
the XAPI way (SR.introduce, PBD.create/plug, SR.scan, VBD.create/plug) to
the guest and mirrored on its stub domain.  Attach to a running and to a
stopped server, detach, boot from volume, delete with a volume attached,
bad connection_info refused with nothing changed, and a fault at every
XAPI step of an attach leaving nothing behind (the base class's leak check
also covers volume SRs, PBDs and iSCSI sessions after every test)."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

from nova import exception
from nova.tests.fixtures import cinder as cinder_fixture

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.sim import iscsi
from nova_xen_stubdom.sim import testing as sim_testing
from tests import waiting

VOL = 'c8f5e54c-8f6e-4a5c-9a4d-2b7f7b0b7a01'
BOOT_VOL = cinder_fixture.CinderFixture.IMAGE_BACKED_VOL
# Nova lets a swap through only as Cinder's volume migration: the fixture's
# old volume reads "migrating" once attached
SWAP_OLD = cinder_fixture.CinderFixture.SWAP_OLD_VOL
SWAP_NEW = cinder_fixture.CinderFixture.SWAP_NEW_VOL
PORTAL_HOST = '192.0.2.20'
MARKER = b'volume marker\n'


def _iqn(volume_id):
    # Cinder's LVM driver: iscsi_target_prefix + volume_name_template
    return 'iqn.2010-10.org.openstack:volume-%s' % volume_id


class _VolumeTestBase(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)
    MAX_ATTEMPTS = 1

    def setUp(self):
        super().setUp()
        self.array = iscsi.array(self.sim)
        self.infos = {}
        # Nova's Cinder fixture answers attachment_update with the
        # connection_info its class keeps per volume id
        self.stub_out('nova.tests.fixtures.cinder.CinderFixture.'
                      'VOLUME_CONNECTION_INFO', self.infos)
        self.infos['fake'] = {'driver_volume_type': 'fake', 'data': {}}

    # -- helpers ----------------------------------------------------------
    def _export(self, volume_id, lun=1, chap=None, size=64 << 20,
                data=MARKER):
        """Cinder exports *volume_id*: a target with one LUN on the array,
        and the connection_info its iSCSI driver would return."""
        target = self.array.add_target(
            _iqn(volume_id), portal='%s:3260' % PORTAL_HOST, chap=chap)
        target.add_lun(lun, size, name='volume-%s' % volume_id, data=data)
        data = {'target_discovered': False,
                'target_portal': '%s:3260' % PORTAL_HOST,
                'target_iqn': _iqn(volume_id), 'target_lun': lun,
                'volume_id': volume_id, 'access_mode': 'rw',
                'encrypted': False, 'qos_specs': None}
        if chap:
            data.update(auth_method='CHAP', auth_username=chap[0],
                        auth_password=chap[1])
        self.infos[volume_id] = {'driver_volume_type': 'iscsi',
                                 'data': data}
        return target

    def _volume_vbds(self, server, x):
        """role -> [VBD records] of the server's volume VBDs."""
        guest, stub = self.xapi_vms(server, x)
        out = {}
        for role, vm in (('guest', guest), ('stubdom', stub)):
            out[role] = [r for r in (x.VBD.get_record(v) for v in vm['VBDs'])
                         if dc.OC_VOLUME_ID in r['other_config']]
        return out

    def _volume_srs(self, x):
        return [r for r in x.SR.get_all_records().values()
                if r['type'] == 'iscsi']

    def _frontends(self, server, x):
        """domid -> targets of its vbd frontends (guest, stub domain)."""
        hv = self.sim.hosts[0].hypervisor
        guest, stub = self.xapi_vms(server, x)
        return {role: sorted(f.target for f in hv.frontends
                             if f.domid == int(vm['domid'])
                             and f.kind == 'vbd')
                for role, vm in (('guest', guest), ('stubdom', stub))}

    def _attach(self, server, volume_id):
        self.api.post_server_volume(
            server['id'], {'volumeAttachment': {'volumeId': volume_id}})
        waiting.wait_until(
            lambda: self.api.get_server_volumes(server['id']),
            'the volume attachment to be recorded')

    def _wait_attach_done(self, server, volume_id, n=1):
        self.notifier.wait_for_versioned_notifications(
            'instance.volume_attach.end', n_events=n)

    def _attach_fails(self, server, volume_id, n):
        self.api.post_server_volume(
            server['id'], {'volumeAttachment': {'volumeId': volume_id}})
        self.notifier.wait_for_versioned_notifications(
            'instance.volume_attach.error', n_events=n)
        waiting.wait_until(
            lambda: not self.api.get_server_volumes(server['id']),
            'Nova to drop the failed attachment')

    def _detach(self, server, volume_id, n=1):
        self.api.delete_server_volume(server['id'], volume_id)
        self.notifier.wait_for_versioned_notifications(
            'instance.volume_detach.end', n_events=n)
        waiting.wait_until(
            lambda: not self.api.get_server_volumes(server['id']),
            'the volume to leave the server')

    def _claim_pv_drivers(self, server):
        """The guest's agent reports PV drivers with VBD hot-plug (a new
        boot of the simulated HVM guest reports none again)."""
        guest, _stub = self.xapi_vms(server)
        sim_testing.report_pv_drivers(self.sim, guest['ref'])

    def _assert_nothing_of_volumes(self, server, x):
        self.assertEqual([], self._volume_srs(x))
        self.assertEqual({'guest': [], 'stubdom': []},
                         self._volume_vbds(server, x))
        self.assertEqual(set(), self.array.sessions)


class TestVolumes(_VolumeTestBase):
    def test_connector_names_the_host_initiator(self):
        compute = self.computes_by_name['host1']
        connector = compute.manager.driver.get_volume_connector(None)
        x = self.xapi()
        host = x.host.get_record(self.sim.hosts[0].ref)
        self.assertEqual(host['other_config']['iscsi_iqn'],
                         connector['initiator'])
        self.assertEqual(host['address'], connector['ip'])
        self.assertEqual(host['hostname'], connector['host'])

    def test_attach_to_running_server_then_detach(self):
        server = self._create_server(networks='none')
        self._claim_pv_drivers(server)
        target = self._export(VOL, chap=('chapuser', 'chapsecret'))
        self._attach(server, VOL)
        self._wait_attach_done(server, VOL)
        x = self.xapi()
        [sr] = self._volume_srs(x)
        self.assertEqual(1, len(sr['PBDs']))
        pbd = x.PBD.get_record(sr['PBDs'][0])
        self.assertTrue(pbd['currently_attached'])
        self.assertEqual(_iqn(VOL), pbd['device_config']['targetIQN'])
        vbds = self._volume_vbds(server, x)
        [guest_vbd], [mirror] = vbds['guest'], vbds['stubdom']
        self.assertEqual(('1', '1'), (guest_vbd['userdevice'],
                                      mirror['userdevice']))
        self.assertEqual(guest_vbd['VDI'], mirror['VDI'])
        self.assertEqual(guest_vbd['uuid'],
                         mirror['other_config'][dc.OC_MIRROR_OF])
        # hot-plugged into the guest's PV frontend; QEMU's emulated disk
        # comes with the next boot (IDE/AHCI are not hot-pluggable)
        self.assertTrue(guest_vbd['currently_attached'])
        self.assertFalse(mirror['currently_attached'])
        lun = target.luns[1].path
        self.assertIn(lun, self._frontends(server, x)['guest'])
        self.assertNotIn(lun, self._frontends(server, x)['stubdom'])
        self.assertEqual({(self.sim.hosts[0].uuid, _iqn(VOL))},
                         self.array.sessions)

        # a reboot rebuilds the stub domain: it now emulates the volume
        self.api.post_server_action(server['id'],
                                    {'reboot': {'type': 'HARD'}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        fronts = self._frontends(server, x)
        self.assertIn(lun, fronts['guest'])
        self.assertIn(lun, fronts['stubdom'])

        self._claim_pv_drivers(server)
        self._detach(server, VOL)
        self._assert_nothing_of_volumes(server, x)
        self.assertEqual(MARKER, target.read(1, len(MARKER)))
        self._delete_server(server)

    def test_guest_without_pv_drivers_gets_the_volume_at_next_start(self):
        """xapi_vbd_helpers.ml valid_operations: no VBD.plug/unplug on a
        running HVM guest that does not claim PV drivers with VBD hot-plug.
        The attach defers the volume to the next start; a detach of a
        plugged volume is refused with nothing changed."""
        server = self._create_server(networks='none')
        target = self._export(VOL)
        x = self.xapi()
        self._attach(server, VOL)
        self._wait_attach_done(server, VOL)
        vbds = self._volume_vbds(server, x)
        [guest_vbd], [mirror] = vbds['guest'], vbds['stubdom']
        self.assertFalse(guest_vbd['currently_attached'])
        self.assertFalse(mirror['currently_attached'])
        lun = target.luns[1].path
        self.assertNotIn(lun, self._frontends(server, x)['guest'])
        # not plugged yet: it can leave while the guest runs
        self._detach(server, VOL)
        self._assert_nothing_of_volumes(server, x)

        self._attach(server, VOL)
        self._wait_attach_done(server, VOL, n=2)
        self.api.post_server_action(server['id'],
                                    {'reboot': {'type': 'HARD'}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        fronts = self._frontends(server, x)
        self.assertIn(lun, fronts['guest'])
        self.assertIn(lun, fronts['stubdom'])
        # plugged into a running HVM guest without PV drivers: XAPI
        # refuses VBD.unplug, so the detach is refused before any change
        before = self._volume_vbds(server, x)
        self.api.delete_server_volume(server['id'], VOL)
        self._wait_for_action_fail_completion(
            server, 'detach_volume', 'compute_detach_volume')
        self.assertEqual(before, self._volume_vbds(server, x))
        self.assertEqual(1, len(self.api.get_server_volumes(server['id'])))
        self.assertEqual('ACTIVE',
                         self.api.get_server(server['id'])['status'])
        # stopped, it goes
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        self._detach(server, VOL, n=2)
        self._assert_nothing_of_volumes(server, x)
        self._delete_server(server)

    def test_attach_to_stopped_server_plugs_at_start(self):
        server = self._create_server(networks='none')
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        target = self._export(VOL)
        self._attach(server, VOL)
        self._wait_attach_done(server, VOL)
        x = self.xapi()
        vbds = self._volume_vbds(server, x)
        self.assertEqual([False, False], [
            v['currently_attached'] for v in vbds['guest'] + vbds['stubdom']])
        self.api.post_server_action(server['id'], {'os-start': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        fronts = self._frontends(server, x)
        lun = target.luns[1].path
        self.assertIn(lun, fronts['guest'])
        self.assertIn(lun, fronts['stubdom'])
        self._claim_pv_drivers(server)      # XAPI unplugs it only then
        self._detach(server, VOL)
        self._assert_nothing_of_volumes(server, x)
        self._delete_server(server)

    def test_boot_from_volume(self):
        target = self._export(BOOT_VOL, size=1 << 30)
        server = self._build_server(networks='none')
        server['imageRef'] = ''
        server['block_device_mapping_v2'] = [{
            'boot_index': 0, 'uuid': BOOT_VOL, 'source_type': 'volume',
            'destination_type': 'volume'}]
        server = self.api.post_server({'server': server})
        server = self._wait_for_state_change(server, 'ACTIVE')
        x = self.xapi()
        guest, stub = self.xapi_vms(server, x)
        disks = {}
        for role, vm in (('guest', guest), ('stubdom', stub)):
            for vbd in vm['VBDs']:
                rec = x.VBD.get_record(vbd)
                disks[role, rec['userdevice']] = rec
        root = disks['guest', '0']
        self.assertEqual(BOOT_VOL, root['other_config'][dc.OC_VOLUME_ID])
        self.assertTrue(root['bootable'])
        self.assertEqual(root['VDI'], disks['stubdom', '0']['VDI'])
        # no image was imported: the only VDI is the LUN's
        self.assertEqual([root['VDI']], x.VDI.get_all())
        self.assertIn(target.luns[1].path,
                      self._frontends(server, x)['stubdom'])
        self._delete_server(server)
        self.assertEqual(MARKER, target.read(1, len(MARKER)))

    def test_fault_while_booting_from_volume_leaves_nothing(self):
        target = self._export(BOOT_VOL, size=1 << 30)
        x = self.xapi()
        for method in ('PBD.plug', 'SR.scan', 'VM.start_on'):
            with self.subTest(step=method):
                self._fail_nth(method, 1)
                try:
                    server = self._build_server(networks='none')
                    server['imageRef'] = ''
                    server['block_device_mapping_v2'] = [{
                        'boot_index': 0, 'uuid': BOOT_VOL,
                        'source_type': 'volume',
                        'destination_type': 'volume'}]
                    server = self.api.post_server({'server': server})
                    server = self._wait_for_state_change(server, 'ERROR')
                finally:
                    self.sim.faults.check_fail = self._orig_check
                self.assertEqual([], self._volume_srs(x))
                self.assertEqual((None, None), self.xapi_vms(server, x))
                self.assertEqual(set(), self.array.sessions)
                self._delete_server(server)
        self.assertEqual(MARKER, target.read(1, len(MARKER)))

    def test_rebuild_keeps_the_volume_attached(self):
        server = self._create_server(networks='none')
        target = self._export(VOL)
        self._attach(server, VOL)
        self._wait_attach_done(server, VOL)
        x = self.xapi()

        def vbds():
            return {role: [(v['uuid'], v['VDI'], v['userdevice'])
                           for v in recs]
                    for role, recs in self._volume_vbds(server, x).items()}
        before = vbds()
        self.api.post_server_action(server['id'], {'rebuild': {
            'imageRef': server['image']['id']}})
        self.notifier.wait_for_versioned_notifications(
            'instance.rebuild.end')
        server = self._wait_for_state_change(server, 'ACTIVE')
        # the very same VBDs, SR and session: nothing was detached (the
        # restarted stub domain now attaches the mirror too)
        self.assertEqual(before, vbds())
        self.assertTrue(all(v['currently_attached'] for recs in
                            self._volume_vbds(server, x).values()
                            for v in recs))
        self.assertEqual(1, len(self._volume_srs(x)))
        self.assertIn(target.luns[1].path,
                      self._frontends(server, x)['guest'])
        self.assertEqual(MARKER, target.read(1, len(MARKER)))
        self._delete_server(server)

    def test_delete_with_a_volume_attached(self):
        server = self._create_server(networks='none')
        target = self._export(VOL)
        self._attach(server, VOL)
        self._wait_attach_done(server, VOL)
        self._delete_server(server)
        x = self.xapi()
        self.assertEqual([], self._volume_srs(x))
        self.assertEqual(MARKER, target.read(1, len(MARKER)))

    def test_bad_connection_info_changes_nothing(self):
        server = self._create_server(networks='none')
        x = self.xapi()
        before = (x.SR.get_all(), x.VBD.get_all(), x.PBD.get_all())
        bad = {
            'a0000000-0000-4000-8000-000000000001': {
                'driver_volume_type': 'rbd', 'data': {'name': 'v'}},
            'a0000000-0000-4000-8000-000000000002': {
                'driver_volume_type': 'iscsi',
                'data': {'target_portal': '%s:3260' % PORTAL_HOST,
                         'target_lun': 1}},
            'a0000000-0000-4000-8000-000000000003': {
                'driver_volume_type': 'iscsi',
                'data': {'target_portal': '%s:x' % PORTAL_HOST,
                         'target_iqn': _iqn('x'), 'target_lun': 1}},
        }
        self.infos.update(bad)
        # a target the array does not have: refused by the iSCSI login
        self.infos['a0000000-0000-4000-8000-000000000004'] = {
            'driver_volume_type': 'iscsi',
            'data': {'target_portal': '%s:3260' % PORTAL_HOST,
                     'target_iqn': _iqn('missing'), 'target_lun': 1}}
        for n, vol in enumerate(sorted(self.infos), start=1):
            if vol == 'fake':
                continue
            self._attach_fails(server, vol, n)
            self.assertEqual(before, (x.SR.get_all(), x.VBD.get_all(),
                                      x.PBD.get_all()), vol)
        server = self.api.get_server(server['id'])
        self.assertEqual('ACTIVE', server['status'])
        self._delete_server(server)

    def test_fault_at_each_attach_step_leaves_nothing(self):
        server = self._create_server(networks='none')
        self._claim_pv_drivers(server)
        self._export(VOL)
        x = self.xapi()
        steps = [('SR.introduce', 1), ('PBD.create', 1), ('PBD.plug', 1),
                 ('SR.scan', 1), ('VDI.set_sharable', 1), ('VBD.create', 1),
                 ('VBD.get_uuid', 1), ('VBD.create', 2), ('VBD.plug', 1)]
        for n, (method, nth) in enumerate(steps, start=1):
            with self.subTest(step=method, nth=nth):
                self._fail_nth(method, nth)
                try:
                    self._attach_fails(server, VOL, n)
                finally:
                    self.sim.faults.check_fail = self._orig_check
                self._assert_nothing_of_volumes(server, x)
                self.assertEqual(
                    'ACTIVE', self.api.get_server(server['id'])['status'])
        # and the same volume attaches fine afterwards
        self._attach(server, VOL)
        self._wait_attach_done(server, VOL)
        self.assertEqual(1, len(self._volume_srs(x)))
        self._delete_server(server)


class TestSwapVolume(_VolumeTestBase):
    """Cinder's volume migration: Nova swaps the attached volume for the
    new one; the driver copies the data (VDI.copy into the new LUN) and
    moves the guest's and the stub domain's VBDs over."""

    def setUp(self):
        super().setUp()
        self.old_target = self._export(SWAP_OLD)
        # the new volume starts out blank: the marker must be copied there
        self.new_target = self._export(SWAP_NEW, data=b'')

    def _instance(self, server):
        from nova import context as nova_context
        from nova import objects
        return objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), server['id'])

    def _swap(self, server, event='end', n=1):
        self.admin_api.put_server_volume(server['id'], SWAP_OLD, SWAP_NEW)
        self.notifier.wait_for_versioned_notifications(
            'instance.volume_swap.%s' % event, n_events=n)

    def _server_with_old_volume(self, pv_drivers=True):
        server = self._create_server(networks='none')
        if pv_drivers:
            # before the attach: without them XAPI refuses the hot-plug
            # and the volume waits for the next start
            guest, _stub = self.xapi_vms(server)
            sim_testing.report_pv_drivers(self.sim, guest['ref'])
        self._attach(server, SWAP_OLD)
        self._wait_attach_done(server, SWAP_OLD)
        return server

    def _state(self, server, x):
        vbds = self._volume_vbds(server, x)
        return ([(v['other_config'][dc.OC_VOLUME_ID], v['userdevice'],
                  v['currently_attached'])
                 for v in vbds['guest'] + vbds['stubdom']],
                sorted(r['uuid'] for r in self._volume_srs(x)),
                self.array.sessions)

    def test_swap_on_running_server_copies_and_moves_both_vbds(self):
        server = self._server_with_old_volume()
        self._swap(server)
        x = self.xapi()
        self.assertEqual(
            [(SWAP_NEW, '1', True), (SWAP_NEW, '1', False)],
            self._state(server, x)[0])
        vbds = self._volume_vbds(server, x)
        self.assertEqual(vbds['guest'][0]['VDI'], vbds['stubdom'][0]['VDI'])
        self.assertEqual({(self.sim.hosts[0].uuid, _iqn(SWAP_NEW))},
                         self.array.sessions)
        self.assertEqual(1, len(self._volume_srs(x)))
        fronts = self._frontends(server, x)
        self.assertIn(self.new_target.luns[1].path, fronts['guest'])
        self.assertNotIn(self.old_target.luns[1].path, fronts['guest'])
        self.assertEqual(MARKER, self.new_target.read(1, len(MARKER)))
        # the stub domain emulates the new volume from the next start
        self.api.post_server_action(server['id'],
                                    {'reboot': {'type': 'HARD'}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertIn(self.new_target.luns[1].path,
                      self._frontends(server, x)['stubdom'])
        self._delete_server(server)
        self.assertEqual([], self._volume_srs(x))

    def test_swap_on_stopped_server(self):
        server = self._server_with_old_volume(pv_drivers=False)
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        # Nova's API swaps only ACTIVE/PAUSED/RESIZED servers; the driver's
        # answer to a refused running swap is "stop the server": on a
        # stopped one it needs no unplug at all
        x = self.xapi()
        driver = self.computes_by_name['host1'].manager.driver
        instance = self._instance(server)
        driver.swap_volume(None, self.infos[SWAP_OLD], self.infos[SWAP_NEW],
                           instance, '/dev/xvdb', 0)
        self.assertEqual([(SWAP_NEW, '1', False), (SWAP_NEW, '1', False)],
                         self._state(server, x)[0])
        self.assertEqual(MARKER, self.new_target.read(1, len(MARKER)))
        self.api.post_server_action(server['id'], {'os-start': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        fronts = self._frontends(server, x)
        self.assertIn(self.new_target.luns[1].path, fronts['guest'])
        self.assertIn(self.new_target.luns[1].path, fronts['stubdom'])
        self._delete_server(server)

    def test_refusals_change_nothing(self):
        server = self._server_with_old_volume()
        x = self.xapi()
        before = self._state(server, x)
        n = 0
        # XAPI refuses to unplug the disk from the running guest (the PV
        # driver rule of xapi_vbd_helpers.ml valid_operations)
        self._fail_nth('VBD.unplug', 1)
        try:
            n += 1
            self._swap(server, 'error', n)
        finally:
            self.sim.faults.check_fail = self._orig_check
        self.assertEqual(before, self._state(server, x))
        # after a reboot QEMU in the stub domain holds the volume open
        self.api.post_server_action(server['id'],
                                    {'reboot': {'type': 'HARD'}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        before = self._state(server, x)
        n += 1
        self._swap(server, 'error', n)
        self.assertEqual(before, self._state(server, x))
        self.assertEqual(MARKER, self.old_target.read(1, len(MARKER)))
        self.assertEqual('ACTIVE',
                         self.api.get_server(server['id'])['status'])
        self._delete_server(server)

    def test_bad_connection_info_changes_nothing(self):
        server = self._server_with_old_volume()
        x = self.xapi()
        before = self._state(server, x)
        driver = self.computes_by_name['host1'].manager.driver
        instance = self._instance(server)
        same_lun = dict(self.infos[SWAP_OLD],
                        data=dict(self.infos[SWAP_OLD]['data'],
                                  volume_id=SWAP_NEW))
        for bad, mountpoint, error in (
                ({'driver_volume_type': 'rbd', 'data': {}}, '/dev/xvdb',
                 exception.VolumeDriverNotFound),
                (same_lun, '/dev/xvdb', exception.InvalidVolume),
                (self.infos[SWAP_NEW], '/dev/xvdc',
                 exception.InvalidDevicePath)):
            with self.subTest(bad=bad, mountpoint=mountpoint):
                self.assertRaises(
                    error, driver.swap_volume, None,
                    self.infos[SWAP_OLD], bad, instance, mountpoint, 0)
                self.assertEqual(before, self._state(server, x))
        self._delete_server(server)

    def test_fault_at_each_swap_step_puts_the_old_volume_back(self):
        server = self._server_with_old_volume()
        x = self.xapi()
        before = self._state(server, x)
        steps = [('SR.introduce', 1), ('PBD.plug', 1), ('SR.scan', 1),
                 ('VDI.copy', 1), ('VBD.destroy', 1), ('VBD.destroy', 2),
                 ('VBD.create', 1), ('VBD.create', 2), ('VBD.plug', 1)]
        for n, (method, nth) in enumerate(steps, start=1):
            with self.subTest(step=method, nth=nth):
                seen = self._fail_nth(method, nth)
                try:
                    self._swap(server, 'error', n)
                finally:
                    self.sim.faults.check_fail = self._orig_check
                self.assertGreaterEqual(seen[0], nth)
                after = self._state(server, x)
                self.assertEqual(before, after)
                self.assertIn(self.old_target.luns[1].path,
                              self._frontends(server, x)['guest'])
        self._swap(server)
        self.assertEqual(SWAP_NEW, self._state(server, x)[0][0][0])
        self._delete_server(server)


class TestVolumesStayPut(_VolumeTestBase):
    """A server with volumes is not moved to another host (yet)."""
    SIM_HOSTS = 2
    COMPUTES = ('host1', 'host2')

    def test_migrate_with_a_volume_is_refused(self):
        server = self._create_server(networks='none', host='host1')
        self._claim_pv_drivers(server)
        self._export(VOL)
        self._attach(server, VOL)
        self._wait_attach_done(server, VOL)
        server = self._cold_migration_is_refused(server)
        x = self.xapi()
        vbds = self._volume_vbds(server, x)
        self.assertTrue(vbds['guest'][0]['currently_attached'])
        self._delete_server(server)

    def test_one_target_on_two_hosts_is_refused_cleanly(self):
        # a volume SR is introduced unshared, as the old driver did: a
        # second host of the pool cannot plug it while the first has it
        # (xapi_pbd.ml check_sharing_constraint: SR_NOT_SHARABLE)
        iqn = _iqn('shared-target')
        target = self.array.add_target(iqn, portal='%s:3260' % PORTAL_HOST)
        vol2 = 'c8f5e54c-8f6e-4a5c-9a4d-2b7f7b0b7a02'
        for lun, vol in ((1, VOL), (2, vol2)):
            target.add_lun(lun, 1 << 20, data=MARKER)
            self.infos[vol] = {'driver_volume_type': 'iscsi', 'data': {
                'target_portal': '%s:3260' % PORTAL_HOST,
                'target_iqn': iqn, 'target_lun': lun, 'volume_id': vol}}
        a = self._create_server(networks='none', host='host1')
        b = self._create_server(networks='none', host='host2')
        for server in (a, b):
            self._claim_pv_drivers(server)
        self._attach(a, VOL)
        self._wait_attach_done(a, VOL)
        self._attach_fails(b, vol2, 1)
        x = self.xapi()
        [sr] = self._volume_srs(x)
        self.assertEqual([self.sim.hosts[0].ref],
                         [x.PBD.get_host(p) for p in sr['PBDs']])
        self.assertEqual({(self.sim.hosts[0].uuid, iqn)},
                         self.array.sessions)
        self.assertTrue(
            self._volume_vbds(a, x)['guest'][0]['currently_attached'])
        self._delete_server(b)
        self._delete_server(a)
