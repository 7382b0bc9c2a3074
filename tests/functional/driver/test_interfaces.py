"""Interface hot-plug through Nova (``os-interface``): the NIC's two XAPI
VIFs (guest + stub-domain mirror), XAPI's hot-plug rules for an HVM guest
(xen-api ``ocaml/xapi/xapi_vif_helpers.ml`` ``valid_operations``, modelled
in ``sim/vif_rules.py``), bad input refused with nothing changed, and a
fault at each XAPI step leaving no VIF behind (the base class's leak check
covers VIFs after every test)."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import copy

from nova.tests.functional.api import client as api_client

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.sim import testing as sim_testing
from tests import waiting


class TestInterfaces(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)
    MAX_ATTEMPTS = 1

    def setUp(self):
        super().setUp()
        self.port_a = self.neutron.port_1
        self.port_b = self.neutron.port_2
        # Nova's fixture serves port_1 only; port_2 is on the same network
        self.neutron._ports[self.port_b['id']] = copy.deepcopy(self.port_b)
        self.detached = 0

    # -- helpers ------------------------------------------------------------
    def _boot(self):
        return self._create_server(networks=[{'port': self.port_a['id']}])

    def _nics(self, server, x):
        """role -> {device: VIF record} of the server's VIFs."""
        guest, stub = self.xapi_vms(server, x)
        return {role: {r['device']: r for r in (
            x.VIF.get_record(v) for v in vm['VIFs'])}
            for role, vm in (('guest', guest), ('stubdom', stub))}

    def _vif_frontends(self, server, x):
        """role -> sorted devids of the vif frontends its domain holds."""
        hv = self.sim.hosts[0].hypervisor
        guest, stub = self.xapi_vms(server, x)
        return {role: sorted(f.devid for f in hv.frontends
                             if f.domid == int(vm['domid'])
                             and f.kind == 'vif')
                for role, vm in (('guest', guest), ('stubdom', stub))}

    def _ports(self, server):
        return sorted(a['port_id'] for a in
                      self.api.get_port_interfaces(server['id']))

    def _claim_pv_drivers(self, server):
        guest, _stub = self.xapi_vms(server)
        sim_testing.report_pv_drivers(self.sim, guest['ref'])

    def _attach_fails(self, server, port_id):
        ex = self.assertRaises(
            api_client.OpenStackApiException, self.api.attach_interface,
            server['id'], {'interfaceAttachment': {'port_id': port_id}})
        self.assertEqual(500, ex.response.status_code)

    def _detach(self, server, port_id):
        # the detach is a cast: wait for this one's end notification (the
        # harness's helper counts from the start of the test)
        self.api.detach_interface(server['id'], port_id)
        self.detached += 1
        self.notifier.wait_for_versioned_notifications(
            'instance.interface_detach.end', n_events=self.detached)

    def _detach_refused(self, server, port_id):
        self.api.detach_interface(server['id'], port_id)
        self._wait_for_action_fail_completion(
            server, 'detach_interface', 'compute_detach_interface')

    def _hard_reboot(self, server):
        self.api.post_server_action(server['id'],
                                    {'reboot': {'type': 'HARD'}})
        return self._wait_for_state_change(server, 'ACTIVE')

    # -- success ------------------------------------------------------------
    def test_hot_plug_into_a_guest_with_pv_drivers(self):
        server = self._boot()
        x = self.xapi()
        self._claim_pv_drivers(server)
        self._attach_interface(server, self.port_b['id'])
        self.assertEqual(sorted([self.port_a['id'], self.port_b['id']]),
                         self._ports(server))
        nics = self._nics(server, x)
        self.assertEqual(['0', '1'], sorted(nics['guest']))
        self.assertEqual(['0', '1'], sorted(nics['stubdom']))
        new, mirror = nics['guest']['1'], nics['stubdom']['1']
        self.assertEqual(self.port_b['mac_address'], new['MAC'])
        self.assertEqual(self.port_b['id'],
                         new['other_config'][dc.OC_VIF_ID])
        self.assertEqual(new['uuid'], mirror['other_config'][dc.OC_MIRROR_OF])
        # the guest's PV NIC is there at once; QEMU's emulated NIC (the
        # stub domain's netfront) only from the next start
        self.assertTrue(new['currently_attached'])
        self.assertFalse(mirror['currently_attached'])
        self.assertEqual({'guest': ['0', '1'], 'stubdom': ['0']},
                         self._vif_frontends(server, x))

        server = self._hard_reboot(server)
        self.assertEqual({'guest': ['0', '1'], 'stubdom': ['0', '1']},
                         self._vif_frontends(server, x))

        self._claim_pv_drivers(server)     # a new boot reports them again
        self._detach(server, self.port_b['id'])
        self.assertEqual([self.port_a['id']], self._ports(server))
        nics = self._nics(server, x)
        self.assertEqual((['0'], ['0']), (sorted(nics['guest']),
                                          sorted(nics['stubdom'])))
        self.assertEqual({'guest': ['0'], 'stubdom': ['0']},
                         self._vif_frontends(server, x))
        self._delete_server(server)

    def test_guest_without_pv_drivers_gets_the_nic_at_next_start(self):
        server = self._boot()
        x = self.xapi()
        self._attach_interface(server, self.port_b['id'])
        nics = self._nics(server, x)
        self.assertFalse(nics['guest']['1']['currently_attached'])
        self.assertFalse(nics['stubdom']['1']['currently_attached'])
        self.assertEqual({'guest': ['0'], 'stubdom': ['0']},
                         self._vif_frontends(server, x))
        # not plugged yet: it can leave again while the guest runs
        self._detach(server, self.port_b['id'])
        self.assertEqual([self.port_a['id']], self._ports(server))
        self.assertEqual(['0'], sorted(self._nics(server, x)['guest']))

        self._attach_interface(server, self.port_b['id'])
        server = self._hard_reboot(server)
        self.assertEqual({'guest': ['0', '1'], 'stubdom': ['0', '1']},
                         self._vif_frontends(server, x))
        # plugged into a running HVM guest without PV drivers: XAPI
        # refuses VIF.unplug (VM_MISSING_PV_DRIVERS / can_use_hotplug_vif
        # = no), so the detach is refused before anything changes
        before = self._nics(server, x)
        self._detach_refused(server, self.port_b['id'])
        self.assertEqual(sorted([self.port_a['id'], self.port_b['id']]),
                         self._ports(server))
        self.assertEqual(before, self._nics(server, x))
        self.assertEqual('ACTIVE',
                         self.api.get_server(server['id'])['status'])
        # stopped, it goes
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        self._detach(server, self.port_b['id'])
        self.assertEqual(['0'], sorted(self._nics(server, x)['stubdom']))
        self._delete_server(server)

    def test_attach_to_a_stopped_server_plugs_at_start(self):
        server = self._boot()
        x = self.xapi()
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        self._attach_interface(server, self.port_b['id'])
        self.api.post_server_action(server['id'], {'os-start': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual({'guest': ['0', '1'], 'stubdom': ['0', '1']},
                         self._vif_frontends(server, x))
        self._delete_server(server)

    def test_detach_of_the_first_nic_keeps_the_device_numbers(self):
        # QEMU's NICs follow XAPI's device numbers, not network_info order
        server = self._boot()
        x = self.xapi()
        self._attach_interface(server, self.port_b['id'])
        self.api.post_server_action(server['id'], {'os-stop': None})
        server = self._wait_for_state_change(server, 'SHUTOFF')
        self._detach(server, self.port_a['id'])
        self.api.post_server_action(server['id'], {'os-start': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        nics = self._nics(server, x)
        self.assertEqual((['1'], ['1']), (sorted(nics['guest']),
                                          sorted(nics['stubdom'])))
        self.assertEqual({'guest': ['1'], 'stubdom': ['1']},
                         self._vif_frontends(server, x))
        self._delete_server(server)

    # -- bad input ----------------------------------------------------------
    def test_bad_mac_is_refused_with_nothing_changed(self):
        server = self._boot()
        x = self.xapi()
        bad = copy.deepcopy(self.port_b)
        bad.update(id='0b2b9c5e-4a52-4d4c-9d7c-2f0c2b3c0b11',
                   mac_address='fa:16:3e:zz:00:01')
        self.neutron._ports[bad['id']] = bad
        before = x.VIF.get_all_records()
        self._attach_fails(server, bad['id'])
        self.assertEqual(before, x.VIF.get_all_records())
        self.assertEqual([self.port_a['id']], self._ports(server))
        self.assertEqual('ACTIVE',
                         self.api.get_server(server['id'])['status'])
        self._delete_server(server)

    # -- faults -------------------------------------------------------------
    def test_fault_at_each_attach_step_leaves_no_vif(self):
        server = self._boot()
        x = self.xapi()
        self._claim_pv_drivers(server)
        before = x.VIF.get_all_records()
        steps = [('VM.get_allowed_VIF_devices', 1), ('VIF.create', 1),
                 ('VIF.get_uuid', 1), ('VIF.create', 2),
                 ('VIF.get_allowed_operations', 1), ('VIF.plug', 1)]
        for method, nth in steps:
            with self.subTest(step=method, nth=nth):
                self._fail_nth(method, nth)
                try:
                    self._attach_fails(server, self.port_b['id'])
                finally:
                    self.sim.faults.check_fail = self._orig_check
                self.assertEqual(before, x.VIF.get_all_records())
                self.assertEqual([self.port_a['id']], self._ports(server))
        # and the port attaches fine afterwards
        self._attach_interface(server, self.port_b['id'])
        self.assertTrue(
            self._nics(server, x)['guest']['1']['currently_attached'])
        self._delete_server(server)

    def test_fault_in_detach_puts_the_nic_back(self):
        server = self._boot()
        x = self.xapi()
        self._claim_pv_drivers(server)
        self._attach_interface(server, self.port_b['id'])
        before = self._nics(server, x)
        self._fail_nth('VIF.destroy', 1)
        try:
            self._detach_refused(server, self.port_b['id'])
        finally:
            self.sim.faults.check_fail = self._orig_check
        waiting.wait_until(lambda: self._nics(server, x) == before,
                           'the unplugged VIF to be plugged back')
        self.assertEqual(sorted([self.port_a['id'], self.port_b['id']]),
                         self._ports(server))
        self._detach(server, self.port_b['id'])
        self._delete_server(server)
