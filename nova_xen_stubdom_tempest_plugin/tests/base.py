"""Base class: Nova admin API clients plus a read-only view of XAPI."""
from typing import Any, Dict, Tuple

from tempest.api.compute import base
from tempest.common import waiters
from tempest import config

from nova_xen_stubdom_tempest_plugin import xapi

CONF = config.CONF


class XenStubdomBaseTest(base.BaseV2ComputeAdminTest):
    """Skips unless ``[service_available] xen_stubdom`` is set."""

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.service_available.xen_stubdom:
            raise cls.skipException('the compute hosts do not run the '
                                    'nova-xen-stubdom driver')


class XenStubdomXAPITest(XenStubdomBaseTest):
    """Also reads the XAPI pool the compute hosts manage."""

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.xen_stubdom.xapi_url:
            raise cls.skipException('[xen_stubdom] xapi_url is not set')

    @classmethod
    def resource_setup(cls):
        super().resource_setup()
        c = CONF.xen_stubdom
        cls.xapi = xapi.XAPIReader(c.xapi_url, c.xapi_username,
                                   c.xapi_password)
        cls.addClassResourceCleanup(cls.xapi.close)

    # -- helpers ---------------------------------------------------------

    def boot(self, flavor_id: str = None) -> Dict[str, Any]:
        server = self.create_test_server(
            flavor=flavor_id or CONF.compute.flavor_ref,
            wait_until='ACTIVE')
        return self.admin_servers_client.show_server(server['id'])['server']

    def delete_and_wait(self, server_id: str) -> None:
        self.servers_client.delete_server(server_id)
        waiters.wait_for_server_termination(self.servers_client, server_id)

    def guest_and_stubdom(self, server_id: str, power_state: str = 'Running'
                          ) -> Tuple[Tuple[str, dict], Tuple[str, dict]]:
        """Wait until XAPI shows both VMs of *server_id*, the guest in
        *power_state*; returns ((ref, record), (ref, record))."""
        vms = self.xapi.wait(
            'the guest of %s to be %s' % (server_id, power_state),
            lambda: self.xapi.vms_of(server_id),
            lambda v: 'guest' in v and 'stubdom' in v and
            v['guest'][1]['power_state'] == power_state,
            CONF.xen_stubdom.xapi_timeout)
        return vms['guest'], vms['stubdom']

    def wait_stubdom_halted(self, stub_ref: str) -> None:
        """A stub domain never outlives the running guest it serves."""
        self.xapi.wait('the stub domain to stop with its guest',
                       lambda: self.xapi.call('VM.get_power_state', stub_ref),
                       lambda p: p == 'Halted',
                       CONF.xen_stubdom.xapi_timeout)

    def assert_served_by_stubdom(self, server: Dict[str, Any]) -> None:
        """The running guest's device model runs in its own linked stub
        domain: not in dom0, and on the host Nova placed the server on."""
        (g_ref, guest), (s_ref, stub) = self.guest_and_stubdom(server['id'])
        stub = self.xapi.wait(
            'the stub domain of %s to run' % server['id'],
            lambda: self.xapi.call('VM.get_record', s_ref),
            lambda r: r['power_state'] == 'Running',
            CONF.xen_stubdom.xapi_timeout)
        # HVM guest, PV stub domain, linked to each other both ways
        self.assertTrue(guest['HVM_boot_policy'])
        self.assertFalse(stub['HVM_boot_policy'])
        self.assertTrue(stub['PV_kernel'])
        self.assertEqual(stub['uuid'],
                         guest['other_config'][xapi.STUBDOM_KEY])
        self.assertEqual(guest['uuid'], stub['other_config'][xapi.TARGET_KEY])
        # both on the XAPI host backing the Nova host
        nova_host = server['OS-EXT-SRV-ATTR:host']
        host_ref = self.xapi.host_by_name(
            CONF.xen_stubdom.host_map.get(nova_host, nova_host))
        self.assertEqual(host_ref, guest['resident_on'])
        self.assertEqual(host_ref, stub['resident_on'])
        # xenstore wiring as the dom0 agent sees it: the stub domain targets
        # the guest, the guest's device model lives in the stub domain (not
        # dom0 = 0) and reports running
        wiring = self.xapi.wait(
            'the device model of %s to run' % server['id'],
            lambda: self.xapi.stubdom_wiring(host_ref, int(stub['domid'])),
            lambda w: w.get('state') == 'running',
            CONF.xen_stubdom.xapi_timeout)
        guest = self.xapi.call('VM.get_record', g_ref)
        self.assertEqual(int(guest['domid']), wiring['target'])
        self.assertEqual(str(stub['domid']),
                         str(wiring['device_model_domid']))
        self.assertNotEqual('0', str(wiring['device_model_domid']))
