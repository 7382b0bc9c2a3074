"""The device-model wrapper process entry (what xenopsd runs for QEMU)."""
import json
import socket
import threading
import time

import pytest

from nova_xen_stubdom.dom0 import dm_wrapper as dwm
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import host
from nova_xen_stubdom.dom0 import stubdom_link as stubdom
from nova_xen_stubdom.dom0 import xapi_plugin
from tests.unit.dom0 import fakes

GUEST_UUID = '6f1c1d9e-2b1e-4a57-9d53-2f0f5b7c0a01'
CONFIG = {'name': 'instance-00000001', 'memory_mb': 512, 'vcpus': 1,
          'vga': 'std', 'firmware': 'bios', 'boot': 'cd',
          'disks': [{'bus': 'ide', 'index': 0}], 'nics': []}


def _argv(domid, tmp_path):
    return [str(domid), '-xen-domid', str(domid),
            '-chardev', 'socket,id=libxl-cmd,path=%s/qmp-%d,server=on,'
                        'wait=off' % (tmp_path, domid),
            '-mon', 'chardev=libxl-cmd,mode=control',
            '-chardev', 'socket,id=serial0,path=%s/serial,server' % tmp_path,
            '-uuid', GUEST_UUID, '-machine', 'xenfv']


@pytest.fixture(autouse=True)
def no_host_conf(tmp_path, monkeypatch):
    monkeypatch.setattr(xapi_plugin, 'AGENT_CONF', str(tmp_path / 'none'))


def test_parse_argv(tmp_path):
    argv = _argv(7, tmp_path) + ['-qmp', 'unix:/run/xen/qmp-event-7,server,'
                                         'nowait']
    parsed = dwm.parse_argv(argv)
    assert parsed.domid == 7 and parsed.vm_uuid == GUEST_UUID
    # the serial chardev is not a monitor
    assert parsed.qmp_paths == ['%s/qmp-7' % tmp_path,
                                '/run/xen/qmp-event-7']
    assert dwm.parse_argv(['9', '-m', '512']).domid == 9
    with pytest.raises(errors.InvalidArgument):
        dwm.parse_argv(['-m', '512'])
    with pytest.raises(errors.InvalidArgument):
        dwm.parse_argv(['-xen-domid', 'seven'])


def test_refused_without_stubdom(tmp_path, capsys):
    agent = host.HostAgent(fakes.FakeBackend(), 'h')
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    execs = []
    rc = dwm.main(_argv(guest, tmp_path), agent=agent,
                  execv=lambda *a: execs.append(a))
    assert rc == 1 and execs == []
    assert 'refusing to start a device model in dom0' in \
        capsys.readouterr().err


def test_dom0_qemu_when_host_allows(tmp_path):
    agent = host.HostAgent(fakes.FakeBackend(), 'h',
                           allow_dom0_device_model=True)
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    execs = []
    argv = _argv(guest, tmp_path)
    assert dwm.main(argv, agent=agent,
                    execv=lambda *a: execs.append(a)) == 0
    assert execs == [(dwm.DEFAULT_DOM0_QEMU,
                      [dwm.DEFAULT_DOM0_QEMU] + argv)]


def _linked(tmp_path):
    agent = host.HostAgent(fakes.FakeBackend(), 'h')
    stub = agent.backend.add_domain('stub-vm', hvm=False)
    stubdom.link(agent, stub, GUEST_UUID, CONFIG)
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    return agent, stub, guest


def _stub_qemu(agent, stub, guest, state='running'):
    """Stand-in for the stub domain's QEMU: reports once it has a target."""
    def run():
        for _ in range(500):
            if agent.backend.xs_read('/local/domain/%d/target' % stub):
                agent.backend.xs_write(
                    stubdom.dm_state_path(stub, guest), state)
                return
            time.sleep(0.01)
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


def _connect(path):
    for _ in range(500):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.settimeout(10)
            return s, s.makefile('rwb')
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            time.sleep(0.01)
    raise AssertionError('no QMP socket at %s' % path)


def _cmd(f, execute, **extra):
    f.write(json.dumps(dict(execute=execute, **extra)).encode() + b'\n')
    f.flush()
    return json.loads(f.readline())


