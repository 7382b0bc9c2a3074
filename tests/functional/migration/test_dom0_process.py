"""Live migration through real Nova with each simulated host's dom0 run as
XCP-ng runs it: the dom0 daemon per host, the XAPI plugin a fresh process
per host.call_plugin.  The migration job the first plugin call starts is
found by every later call (status, forget) -- only the daemon holds it."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import hashlib
import os

from tests import guest_memory
from tests.functional.migration import test_live_migration as live


class TestLiveMigrationThroughPluginProcesses(base.XenStubdomTestBase):

    def setUp(self):
        super().setUp()
        for host in self.sim.hosts:
            host.plugin_process = True
        self.flags(group='xen_stubdom', live_migration_progress_interval=1,
                   live_migration_downtime_ms=50)
        self.flavor = self._create_flavor(memory_mb=128, vcpu=1, disk=1)

    # the helpers of the in-process live migration tests
    _domain = live.TestLiveMigration._domain
    _wait_migration = live.TestLiveMigration._wait_migration
    _start_live_migration = live.TestLiveMigration._start_live_migration

    def test_live_migration_with_daemon_and_plugin_processes(self):
        server = self._create_server(flavor_id=self.flavor, networks='none',
                                     host='host1')
        _, dom = self._domain(server, 'host1')
        mem = dom.memory()
        mem[4096:4096 + 32] = hashlib.sha256(b'plugin-process').digest()
        mem.release()
        digest = guest_memory.digest(dom.memory(), dom.hvm_params)

        self._start_live_migration(server)
        self._wait_migration(server, ['completed'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        _, dom2 = self._domain(server, 'host2')
        self.assertEqual(digest, guest_memory.digest(dom2.memory(),
                                                     dom2.hvm_params))

        # both hosts' calls went through their daemons, over their sockets
        for name in ('host1', 'host2'):
            dom0 = self.sim_host(name).dom0_process
            self.assertIsNotNone(dom0, name)
            self.assertTrue(os.path.exists(dom0.daemon.socket_path))
        # the driver forgot its jobs: nothing left in either journal
        for name in ('host1', 'host2'):
            journal = self.sim_host(name).dom0_process.daemon.agent.journal
            self.assertEqual({}, {k: v for k, v in journal.entries().items()
                                  if v.get('state') == 'running'})
        self._delete_server(server)
