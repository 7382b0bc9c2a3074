"""The client layer against the project's XAPI simulator over real HTTP."""
import threading

import pytest
import XenAPI

from nova_xen_stubdom.sim import testing
from nova_xen_stubdom.xapi import constants
from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import fidelity
from nova_xen_stubdom.xapi import tasks
from tests.functional.xapi.conftest import sessions

MiB = 1 << 20


def _vm_record(name, **kw):
    """VM.create's argument with Python ints (the client encodes them)."""
    rec = testing.vm_record(name=name, **kw)
    for key in ('memory_static_max', 'memory_dynamic_max',
                'memory_dynamic_min', 'memory_static_min', 'memory_target',
                'VCPUs_max', 'VCPUs_at_startup', 'user_version'):
        rec[key] = int(rec[key])
    return rec


def test_vm_lifecycle_through_the_client(sim, make_client):
    c = make_client()
    cache = c.start_cache(classes=('VM', 'VM_metrics', 'host'),
                          poll_timeout=2)
    assert cache.wait_ready(10)
    vm = c.call('VM.create', _vm_record('life', hvm=False))
    cache.wait_for('VM', vm, lambda r: r is not None, 10)
    c.call_async('VM.start', vm, False, False)
    rec = cache.wait_for('VM', vm, lambda r: r['power_state'] ==
                         constants.POWER_STATE_RUNNING, 10)
    assert rec['resident_on'] in cache.refs('host')
    with pytest.raises(errors.VMBadPowerState) as info:
        c.call('VM.start', vm, False, False)
    assert info.value.params[0] == vm
    assert info.value.params[2].lower() == 'running'
    c.call_async('VM.clean_shutdown', vm)
    cache.wait_for('VM', vm, lambda r: r['power_state'] ==
                   constants.POWER_STATE_HALTED, 10)
    c.call('VM.destroy', vm)
    cache.wait_for('VM', vm, lambda r: r is None, 10)
    # no task left behind by call_async
    assert not [t for t in c.call('task.get_all_records').values()
                if t['status'] == 'pending']
    assert fidelity.check_calls(c.call_log.records) == []


def test_handle_invalid(sim, make_client):
    c = make_client()
    with pytest.raises(errors.HandleInvalid) as info:
        c.call('VM.get_record', 'OpaqueRef:00000000-dead')
    assert info.value.cls == 'VM'


def test_read_only_session_cannot_start(sim, make_client):
    admin = make_client()
    vm = admin.call('VM.create', _vm_record('ro', hvm=False))
    ro = make_client(username=testing.RO_USER, password=testing.RO_PASSWORD)
    assert ro.call('VM.get_power_state', vm) == 'Halted'
    with pytest.raises(errors.RBACPermissionDenied):
        ro.call('VM.start', vm, False, False)
    admin.call('VM.destroy', vm)


def test_host_is_slave_redirect(sim, make_client):
    member = sim.host(1)
    assert not member.is_master
    c = make_client(member.url)
    assert c.call('host.get_all')
    assert c.url == sim.url
    assert c.url != member.url


def test_session_expiry_relogin(sim, make_client):
    c = make_client()
    c.call('VM.get_all')
    before = c.logins
    sim.expire_sessions()
    assert c.call('VM.get_all')
    assert c.logins == before + 1


def test_toolstack_restart_relogin(sim, make_client):
    c = make_client()
    c.call('VM.get_all')
    sim.restart_toolstack(sim.pools[0].master)
    assert c.call('host.get_all')
    assert c.logins == 2


def test_injected_transient_failures_are_retried(sim, make_client):
    c = make_client(max_retries=3)
    vm = c.call('VM.create', _vm_record('retry', hvm=False))
    sim.faults.fail('VM.start', 'OTHER_OPERATION_IN_PROGRESS',
                    ['VM', vm], count=2)
    c.call('VM.start', vm, False, False)
    assert c.call('VM.get_power_state', vm) == 'Running'
    c.call('VM.hard_shutdown', vm)
    c.call('VM.destroy', vm)


def test_injected_failure_beyond_retries_surfaces(sim, make_client):
    c = make_client(max_retries=1)
    vm = c.call('VM.create', _vm_record('noretry', hvm=False))
    sim.faults.fail('VM.start', 'HOST_NOT_ENOUGH_FREE_MEMORY',
                    ['1', '0'], count=1)
    with pytest.raises(errors.HostNotEnoughFreeMemory):
        c.call('VM.start', vm, False, False)
    sim.faults.fail('VM.start', 'OTHER_OPERATION_IN_PROGRESS',
                    ['VM', vm], count=5)
    with pytest.raises(errors.OtherOperationInProgress):
        c.call('VM.start', vm, False, False)
    sim.faults.clear()
    c.call('VM.destroy', vm)


def test_dropped_connection_on_read_is_retried(sim, make_client):
    c = make_client()
    c.call('VM.get_all')
    sim.faults.drop('VM.get_all_records', count=1)
    assert c.call('VM.get_all_records')
    assert sim.faults.rules == []       # the drop did happen


