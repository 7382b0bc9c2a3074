"""Suspend and resume through real Nova: the image is a Xen v2 stream in a
VDI the driver owns, named by the halted guest's other_config (XAPI's own
suspend_VDI accepts only identical content: xen-api ocaml/xapi/xapi_vm.ml
set_suspend_VDI); a damaged image is refused and nothing is lost."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import hashlib

from nova.compute import power_state

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.sim import devicemodel
from nova_xen_stubdom.sim import pv_drivers
from tests import guest_memory
from tests import waiting

#: a byte inside the image's authenticated preamble (domain description)
OFFSET = 200


class TestSuspendResume(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)

    def setUp(self):
        super().setUp()
        self.flavor = self._create_flavor(memory_mb=128, vcpu=1, disk=1)

    def _guest_domain(self, server):
        guest, _ = self.xapi_vms(server)
        hv = self.sim_host('host1').hypervisor
        return hv, hv.domain(int(guest['domid']))

    def _fill(self, dom):
        mem = dom.memory()
        for pfn in range(0, dom.max_pfn, 5):
            mem[pfn * 4096:pfn * 4096 + 32] = hashlib.sha256(
                b'%d' % pfn).digest()
        mem.release()

    def _image_path(self, guest):
        backend = self.sim_host('host1').agent().backend
        return backend.vdi_path(guest['other_config'][dc.OC_SUSPEND_IMAGE])

    def _suspend(self, server):
        self.api.post_server_action(server['id'], {'suspend': {}})
        return self._wait_for_state_change(server, 'SUSPENDED')

    def test_suspend_resume_round_trip(self):
        server = self._create_server(flavor_id=self.flavor, networks='none')
        hv, dom = self._guest_domain(server)
        self._fill(dom)
        digest = guest_memory.digest(dom.memory(), dom.hvm_params)
        qemu = devicemodel.device_state(hv, dom.domid)

        server = self._suspend(server)
        guest, stub = self.xapi_vms(server)
        # halted through XAPI; the image is ours, XAPI's suspend_VDI unused
        self.assertEqual('Halted', guest['power_state'])
        self.assertEqual('OpaqueRef:NULL', guest['suspend_VDI'])
        self.assertEqual('Halted', stub['power_state'])
        # guest and stub domain are gone from the host
        self.assertEqual([], [d for d in hv.domains if d != 0])
        with open(self._image_path(guest), 'rb') as f:
            self.assertEqual(b'LibxlFmt', f.read(8))

        self.api.post_server_action(server['id'], {'resume': {}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        guest, stub = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertEqual('Running', stub['power_state'])
        self.assertNotIn(dc.OC_SUSPEND_IMAGE, guest['other_config'])
        x = self.xapi()
        self.assertEqual([], [r for r, v in x.VDI.get_all_records().items()
                              if v['name_label'].endswith('-suspend')])
        hv, dom = self._guest_domain(server)
        self.assertFalse(dom.paused)
        self.assertEqual(digest, guest_memory.digest(dom.memory(),
                                                     dom.hvm_params))
        self.assertEqual(qemu, devicemodel.device_state(hv, dom.domid))
        self._delete_server(server)

    def test_guest_with_pv_drivers_is_not_suspended(self):
        """PV drivers loaded: a paused image would leave them disconnected
        and their own suspend makes xenopsd halt the VM
        (driver/pv_guests.py): refused, the instance stays ACTIVE and runs
        on untouched, nothing left behind."""
        server = self._create_server(flavor_id=self.flavor, networks='none')
        hv, dom = self._guest_domain(server)
        pv_drivers.load(hv, dom.domid)
        path = '/local/domain/%d/control/shutdown' % dom.domid
        self.api.post_server_action(server['id'], {'suspend': {}})
        self._wait_for_instance_action_event(
            server, 'suspend', 'compute_suspend_instance', 'Error')
        server = self._wait_for_state_change(server, 'ACTIVE')
        from nova import context as nova_context
        from nova import objects
        faults = objects.InstanceFaultList.get_latest_by_instance_uuids(
            nova_context.get_admin_context(), [server['id']])
        self.assertIn('has PV drivers loaded', faults[0].message)
        guest, stub = self.xapi_vms(server)
        self.assertEqual(('Running', 'Running'),
                         (guest['power_state'], stub['power_state']))
        self.assertEqual(dom.domid, int(guest['domid']))
        self.assertFalse(dom.paused)
        self.assertIsNone(dom.shutdown_reason)
        self.assertIsNone(hv.xenstore.read(path))
        self.assertNotIn(dc.OC_SUSPEND_IMAGE, guest['other_config'])
        x = self.xapi()
        self.assertEqual([], [r for r, v in x.VDI.get_all_records().items()
                              if v['name_label'].endswith('-suspend')])
        self._delete_server(server)

    def test_corrupt_image_is_refused_and_kept(self):
        server = self._create_server(flavor_id=self.flavor, networks='none')
        server = self._suspend(server)
        guest, _ = self.xapi_vms(server)
        path = self._image_path(guest)
        with open(path, 'r+b') as f:
            f.seek(OFFSET)
            byte = f.read(1)
            f.seek(OFFSET)
            f.write(bytes([byte[0] ^ 0x10]))
        with open(path, 'rb') as f:
            damaged = hashlib.sha256(f.read()).hexdigest()

        self.api.post_server_action(server['id'], {'resume': {}})
        server = self._wait_for_server_parameter(
            server, {'status': 'SUSPENDED', 'OS-EXT-STS:task_state': None})
        # Nova recorded why (the instance action's event failed).  Nova
        # resets the task state before its event wrapper finishes the
        # action: wait for the action, not just the state

        def resume_action():
            return [a for a in self.api.get_instance_actions(server['id'])
                    if a['action'] == 'resume' and a['message']]
        resume = waiting.wait_until(resume_action, 'the failed resume '
                                    'action to be recorded')[0]
        self.assertEqual('Error', resume['message'])
        guest2, stub2 = self.xapi_vms(server)
        self.assertEqual('Halted', guest2['power_state'])
        self.assertEqual(guest['other_config'][dc.OC_SUSPEND_IMAGE],
                         guest2['other_config'][dc.OC_SUSPEND_IMAGE])
        self.assertEqual('Halted', stub2['power_state'])
        with open(path, 'rb') as f:
            self.assertEqual(damaged, hashlib.sha256(f.read()).hexdigest())
        hv = self.sim_host('host1').hypervisor
        self.assertEqual([], [d for d in hv.domains if d != 0])

        # repaired, the same image resumes
        with open(path, 'r+b') as f:
            f.seek(OFFSET)
            f.write(byte)
        self.api.post_server_action(server['id'], {'resume': {}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self._delete_server(server)

    def test_suspended_stays_suspended_and_delete_removes_the_image(self):
        """The halted guest with our image is SUSPENDED to Nova: the power
        sync leaves it alone; deleting it removes the image VDI (the leak
        check at the end of every test looks for VDIs)."""
        server = self._create_server(flavor_id=self.flavor, networks='none')
        server = self._suspend(server)
        compute = self.computes['host1']
        info = compute.manager.driver.get_info(
            self._instance(server))
        self.assertEqual(power_state.SUSPENDED, info.state)
        self._run_periodics()
        server = self.api.get_server(server['id'])
        self.assertEqual('SUSPENDED', server['status'])
        self._delete_server(server)

    def test_hard_reboot_of_a_suspended_instance_boots_fresh(self):
        server = self._create_server(flavor_id=self.flavor, networks='none')
        server = self._suspend(server)
        self._reboot_server(server, hard=True)
        guest, _ = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])
        self.assertNotIn(dc.OC_SUSPEND_IMAGE, guest['other_config'])
        self._delete_server(server)

    def _instance(self, server):
        from nova import context as nova_context
        from nova import objects
        return objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), server['id'])
