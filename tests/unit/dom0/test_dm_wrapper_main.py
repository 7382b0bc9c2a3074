"""The device-model wrapper process entry (what xenopsd runs for QEMU).

The argv and the QMP conversations are xenopsd's, written down from its
source in :mod:`tests.unit.dom0.xenopsd_model` (each one cited there):
``<domid> --syslog <QEMU args>`` (xen-api ``ocaml/xenopsd/xc/device.ml``
``Dm_Common.prepend_wrapper_args``), one command per connection
(``device_common.ml`` ``qmp_send_cmd``), ``cont`` on the event socket
(``QMP_Event.add``).
"""
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from nova_xen_stubdom.dom0 import dm_wrapper as dwm
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import host
from nova_xen_stubdom.dom0 import qmp_endpoint
from nova_xen_stubdom.dom0 import stubdom_link as stubdom
from nova_xen_stubdom.dom0 import xapi_plugin
from nova_xen_stubdom.dom0.config import AgentConfig
from tests import waiting
from tests.unit.dom0 import fakes
from tests.unit.dom0 import xenopsd_model as xenopsd

GUEST_UUID = '6f1c1d9e-2b1e-4a57-9d53-2f0f5b7c0a01'
OTHER_UUID = '0c4b9a52-91b7-4d0e-8f4e-3a5d2b7e6c11'
CONFIG = {'name': 'instance-00000001', 'memory_mb': 512, 'vcpus': 1,
          'vga': 'std', 'firmware': 'bios', 'boot': 'cd',
          'disks': [{'bus': 'ide', 'index': 0}], 'nics': []}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

RECORDER = '''#!%s
import json, os, sys
with open(os.environ['NXS_STOCK_RECORD'], 'w') as f:
    json.dump({'pid': os.getpid(), 'argv': sys.argv}, f)
sys.exit(7)
'''


@pytest.fixture(autouse=True)
def no_host_conf(tmp_path, monkeypatch):
    monkeypatch.setattr(xapi_plugin, 'AGENT_CONF', str(tmp_path / 'none'))


@pytest.fixture
def run(tmp_path):
    """Stands in for /var/run/xen."""
    d = tmp_path / 'run-xen'
    d.mkdir()
    return str(d)


@pytest.fixture
def stock(tmp_path):
    """A stock wrapper that records its pid and argv, then exits 7."""
    path = tmp_path / 'qemu-wrapper'
    path.write_text(RECORDER % sys.executable)
    path.chmod(0o755)
    return str(path)


def _reexecuted(domid, argv):
    """sys.argv[1:] of the wrapper after it re-executed itself."""
    return [dwm.REEXEC_FLAG, dwm.DM_CMDLINE_ITEM % domid] + argv


def _agent(stock_path='', **policy):
    return host.HostAgent(fakes.FakeBackend(), 'h', config=AgentConfig(
        stock_dm_wrapper=stock_path, socket_path='/nonexistent/agent.sock'),
        **policy)


def _guest(agent, uuid=GUEST_UUID):
    """A guest domain as xenopsd's Domain.make leaves it."""
    domid = agent.backend.add_domain(uuid, hvm=True)
    agent.backend.xs_write('/local/domain/%d/vm' % domid, '/vm/%s' % uuid)
    return domid


def _linked(stock_path=''):
    agent = _agent(stock_path)
    stub = agent.backend.add_domain('stub-vm', hvm=False)
    stubdom.link(agent, stub, GUEST_UUID, CONFIG)
    return agent, stub, _guest(agent)


# -- argv ---------------------------------------------------------------------
def test_parse_xenopsd_argv(run):
    parsed = dwm.parse_argv(xenopsd.argv(7, run))
    assert parsed.domid == 7 and parsed.vm_uuid is None
    assert parsed.qmp_paths == ['%s/qmp-libxl-7' % run,
                                '%s/qmp-event-7' % run]
    assert parsed.pidfile == '%s/qemu-dm-7.pid' % run
    assert parsed.loadvm is None
    restore = dwm.parse_argv(xenopsd.argv(7, run, restore=True))
    assert restore.loadvm == '%s/qemu-resume.7' % run
    # a chardev monitor (libxl's form) counts, a serial socket does not
    parsed = dwm.parse_argv(['9', '-chardev', 'socket,id=m,path=/p/m,server',
                             '-mon', 'chardev=m,mode=control',
                             '-chardev', 'socket,id=s,path=/p/s,server'])
    assert parsed.domid == 9 and parsed.qmp_paths == ['/p/m']
    with pytest.raises(errors.InvalidArgument):
        dwm.parse_argv(['--syslog', '-m', '512'])
    with pytest.raises(errors.InvalidArgument):
        dwm.parse_argv(['-xen-domid', 'seven'])


