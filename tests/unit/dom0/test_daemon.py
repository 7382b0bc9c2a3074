"""The dom0 daemon: socket, single instance, file locks, journal recovery,
and a kill -9 in the middle of a job (real processes, Python 3.6 too)."""
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from nova_xen_stubdom.dom0 import config
from nova_xen_stubdom.dom0 import daemon
from nova_xen_stubdom.dom0 import daemon_protocol as proto
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import host
from nova_xen_stubdom.dom0 import job_journal
from tests.unit.dom0 import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
HOST_UUID = '0b7ef0a6-6d0c-4a8e-9a55-0f3c1d8e2a11'
FAKE = 'tests.unit.dom0.fakes:FakeBackend'


@pytest.fixture
def rundir():
    # AF_UNIX paths are short (108 bytes): not under pytest's tmp_path
    d = tempfile.mkdtemp(prefix='nxs-')
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _daemon(rundir, backend=None):
    agent = host.HostAgent(backend or fakes.FakeBackend(), HOST_UUID)
    return daemon.Daemon(agent, os.path.join(rundir, 'agent.sock'),
                         os.path.join(rundir, 'state'))


def test_serves_calls_on_a_root_only_socket(rundir):
    backend = fakes.FakeBackend()
    stub = backend.add_domain('stub-vm', hvm=False)
    d = _daemon(rundir, backend)
    d.start()
    try:
        mode = os.stat(d.socket_path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        out = json.loads(proto.call(d.socket_path, 'stubdom_wiring',
                                    {'stubdom_domid': str(stub)}))
        assert out['stubdom_domid'] == stub
        with pytest.raises(proto.RemoteError) as exc:
            proto.call(d.socket_path, 'no_such_fn', {})
        assert exc.value.code == 'UNKNOWN_FUNCTION'
        with pytest.raises(proto.RemoteError) as exc:
            proto.call(d.socket_path, 'dm_state', {'stubdom_domid': 'x'})
        assert exc.value.code == 'INVALID_ARGUMENT'
        # a second daemon on the same host refuses, and touches nothing
        with pytest.raises(daemon.AlreadyRunning):
            _daemon(rundir).start()
        assert proto.call(d.socket_path, 'stubdom_wiring',
                          {'stubdom_domid': str(stub)})
    finally:
        d.stop()
    assert not os.path.exists(d.socket_path)
    with pytest.raises(proto.DaemonUnavailable):
        proto.call(d.socket_path, 'stubdom_wiring', {})


def test_malformed_requests_get_errors_not_a_dead_daemon(rundir):
    d = _daemon(rundir)
    d.start()
    try:
        assert d.handle({'fn': 3})['error']['code'] == 'INVALID_ARGUMENT'
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.socket_path)
        s.sendall(b'\xff\xff\xff\xff')          # longer than allowed
        s.close()
        assert proto.call(d.socket_path, 'stubdom_wiring',
                          {'stubdom_domid': '0'})
    finally:
        d.stop()


def test_refuses_to_replace_what_is_not_a_socket(rundir):
    d = _daemon(rundir)
    with open(d.socket_path, 'w') as f:
        f.write('precious')
    with pytest.raises(errors.AgentError, match='not a socket'):
        d.start()
    with open(d.socket_path) as f:
        assert f.read() == 'precious'
    _daemon(rundir).stop()      # the lock was released: a start works
    os.unlink(d.socket_path)
    d2 = _daemon(rundir)
    d2.start()
    d2.stop()


def test_domain_locks_exclude_other_processes(rundir):
    agent = host.HostAgent(fakes.FakeBackend(), HOST_UUID,
                           lock_dir=os.path.join(rundir, 'locks'))
    probe = ('import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); '
             'fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)')
    path = os.path.join(rundir, 'locks', 'vm-1.lock')
    with agent.lock('vm-1'):
        busy = subprocess.run([sys.executable, '-c', probe, path],
                              stderr=subprocess.PIPE, timeout=60)
        assert busy.returncode != 0
        assert b'BlockingIOError' in busy.stderr
    free = subprocess.run([sys.executable, '-c', probe, path], timeout=60)
    assert free.returncode == 0
    with pytest.raises(errors.InvalidArgument):
        with agent.lock('../etc/passwd'):
            pass


