"""Each simulated host's dom0 run as XCP-ng runs it, through real Nova: the
dom0 daemon a process of its own per host, the XAPI plugin a fresh process
per host.call_plugin.  The migration job the first plugin call starts is
found by every later call (status, forget) -- only the daemon holds it.
kill -9 of the daemon in the middle of a guest's start loses nothing and
leaks nothing (``tests/unit/dom0/test_daemon_crash.py`` at this level)."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import hashlib
import os

from nova_xen_stubdom.dom0 import host as dom0_host
from nova_xen_stubdom.dom0 import job_journal
from nova_xen_stubdom.dom0 import keywrap
from nova_xen_stubdom.dom0 import stubdom_link
from tests import guest_memory
from tests.functional.migration import test_live_migration as live


def _link(guest_vm_uuid):
    return '%s/%s' % (stubdom_link.LINKS_ROOT, guest_vm_uuid)


def _running_jobs(dom0):
    journal = job_journal.JobJournal(os.path.join(dom0.state_dir, 'jobs'))
    return {k: v for k, v in journal.entries().items()
            if v.get('state') == 'running'}


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

        # both hosts' calls went through their daemons -- processes other
        # than this one -- over their sockets
        pids = set()
        for name in ('host1', 'host2'):
            dom0 = self.sim_host(name).dom0_process
            self.assertIsNotNone(dom0, name)
            self.assertTrue(os.path.exists(dom0.socket_path))
            self.assertIsNone(dom0.proc.poll(), name)
            pids.add(dom0.pid)
        self.assertNotIn(os.getpid(), pids)
        self.assertEqual(2, len(pids))
        # the driver forgot its jobs: nothing left in either journal
        for name in ('host1', 'host2'):
            self.assertEqual({}, _running_jobs(self.sim_host(name)
                                               .dom0_process))
        self._delete_server(server)


class TestDom0DaemonProcess(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)
    #: the start the crash breaks ends in ERROR, not on another host
    MAX_ATTEMPTS = 1

    def setUp(self):
        super().setUp()
        self.host = self.sim_host('host1')
        self.host.plugin_process = True
        self.flavor = self._create_flavor(memory_mb=128, vcpu=1, disk=1)

    def test_a_job_one_plugin_process_starts_the_next_finds(self):
        # the compute's start already called the plugin: the daemon runs
        dom0 = self.host.dom0_process
        self.assertNotEqual(os.getpid(), dom0.pid)
        domid = self.host.agent().backend.sim.create_domain(
            'incoming-vm', True, 4 << 20)
        offer = self.dom0_call('host1', 'key_offer')
        started = self.dom0_call(
            'host1', 'migrate_receive', guest_vm_uuid='incoming-vm',
            listen_address='127.0.0.1', key_wrap=keywrap.wrap(
                offer['offer'], offer['pub'], b'\x22' * 32))
        self.assertEqual('waiting', self.dom0_call(
            'host1', 'migrate_receive_status', id=started['id'])['state'])
        self.assertEqual({started['id']}, set(_running_jobs(dom0)))
        self.assertIn(self.dom0_call(
            'host1', 'migrate_receive_cancel', id=started['id'])['state'],
            ('cancelled', 'failed'))
        self.assertEqual({}, _running_jobs(dom0))
        self.host.agent().backend.sim.destroy_domain(domid)
        self.assertEqual(dom0.pid, self.host.dom0_process.pid)

    def test_kill_9_mid_stubdom_link_loses_and_leaks_nothing(self):
        keep = self._create_server(flavor_id=self.flavor, networks='none')
        kept_guest, kept_stub = self.xapi_vms(keep)
        backend = self.host.agent().backend
        kept_link = backend.xs_read(_link(kept_guest['uuid']) + '/config')
        self.assertIsNotNone(kept_link)
        dom0 = self.host.dom0_process
        first_pid = dom0.pid
        seen = {}
        real_write = backend.xs_write

        def crash_in_link(path, value):
            # the daemon has written the link's first half and holds the
            # guest's lock: it dies here, before its second write lands
            if path.startswith(stubdom_link.LINKS_ROOT + '/') and \
                    path.endswith('/config') and not seen:
                guest = path.split('/')[-2]
                seen['guest'] = guest
                seen['lock_held'] = self._locked(dom0, guest)
                dom0.kill()
                raise OSError('the daemon died')
            return real_write(path, value)
        backend.xs_write = crash_in_link
        try:
            broken = self._create_server(flavor_id=self.flavor,
                                         networks='none',
                                         expected_state='ERROR')
        finally:
            del backend.xs_write
        self.assertTrue(seen.get('lock_held'), seen)
        # the daemon came back (the unit's Restart=on-failure): a new
        # process, the lock the dead one held free again
        self.assertNotIn(self.host.dom0_process.pid, (None, first_pid))
        self.assertFalse(self._locked(dom0, seen['guest']))
        # no loss: the other guest, its stub domain and link are intact,
        # and the new daemon serves them
        guest, stub = self.xapi_vms(keep)
        self.assertEqual(('Running', 'Running'), (guest['power_state'],
                                                  stub['power_state']))
        self.assertEqual(kept_link, backend.xs_read(
            _link(kept_guest['uuid']) + '/config'))
        wiring = self.dom0_call('host1', 'stubdom_wiring',
                                stubdom_domid=kept_stub['domid'])
        self.assertEqual(int(kept_stub['domid']),
                         wiring['stubdom_domid'])
        self.assertEqual('ACTIVE', self.api.get_server(keep['id'])['status'])
        # no leak: the broken start was rolled back through the new daemon
        self.assertEqual((None, None), self.xapi_vms(broken))
        self.assertIsNone(backend.xs_read(_link(seen['guest'])))
        self.assertEqual({}, _running_jobs(dom0))
        self._delete_server(broken)
        self._delete_server(keep)
        # (the leak check after the test: no domain, VM, lock or socket)

    @staticmethod
    def _locked(dom0, guest):
        path = os.path.join(dom0.state_dir, 'locks',
                            dom0_host._lock_name(guest))
        try:
            with dom0_host.file_lock(path, blocking=False):
                return False
        except BlockingIOError:
            return True
