"""Rescue / unrescue through Nova: a rescue guest in its own stub domain
with the instance's root disk as its second disk; unrescue brings the very
same VMs and disk back; a fault while rescuing removes the rescue pair and
leaves the instance's own VMs and disk as Nova left them."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import rescueops
from nova_xen_stubdom.sim.errors import XapiError


class TestRescue(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)

    def setUp(self):
        super().setUp()

    def _vms_by_role(self, server, x):
        out = {}
        for ref, rec in x.VM.get_all_records().items():
            oc = rec['other_config']
            if oc.get(dc.OC_NOVA_UUID) == server['id']:
                rec['ref'] = ref
                out[oc[dc.OC_ROLE]] = rec
        return out

    def _disks(self, x, vm):
        """userdevice -> VDI ref of *vm*'s disks."""
        out = {}
        for vbd in vm['VBDs']:
            rec = x.VBD.get_record(vbd)
            out[rec['userdevice']] = rec['VDI']
        return out

    def _rescue(self, server, expected='RESCUE'):
        self.api.post_server_action(server['id'], {'rescue': {}})
        return self._wait_for_state_change(server, expected)

    def test_rescue_then_unrescue_restores_the_instance(self):
        server = self._create_server(networks='none')
        x = self.xapi()
        before = self._vms_by_role(server, x)
        root = self._disks(x, before[dc.ROLE_GUEST])['0']

        server = self._rescue(server)
        vms = self._vms_by_role(server, x)
        self.assertEqual('Halted', vms[dc.ROLE_GUEST]['power_state'])
        self.assertEqual('Halted', vms[dc.ROLE_STUBDOM]['power_state'])
        guest = vms[rescueops.ROLE_RESCUE_GUEST]
        stub = vms[rescueops.ROLE_RESCUE_STUBDOM]
        self.assertEqual(('Running', 'Running'),
                         (guest['power_state'], stub['power_state']))
        disks = self._disks(x, guest)
        self.assertEqual(root, disks['1'])          # the instance's disk
        self.assertNotEqual(root, disks['0'])       # the rescue image
        # the rescue stub domain mirrors both disks for its QEMU
        self.assertEqual(disks, self._disks(x, stub))
        self.assertEqual(1, server['OS-EXT-STS:power_state'])  # RUNNING

        self.api.post_server_action(server['id'], {'unrescue': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        after = self._vms_by_role(server, x)
        self.assertEqual({dc.ROLE_GUEST, dc.ROLE_STUBDOM}, set(after))
        for role in (dc.ROLE_GUEST, dc.ROLE_STUBDOM):
            self.assertEqual(before[role]['ref'], after[role]['ref'])
            self.assertEqual('Running', after[role]['power_state'])
        self.assertEqual(root, self._disks(x, after[dc.ROLE_GUEST])['0'])
        self.assertNotIn('%s-%s' % (server['OS-EXT-SRV-ATTR:instance_name'],
                                    rescueops.RESCUE_DISK),
                         [r['name_label']
                          for r in x.VDI.get_all_records().values()])
        self._delete_server(server)

    def test_delete_while_rescued_removes_both_pairs(self):
        server = self._create_server(networks='none')
        server = self._rescue(server)
        self._delete_server(server)      # the leak check sees the rest

    def test_fault_while_rescuing_leaves_the_instance_intact(self):
        server = self._create_server(networks='none')
        x = self.xapi()
        root = self._disks(x, self._vms_by_role(server, x)[
            dc.ROLE_GUEST])['0']
        calls = [0]

        def check(name, host):
            # the first VM.start_on of the rescue is the rescue stub domain
            if name == 'VM.start_on':
                calls[0] += 1
                if calls[0] == 1:
                    raise XapiError('INTERNAL_ERROR', 'injected fault')
            return self._orig_check(name, host)
        self.sim.faults.check_fail = check
        server = self._rescue(server, expected='ERROR')
        self.sim.faults.check_fail = self._orig_check
        vms = self._vms_by_role(server, x)
        # Nova powers the instance off before it asks for the rescue and
        # marks it ERROR when the rescue fails: its own pair stays, halted,
        # with its disk; nothing of the rescue is left
        self.assertEqual({dc.ROLE_GUEST, dc.ROLE_STUBDOM}, set(vms))
        self.assertEqual('Halted', vms[dc.ROLE_GUEST]['power_state'])
        self.assertEqual('Halted', vms[dc.ROLE_STUBDOM]['power_state'])
        self.assertEqual(root, self._disks(x, vms[dc.ROLE_GUEST])['0'])
        self.assertEqual(1, len(x.VDI.get_all()))
        self._delete_server(server)
