"""Live migration moves the guest and its stub domain together.

Runs when ``[compute-feature-enabled] live_migration`` is on and there are
at least two compute hosts.
"""
from tempest.common import waiters
from tempest import config
from tempest.lib import decorators

from nova_xen_stubdom_tempest_plugin.tests import base

CONF = config.CONF


class StubdomLiveMigrationTest(base.XenStubdomXAPITest):

    # block_migration='auto' and host=None
    min_microversion = '2.25'

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.compute_feature_enabled.live_migration:
            raise cls.skipException('live migration is not enabled')
        if CONF.compute.min_compute_nodes < 2:
            raise cls.skipException('needs two compute hosts')

    def _live_migrate(self, sid, source, status):
        self.admin_servers_client.live_migrate_server(
            sid, host=None, block_migration='auto')
        # *status* with no task state on another host: migration finished
        self.xapi.wait(
            '%s to land on another host' % sid,
            lambda: self.admin_servers_client.show_server(sid)['server'],
            lambda s: (s['status'] == status and
                       s['OS-EXT-SRV-ATTR:host'] != source and
                       not s['OS-EXT-STS:task_state']),
            CONF.compute.build_timeout)
        waiters.wait_for_server_status(self.servers_client, sid, status)
        return self.admin_servers_client.show_server(sid)['server']

    @decorators.idempotent_id('9d3c0e7e-3f57-4a8e-b2ba-0c6f3e2a7c01')
    def test_live_migration_moves_guest_and_stubdom(self):
        server = self.boot()
        sid = server['id']
        source = server['OS-EXT-SRV-ATTR:host']
        (_, before), _ = self.guest_and_stubdom(sid)
        moved = self._live_migrate(sid, source, 'ACTIVE')
        # served by a linked stub domain on the destination, exactly one
        # guest and one stub domain in the pool (the source's are gone)
        self.assert_served_by_stubdom(moved)
        (_, guest), (_, stub) = self.guest_and_stubdom(sid)
        self.assertNotEqual(before['resident_on'], guest['resident_on'])
        self.assertEqual(guest['resident_on'], stub['resident_on'])
        self.assertEqual(['guest', 'stubdom'],
                         sorted(self.xapi.vms_of(sid)))

    @decorators.idempotent_id('9d3c0e7e-3f57-4a8e-b2ba-0c6f3e2a7c02')
    def test_paused_guest_arrives_paused(self):
        server = self.boot()
        sid = server['id']
        source = server['OS-EXT-SRV-ATTR:host']
        self.servers_client.pause_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'PAUSED')
        moved = self._live_migrate(sid, source, 'PAUSED')
        (_, guest), (_, stub) = self.guest_and_stubdom(sid, 'Paused')
        self.assertEqual(['guest', 'stubdom'],
                         sorted(self.xapi.vms_of(sid)))
        self.assertEqual(guest['resident_on'], stub['resident_on'])
        self.servers_client.unpause_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'ACTIVE')
        self.assert_served_by_stubdom(moved)
