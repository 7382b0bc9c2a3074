"""Base class for functional tests: real Nova + XenStubdomDriver + simulator.

    from tests.functional import base      # FIRST: Nova decides eventlet here

    class TestX(base.XenStubdomTestBase):
        SIM_HOSTS = 2                        # simulated XAPI hosts (one pool)
        COMPUTES = ('host1', 'host2')        # nova-compute i <-> sim host i
        HOST_CONFIGS = None                  # [sim.pool.HostConfig(...)]

        def test_boot(self):
            server = self._create_server(networks='none')
            guest, stub = self.xapi_vms(server)       # XAPI records
            ...
            self._delete_server(server)

Nova's own harness runs API, conductor, scheduler, placement and the
computes in this process; the driver reaches the simulator over HTTP.  Each
simulated host's ``host.call_plugin`` runs as XAPI runs it: the real plugin
launcher as a fresh process per call, forwarding over its root-only unix
socket to the host's dom0 daemon, a process of its own that reaches the
simulated hypervisor through a channel (``sim/dom0_process.py``,
``sim/hypervisor_channel.py``).  Tests call the dom0 plugin as the driver
does, through :meth:`XenStubdomTestBase.dom0_call`.  For debugging,
``NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=0`` runs the agent in this process
instead (tracebacks and breakpoints in one place).  After
every test a leak check (registered first, so it runs after Nova's services
have stopped) asserts the simulator holds no VM, VDI, VBD, VIF, stub domain,
domain, memory file, device model, PCI grant or XAPI session.
"""
# NOTE: import order: nova.tests.functional decides monkey patching
from nova.tests.functional import integrated_helpers  # noqa: I100 (first)

import json
import os
import sys
import time

import XenAPI

from nova_xen_stubdom import conf as xconf  # noqa: F401 (registers opts)
from nova_xen_stubdom.dom0 import registry as plugin
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.sim import dom0_process
from nova_xen_stubdom.sim import server as sim_server
from nova_xen_stubdom.sim.errors import XapiError
from tests import waiting

# The sim runs an agent in process (the device-model wrapper's; every agent
# with the opt-out); load its plugin modules now: Nova's fixtures forbid
# os.uname(), which an import at first use might call.
plugin.functions()

#: host.call_plugin as XAPI does it (a plugin process per call, the dom0
#: daemon process per host); ``NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=0``
#: opts out
PLUGIN_PROCESS = os.environ.get(dom0_process.ENV, '1') != '0'

SIM_USER = 'root'
SIM_PASSWORD = 'functional-secret'


