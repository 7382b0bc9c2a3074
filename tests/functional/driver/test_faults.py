"""A fault at each XAPI step of spawn and destroy: the instance ends as Nova
expects, with a clear fault, and nothing is left behind."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import json

from nova_xen_stubdom.dom0 import errors as agent_errors
from nova_xen_stubdom.dom0 import registry as plugin

# (XAPI message, n-th call of it during spawn, words the fault must name)
SPAWN_STEPS = [
    ('VDI.create', 1, 'VDI.create (root disk)'),
    ('VDI.create', 2, 'image import'),          # HTTP PUT /import_raw_vdi
    ('VM.create', 1, 'VM.create (HVM guest)'),
    ('VM.get_uuid', 1, 'VM.get_uuid'),
    ('VM.create', 2, 'VM.create (stub domain)'),
    ('VM.add_to_other_config', 1, 'VM.add_to_other_config'),
    ('VBD.create', 1, 'VBD.create (guest root disk)'),
    ('VBD.create', 2, 'VBD.create (stub domain mirror'),
    ('VDI.create', 3, 'VDI.create (ephemeral disk)'),
    ('VDI.create', 4, 'VDI.create (swap disk)'),
    ('VDI.create', 5, 'swap signature'),        # HTTP PUT /import_raw_vdi
    ('VBD.create', 3, 'VBD.create (guest ephemeral disk)'),
    ('VBD.create', 5, 'VBD.create (guest swap disk)'),
    ('VIF.create', 1, 'VIF.create (guest NIC 0)'),
    ('VIF.create', 2, 'VIF.create (stub domain mirror of NIC 0)'),
    ('VM.start_on', 1, 'VM.start_on (stub domain)'),
    ('VM.get_domid', 1, 'VM.get_domid (stub domain)'),
    ('VM.start_on', 2, 'VM.start_on (HVM guest)'),
    ('VM.get_domid', 2, 'VM.get_domid (HVM guest)'),
]
# agent steps (host.call_plugin) failed through the dom0 plugin dispatcher
AGENT_SPAWN_STEPS = [
    ('link_stubdom', 'agent link_stubdom'),
    ('dm_state', 'wait for the device model'),
]
DESTROY_STEPS = [
    ('VM.get_by_name_label', 1),
    ('VM.hard_shutdown', 1),
    ('VBD.destroy', 1),
    ('VIF.destroy', 1),
    ('VM.destroy', 1),
    ('VM.destroy', 2),
    ('VDI.destroy', 1),
]


class TestFaults(base.XenStubdomTestBase):
    MAX_ATTEMPTS = 1        # a failed build goes to ERROR, no reschedule

    def setUp(self):
        super().setUp()
        self.flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                          ephemeral=1, swap=16)

    # -- fault injection ----------------------------------------------------

    def _fail_agent(self, fn):
        def dispatch(agent, plugin_name, name, args):
            if name == fn:
                if fn == 'dm_state':
                    return json.dumps({'state': 'error',
                                       'error': 'injected QEMU failure'})
                raise agent_errors.AgentError('injected fault in %s' % fn)
            return plugin.call(agent, plugin_name, name, args)
        for h in self.sim.hosts:
            h.plugin_dispatch = dispatch

    def _clear(self):
        self.sim.faults.check_fail = self._orig_check
        for h in self.sim.hosts:
            h.plugin_dispatch = None

    def _assert_nothing_on_hosts(self):
        left = {k: v for k, v in self.leaks(self.sim).items()
                if not k.endswith('.sessions')}
        self.assertEqual({}, left)

    def _networks(self, method):
        # a Neutron port only where the step needs a NIC (keeps it quick)
        if method and method.startswith('VIF'):
            return [{'port': self.neutron.port_1['id']}]
        return 'none'

    def _boot_expect_error(self, step_words, method=None):
        server = self._create_server(flavor_id=self.flavor,
                                     networks=self._networks(method),
                                     expected_state='ERROR')
        server = self.api.get_server(server['id'])
        fault = server['fault']['message']
        self.assertIn(step_words, fault)
        self._assert_nothing_on_hosts()
        self._delete_server(server)
        return fault

    def test_spawn_fault_at_each_xapi_step(self):
        faults = {}
        for method, nth, words in SPAWN_STEPS:
            seen = self._fail_nth(method, nth)
            try:
                faults[(method, nth)] = self._boot_expect_error(words,
                                                                method)
            finally:
                self._clear()
            self.assertGreaterEqual(seen[0], nth, method)
        for fn, words in AGENT_SPAWN_STEPS:
            self._fail_agent(fn)
            try:
                faults[fn] = self._boot_expect_error(words)
            finally:
                self._clear()
        # the fault says what failed, where, and that nothing was left
        msg = faults[('VM.start_on', 2)]
        self.assertIn('injected fault in VM.start_on #2', msg)
        self.assertIn('everything created was removed', msg)
        self.assertIn('injected QEMU failure', faults['dm_state'])
        # with the faults gone, the same boot works
        server = self._create_server(flavor_id=self.flavor, networks='none')
        self._delete_server(server)

    def test_destroy_fault_at_each_xapi_step(self):
        for method, nth in DESTROY_STEPS:
            server = self._create_server(flavor_id=self.flavor,
                                         networks=self._networks(method))
            self._fail_nth(method, nth)
            try:
                self.api.delete_server(server['id'])
                server = self._wait_for_state_change(server, 'ERROR')
            finally:
                self._clear()
            fault = self.api.get_server(server['id'])['fault']['message']
            self.assertIn('injected fault in %s #%d' % (method, nth), fault)
            # deleting again finishes the job: nothing is left
            self._delete_server(server)
            self._assert_nothing_on_hosts()

    def test_destroy_is_idempotent_and_handles_half_built_guests(self):
        server = self._create_server(flavor_id=self.flavor, networks='none')
        compute = self.computes_by_name[server['OS-EXT-SRV-ATTR:host']]
        driver = compute.manager.driver
        from nova import context as nova_context
        from nova import objects
        inst = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), server['id'])
        # half-built: the stub domain VM is gone already
        x = self.xapi()
        _guest, stub = self.xapi_vms(server, x)
        x.VM.hard_shutdown(stub['ref'])
        for vbd in stub['VBDs']:
            x.VBD.destroy(vbd)
        x.VM.destroy(stub['ref'])
        driver.destroy(None, inst, None)
        driver.destroy(None, inst, None)        # again: nothing to do
        self._assert_nothing_on_hosts()
        self._delete_server(server)