def test_recovery_settles_each_phase(rundir):
    backend = fakes.FakeBackend()
    running = backend.add_domain('vm-a', hvm=True)
    paused = backend.add_domain('vm-b', hvm=True)
    switched = backend.add_domain('vm-c', hvm=True)
    backend.pause(paused)
    backend.pause(switched)
    journal = job_journal.JobJournal(os.path.join(rundir, 'jobs'))
    journal.write('j1', kind='send', state='running', domid=running,
                  phase='precopy')
    journal.write('j2', kind='send', state='running', domid=paused,
                  phase='pausing')
    journal.write('j3', kind='send', state='running', domid=switched,
                  phase='go')
    journal.write('j4', kind='receive', state='running', domid=9)
    journal.write('j5', kind='send', state='completed', domid=running)
    with open(os.path.join(rundir, 'jobs', '.tmp-cut'), 'w') as f:
        f.write('{"half')
    resumed = []
    settled = job_journal.recover(journal, backend, resumed.append)
    assert settled == {'j1': 'failed', 'j2': 'failed', 'j3': 'unknown',
                       'j4': 'failed'}
    assert not backend.domains[running].paused
    assert not backend.domains[paused].paused       # this job paused it
    assert backend.domains[switched].paused         # may run elsewhere
    assert resumed == []
    assert journal.read('j5')['state'] == 'completed'
    assert not os.path.exists(os.path.join(rundir, 'jobs', '.tmp-cut'))
    assert job_journal.recover(journal, backend) == {}      # idempotent


def test_recovery_of_receiving_jobs_tells_ran_from_never_ran(rundir):
    """A receiving job's journal says whether "go" arrived: before it the
    guest cannot have run here (failed); after it, an unpaused domain or a
    journaled "running" is the guest running here, a paused one is
    unknown -- the source must not be resumed on this host's word."""
    backend = fakes.FakeBackend()
    ran = backend.add_domain('vm-ran', hvm=True)
    held = backend.add_domain('vm-held', hvm=True)
    backend.pause(held)
    journal = job_journal.JobJournal(os.path.join(rundir, 'jobs'))
    journal.write('r1', kind='receive', state='running', domid=held)
    journal.write('r2', kind='receive', state='running', domid=ran,
                  phase='go')
    journal.write('r3', kind='receive', state='running', domid=held,
                  phase='go')
    journal.write('r4', kind='receive', state='running', domid=held,
                  phase='running')
    journal.write('r5', kind='receive', state='running', domid=999,
                  phase='go')
    settled = job_journal.recover(journal, backend)
    assert settled == {'r1': 'failed', 'r2': 'running', 'r3': 'unknown',
                       'r4': 'running', 'r5': 'unknown'}
    assert backend.domains[held].paused       # recovery never unpauses


def test_resume_source_only_after_an_unknown_switchover(rundir):
    from nova_xen_stubdom.dom0 import migration_calls  # noqa: F401
    from nova_xen_stubdom.dom0 import registry as plugin
    backend = fakes.FakeBackend()
    guest = backend.add_domain('vm-a', hvm=True)
    backend.pause(guest)
    agent = host.HostAgent(backend, HOST_UUID)
    agent.journal = job_journal.JobJournal(os.path.join(rundir, 'jobs'))
    agent.journal.write('s1', kind='send', state='failed', domid=guest)
    agent.journal.write('s2', kind='send', state='unknown', domid=guest,
                        phase='go')
    with pytest.raises(errors.AgentError, match='only a job whose '
                       'switch-over is unknown'):
        plugin.call(agent, plugin.PLUGIN, 'migrate_resume_source',
                    {'id': 's1'})
    with pytest.raises(errors.InvalidArgument):
        plugin.call(agent, plugin.PLUGIN, 'migrate_resume_source',
                    {'id': 'nope'})
    assert backend.domains[guest].paused
    out = json.loads(plugin.call(agent, plugin.PLUGIN,
                                 'migrate_resume_source', {'id': 's2'}))
    assert out['state'] == 'failed'
    assert not backend.domains[guest].paused
    assert agent.journal.read('s2')['state'] == 'failed'
    # a second call finds nothing unknown left to resume
    with pytest.raises(errors.AgentError):
        plugin.call(agent, plugin.PLUGIN, 'migrate_resume_source',
                    {'id': 's2'})


def _spawn(conf, inv):
    return subprocess.Popen(
        [sys.executable, '-m', 'nova_xen_stubdom.dom0.daemon', '--config',
         conf, '--inventory', inv], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True)


def _wait_ready(proc, timeout=60.0):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, 'daemon not ready within %.0f s' % timeout
    line = proc.stdout.readline()
    assert line.startswith('ready '), (line, proc.stderr.read()
                                       if proc.poll() is not None else '')


