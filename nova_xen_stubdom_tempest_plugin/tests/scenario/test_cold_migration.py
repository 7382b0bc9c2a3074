"""Cold migration and resize move the guest and its stub domain together.

The disks stay on the pool's SR: the destination attaches the same VDIs;
until confirm or revert the source's VMs are set aside, not removed.
"""
from tempest.common import waiters
from tempest import config
from tempest.lib import decorators

from nova_xen_stubdom_tempest_plugin.tests import base

CONF = config.CONF
GiB = 1 << 30
MiB = 1 << 20


class StubdomColdMigrationTest(base.XenStubdomXAPITest):

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.compute_feature_enabled.cold_migration:
            raise cls.skipException('cold migration is not enabled')
        if CONF.compute.min_compute_nodes < 2:
            raise cls.skipException('needs two compute hosts')

    def _root_vdi(self, guest):
        for vbd in guest['VBDs']:
            rec = self.xapi.call('VBD.get_record', vbd)
            if rec['userdevice'] == '0':
                return self.xapi.call('VDI.get_record', rec['VDI'])
        self.fail('guest %s has no root disk' % guest['uuid'])

    def _verify_resize(self, sid):
        waiters.wait_for_server_status(self.servers_client, sid,
                                       'VERIFY_RESIZE')
        return self.admin_servers_client.show_server(sid)['server']

    @decorators.idempotent_id('0c2d6a41-5c8e-4b8f-9f57-6b1d2f3e4a01')
    def test_resize_grows_the_guest_then_confirm(self):
        small = self.create_flavor(ram=256, vcpus=1, disk=1)
        big = self.create_flavor(ram=512, vcpus=1, disk=2)
        server = self.boot(small['id'])
        sid = server['id']
        (_, guest), _ = self.guest_and_stubdom(sid)
        disk = self._root_vdi(guest)['uuid']

        self.servers_client.resize_server(sid, big['id'])
        moved = self._verify_resize(sid)
        self.assertNotEqual(server['OS-EXT-SRV-ATTR:host'],
                            moved['OS-EXT-SRV-ATTR:host'])
        self.assert_served_by_stubdom(moved)
        (_, guest), _ = self.guest_and_stubdom(sid)
        self.assertEqual(512 * MiB, int(guest['memory_static_max']))
        root = self._root_vdi(guest)
        # the same disk on the pool's SR, grown to the new flavor
        self.assertEqual(disk, root['uuid'])
        self.assertEqual(2 * GiB, int(root['virtual_size']))
        # the source's pair waits, set aside, until the resize is confirmed
        self.assertEqual(['guest', 'resize-source-guest',
                          'resize-source-stubdom', 'stubdom'],
                         sorted(self.xapi.vms_of(sid)))

        self.servers_client.confirm_resize_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'ACTIVE')
        self.xapi.wait('the set-aside VMs of %s to go' % sid,
                       lambda: sorted(self.xapi.vms_of(sid)),
                       lambda roles: roles == ['guest', 'stubdom'],
                       CONF.xen_stubdom.xapi_timeout)
        self.assert_served_by_stubdom(moved)

    @decorators.idempotent_id('0c2d6a41-5c8e-4b8f-9f57-6b1d2f3e4a02')
    def test_migrate_then_revert_restores_the_source(self):
        server = self.boot()
        sid = server['id']
        (_, before), (_, stub_before) = self.guest_and_stubdom(sid)
        self.admin_servers_client.migrate_server(sid)
        moved = self._verify_resize(sid)
        self.assertNotEqual(server['OS-EXT-SRV-ATTR:host'],
                            moved['OS-EXT-SRV-ATTR:host'])
        self.assert_served_by_stubdom(moved)

        self.servers_client.revert_resize_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'ACTIVE')
        back = self.admin_servers_client.show_server(sid)['server']
        self.assertEqual(server['OS-EXT-SRV-ATTR:host'],
                         back['OS-EXT-SRV-ATTR:host'])
        roles = self.xapi.wait('the destination VMs of %s to go' % sid,
                               lambda: sorted(self.xapi.vms_of(sid)),
                               lambda r: r == ['guest', 'stubdom'],
                               CONF.xen_stubdom.xapi_timeout)
        self.assertEqual(['guest', 'stubdom'], roles)
        self.assert_served_by_stubdom(back)
        # the very VMs of before the migration, brought back intact
        (_, guest), (_, stub) = self.guest_and_stubdom(sid)
        self.assertEqual((before['uuid'], stub_before['uuid']),
                         (guest['uuid'], stub['uuid']))
