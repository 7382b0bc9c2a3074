"""Cold migration and resize through real Nova: disks copied for the
destination, the source set aside until confirm (removed) or revert
(brought back intact); shrinking refused."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import time

GiB = 1 << 30


class TestColdMigration(base.XenStubdomTestBase):

    def setUp(self):
        super().setUp()
        self.small = self._create_flavor(memory_mb=128, vcpu=1, disk=1)
        self.big = self._create_flavor(memory_mb=256, vcpu=1, disk=2)

    def _root_vdi(self, guest):
        x = self.xapi()
        for vbd in guest['VBDs']:
            rec = x.VBD.get_record(vbd)
            if rec['userdevice'] == '0':
                return x.VDI.get_record(rec['VDI'])

    def _wait_status(self, server, statuses, timeout=90):
        deadline = time.monotonic() + timeout
        while True:
            for m in self.admin_api.get_migrations():
                if m['instance_uuid'] == server['id'] and \
                        m['status'] in statuses:
                    return m
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)

    def _resize(self, server, flavor):
        self.api.post_server_action(server['id'],
                                    {'resize': {'flavorRef': flavor}})
        return self._wait_state(server, 'VERIFY_RESIZE')

    def test_resize_grows_disk_then_confirm(self):
        server = self._create_server(flavor_id=self.small, networks='none',
                                     host='host1')
        guest, _ = self.xapi_vms(server)
        old_vdi = self._root_vdi(guest)['uuid']
        server = self._resize(server, self.big)
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        guest, stub = self.xapi_vms(server)
        self.assertEqual(self.sim_host('host2').ref, guest['resident_on'])
        self.assertEqual('Running', guest['power_state'])
        self.assertEqual('Running', stub['power_state'])
        self.assertEqual(str(256 << 20), guest['memory_static_max'])
        vdi = self._root_vdi(guest)
        # the same disk (the pool's SR), grown to the new flavor
        self.assertEqual(old_vdi, vdi['uuid'])
        self.assertEqual(str(2 * GiB), vdi['virtual_size'])
        self.api.post_server_action(server['id'], {'confirmResize': None})
        server = self._wait_state(server, 'ACTIVE')
        self._wait_status(server, ['confirmed'])
        x = self.xapi()
        # the source's VMs are gone; the disk is the instance's again
        self.assertEqual('%s-root' % guest['name_label'],
                         x.VDI.get_name_label(x.VDI.get_by_uuid(old_vdi)))
        self.assertEqual([], [d for d in self.sim_host(
            'host1').hypervisor.domains if d != 0])
        vms = [r for r in x.VM.get_all_records().values()
               if r['other_config'].get('nova_uuid') == server['id']]
        self.assertEqual(2, len(vms))
        self._delete_server(server)

    def test_migrate_then_revert(self):
        server = self._create_server(flavor_id=self.small, networks='none',
                                     host='host1')
        guest, _ = self.xapi_vms(server)
        old_vdi = self._root_vdi(guest)['uuid']
        self.api.post_server_action(server['id'], {'migrate': None})
        server = self._wait_state(server, 'VERIFY_RESIZE')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self.api.post_server_action(server['id'], {'revertResize': None})
        server = self._wait_state(server, 'ACTIVE')
        self._wait_status(server, ['reverted'])
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        guest, stub = self.xapi_vms(server)
        self.assertEqual(self.sim_host('host1').ref, guest['resident_on'])
        self.assertEqual('Running', guest['power_state'])
        self.assertEqual(old_vdi, self._root_vdi(guest)['uuid'])
        self.assertEqual([], [d for d in self.sim_host(
            'host2').hypervisor.domains if d != 0])
        self._delete_server(server)

    def test_shrink_is_refused(self):
        server = self._create_server(flavor_id=self.big, networks='none',
                                     host='host1')
        # Nova's API already refuses a root disk below the image minimum;
        # the driver refuses any shrink itself, before touching anything
        from nova import context as nova_context
        from nova import exception
        from nova import objects
        ctxt = nova_context.get_admin_context()
        inst = objects.Instance.get_by_uuid(ctxt, server['id'],
                                            expected_attrs=['flavor'])
        small = objects.Flavor.get_by_flavor_id(ctxt, self.small)
        ops = self.computes_by_name['host1'].manager.driver._coldmigrationops
        with self.assertRaises(exception.InstanceFaultRollback) as cm:
            ops.migrate_disk_and_power_off(ctxt, inst, '127.0.0.2', small,
                                           [])
        self.assertIn('shrinking the root disk from 2 GiB to 1 GiB',
                      str(cm.exception.inner_exception))
        guest, _ = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertEqual(str(2 * GiB), self._root_vdi(guest)['virtual_size'])
        self._delete_server(server)

    def test_migrate_with_swap_then_confirm(self):
        swap = self._create_flavor(memory_mb=128, vcpu=1, disk=1, swap=32)
        server = self._create_server(flavor_id=swap, networks='none',
                                     host='host1')
        x = self.xapi()
        guest, _ = self.xapi_vms(server)
        disks = {x.VBD.get_userdevice(v): x.VBD.get_VDI(v)
                 for v in guest['VBDs']}
        self.api.post_server_action(server['id'], {'migrate': None})
        server = self._wait_state(server, 'VERIFY_RESIZE')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        guest, stub = self.xapi_vms(server)
        # root and swap come along: the same VDIs, the same devices, on
        # the guest and mirrored on its stub domain
        self.assertEqual(disks, {x.VBD.get_userdevice(v): x.VBD.get_VDI(v)
                                 for v in guest['VBDs']})
        self.assertEqual(sorted(disks.values()),
                         sorted(x.VBD.get_VDI(v) for v in stub['VBDs']))
        self.assertEqual(str(32 << 20),
                         x.VDI.get_virtual_size(disks['2']))
        self.api.post_server_action(server['id'], {'confirmResize': None})
        server = self._wait_state(server, 'ACTIVE')
        self._wait_status(server, ['confirmed'])
        self.assertEqual('%s-swap' % guest['name_label'],
                         x.VDI.get_name_label(disks['2']))
        self._delete_server(server)

    def test_swap_change_is_refused(self):
        swap = self._create_flavor(memory_mb=128, vcpu=1, disk=1, swap=32)
        more = self._create_flavor(memory_mb=128, vcpu=1, disk=1, swap=64)
        server = self._create_server(flavor_id=swap, networks='none',
                                     host='host1')
        self.api.post_server_action(server['id'],
                                    {'resize': {'flavorRef': more}})
        self._wait_status(server, ['error'])
        server = self._wait_state(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        guest, stub = self.xapi_vms(server)
        self.assertEqual(('Running', 'Running'),
                         (guest['power_state'], stub['power_state']))
        self.assertIn('changing the swap disk on resize (32 MiB to 64 MiB)',
                      self.stdlog.logger.output)
        self._delete_server(server)
