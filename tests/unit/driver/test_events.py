"""Power changes outside Nova -> lifecycle events (and the stub domain
follows its guest down)."""
import threading
import types

from nova.virt import event as virtevent

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import events
from nova_xen_stubdom.xapi.cache import CacheEvent

UUID = '0e8c3c3e-1f7b-4a9e-9d59-6f1d2c1b7a10'


def _guest(state, host='H', role=dc.ROLE_GUEST):
    return {'uuid': 'guest-vm', 'power_state': state, 'resident_on': host,
            'affinity': host, 'other_config': {
                dc.OC_NOVA_UUID: UUID, dc.OC_ROLE: role,
                dc.OC_STUBDOM: 'stub-vm'}}


class FakeCtx:
    host_ref = 'H'

    def __init__(self):
        self.calls = []
        self.done = threading.Event()
        stub = {'uuid': 'stub-vm', 'power_state': 'Running',
                'other_config': {dc.OC_NOVA_UUID: UUID,
                                 dc.OC_ROLE: dc.ROLE_STUBDOM}}
        self.cache = types.SimpleNamespace(
            find=lambda cls, other_config: (
                [('SREF', stub)] if other_config.get(dc.OC_ROLE) ==
                dc.ROLE_STUBDOM else [('GREF', _guest('Halted'))]))

    def lock(self, uuid):
        return threading.Lock()

    def call(self, method, *args):
        self.calls.append((method,) + args)

    def call_plugin(self, fn, **args):
        self.calls.append((fn, args))
        self.done.set()


def _run(old, new, busy=False, **kw):
    ctx = FakeCtx()
    emitted = []
    vmops = types.SimpleNamespace(is_busy=lambda uuid: busy)
    le = events.LifecycleEvents(ctx, vmops, emitted.append)
    le._on_event(CacheEvent('VM', 'mod', 'GREF', _guest(old, **kw),
                            _guest(new, **kw)))
    return ctx, emitted


def test_outside_halt_is_reported_and_stops_the_stubdom():
    ctx, emitted = _run('Running', 'Halted')
    assert [e.transition for e in emitted] == [
        virtevent.EVENT_LIFECYCLE_STOPPED]
    assert emitted[0].uuid == UUID
    assert ctx.done.wait(5)
    assert ('VM.hard_shutdown', 'SREF') in ctx.calls
    assert ('unlink_stubdom', {'guest_vm_uuid': 'guest-vm'}) in ctx.calls


def test_outside_start_and_pause():
    assert [e.transition for e in _run('Halted', 'Running')[1]] == [
        virtevent.EVENT_LIFECYCLE_STARTED]
    assert [e.transition for e in _run('Running', 'Paused')[1]] == [
        virtevent.EVENT_LIFECYCLE_PAUSED]


def test_own_operations_other_hosts_and_stubdoms_are_silent():
    assert _run('Running', 'Halted', busy=True)[1] == []
    assert _run('Running', 'Halted', host='OTHER')[1] == []
    assert _run('Running', 'Halted', role=dc.ROLE_STUBDOM)[1] == []
    assert _run('Running', 'Running')[1] == []
