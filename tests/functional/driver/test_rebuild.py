"""Rebuild through Nova on the driver's own path: the guest VM keeps its
identity (VM, stub-domain VM, their VIFs and volume VBDs) while the root
disk is replaced by the new image, the image's hardware flags are applied
and the stub domain starts afresh; a bad image is refused before anything
changes; a fault at any step puts the old disk, flags and power back."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

from oslo_utils import uuidutils


class TestRebuild(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)
    MAX_ATTEMPTS = 1

    def _image(self, props):
        return self.glance.create(None, {
            'id': uuidutils.generate_uuid(), 'name': 'rebuild-image',
            'status': 'active', 'container_format': 'bare',
            'disk_format': 'raw', 'size': 0, 'min_ram': 0, 'min_disk': 0,
            'is_public': True, 'properties': dict(props)})['id']

    def _server(self):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        return self._create_server(flavor_id=flavor, networks='none')

    def _rebuild(self, server, image_id, event='end', n=1):
        self.api.post_server_action(server['id'],
                                    {'rebuild': {'imageRef': image_id}})
        self.notifier.wait_for_versioned_notifications(
            'instance.rebuild.%s' % event, n_events=n)
        return self._wait_state(server, 'ERROR' if event == 'error'
                                else 'ACTIVE')

    def _state(self, server, x):
        """What a rebuild must keep or restore, as XAPI has it."""
        guest, stub = self.xapi_vms(server, x)
        disks = {}
        for role, vm in (('guest', guest), ('stubdom', stub)):
            for vbd in vm['VBDs']:
                rec = x.VBD.get_record(vbd)
                disks[role, rec['userdevice']] = rec['VDI']
        return {'vms': (guest['ref'], stub['ref']),
                'power': (guest['power_state'], stub['power_state']),
                'disks': disks, 'vdis': sorted(x.VDI.get_all()),
                'platform': guest['platform'],
                'boot': guest['HVM_boot_params']}

    def test_rebuild_keeps_the_vms_and_replaces_the_root(self):
        server = self._server()
        x = self.xapi()
        before = self._state(server, x)
        old_stub_domid = self.xapi_vms(server, x)[1]['domid']
        image = self._image({'hw_video_model': 'cirrus',
                             'hw_firmware_type': 'uefi'})
        server = self._rebuild(server, image)
        after = self._state(server, x)
        self.assertEqual(before['vms'], after['vms'])
        self.assertEqual(('Running', 'Running'), after['power'])
        root = after['disks']['guest', '0']
        self.assertNotEqual(before['disks']['guest', '0'], root)
        self.assertEqual(root, after['disks']['stubdom', '0'])
        # the old root is gone: one VDI per disk, as before
        self.assertEqual(len(before['vdis']), len(after['vdis']))
        self.assertNotIn(before['disks']['guest', '0'], after['vdis'])
        # the new image's hardware, and a fresh stub domain running it
        self.assertEqual('cirrus', after['platform']['vga'])
        self.assertEqual('uefi', after['boot']['firmware'])
        # no platform:stubdom: XAPI filters it out (xapi-behaviour.rst)
        self.assertNotIn('stubdom', after['platform'])
        guest, stub = self.xapi_vms(server, x)
        self.assertNotEqual(old_stub_domid, stub['domid'])
        argv = self.sim.hosts[0].hypervisor.xenstore.read(
            '/local/domain/%s/dm-argv' % stub['domid'])
        self.assertIn('-vga\x1bcirrus', argv)
        self.assertEqual(image, server['image']['id'])
        self._delete_server(server)

    def test_rebuild_of_a_stopped_server(self):
        server = self._server()
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        x = self.xapi()
        before = self._state(server, x)
        self.api.post_server_action(server['id'], {'rebuild': {
            'imageRef': self._image({})}})
        self.notifier.wait_for_versioned_notifications(
            'instance.rebuild.end')
        # Nova stops a server that was stopped again after its rebuild
        server = self._wait_state(server, 'SHUTOFF')
        after = self._state(server, x)
        self.assertEqual(before['vms'], after['vms'])
        self.assertNotEqual(before['disks']['guest', '0'],
                            after['disks']['guest', '0'])
        self._delete_server(server)

    def test_bad_image_changes_nothing(self):
        server = self._server()
        x = self.xapi()
        before = self._state(server, x)
        server = self._rebuild(server, self._image({'hw_video_model': 'qxl'}),
                               'error')
        self.assertIn('hw_video_model=qxl is not supported',
                      self.api.get_server(server['id'])['fault']['message'])
        self.assertEqual(before, self._state(server, x))
        self._delete_server(server)

    def test_fault_at_each_rebuild_step_puts_the_old_disk_back(self):
        server = self._server()
        x = self.xapi()
        before = self._state(server, x)
        steps = [('VDI.create', 1), ('VM.hard_shutdown', 1),
                 ('VBD.destroy', 1), ('VBD.destroy', 2), ('VBD.create', 1),
                 ('VBD.create', 2), ('VM.set_platform', 1),
                 ('VM.start_on', 1), ('VM.start_on', 2)]
        for n, (method, nth) in enumerate(steps, start=1):
            with self.subTest(step=method, nth=nth):
                seen = self._fail_nth(method, nth)
                try:
                    server = self._rebuild(server, self._image({}), 'error',
                                           n)
                finally:
                    self.sim.faults.check_fail = self._orig_check
                self.assertGreaterEqual(seen[0], nth)
                after = self._state(server, x)
                self.assertEqual(before['vms'], after['vms'])
                self.assertEqual(('Running', 'Running'), after['power'])
                self.assertEqual(before['vdis'], after['vdis'])
                self.assertEqual(before['disks']['guest', '0'],
                                 after['disks']['guest', '0'])
                self.assertEqual(before['disks']['guest', '0'],
                                 after['disks']['stubdom', '0'])
                self.assertEqual(before['platform'], after['platform'])
        # and the same server rebuilds fine afterwards
        server = self._rebuild(server, self._image({}))
        self.assertEqual(before['vms'], self._state(server, x)['vms'])
        self._delete_server(server)