# -- VMs we do not manage -----------------------------------------------------
def test_unmanaged_vm_becomes_the_stock_wrapper_with_argv_unchanged(
        tmp_path, run, stock):
    """A real exec in a child process: the stock wrapper runs as that very
    process (same pid: nothing forked or left behind) with xenopsd's argv
    exactly, and its exit status is the child's."""
    argv = xenopsd.argv(5, run)
    spec = tmp_path / 'spec.json'
    spec.write_text(json.dumps({
        'domains': [[5, OTHER_UUID, True]],
        'xenstore': {'/local/domain/5/vm': '/vm/' + OTHER_UUID,
                     '/local/domain/5/platform/device-model':
                         'qemu-upstream-compat'},
        'config': {'stock_dm_wrapper': stock,
                   'socket_path': str(tmp_path / 'no.sock')},
        'argv': argv}))
    record = tmp_path / 'record.json'
    env = dict(os.environ, NXS_STOCK_RECORD=str(record),
               PYTHONPATH=ROOT)
    child = subprocess.Popen(
        [sys.executable, '-m', 'tests.unit.dom0.dm_wrapper_child',
         str(spec)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 7, err.decode()
    got = json.loads(record.read_text())
    assert got['argv'] == [stock] + argv
    assert got['pid'] == child.pid
    assert not os.listdir(run)          # no socket, no pidfile of ours


def test_unmanaged_vm_stock_wrapper_missing_or_unusable(run, stock, tmp_path,
                                                        capsys, monkeypatch):
    execs = []
    for path, why in ((str(tmp_path / 'nope'), 'does not exist'),
                      ('', dwm.DEFAULT_STOCK_DM_WRAPPER),
                      (str(tmp_path), 'is not a file')):
        agent = _agent(path)
        domid = _guest(agent, OTHER_UUID)
        rc = dwm.main(xenopsd.argv(domid, run), agent=agent,
                      execv=lambda *a: execs.append(a))
        assert rc == 1 and why in capsys.readouterr().err
    os.chmod(stock, 0o644)
    agent = _agent(stock)
    domid = _guest(agent, OTHER_UUID)
    assert dwm.main(xenopsd.argv(domid, run), agent=agent,
                    execv=lambda *a: execs.append(a)) == 1
    assert 'is not executable' in capsys.readouterr().err
    # xenopsd.conf and agent.conf pointing at each other would loop
    os.chmod(stock, 0o755)
    monkeypatch.setattr(sys, 'argv', [stock])
    assert dwm.main(xenopsd.argv(domid, run), agent=agent,
                    execv=lambda *a: execs.append(a)) == 1
    assert 'is this wrapper itself' in capsys.readouterr().err
    assert execs == []


def test_unknown_domid_is_an_error(run, stock, capsys):
    agent = _agent(stock)
    execs = []
    rc = dwm.main(xenopsd.argv(42, run), agent=agent,
                  execv=lambda *a: execs.append(a))
    assert rc == 1 and execs == []
    assert 'no domain 42 on this host' in capsys.readouterr().err


def test_stock_default_path_when_config_is_empty(run, stock, monkeypatch):
    monkeypatch.setattr(dwm, 'DEFAULT_STOCK_DM_WRAPPER', stock)
    agent = _agent('')
    domid = _guest(agent, OTHER_UUID)
    execs = []
    assert dwm.main(xenopsd.argv(domid, run), agent=agent,
                    execv=lambda *a: execs.append(a)) == 0
    assert execs == [(stock, [stock] + xenopsd.argv(domid, run))]


# -- our VMs: who is ours, registration ---------------------------------------
def test_ours_reexecutes_with_the_name_xenopsd_looks_for(run):
    """xenopsd accepts a device model's pid only with ``qemu-dm-<domid>``
    in /proc/<pid>/cmdline (service.ml ``DaemonMgmt.is_cmdline_valid``)."""
    agent, stub, guest = _linked()
    argv = xenopsd.argv(guest, run)
    execs = []
    assert dwm.main(argv, agent=agent,
                    execv=lambda *a: execs.append(a)) == 0
    [(path, args)] = execs
    assert path == sys.executable and args[0] == sys.executable
    assert args[1] == '-c'
    assert args[3:] == _reexecuted(guest, argv)
    assert 'qemu-dm-%d' % guest in args
    # nothing linked before the re-exec
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None
    # the re-executed program runs main() from anywhere: an empty argv
    # after the marker fails on the missing domid, not on an import
    out = subprocess.run(args[:3] + [dwm.REEXEC_FLAG, 'qemu-dm-0'],
                         cwd='/', stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=60)
    assert out.returncode == 1
    assert b'missing from the device model command line' in out.stderr


def test_our_marked_guest_without_link_is_refused_or_goes_to_stock(
        run, stock, capsys):
    """Ours by the driver's platform:stubdom key (xenopsd's Domain.make
    copies the platform map into xenstore) but no stub domain linked."""
    agent = _agent(stock)
    guest = _guest(agent)
    agent.backend.xs_write('/local/domain/%d/platform/stubdom' % guest,
                           OTHER_UUID)
    argv = xenopsd.argv(guest, run)
    execs = []
    assert dwm.main(_reexecuted(guest, argv), agent=agent,
                    execv=lambda *a: execs.append(a)) == 1
    assert 'refusing to start a device model in dom0' in \
        capsys.readouterr().err
    assert execs == []
    allowed = _agent(stock, allow_dom0_device_model=True)
    allowed.backend = agent.backend
    assert dwm.main(_reexecuted(guest, argv), agent=allowed,
                    execv=lambda *a: execs.append(a)) == 0
    assert execs == [(stock, [stock] + argv)]


def test_xenopsd_restore_of_our_guest_is_refused(run, capsys):
    agent, stub, guest = _linked()
    argv = xenopsd.argv(guest, run, restore=True)
    assert dwm.main(argv, agent=agent, execv=lambda *a: None) == 1
    assert 'own save image' in capsys.readouterr().err
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None


# -- our VMs: serving xenopsd -------------------------------------------------
def _stub_qemu(agent, stub, guest, state='running'):
    """Stand-in for the stub domain's QEMU: reports once it has a target."""
    def run():
        waiting.wait_until(
            lambda: agent.backend.xs_read('/local/domain/%d/target' % stub),
            'the stub domain to be linked')
        agent.backend.xs_write(stubdom.dm_state_path(stub, guest), state)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _start(agent, argv, stop=None):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault(
        'rc', dwm.main(argv, agent=agent,
                       stop_event=stop or threading.Event())), daemon=True)
    t.start()
    return t, out


def _event_socket_up(path):
    """``Dm.wait_event_socket``: connect until it succeeds."""
    def attempt():
        if not os.path.exists(path):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()
    waiting.wait_until(attempt, 'the QMP event socket %s' % path)


def _pidfile_as_xenopsd_sees_it(path):
    """(pid, held): ``DaemonMgmt.pid`` reads the pid and takes the file for
    a dead process's if it can lock it.  From another process: POSIX locks
    are per process, and closing any descriptor of the file in the
    wrapper's own process (this one, in the test) would drop its lock."""
    code = ('import fcntl, sys\nf = open(sys.argv[1], "r+")\n'
            'print(f.read().strip())\ntry:\n'
            '    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n'
            'except OSError:\n    sys.exit(3)\n')
    proc = subprocess.run([sys.executable, '-c', code, path],
                          stdout=subprocess.PIPE, timeout=60)
    return int(proc.stdout), proc.returncode == 3


def test_xenopsd_conversation_with_our_guest(run, tmp_path):
    """VM.start, then everything else xenopsd can send, in its order:
    Dm.init_daemon (event socket, QMP_Event.add: negotiate + cont),
    Device.Serial.update_xenstore (is_running, then query-chardev),
    Dm.assert_can_suspend (query-migratable), Dm.suspend (add-fd with an
    fd), CD change (eject, add-fd, blockdev-change-medium), PCI.add,
    Vusb (qom-list, device_add, device_del), Vcpu.set
    (query-hotpluggable-cpus, device_add), and Service.Qemu.stop
    (SIGTERM)."""
    agent, stub, guest = _linked()
    be = agent.backend
    _stub_qemu(agent, stub, guest)
    stop = threading.Event()
    t, out = _start(agent, _reexecuted(guest, xenopsd.argv(guest, run)),
                    stop)
    libxl = '%s/qmp-libxl-%d' % (run, guest)
    event_path = '%s/qmp-event-%d' % (run, guest)
    _event_socket_up(event_path)
    events = xenopsd.event_channel(event_path)
    assert events.read() == {'return': {}}          # the cont
    # Service.Qemu.pid: the pidfile (locked) or qemu-pid, and cmdline
    pidfile = '%s/qemu-dm-%d.pid' % (run, guest)
    assert _pidfile_as_xenopsd_sees_it(pidfile) == (os.getpid(), True)
    assert be.xs_read('/local/domain/%d/qemu-pid' % guest) == \
        str(os.getpid())
    assert be.xs_read(dwm.DOM0_STATE_PATH % guest) == 'running'
    assert be.xs_read('/local/domain/%d/target' % stub) == str(guest)
    # Serial.update_xenstore: chardevs, none of them a serial0 pty
    chardevs = xenopsd.send_cmd(libxl, guest, 'query-chardev')['return']
    assert [c['label'] for c in chardevs] == ['compat_monitor0',
                                              'compat_monitor1']
    assert all(set(c) == {'label', 'filename', 'frontend-open'}
               for c in chardevs)
    status = xenopsd.send_cmd(libxl, guest, 'query-status')['return']
    assert status['status'] == 'running'
    # assert_can_suspend: an error that is not CommandNotFound (which
    # xenopsd would take for "QEMU too old" and let the migration go on)
    mig = xenopsd.send_cmd(libxl, guest, 'query-migratable')
    assert mig['error']['class'] == 'GenericError'
    assert 'CommandNotFound' not in json.dumps(mig)
    assert 'nova-xen-stubdom' in mig['error']['desc']
    # Dm.suspend / CD change: add-fd comes with an fd; refused, not taken
    r, w = os.pipe()
    try:
        reply = xenopsd.send_cmd(libxl, guest, 'add-fd', send_fd=r)
    finally:
        os.close(r)
        os.close(w)
    assert 'stub domain %d' % stub in reply['error']['desc']
    for execute, arguments in (
            ('eject', {'device': 'ide1-cd0', 'force': True}),
            ('blockdev-change-medium', {'device': 'ide1-cd0',
                                        'filename': '/dev/fdset/1',
                                        'format': 'raw'}),
            ('device_add', {'driver': 'xen-pci-passthrough',
                            'id': 'pci-pt-81_00.0',
                            'hostaddr': '0000:81:00.0',
                            'permissive': False}),
            ('qom-list', {'path': '/machine/peripheral'}),
            ('device_add', {'driver': 'usb-host', 'id': 'usb1',
                            'bus': 'ehci.0', 'hostbus': '1',
                            'hostport': '2'}),
            ('device_del', {'id': 'usb1'}),
            ('query-hotpluggable-cpus', None),
            ('stop', None),
            ('xen-save-devices-state', {'filename': '/dev/fdset/1'}),
            ('remove-fd', {'fdset-id': 1})):
        reply = xenopsd.send_cmd(libxl, guest, execute, arguments)
        assert reply['error']['class'] == 'GenericError', execute
        assert execute in reply['error']['desc']
    # never silence: an unknown command gets QEMU's own error
    reply = xenopsd.send_cmd(libxl, guest, 'human-monitor-command',
                             {'command-line': 'info pci'})
    assert reply['error']['class'] == 'CommandNotFound'
    events.close()
    stop.set()                      # Service.Qemu.stop's SIGTERM
    t.join(30)
    assert out['rc'] == 0
    assert be.xs_read('/local/domain/%d/qemu-pid' % guest) is None
    assert be.xs_read(dwm.DOM0_STATE_PATH % guest) is None
    assert be.xs_read('/local/domain/%d/target' % stub) is None
    assert os.listdir(run) == []
    # the link stays for the next guest domain (reboot)
    assert stubdom.pending_link(agent, GUEST_UUID) is not None


def test_pidfile_held_by_another_device_model_fails_and_unwinds(run, capsys):
    agent, stub, guest = _linked()
    pidfile = '%s/qemu-dm-%d.pid' % (run, guest)
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import fcntl, sys\nf = open(sys.argv[1], '
         '"w")\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint("locked", flush=True)'
         '\nsys.stdin.read()', pidfile],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b'locked'
        rc = dwm.main(_reexecuted(guest, xenopsd.argv(guest, run)),
                      agent=agent, stop_event=threading.Event())
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert rc == 1
    assert 'held by another process' in capsys.readouterr().err
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None
    assert agent.backend.xs_read('/local/domain/%d/qemu-pid' % guest) \
        is None


def test_stubdom_qemu_error_fails_and_unwinds(run, capsys):
    agent, stub, guest = _linked()
    _stub_qemu(agent, stub, guest, state='error')
    t, out = _start(agent, _reexecuted(guest, xenopsd.argv(guest, run)))
    t.join(60)
    assert out['rc'] == 1
    assert 'did not start: state error' in capsys.readouterr().err
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None
    assert agent.backend.xs_read('/local/domain/%d/qemu-pid' % guest) \
        is None
    assert os.listdir(run) == []


def test_sigterm_while_waiting_for_the_stub_qemu_unwinds(run, capsys):
    """Service.Qemu.stop may come before the stub domain's QEMU reports."""
    agent, stub, guest = _linked()
    stop = threading.Event()
    t, out = _start(agent, _reexecuted(guest, xenopsd.argv(guest, run)),
                    stop)
    waiting.wait_until(
        lambda: agent.backend.xs_read('/local/domain/%d/qemu-pid' % guest),
        'the wrapper to register as the device model')
    stop.set()
    t.join(30)
    assert out['rc'] == 1
    assert 'state stopped' in capsys.readouterr().err
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None
    assert agent.backend.xs_read('/local/domain/%d/qemu-pid' % guest) \
        is None
    assert os.listdir(run) == []


def test_guest_gone_ends_the_wrapper(run):
    agent, stub, guest = _linked()
    _stub_qemu(agent, stub, guest)
    t, out = _start(agent, _reexecuted(guest, xenopsd.argv(guest, run)))
    _event_socket_up('%s/qmp-event-%d' % (run, guest))
    del agent.backend.domains[guest]
    t.join(30)
    assert out['rc'] == 0
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None


def test_qmp_facade_replies():
    agent, stub, guest = _linked()
    facade = qmp_endpoint.QmpFacade(agent, guest, stub, [])
    names = [c['name'] for c in facade.handle(
        {'execute': 'query-commands'})['return']]
    assert names == list(dwm.QMP_COMMANDS)
    # the stub domain's QEMU has not reported yet: not running
    assert facade.handle({'execute': 'query-status'})['return'][
        'status'] == 'paused'
    err = facade.handle({'execute': 'xen-save-devices-state', 'id': 7})
    assert err['id'] == 7 and 'stub domain' in err['error']['desc']
    assert facade.handle({'execute': 42})['error']['class'] == \
        'CommandNotFound'
    a, b = socket.socketpair()
    with a, b:
        t = threading.Thread(target=facade._serve, args=(a,), daemon=True)
        t.start()
        f = b.makefile('rwb')
        assert 'QMP' in json.loads(f.readline().decode())
        f.write(b'{not json\n[1]\n\xff\n')
        f.flush()
        for _ in range(3):
            assert json.loads(f.readline().decode())['error']['class'] == \
                'GenericError'
        b.shutdown(socket.SHUT_WR)
        t.join(5)
        assert not t.is_alive()


def test_wrapper_asks_the_daemon_when_it_runs(run, stock):
    """With the host's daemon up, the daemon decides and owns the link;
    the wrapper's own agent only reads."""
    import shutil
    import tempfile

    from nova_xen_stubdom.dom0 import daemon

    tmp = tempfile.mkdtemp(prefix='nxs-')
    try:
        sock = tmp + '/agent.sock'
        backend = fakes.FakeBackend()
        guest = backend.add_domain(GUEST_UUID, hvm=True)
        backend.xs_write('/local/domain/%d/platform/stubdom' % guest,
                         OTHER_UUID)
        d = daemon.Daemon(host.HostAgent(backend, 'h',
                                         allow_dom0_device_model=True),
                          sock, tmp + '/state')
        d.start()
        try:
            # the wrapper's agent forbids dom0 QEMU; the daemon's policy
            # (the host's) allows it, and it is the daemon that decides
            mine = host.HostAgent(backend, 'h', config=AgentConfig(
                socket_path=sock, stock_dm_wrapper=stock))
            execs = []
            argv = xenopsd.argv(guest, run)
            assert dwm.main(_reexecuted(guest, argv), agent=mine,
                            execv=lambda *a: execs.append(a)) == 0
            assert execs == [(stock, [stock] + argv)]
        finally:
            d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