def test_kill_9_mid_job_then_restart(rundir, tmp_path):
    inv = tmp_path / 'inventory'
    inv.write_text("INSTALLATION_UUID='%s'\n" % HOST_UUID)
    sock = os.path.join(rundir, 'agent.sock')
    state = os.path.join(rundir, 'state')
    conf = tmp_path / 'agent.conf'
    conf.write_text('[agent]\nbackend = %s\nsocket_path = %s\n'
                    'state_dir = %s\n' % (FAKE, sock, state))
    first = _spawn(str(conf), str(inv))
    procs = [first]
    try:
        _wait_ready(first)
        assert proto.call(sock, 'stubdom_wiring', {'stubdom_domid': '0'})
        # a migration the daemon is in the middle of (journaled as the
        # real job journals it), then the daemon dies without a word
        cfg = config.load(str(conf))
        journal = job_journal.JobJournal(os.path.join(cfg.state_dir,
                                                      'jobs'))
        journal.write('job-1', kind='send', state='running', domid=0,
                      phase='pausing')
        second = _spawn(str(conf), str(inv))
        procs.append(second)
        assert second.wait(60) == 1
        assert 'another nova-xen-stubdom daemon' in second.stderr.read()
        first.send_signal(signal.SIGKILL)
        first.wait(60)
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)    # left behind
        with pytest.raises(proto.DaemonUnavailable):
            proto.call(sock, 'stubdom_wiring', {'stubdom_domid': '0'})
        third = _spawn(str(conf), str(inv))
        procs.append(third)
        _wait_ready(third)
        # no loss: the job is answered, failed cleanly, not forgotten
        status = json.loads(proto.call(sock, 'migrate_status',
                                       {'id': 'job-1'}))
        assert status['state'] == 'failed'
        assert 'restarted' in status['error']
        assert json.loads(proto.call(sock, 'migrate_forget',
                                     {'id': 'job-1'}))
        assert journal.read('job-1') is None
        third.send_signal(signal.SIGTERM)
        assert third.wait(60) == 0
        # no leak: the socket is gone, no temporary journal files remain
        assert not os.path.exists(sock)
        assert [n for n in os.listdir(os.path.join(state, 'jobs'))
                if n.startswith('.tmp-')] == []
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(60)
            p.stdout.close()
            p.stderr.close()


@pytest.mark.parametrize('qemu_state, paused_before', [
    ('running', False), ('saved', False), ('running', True)])
def test_recovery_lets_a_guest_run_after_a_cut_save(rundir, monkeypatch,
                                                    qemu_state,
                                                    paused_before):
    """save_image journals itself: a daemon killed while it waited for the
    stub's device state leaves the guest paused and the state disk
    attached; the restarted daemon clears both (tests/realxen d1-daemon.sh
    shows it on real Xen)."""
    from nova_xen_stubdom.dom0 import device_state
    backend = fakes.FakeBackend()
    guest = backend.add_domain('vm-s', hvm=True)
    stub = backend.add_domain('stub-vm', hvm=False)
    backend.pause(guest)
    backend.xs_write('/local/domain/%d/image/device-model-domid' % guest,
                     str(stub))
    d = device_state.dm_path(stub, guest)
    for node, value in (('command', 'save'), ('state-disk', 'xvdz'),
                        ('state', qemu_state)):
        backend.xs_write(d + '/' + node, value)
    tmp = os.path.join(rundir, 'tmp')
    os.makedirs(tmp)
    monkeypatch.setattr(tempfile, 'tempdir', tmp)
    for name in ('nxs-state-%d-ab12.img' % stub,
                 'nxs-state-%d-ab12.img' % (stub + 10)):
        open(os.path.join(tmp, name), 'w').close()
    journal = job_journal.JobJournal(os.path.join(rundir, 'jobs'))
    journal.write('save-vm-s', kind='save', state='running', domid=guest,
                  phase='device-saving', paused_before=paused_before)
    resumed = []
    assert job_journal.recover(journal, backend, resumed.append) == {
        'save-vm-s': 'failed'}
    assert backend.domains[guest].paused == paused_before
    assert backend.xs_read(d + '/command') is None
    assert backend.xs_read(d + '/state-disk') is None
    assert ('detach_disk', stub, 'xvdz') in backend.calls
    assert os.listdir(tmp) == ['nxs-state-%d-ab12.img' % (stub + 10)]
    assert resumed == ([guest] if qemu_state == 'saved' else [])
    assert journal.read('save-vm-s') is None    # nobody asks later


def test_recovery_of_a_save_cut_before_the_device_state(rundir):
    backend = fakes.FakeBackend()
    guest = backend.add_domain('vm-s', hvm=True)
    backend.pause(guest)
    journal = job_journal.JobJournal(os.path.join(rundir, 'jobs'))
    journal.write('save-vm-s', kind='save', state='running', domid=guest,
                  phase='saving', paused_before=False)
    assert job_journal.recover(journal, backend) == {'save-vm-s': 'failed'}
    assert not backend.domains[guest].paused
    assert not [c for c in backend.calls if c[0] == 'detach_disk']
