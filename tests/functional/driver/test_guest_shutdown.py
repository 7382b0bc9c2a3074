"""A guest that reboots or powers itself off, through Nova and the simulator.

The simulator's guest makes SCHEDOP_shutdown and its xenopsd acts on the
VM's ``actions_after_*`` (``sim/guest_actions.py``, from xen-api
``ocaml/xenopsd/lib/xenops_server.ml`` ``VM_check_state`` and
``ocaml/xapi/xapi_xenops.ml`` ``of_vm``): our guests are ``destroy`` for
both, so the VM halts either way and XAPI records no reason.  The driver
tells the two apart by the dom0 side's ``guest_exit`` record.
"""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

from nova_xen_stubdom.sim import guest_actions
from nova_xen_stubdom.sim.errors import XapiError


class TestGuestShutdown(base.XenStubdomTestBase):

    def setUp(self):
        super().setUp()
        self.flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                          ephemeral=0)
        self.server = self._create_server(flavor_id=self.flavor,
                                          networks='none', host='host1')
        self.x = self.xapi()
        self.host = self.sim_host('host1')
        self.guest, self.stub = self.xapi_vms(self.server, self.x)

    def _guest_does(self, reason):
        domid = int(self.guest['domid'])
        done = guest_actions.guest_shutdown(self.host, domid, reason)
        # our guests are destroy-on-everything: xenopsd only halts them
        self.assertEqual(['shutdown'], done)
        return domid

    def _running_again(self, old_guest_domid, old_stub_domid):
        def check():
            g, s = self.xapi_vms(self.server, self.x)
            states = (g['power_state'], s['power_state'])
            if states != ('Running', 'Running'):
                return None
            if int(g['domid']) in (-1, old_guest_domid):
                return None
            return g, s
        return self.wait_for_xapi(check, timeout=30,
                                  what='guest and stub domain rebuilt')

    def test_guest_reboot_stays_active_with_a_new_stub_domain(self):
        old_guest = int(self.guest['domid'])
        old_stub = int(self.stub['domid'])
        driver = self.computes_by_name['host1'].manager.driver
        from nova import context as nova_context
        from nova import objects
        inst = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), self.server['id'])
        # slow the rebuild's starts down: Nova's power sync runs meanwhile
        self.sim.faults.latency('VM.start_on', 0.5, 2)
        self._guest_does('reboot')
        self.wait_for_xapi(
            lambda: self.server['id'] in driver._vmops._guest_rebooting,
            what='the rebuild to begin')
        # the guest VM is Halted in XAPI, yet to Nova it is running
        self.assertEqual(1, driver.get_info(inst).state)
        self._run_periodics()
        g, s = self._running_again(old_guest, old_stub)
        new_guest, new_stub = int(g['domid']), int(s['domid'])
        self.assertNotEqual(old_stub, new_stub)
        hv = self.host.hypervisor
        # the fresh stub domain runs the guest's device model
        self.assertEqual(new_stub, hv.device_models[new_guest])
        self.assertEqual(new_stub, hv.qemus[new_guest].domid)
        self.assertNotIn(old_stub, hv.domains)
        self.assertEqual(new_guest, hv.domain(new_stub).target)
        server = self.api.get_server(self.server['id'])
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual(1, server['OS-EXT-STS:power_state'])
        # the record was consumed: a later halt is not taken for a reboot
        agent = self.host.agent()
        self.assertIsNone(agent.backend.xs_read(
            '/nova-xen-stubdom/exits/%s' % g['uuid']))
        self._delete_server(server)

    def test_guest_poweroff_ends_shutoff(self):
        self._guest_does('poweroff')
        server = self._wait_for_state_change(self.server, 'SHUTOFF')
        self.wait_for_xapi(
            lambda: self.x.VM.get_power_state(self.stub['ref']) == 'Halted',
            what='the stub domain to halt')
        g, s = self.xapi_vms(server, self.x)
        self.assertEqual(('Halted', 'Halted'),
                         (g['power_state'], s['power_state']))
        self._delete_server(server)

    def test_fault_during_rebuild_leaves_nothing_running(self):
        # the stub domain is started again, then the guest's start fails
        seen = [0]

        def check(name, host):
            if name == 'VM.start_on':
                seen[0] += 1
                if seen[0] == 2:
                    raise XapiError('INTERNAL_ERROR',
                                    'injected fault in the guest start')
            return self._orig_check(name, host)
        self.sim.faults.check_fail = check
        self._guest_does('reboot')
        server = self._wait_for_state_change(self.server, 'SHUTOFF')
        self.assertEqual(2, seen[0])
        self.sim.faults.check_fail = self._orig_check
        g, s = self.xapi_vms(server, self.x)
        self.wait_for_xapi(
            lambda: self.x.VM.get_power_state(s['ref']) == 'Halted',
            what='the stub domain to halt')
        self.assertEqual('Halted', self.x.VM.get_power_state(g['ref']))
        hv = self.host.hypervisor
        self.assertEqual([], [d for d in hv.domains if d != 0])
        self.assertEqual({}, dict(hv.qemus))
        # and Nova can start it again
        server = self._start_server(server)
        g, s = self.xapi_vms(server, self.x)
        self.assertEqual(('Running', 'Running'),
                         (g['power_state'], s['power_state']))
        self._delete_server(server)
