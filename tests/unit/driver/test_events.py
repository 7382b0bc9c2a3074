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
            'domid': '-1' if state == 'Halted' else '7',
            'affinity': host, 'other_config': {
                dc.OC_NOVA_UUID: UUID, dc.OC_ROLE: role,
                dc.OC_STUBDOM: 'stub-vm'}}


class FakeCtx:
    host_ref = 'H'

    def __init__(self, reason=None):
        self.reason = reason
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
        if fn == 'guest_exit':
            return {'reason': self.reason} if self.reason else {}
        self.done.set()
        return {}


def _run(old, new, busy=False, reason=None, rebuild=None, **kw):
    ctx = FakeCtx(reason)
    emitted = []

    def restart(uuid):
        ctx.calls.append(('rebuild', uuid))
        if rebuild is not None:
            raise rebuild
        ctx.done.set()
    vmops = types.SimpleNamespace(is_busy=lambda uuid: busy,
                                  restart_after_guest_reboot=restart)
    le = events.LifecycleEvents(ctx, vmops, emitted.append)
    le._on_event(CacheEvent('VM', 'mod', 'GREF', _guest(old, **kw),
                            _guest(new, **kw)))
    return ctx, emitted


def test_outside_halt_is_reported_and_stops_the_stubdom():
    ctx, emitted = _run('Running', 'Halted')
    assert ctx.done.wait(5)
    assert [e.transition for e in emitted] == [
        virtevent.EVENT_LIFECYCLE_STOPPED]
    assert emitted[0].uuid == UUID
    # dom0 was asked why, for the domain that went
    assert ('guest_exit', {'guest_vm_uuid': 'guest-vm', 'domid': 7,
                           'forget': '1'}) in ctx.calls
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


def test_guest_reboot_is_rebuilt_not_reported():
    ctx, emitted = _run('Running', 'Halted', reason='reboot')
    assert ctx.done.wait(5)
    assert ('rebuild', UUID) in ctx.calls
    assert emitted == []
    assert ('VM.hard_shutdown', 'SREF') not in ctx.calls


def test_failed_rebuild_is_a_stop():
    ctx, emitted = _run('Running', 'Halted', reason='reboot',
                        rebuild=RuntimeError('no memory'))
    assert ctx.done.wait(5)
    assert [e.transition for e in emitted] == [
        virtevent.EVENT_LIFECYCLE_STOPPED]
    assert ('VM.hard_shutdown', 'SREF') in ctx.calls


def test_guest_poweroff_is_a_stop():
    ctx, emitted = _run('Running', 'Halted', reason='poweroff')
    assert ctx.done.wait(5)
    assert [e.transition for e in emitted] == [
        virtevent.EVENT_LIFECYCLE_STOPPED]
    assert not [c for c in ctx.calls if c[0] == 'rebuild']
