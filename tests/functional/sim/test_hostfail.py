"""A pool member dies and comes back (sim/hostfail.py): HOST_OFFLINE for
calls XAPI would forward to it, VM.power_state_reset by XAPI's rules
(xapi_vm.ml power_state_reset), a reboot that halts its former VMs."""
import XenAPI
import pytest

from nova_xen_stubdom.sim import testing


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def _running_on(x, host, name):
    vm = x.VM.create(testing.vm_record(name, hvm=False))
    x.VM.start_on(vm, host.ref, False, False)
    return vm


def test_dead_member_keeps_vms_running_in_the_database(sim, x):
    member = sim.host(1)
    vm = _running_on(x, member, 'on-member')
    domid = int(x.VM.get_domid(vm))
    # alive: no reset behind the member's back
    assert _fail(x.VM.power_state_reset, vm) == ['HOST_IS_LIVE', member.ref]

    sim.crash_host(member)
    assert domid not in member.hypervisor.domains
    assert x.VM.get_power_state(vm) == 'Running'
    assert x.VM.get_resident_on(vm) == member.ref
    metrics = x.host.get_metrics(member.ref)
    assert x.host_metrics.get_live(metrics) is False
    # what must run on the member cannot
    assert _fail(x.VM.hard_shutdown, vm) == ['HOST_OFFLINE', member.ref]
    assert _fail(x.host.call_plugin, member.ref, 'nova_xen_stubdom',
                 'host_info', {}) == ['HOST_OFFLINE', member.ref]
    other = x.VM.create(testing.vm_record('elsewhere', hvm=False))
    assert _fail(x.VM.start_on, other, member.ref, False, False) == \
        ['HOST_OFFLINE', member.ref]

    # the operator's way out, then the VM starts on a live host
    x.VM.power_state_reset(vm)
    assert x.VM.get_power_state(vm) == 'Halted'
    assert x.VM.get_resident_on(vm) == 'OpaqueRef:NULL'
    x.VM.start_on(vm, sim.host(0).ref, False, False)
    assert x.VM.get_power_state(vm) == 'Running'

    sim.host_comes_back(member)
    assert x.host_metrics.get_live(metrics) is True
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    x.VM.destroy(other)


def test_member_coming_back_halts_its_former_vms(sim, x):
    member = sim.host(1)
    vm = _running_on(x, member, 'forgotten')
    sim.crash_host(member)
    sim.host_comes_back(member)
    # its reboot resync: the domain is gone, XAPI says so
    assert x.VM.get_power_state(vm) == 'Halted'
    assert x.VM.get_resident_on(vm) == 'OpaqueRef:NULL'
    x.VM.start_on(vm, member.ref, False, False)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_reset_refuses_the_control_domain_and_a_running_domain(sim, x):
    dom0 = [r for r, rec in x.VM.get_all_records().items()
            if rec['is_control_domain']][0]
    assert _fail(x.VM.power_state_reset, dom0) == \
        ['CANNOT_RESET_CONTROL_DOMAIN', dom0]
    vm = _running_on(x, sim.host(0), 'on-master')
    assert _fail(x.VM.power_state_reset, vm) == [
        'DOMAIN_EXISTS', vm, x.VM.get_domid(vm)]
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_the_master_cannot_be_crashed(sim):
    with pytest.raises(ValueError):
        sim.crash_host(sim.host(0))