class XenStubdomTestBase(integrated_helpers.ProviderUsageBaseTestCase):
    compute_driver = 'xen_stubdom.XenStubdomDriver'
    SIM_HOSTS = 2
    COMPUTES = ('host1', 'host2')
    HOST_CONFIGS = None
    #: more XAPI accounts: name -> (password, role)
    SIM_USERS = None
    #: Nova's scheduler retries a failed build on another host; tests that
    #: check failure paths want one attempt (set to 1)
    MAX_ATTEMPTS = None

    def setUp(self):
        # PITFALL: the wheel installs api-paste.ini under <prefix>/etc/nova
        self.flags(group='wsgi', api_paste_config=os.path.join(
            sys.prefix, 'etc', 'nova', 'api-paste.ini'))
        sim = self.sim = sim_server.SimServer(
            hosts=self.SIM_HOSTS, username=SIM_USER, password=SIM_PASSWORD,
            host_configs=self.HOST_CONFIGS, users=self.SIM_USERS)
        sim.start()
        for host in sim.hosts:
            host.plugin_process = PLUGIN_PROCESS
        # XAPI without injected faults: what _fail_nth wraps and cleanup
        # puts back before the leak check
        self._orig_check = sim.faults.check_fail
        # registered first => runs last, after the computes logged out (and
        # after nova's _clear_attrs: keep references in the closures)
        self.addCleanup(sim.stop)
        self.addCleanup(self._check_leaks, sim)
        self.addCleanup(setattr, sim.faults, 'check_fail', self._orig_check)
        self._name_sim_hosts()
        self.flags(group='xen_stubdom', connection_url=self.sim.url,
                   connection_username=SIM_USER,
                   connection_password=SIM_PASSWORD,
                   network_name_label='Pool-wide network associated with '
                                      'eth0',
                   device_model_start_timeout=20,
                   clean_shutdown_timeout=5,
                   api_retry_interval=0.05)
        if self.MAX_ATTEMPTS:
            self.flags(group='scheduler', max_attempts=self.MAX_ATTEMPTS)
        super().setUp()
        # Nova stops services with manager_shutdown_timeout=0 in tests: the
        # drivers' cleanup_host may still be running when the leak check
        # starts. Registered before the computes start => runs after their
        # services were killed; cleanup_host is idempotent.
        self.addCleanup(self._cleanup_drivers, self.__dict__)
        self.computes_by_name = {}
        for name in self.COMPUTES:
            self.computes_by_name[name] = self._start_compute(name)

    @staticmethod
    def _cleanup_drivers(attrs):
        for name, compute in attrs.get('computes_by_name', {}).items():
            compute.manager.driver.cleanup_host(host=name)

    def _clear_attrs(self):
        # PITFALL (pytest): nova.test.TestCase._clear_attrs deletes the bound
        # test method pytest removes later; keep it.
        name = self._testMethodName
        saved = self.__dict__.get(name)
        super()._clear_attrs()
        if saved is not None:
            self.__dict__[name] = saved

    # -- the simulator ------------------------------------------------------
    def xapi(self):
        """A XenAPI session for test-side checks (logged out at cleanup)."""
        session = XenAPI.Session(self.sim.url)
        session.login_with_password(SIM_USER, SIM_PASSWORD, '2.0',
                                    'functional-test')
        self.addCleanup(self._logout, session)
        return session.xenapi

    @staticmethod
    def _logout(session):
        try:
            session.xenapi.session.logout()
        except Exception:
            pass

    def _name_sim_hosts(self):
        """Operators name XAPI hosts like their nova-compute hosts."""
        session = XenAPI.Session(self.sim.url)
        session.login_with_password(SIM_USER, SIM_PASSWORD, '2.0', 'setup')
        try:
            for name, host in zip(self.COMPUTES, self.sim.hosts):
                session.xenapi.host.set_name_label(host.ref, name)
        finally:
            session.xenapi.session.logout()

    def sim_host(self, compute_name):
        return self.sim.hosts[list(self.COMPUTES).index(compute_name)]

    def dom0_call(self, compute_name, fn, **args):
        """The dom0 plugin's *fn* on *compute_name*'s host, called as the
        driver calls it (``host.call_plugin``: through the host's daemon);
        its JSON result decoded."""
        from nova_xen_stubdom.sim import plugins
        return json.loads(plugins.call_plugin(
            self.sim_host(compute_name), plugin.PLUGIN, fn,
            {k: str(v) for k, v in args.items()}))

    def _wait_for_state_change(self, server, expected_status,
                               max_retries=10, **kwargs):
        # Nova's default polls for 5 s; a build that is rescheduled, or a
        # migration, on a loaded 2-core CI machine can take longer (a
        # limit, not a timing assertion)
        return super()._wait_for_state_change(
            server, expected_status, max_retries=max(max_retries, 120),
            **kwargs)

    def _wait_state(self, server, status, timeout=180):
        """*server* in *status* with no task left: a disk copy (1 GiB
        through XAPI's HTTP export/import) takes longer than Nova's helper
        waits on a loaded 2-core machine (a limit, not a timing check)."""
        def settled():
            got = self.api.get_server(server['id'])
            return got if got['status'] == status and \
                got['OS-EXT-STS:task_state'] is None else None
        return waiting.wait_until(settled, 'server %s %s' % (
            server['id'], status), timeout=timeout, interval=0.2)

    def _fail_nth(self, method: str, nth: int) -> list:
        """XAPI's *nth* call of *method* fails with INTERNAL_ERROR; returns
        the counter of the calls seen (``[n]``)."""
        seen = [0]

        def check(name, host):
            if name == method:
                seen[0] += 1
                if seen[0] == nth:
                    raise XapiError('INTERNAL_ERROR',
                                    'injected fault in %s #%d' % (method,
                                                                  nth))
            return self._orig_check(name, host)
        self.sim.faults.check_fail = check
        return seen

    def _cold_migration_is_refused(self, server):
        """A cold migration of *server* (on host1) that the driver refuses:
        the migration ends in error and the server stays ACTIVE on host1."""
        self.api.post_server_action(server['id'], {'migrate': None})
        waiting.wait_until(
            lambda: [m for m in self.api.get_migrations()
                     if m['instance_uuid'] == server['id'] and
                     m['status'] == 'error'],
            'the refused migration to be marked error')
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        return server

    def xapi_vms(self, server, x=None):
        """``(guest_record, stubdom_record)`` of *server* from XAPI."""
        x = x or self.xapi()
        guest = stub = None
        for ref, rec in x.VM.get_all_records().items():
            oc = rec['other_config']
            if oc.get(dc.OC_NOVA_UUID) != server['id']:
                continue
            rec['ref'] = ref
            if oc.get(dc.OC_ROLE) == dc.ROLE_GUEST:
                guest = rec
            elif oc.get(dc.OC_ROLE) == dc.ROLE_STUBDOM:
                stub = rec
        return guest, stub

    def wait_for_xapi(self, predicate, timeout=10.0, what='condition'):
        return waiting.wait_until(predicate, what, timeout=timeout,
                                  interval=0.05)

    # -- leak check -----------------------------------------------------------
    @staticmethod
    def leaks(sim):
        """What the simulator still holds that a finished test must not."""
        found = {}
        for key, value in sim.leaks().items():
            for kind, items in value.items():
                if kind == 'pci_clean':
                    if not items:
                        found['%s.pci' % key] = 'grants left'
                elif items:
                    found['%s.%s' % (key, kind)] = items
        for pool in sim.pools:
            if found.get('pool%d.sessions' % pool.index):
                with pool.sessions.lock:
                    refs = list(pool.sessions.live)
                found['pool%d.sessions' % pool.index] = sorted(
                    pool.db.get('session', r)['originator'] for r in refs
                    if pool.db.exists('session', r))
        return found

    def _check_leaks(self, sim):
        # sessions are logged out by the computes' cleanup_host; give the
        # last XML-RPC answers a moment to land
        deadline = time.monotonic() + 5
        while True:
            found = self.leaks(sim)
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual({}, found, 'the test left objects in XAPI / on '
                                    'the hosts')