def test_stubdom_mode_serves_qmp_until_quit(tmp_path):
    agent, stub, guest = _linked(tmp_path)
    _stub_qemu(agent, stub, guest)
    t, out = _start(agent, _argv(guest, tmp_path))
    s, f = _connect('%s/qmp-%d' % (tmp_path, guest))
    with s:
        greeting = json.loads(f.readline())
        assert 'stub domain %d' % stub in \
            greeting['QMP']['version']['package']
        assert _cmd(f, 'qmp_capabilities') == {'return': {}}
        st = _cmd(f, 'query-status', id='a')
        assert st == {'return': {'status': 'running', 'running': True,
                                 'singlestep': False}, 'id': 'a'}
        agent.backend.pause(guest)
        assert _cmd(f, 'query-status')['return']['status'] == 'paused'
        err = _cmd(f, 'device_add', arguments={'driver': 'usb-tablet'})
        assert err['error']['class'] == 'GenericError'
        assert 'stub domain %d' % stub in err['error']['desc']
        be = agent.backend
        # xenopsd's view: the device model is running (dom0 path mirrored)
        assert be.xs_read(dwm.DOM0_STATE_PATH % guest) == 'running'
        assert be.xs_read('/local/domain/%d/target' % stub) == str(guest)
        assert _cmd(f, 'quit') == {'return': {}}
    t.join(10)
    assert out['rc'] == 0
    assert be.xs_read(dwm.DOM0_STATE_PATH % guest) is None
    assert be.xs_read('/local/domain/%d/target' % stub) is None
    assert not (tmp_path / ('qmp-%d' % guest)).exists()
    # the link stays for the next guest domain (reboot)
    assert stubdom.pending_link(agent, GUEST_UUID) is not None


def test_stubdom_qemu_error_fails_and_unwinds(tmp_path, capsys):
    agent, stub, guest = _linked(tmp_path)
    _stub_qemu(agent, stub, guest, state='error')
    t, out = _start(agent, _argv(guest, tmp_path))
    t.join(20)
    assert out['rc'] == 1
    assert 'did not start: state error' in capsys.readouterr().err
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None


def test_guest_gone_or_sigterm_ends_the_wrapper(tmp_path):
    agent, stub, guest = _linked(tmp_path)
    _stub_qemu(agent, stub, guest)
    t, out = _start(agent, _argv(guest, tmp_path))
    s, f = _connect('%s/qmp-%d' % (tmp_path, guest))
    s.close()
    del agent.backend.domains[guest]
    t.join(10)
    assert out['rc'] == 0
    assert agent.backend.xs_read('/local/domain/%d/target' % stub) is None

    agent, stub, guest = _linked(tmp_path)
    _stub_qemu(agent, stub, guest)
    stop = threading.Event()
    t, out = _start(agent, _argv(guest, tmp_path), stop)
    s, f = _connect('%s/qmp-%d' % (tmp_path, guest))
    s.close()
    stop.set()
    t.join(10)
    assert out['rc'] == 0


def test_qmp_facade_replies(tmp_path):
    agent, stub, guest = _linked(tmp_path)
    facade = dwm.QmpFacade(agent, guest, stub, [])
    names = [c['name'] for c in facade.handle(
        {'execute': 'query-commands'})['return']]
    assert names == list(dwm.QMP_COMMANDS)
    # the stub domain's QEMU has not reported yet: not running
    assert facade.handle({'execute': 'query-status'})['return'][
        'status'] == 'paused'
    err = facade.handle({'execute': 'xen-save-devices-state', 'id': 7})
    assert err['id'] == 7 and 'stub domain' in err['error']['desc']
    a, b = socket.socketpair()
    with a, b:
        t = threading.Thread(target=facade._serve, args=(a,), daemon=True)
        t.start()
        f = b.makefile('rwb')
        assert 'QMP' in json.loads(f.readline())
        f.write(b'{not json\n[1]\n')
        f.flush()
        for _ in range(2):
            assert json.loads(f.readline())['error']['class'] == \
                'GenericError'
        b.shutdown(socket.SHUT_WR)
        t.join(5)
        assert not t.is_alive()


def test_wrapper_asks_the_daemon_when_it_runs(tmp_path):
    """With the host's daemon up, the daemon decides and owns the link;
    the wrapper's own agent only reads."""
    import shutil
    import tempfile

    from nova_xen_stubdom.dom0 import config
    from nova_xen_stubdom.dom0 import daemon

    run = tempfile.mkdtemp(prefix='nxs-')
    try:
        sock = run + '/agent.sock'
        backend = fakes.FakeBackend()
        guest = backend.add_domain(GUEST_UUID, hvm=True)
        d = daemon.Daemon(host.HostAgent(backend, 'h',
                                         allow_dom0_device_model=True),
                          sock, run + '/state')
        d.start()
        try:
            # the wrapper's agent forbids dom0 QEMU; the daemon's policy
            # (the host's) allows it, and it is the daemon that decides
            mine = host.HostAgent(backend, 'h', config=config.AgentConfig(
                socket_path=sock))
            execs = []
            assert dwm.main(_argv(guest, tmp_path), agent=mine,
                            execv=lambda *a: execs.append(a)) == 0
            assert execs and execs[0][0] == dwm.DEFAULT_DOM0_QEMU
        finally:
            d.stop()
    finally:
        shutil.rmtree(run, ignore_errors=True)
