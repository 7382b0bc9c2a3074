"""VM lifecycle through the PyPI XenAPI SDK over real HTTP."""
import XenAPI
import pytest

from nova_xen_stubdom.sim import testing


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def test_login_and_read_pool(session, x, sim):
    pools = x.pool.get_all()
    assert len(pools) == 1
    master = x.pool.get_master(pools[0])
    assert x.host.get_address(master) == '127.0.0.1'
    assert len(x.host.get_all()) == 2
    assert session.API_version == '2.21'


def test_vm_power_cycle(x, sim):
    vm = x.VM.create(testing.vm_record('pv', hvm=False))
    assert x.VM.get_power_state(vm) == 'Halted'
    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec['power_state'] == 'Running'
    assert int(rec['domid']) > 0
    host = sim.pools[0].host_by_ref(rec['resident_on'])
    assert int(rec['domid']) in host.hypervisor.domains
    assert _fail(x.VM.start, vm, False, False) == [
        'VM_BAD_POWER_STATE', vm, 'halted', 'running']
    x.VM.pause(vm)
    assert x.VM.get_power_state(vm) == 'Paused'
    assert host.hypervisor.domain(int(rec['domid'])).paused
    x.VM.unpause(vm)
    x.VM.clean_reboot(vm)
    assert x.VM.get_power_state(vm) == 'Running'
    new_domid = int(x.VM.get_domid(vm))
    assert new_domid != int(rec['domid'])
    x.VM.suspend(vm)
    assert x.VM.get_power_state(vm) == 'Suspended'
    assert x.VM.get_suspend_VDI(vm) != 'OpaqueRef:NULL'
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == 'Running'
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == 'Halted'
    assert x.VM.get_domid(vm) == '-1'
    assert _fail(x.VM.clean_shutdown, vm) == [
        'VM_BAD_POWER_STATE', vm, 'running', 'halted']
    x.VM.destroy(vm)
    leaks = sim.leaks()
    assert leaks['pool0']['VM'] == [] and leaks['pool0']['VDI'] == []
    for h in sim.hosts:
        assert leaks['host%s' % h.address]['domains'] == []
        assert leaks['host%s' % h.address]['memory_files'] == []


def test_async_start_task(session, x):
    vm = x.VM.create(testing.vm_record('a', hvm=False))
    task = x.Async.VM.start(vm, False, False)
    rec = testing.wait_task(session, task)
    assert rec['status'] == 'success'
    assert rec['result'] == ''
    task = x.Async.VM.start(vm, False, False)
    rec = testing.wait_task(session, task)
    assert rec['status'] == 'failure'
    assert rec['error_info'] == ['VM_BAD_POWER_STATE', vm, 'halted',
                                 'running']
    x.VM.hard_shutdown(vm)
    task = x.Async.VM.clone(vm, 'b') if False else None
    x.VM.destroy(vm)


def test_not_enough_memory(x, sim):
    vm = x.VM.create(testing.vm_record('big', hvm=False,
                                       memory=64 << 30))
    host = x.host.get_all()[0]
    details = _fail(x.VM.start_on, vm, host, False, False)
    assert details[0] == 'HOST_NOT_ENOUGH_FREE_MEMORY'
    assert int(details[1]) == 64 << 30
    assert int(details[2]) == int(x.host.compute_free_memory(host))
    assert _fail(x.VM.start, vm, False, False) == ['NO_HOSTS_AVAILABLE']
    x.VM.destroy(vm)
