"""Stopping a guest for the switch-over: pause without PV drivers, the
control/shutdown handshake with them (libxl domain_suspend_callback_common)
only where no toolstack manages the domain -- refused under xenopsd, which
halts a VM that suspends outside its operations -- on the simulator's
domains and its model of Linux's PV drivers."""
import pytest

from nova_xen_stubdom.dom0 import guest_suspend as gs
from tests.unit.dom0 import migration_fixtures as mf

# the simulator's domains (Python >= 3.7) carry the PV-driver model
pytest.importorskip('nova_xen_stubdom.sim.backend',
                    reason='the simulator (Python >= 3.7) models the PV '
                           'drivers')
from nova_xen_stubdom.sim import pv_drivers  # noqa: E402


class Clock:
    """Time that moves only when the code under test waits."""

    def __init__(self):
        self.now = 0.0
        self.waits = 0

    def __call__(self):
        return self.now

    def pause(self, seconds):
        self.waits += 1
        self.now += seconds


@pytest.fixture
def host():
    h = mf.make_host('h', 64)
    yield h
    h.hyp.shutdown()


def _guest(host, pv, responds=True, suspends=True):
    dom = host.hyp.create_domain('vm-s', True, 4 << 20, 1)
    host.unpause(dom.domid)
    if pv:
        pv_drivers.load(host.hyp, dom.domid, responds=responds,
                        suspends=suspends)
    return dom.domid


def test_guest_without_pv_drivers_is_paused(host):
    domid = _guest(host, pv=False)
    assert not gs.has_pv_drivers(host, domid)
    assert gs.stop(host, domid) == gs.PAUSED
    info = host.domain_info(domid)
    assert info.paused and info.shutdown is None
    assert host.xs_read('/local/domain/%d/control/shutdown' % domid) is None
    gs.start_again(host, domid)
    assert not host.domain_info(domid).paused


def test_guest_with_pv_drivers_suspends_through_xenstore(host):
    domid = _guest(host, pv=True)
    assert gs.has_pv_drivers(host, domid)
    clock = Clock()
    assert gs.stop(host, domid, clock=clock, pause=clock.pause,
                   toolstack_managed=False) == gs.SUSPENDED
    info = host.domain_info(domid)
    assert info.shutdown == 'suspend' and info.paused
    # acknowledged: the guest emptied the node
    assert host.xs_read('/local/domain/%d/control/shutdown' % domid) == ''
    gs.start_again(host, domid)
    info = host.domain_info(domid)
    assert info.shutdown is None and not info.paused


def test_silent_guest_times_out_and_the_request_is_withdrawn(host):
    domid = _guest(host, pv=True, responds=False)
    clock = Clock()
    with pytest.raises(gs.SuspendError,
                       match='did not acknowledge the suspend request in '
                             '60 s.*keeps running'):
        gs.stop(host, domid, clock=clock, pause=clock.pause,
                toolstack_managed=False)
    assert clock.now >= gs.ACK_TIMEOUT
    assert host.xs_read('/local/domain/%d/control/shutdown' % domid) == ''
    info = host.domain_info(domid)
    assert not info.paused and info.shutdown is None


def test_pv_drivers_in_a_managed_domain_are_refused(host):
    """The default: the domain is a XAPI VM's (xenopsd's VM_check_state
    would halt it on shutdown(suspend)); nothing is written, the guest runs
    on untouched."""
    domid = _guest(host, pv=True)
    path = '/local/domain/%d/control/shutdown' % domid
    with pytest.raises(gs.SuspendError,
                       match='has PV drivers.*xenopsd halts a VM.*'
                             'keeps running -- use cold migration'):
        gs.stop(host, domid)
    assert host.xs_read(path) is None
    info = host.domain_info(domid)
    assert not info.paused and info.shutdown is None


def test_guest_that_acks_but_never_suspends(host):
    domid = _guest(host, pv=True, suspends=False)
    clock = Clock()
    with pytest.raises(gs.SuspendError, match='did not suspend in 5 s'):
        gs.stop(host, domid, suspend_timeout=5, clock=clock,
                pause=clock.pause, toolstack_managed=False)


def test_pv_guest_is_refused(host):
    dom = host.hyp.create_domain('vm-pv', False, 4 << 20, 1)
    with pytest.raises(gs.SuspendError, match='not an HVM guest'):
        gs.stop(host, dom.domid)
