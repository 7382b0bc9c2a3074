"""The simulated hypervisor seen from another process: the channel a
simulated host's daemon process reaches it through, and the lifeline that
ends the daemon when the simulator dies."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from nova_xen_stubdom.dom0.hypervisor import HypervisorBackend
from nova_xen_stubdom.sim import hypervisor_channel as channel
from nova_xen_stubdom.sim.backend import SimBackend
from tests import waiting


@pytest.fixture
def pair():
    import socket
    local = SimBackend(memory=1 << 30)
    ours, theirs = socket.socketpair()
    channel.serve(ours, local)
    remote = channel.RemoteSimBackend(os.dup(theirs.fileno()))
    theirs.close()
    try:
        yield local, remote
    finally:
        remote.close()
        local.close()


def test_remote_backend_is_the_simulated_hypervisor(pair):
    local, remote = pair
    domid = local.sim.create_domain('vm-1', True, 8 << 20)
    assert remote.sysfs_root == local.sysfs_root
    assert [d.domid for d in remote.list_domains()] == [0, domid]
    assert remote.domain_info(domid) == local.domain_info(domid)
    remote.xs_write('/local/domain/%d/data/x' % domid, 'y')
    assert local.xs_read('/local/domain/%d/data/x' % domid) == 'y'
    assert remote.get_hvm_params(domid) == local.get_hvm_params(domid)
    assert remote.get_hvm_context(domid) == local.get_hvm_context(domid)
    # guest memory is shared, not copied: a write on either side is seen
    mem = remote.map_memory(domid, writable=True)
    mem[4096:4100] = b'abcd'
    assert bytes(local.map_memory(domid)[4096:4100]) == b'abcd'
    mem.release()
    assert remote.map_memory(domid).readonly
    remote.enable_logdirty(domid)
    local.hypervisor.domain(domid).dirty([3])
    assert remote.fetch_dirty_bitmap(domid) == bytearray(b'\x08') + \
        bytearray(len(local.hypervisor.domain(domid).bitmap) - 1)
    assert not any(remote.fetch_dirty_bitmap(domid))    # cleared
    local.sim.destroy_domain(domid)


def test_remote_gaps_and_population_are_the_simulators(pair):
    """hole_runs gets a view the daemon mapped itself: the channel knows
    its domain; populate_physmap fills a gap for both sides."""
    local, remote = pair
    dom = local.hypervisor.create_domain('vm-x', True, 16 << 20, 1,
                                         layout='xen')
    view = remote.map_memory(dom.domid, writable=True)
    holes = remote.hole_runs(view)
    assert holes and holes == local.hole_runs(local.map_memory(dom.domid))
    first = holes[0][0]
    remote.populate_physmap(dom.domid, [first])
    assert remote.hole_runs(view) == local.hole_runs(
        local.map_memory(dom.domid))
    assert first not in [p for a, b in remote.hole_runs(view)
                         for p in range(a, b)]
    view.release()
    local.sim.destroy_domain(dom.domid)


def test_errors_come_back_as_the_local_types(pair):
    local, remote = pair
    with pytest.raises(KeyError, match='no domain 42'):
        remote.domain_info(42)
    with pytest.raises(KeyError):
        remote.map_memory(42)
    domid = local.sim.create_domain('vm-2', False, 4 << 20)
    with pytest.raises(ValueError, match='not HVM'):
        remote.get_hvm_context(domid)
    with pytest.raises(RuntimeError, match='log-dirty mode is off'):
        remote.fetch_dirty_bitmap(domid)
    # a fault injected on the simulator's backend reaches the remote caller
    local.sim.inject_fault('pause')
    with pytest.raises(OSError, match='injected failure of pause') as exc:
        remote.pause(domid)
    assert type(exc.value).__name__ == 'BackendFault'
    remote.pause(domid)                 # one failure only
    local.sim.destroy_domain(domid)
    with pytest.raises(ValueError, match='no hypervisor call'):
        remote._call('sim')


SIMULATOR = textwrap.dedent('''
    import json, os, sys, XenAPI
    os.environ['NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS'] = '1'
    from nova_xen_stubdom.sim import testing
    sim = testing.SimServer(hosts=1, username=testing.USERNAME,
                            password=testing.PASSWORD)
    sim.start()
    x = testing.login(sim)
    x.xenapi.host.call_plugin(x.xenapi.host.get_all()[0], 'nova_xen_stubdom',
                              'stubdom_wiring', {'stubdom_domid': '0'})
    host = sim.pools[0].hosts[0]
    from nova_xen_stubdom.sim import plugins
    print(json.dumps([host.dom0_process.pid, [
        host.dom0_process.run_dir, host.hypervisor.mem_dir,
        plugins.cloud_pki().dir]]))
    sys.stdout.flush()
    sys.stdin.read()        # until the test kills us
''')


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(') ')[-1][0] != 'Z'
    except OSError:
        return False


def test_daemon_does_not_outlive_a_killed_simulator():
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, PYTHONPATH=root)
    sim = subprocess.Popen([sys.executable, '-c', SIMULATOR], env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           universal_newlines=True)
    try:
        pid, leftovers = json.loads(sim.stdout.readline())
        assert _alive(pid) and pid != sim.pid
        sim.send_signal(signal.SIGKILL)     # no cleanup runs in it
        sim.wait(30)
        waiting.wait_until(lambda: not _alive(pid),
                           'the daemon to exit after its simulator died')
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait(30)
        sim.stdout.close()
        sim.stdin.close()
    import shutil
    for path in leftovers:      # what the killed simulator could not remove
        shutil.rmtree(path, ignore_errors=True)


def test_remote_backend_has_exactly_the_seams_methods():
    def public(cls):
        return {n for n in dir(cls) if not n.startswith('_') and
                callable(getattr(cls, n))}
    assert public(channel.RemoteSimBackend) == public(HypervisorBackend)
    assert not channel.RemoteSimBackend.__abstractmethods__