def test_dropped_connection_on_write_is_not_resent(sim, make_client):
    c = make_client()
    vm = c.call('VM.create', _vm_record('drop', hvm=False))
    sim.faults.drop('VM.set_name_label', count=2)
    with pytest.raises(errors.XAPIConnectionError):
        c.call('VM.set_name_label', vm, 'x')
    assert len(sim.faults.rules) == 1    # sent once, not twice
    sim.faults.clear()
    c.call('VM.destroy', vm)


def test_async_task_failure(sim, make_client):
    c = make_client()
    vm = c.call('VM.create', _vm_record('task', hvm=False))
    with pytest.raises(errors.VMBadPowerState) as info:
        c.call_async('VM.clean_shutdown', vm)
    assert info.value.method == 'VM.clean_shutdown'
    assert not c.call('task.get_all')         # destroyed
    c.call('VM.destroy', vm)


def test_async_timeout_cancels_the_task(sim, make_client):
    c = make_client()
    vm = c.call('VM.create', _vm_record('slow', hvm=False))
    sim.faults.latency('VM.start', 30, count=1)      # inside the task
    with pytest.raises(errors.XAPITaskTimeout) as info:
        c.call_async('VM.start', vm, False, False, timeout=0.5)
    assert info.value.method == 'VM.start'
    assert c.call('VM.get_power_state', vm) == 'Halted'
    assert info.value.task not in c.call('task.get_all')
    c.call('VM.destroy', vm)


def test_task_timeout_cancels_and_destroys(sim, make_client, monkeypatch):
    monkeypatch.setattr(tasks, 'CANCEL_GRACE', 0.2)
    c = make_client()
    # a task nobody completes: it stays pending (then cancelling)
    task = c.call('task.create', 'stuck', 'never finishes')
    with pytest.raises(errors.XAPITaskTimeout) as info:
        c.wait_task(task, timeout=0.2, method='task.create')
    assert info.value.task == task
    assert ('task.cancel', ('ref',)) in c.call_log.signatures()
    assert task not in c.call('task.get_all')


def test_event_cache_sees_other_sessions(sim, make_client):
    c = make_client()
    cache = c.start_cache(classes=('VM',), poll_timeout=2)
    assert cache.wait_ready(10)
    seen = []
    cache.subscribe(seen.append)
    other = testing.login(sim)
    try:
        vm = other.xenapi.VM.create(testing.vm_record(
            name='other', hvm=False, other_config={'nova_uuid': 'u-1'}))
        ref, rec = None, None
        cache.wait_for('VM', vm, lambda r: r is not None, 10)
        ref, rec = cache.find_one('VM', other_config={'nova_uuid': 'u-1'})
        assert ref == vm and rec['name_label'] == 'other'
        other.xenapi.VM.start(vm, False, False)
        cache.wait_for('VM', vm, lambda r: r['power_state'] == 'Running',
                       10)
        assert any(e.ref == vm and e.operation == 'mod' and
                   e.new['power_state'] == 'Running' for e in seen)
        other.xenapi.VM.hard_shutdown(vm)
        other.xenapi.VM.destroy(vm)
        cache.wait_for('VM', vm, lambda r: r is None, 10)
    finally:
        other.xenapi.session.logout()


def test_pool_bound_and_logout_on_close(sim, make_client):
    baseline = sessions(sim)
    c = make_client(concurrent=3)
    sim.faults.latency('VM.get_all', 0.2, count=None)
    peak = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(sessions(sim) - baseline)
            stop.wait(0.01)
    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=c.call, args=('VM.get_all',))
               for _ in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    watcher.join()
    sim.faults.clear()
    assert max(peak) <= 3
    assert c.peak_sessions <= 3
    assert c.pool.peak_in_use <= 3
    assert sessions(sim) - baseline == c.open_sessions
    c.close()
    assert sessions(sim) == baseline


def test_sdk_login_password_not_in_client_repr(sim, make_client):
    c = make_client()
    c.call('VM.get_all')
    assert testing.PASSWORD not in repr(c)
    assert isinstance(XenAPI.Session(sim.url), XenAPI.Session)


def test_event_cache_resyncs_to_drop_deletions_xapi_forgot(sim, make_client):
    """XAPI's event.from silently omits deletions older than a table's
    deleted queue (xen-api ocaml/database/db_cache_types.ml Table.remove)
    and never answers EVENTS_LOST: only a periodic full reload removes
    such a ghost from the cache."""
    c = make_client()
    vm = c.call('VM.create', _vm_record('ghost', hvm=False))
    cache = c.start_cache(classes=('VM',), poll_timeout=1,
                          resync_interval=0.5)
    assert cache.wait_ready(10)
    cache.wait_for('VM', vm, lambda r: r is not None, 10)
    db = sim.pools[0].db
    with db.lock:
        # the deletion happened long ago: XAPI no longer remembers it
        del db.tables['VM'][vm]
        del db.ref_class[vm]
        db.gen_of.pop(('VM', vm), None)
    assert cache.wait_for('VM', vm, lambda r: r is None, 10) is None
