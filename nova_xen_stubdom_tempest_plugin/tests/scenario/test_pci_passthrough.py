"""A flavor's PCI device reaches the guest through its stub domain.

Runs when ``[xen_stubdom] pci_alias`` names an alias every compute host can
satisfy.  The dom0 agent's grant record shows what Xen was told: the device
assigned to the guest, its BARs and IRQ granted to the stub domain (where
QEMU's ``xen-pci-passthrough`` runs) and to the guest.
"""
from tempest.common import waiters
from tempest import config
from tempest.lib import decorators

from nova_xen_stubdom_tempest_plugin.tests import base
from nova_xen_stubdom_tempest_plugin import xapi

CONF = config.CONF


class StubdomPciPassthroughTest(base.XenStubdomXAPITest):

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.xen_stubdom.pci_alias:
            raise cls.skipException('[xen_stubdom] pci_alias is not set')

    def _pci_flavor(self):
        flavor = self.create_flavor(ram=512, vcpus=1, disk=1)
        self.admin_flavors_client.set_flavor_extra_spec(
            flavor['id'], **{'pci_passthrough:alias':
                             '%s:1' % CONF.xen_stubdom.pci_alias})
        return flavor['id']

    def _assert_assigned(self, sid):
        """One device, granted for the guest and its stub domain on the
        host the guest runs on; returns (host_ref, guest uuid, sbdf)."""
        (_, guest), (_, stub) = self.guest_and_stubdom(sid)
        value = guest['other_config'].get(xapi.PCI_KEY, '')
        self.assertNotIn(xapi.XENOPSD_PCI_KEY, guest['other_config'])
        self.assertRegex(value, r'^0/[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.'
                                r'[0-7]$')
        sbdf = value.split('/', 1)[1]
        host_ref = guest['resident_on']
        grants = self.xapi.wait(
            'the grants of %s' % sid,
            lambda: self.xapi.pci_grants(host_ref, guest['uuid']),
            lambda g: bool(g.get('devices')),
            CONF.xen_stubdom.xapi_timeout)
        self.assertEqual((int(guest['domid']), int(stub['domid'])),
                         (grants['guest_domid'], grants['stub_domid']))
        self.assertEqual([sbdf], sorted(grants['devices']))
        return host_ref, guest['uuid'], sbdf

    @decorators.idempotent_id('3f6b8c20-9d1e-4e57-a1b4-5c2d7e8f9a01')
    def test_device_follows_the_guest_and_is_released(self):
        server = self.boot(self._pci_flavor())
        sid = server['id']
        self.assert_served_by_stubdom(server)
        host_ref, guest_uuid, _ = self._assert_assigned(sid)

        if CONF.compute_feature_enabled.cold_migration and \
                CONF.compute.min_compute_nodes >= 2:
            # cold migration: the destination's device is granted there,
            # the source's released at once
            self.admin_servers_client.migrate_server(sid)
            waiters.wait_for_server_status(self.servers_client, sid,
                                           'VERIFY_RESIZE')
            new_host, new_uuid, _ = self._assert_assigned(sid)
            self.assertNotEqual(host_ref, new_host)
            self.assertEqual({}, self.xapi.pci_grants(host_ref, guest_uuid))
            self.servers_client.confirm_resize_server(sid)
            waiters.wait_for_server_status(self.servers_client, sid,
                                           'ACTIVE')
            host_ref, guest_uuid = new_host, new_uuid

        self.delete_and_wait(sid)
        self.assertEqual({}, self.xapi.pci_grants(host_ref, guest_uuid))
