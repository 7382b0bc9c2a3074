"""An HVM guest's life on the driver, checked through Nova and XAPI.

Every step is driven through Nova's API and then verified in the XAPI pool:
the guest and its stub domain, the stub domain serving the guest's device
model (nothing in dom0), power transitions, and a clean host after delete.
"""
from tempest.common import waiters
from tempest import config
from tempest.lib import decorators

from nova_xen_stubdom_tempest_plugin.tests import base

CONF = config.CONF
MiB = 1024 * 1024


class StubdomGuestTest(base.XenStubdomXAPITest):

    @decorators.attr(type='smoke')
    @decorators.idempotent_id('5b7f2a10-1d0e-4f7a-8a0c-2f3c3d1e0b01')
    def test_hvm_guest_served_by_linked_stubdom(self):
        flavor = self.create_flavor(ram=512, vcpus=1, disk=1)
        self.admin_flavors_client.set_flavor_extra_spec(
            flavor['id'], **{'xen_stubdom:memory_mb': '160'})
        server = self.boot(flavor['id'])
        self.assert_served_by_stubdom(server)
        (_, guest), (_, stub) = self.guest_and_stubdom(server['id'])
        # the flavor's extra spec sized the stub domain, the flavor's RAM
        # the guest
        self.assertEqual(160 * MiB, int(stub['memory_static_max']))
        self.assertEqual(512 * MiB, int(guest['memory_static_max']))

    @decorators.idempotent_id('5b7f2a10-1d0e-4f7a-8a0c-2f3c3d1e0b02')
    def test_default_stubdom_size(self):
        server = self.boot()
        (_, guest), (_, stub) = self.guest_and_stubdom(server['id'])
        self.assertEqual(CONF.xen_stubdom.stubdom_memory_mb * MiB,
                         int(stub['memory_static_max']))

    @decorators.idempotent_id('5b7f2a10-1d0e-4f7a-8a0c-2f3c3d1e0b03')
    def test_reboot_stop_start_pause(self):
        server = self.boot()
        sid = server['id']
        for kind in ('SOFT', 'HARD'):
            self.reboot_server(sid, kind)
            self.assert_served_by_stubdom(server)

        self.servers_client.stop_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'SHUTOFF')
        (_, guest), (s_ref, _) = self.guest_and_stubdom(sid, 'Halted')
        self.wait_stubdom_halted(s_ref)

        self.servers_client.start_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'ACTIVE')
        self.assert_served_by_stubdom(server)

        self.servers_client.pause_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'PAUSED')
        self.guest_and_stubdom(sid, 'Paused')

        self.servers_client.unpause_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'ACTIVE')
        self.assert_served_by_stubdom(server)

    @decorators.idempotent_id('5b7f2a10-1d0e-4f7a-8a0c-2f3c3d1e0b04')
    def test_delete_leaves_nothing_on_the_host(self):
        server = self.boot()
        sid = server['id']
        self.guest_and_stubdom(sid)
        self.assertNotEqual([], self.xapi.vdis_of(sid))
        self.delete_and_wait(sid)
        leftovers = self.xapi.wait(
            'XAPI to forget %s' % sid,
            lambda: (self.xapi.vms_of(sid), self.xapi.vdis_of(sid)),
            lambda v: not v[0] and not v[1],
            CONF.xen_stubdom.xapi_timeout)
        self.assertEqual(({}, []), leftovers)
