"""kill -9 of the dom0 daemon in the middle of a stub-domain start.

Real processes: the daemon (``python -m nova_xen_stubdom.dom0.daemon``)
and a "hypervisor" process that holds the domains and xenstore, as Xen
and xenstored do on a real host (:mod:`tests.unit.dom0.remote_backend`).
The daemon is stopped inside ``link_stubdom`` -- holding the guest's file
lock, the link half written to xenstore -- and killed there.  After a
restart nothing is lost (both domains, the half-written link, answered and
completed by the retry the driver makes) and nothing leaks (no stuck
lock, no stale socket, no journal entry or temporary file, no xenstore
node once the driver unlinks).

What :mod:`tests.unit.dom0.test_daemon` covers already: a second daemon
refused, kill -9 with a migration job journaled as running, the job
answered "failed" after the restart, the stale socket replaced.
"""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from nova_xen_stubdom.dom0 import daemon_protocol as proto
from nova_xen_stubdom.dom0 import host
from tests.unit.dom0 import remote_backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
HOST_UUID = '0b7ef0a6-6d0c-4a8e-9a55-0f3c1d8e2a11'
GUEST = 'guest-vm-1'
LINKS = '/nova-xen-stubdom/links/' + GUEST
CONFIG = json.dumps({'memory_mb': 128, 'vcpus': 1})


@pytest.fixture
def hypervisor():
    # AF_UNIX paths are short (108 bytes): not under pytest's tmp_path
    run = tempfile.mkdtemp(prefix='nxs-')
    key = os.urandom(16)
    mgr = remote_backend.start(os.path.join(run, 'hv.sock'), key)
    try:
        yield run, key, mgr
    finally:
        mgr.shutdown()
        shutil.rmtree(run, ignore_errors=True)


def _spawn(run, key, conf, inv):
    env = dict(os.environ)
    env[remote_backend.ADDRESS_ENV] = os.path.join(run, 'hv.sock')
    env[remote_backend.AUTHKEY_ENV] = key.hex()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'nova_xen_stubdom.dom0.daemon', '--config',
         conf, '--inventory', inv], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ''
    if not line.startswith('ready '):
        proc.kill()
        proc.wait(60)
        pytest.fail('daemon not ready: %r %s' % (line, proc.stderr.read()))
    return proc


def _lock_is_free(path):
    try:
        with host.file_lock(path, blocking=False):
            return True
    except BlockingIOError:
        return False


def test_kill_9_mid_stubdom_link_then_restart(hypervisor, tmp_path):
    run, key, mgr = hypervisor
    backend, gate = mgr.backend(), mgr.gate()
    stub = backend.add_domain('stub-vm-1', False)
    guest = backend.add_domain(GUEST, True)
    inv = tmp_path / 'inventory'
    inv.write_text("INSTALLATION_UUID='%s'\n" % HOST_UUID)
    sock = os.path.join(run, 'agent.sock')
    state = os.path.join(run, 'state')
    conf = tmp_path / 'agent.conf'
    conf.write_text('[agent]\nbackend = tests.unit.dom0.remote_backend:'
                    'connect\nsocket_path = %s\nstate_dir = %s\n'
                    % (sock, state))
    args = {'stubdom_domid': str(stub), 'guest_vm_uuid': GUEST,
            'config': CONFIG}
    procs = []
    try:
        first = _spawn(run, key, str(conf), str(inv))
        procs.append(first)
        # the link stops in the hypervisor, between its two xenstore writes
        gate.arm('/config')
        outcome = {}

        def link():
            try:
                outcome['ok'] = proto.call(sock, 'link_stubdom', args)
            except Exception as exc:
                outcome['error'] = exc
        caller = threading.Thread(target=link)
        caller.start()
        assert gate.wait_reached(60), 'link_stubdom never reached xenstore'
        lock = os.path.join(state, 'locks', host._lock_name(GUEST))
        assert not _lock_is_free(lock)      # held by the daemon right now

        first.send_signal(signal.SIGKILL)
        first.wait(60)
        gate.release(True)      # the dead daemon's write never happens
        caller.join(60)
        assert isinstance(outcome.get('error'), proto.DaemonUnavailable)

        # what the crash left: the stale socket, a half-written link; the
        # kernel dropped the guest's lock; both domains still run
        assert os.path.exists(sock)
        assert _lock_is_free(lock)
        assert backend.domain_ids() == [0, stub, guest]
        assert backend.xs_items(LINKS) == {LINKS + '/stubdom-domid':
                                           str(stub)}

        second = _spawn(run, key, str(conf), str(inv))
        procs.append(second)
        # no loss: the driver's retry finds the half link (xenstore) and
        # completes it; the guest is not locked out
        out = json.loads(proto.call(sock, 'link_stubdom', args))
        assert out == {'stubdom_domid': stub, 'guest_vm_uuid': GUEST}
        assert json.loads(backend.xs_items(LINKS)[LINKS + '/config']) == \
            json.loads(CONFIG)
        # a different stub domain still may not take the guest
        other = backend.add_domain('stub-vm-2', False)
        with pytest.raises(proto.RemoteError) as exc:
            proto.call(sock, 'link_stubdom', dict(args,
                                                  stubdom_domid=str(other)))
        assert exc.value.code == 'STUBDOM_LINK_FAILED'
        # no leak: the driver's clean-up (unlink, as on a failed spawn)
        # leaves nothing of the link in xenstore
        proto.call(sock, 'unlink_stubdom', {'guest_vm_uuid': GUEST})
        assert backend.xs_items('/nova-xen-stubdom/') == {}
        assert backend.domain_ids() == [0, stub, guest, other]

        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        assert not os.path.exists(sock)
        jobs = os.path.join(state, 'jobs')
        assert os.listdir(jobs) == []       # no journal entry, no .tmp-
        assert _lock_is_free(lock)
    finally:
        gate.release(True)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(60)
            p.stdout.close()
            p.stderr.close()
