"""Live migration of guests with and without PV drivers: how the source is
stopped (pause, or the control/shutdown suspend handshake), how it is given
back when the move fails, and the destination's xenstore introduction.

The handshake is refused by default: every domain the daemon moves is a
XAPI VM, and xenopsd halts one that suspends outside its operations
(guest_suspend's docstring).  The tests of the handshake itself run the
engine as for a domain no toolstack manages (``unmanaged``)."""
import functools

import pytest

from nova_xen_stubdom.dom0 import live_migration as migration
from tests.unit.dom0 import test_migration as tm

# the simulator's domains (Python >= 3.7) carry the PV-driver model
pytest.importorskip('nova_xen_stubdom.sim.backend',
                    reason='the simulator (Python >= 3.7) models the PV '
                           'drivers')
from nova_xen_stubdom.sim import pv_drivers  # noqa: E402


@pytest.fixture
def pair():
    p = tm.Pair()
    yield p
    p.close()


@pytest.fixture
def unmanaged(monkeypatch):
    """libxl's case: no toolstack tears the suspended domain down."""
    monkeypatch.setattr(migration.guest_suspend, 'stop', functools.partial(
        migration.guest_suspend.stop, toolstack_managed=False))


def test_guest_without_pv_drivers_is_paused_and_introduced(pair):
    target = pair.target()
    stats = pair.source(target.port).run()
    assert stats.stopped == 'paused'
    res = target.wait(10)
    assert res.state == 'running'
    src = pair.src.hyp.domain(pair.domid)
    assert src.paused and src.shutdown_reason is None
    # the destination's own store event channel (not the source's), the
    # ring the stream names
    dst = pair.dst.hyp.domain(res.domid)
    assert pair.dst.hyp.xenstore.introduced[res.domid] == (
        dst.hvm_params[1], dst.hvm_params[2])


def test_guest_with_pv_drivers_is_refused_and_keeps_running(pair):
    """A XAPI VM with PV drivers: nothing is asked of the guest (xenopsd
    would halt it), the move fails before the switch-over and the guest
    runs on as before."""
    pv_drivers.load(pair.src.hyp, pair.domid)
    target = pair.target()
    with pytest.raises(migration.MigrationError,
                       match='has PV drivers.*use cold migration'):
        pair.source(target.port).run()
    path = '/local/domain/%d/control/shutdown' % pair.domid
    assert pair.src.xs_read(path) is None               # never asked
    src = pair.src.hyp.domain(pair.domid)
    assert src.shutdown_reason is None
    pair.assert_source_running_dest_clean(target)


def test_guest_with_pv_drivers_suspends_through_control_shutdown(
        pair, unmanaged):
    pv_drivers.load(pair.src.hyp, pair.domid)
    target = pair.target()
    stats = pair.source(target.port).run()
    assert stats.stopped == 'suspended'
    assert target.wait(10).state == 'running'
    src = pair.src.hyp.domain(pair.domid)
    assert src.shutdown_reason == 'suspend'
    path = '/local/domain/%d/control/shutdown' % pair.domid
    assert pair.src.xs_read(path) == ''                 # acknowledged


def test_pv_guest_that_does_not_acknowledge_keeps_running(pair, monkeypatch,
                                                          unmanaged):
    pv_drivers.load(pair.src.hyp, pair.domid, responds=False)
    monkeypatch.setattr(migration.guest_suspend, 'ACK_TIMEOUT', 0.0)
    target = pair.target()
    with pytest.raises(migration.MigrationError,
                       match='did not acknowledge the suspend request'):
        pair.source(target.port).run()
    src = pair.src.hyp.domain(pair.domid)
    assert src.shutdown_reason is None
    pair.assert_source_running_dest_clean(target)


def test_failure_after_suspend_resumes_the_pv_guest(pair, unmanaged):
    pv_drivers.load(pair.src.hyp, pair.domid)
    target = pair.target()

    def broken_device_state():
        raise RuntimeError('QEMU did not save its state')

    src = pair.source(target.port)
    src._device_state = broken_device_state
    with pytest.raises(RuntimeError, match='QEMU did not save'):
        src.run()
    dom = pair.src.hyp.domain(pair.domid)
    # cooperative resume (xc_domain_resume fast), not a bare unpause
    assert dom.shutdown_reason is None
    assert any('suspend cancelled' in line for line in dom.console)
    pair.assert_source_running_dest_clean(target)
