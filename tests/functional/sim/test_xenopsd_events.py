"""xenopsd's VM_check_state for domains changed outside its operations
(``sim/xenopsd_events.py``; xen-api ``ocaml/xenopsd/lib/xenops_server.ml``
``VM_check_state``, ``ocaml/xenopsd/xc/xenops_server_xen.ml``
``get_domain_action_request``, ``ocaml/libs/ezxenstore/watch/
ez_xenstore_watch.ml`` ``domain_looks_different``)."""
import pytest

from nova_xen_stubdom.sim import pv_drivers, testing


def _started(x, sim, **fields):
    rec = testing.vm_record('guest')
    rec.update(fields)
    vm = x.VM.create(rec)
    x.VM.start(vm, False, False)
    host = sim.pools[0].host_by_ref(x.VM.get_resident_on(vm))
    domid = int(x.VM.get_domid(vm))
    return vm, host, domid


def _settled(host):
    assert host.xenopsd.drain(), 'sim xenopsd still busy'


def _cleanup(x, vm):
    if x.VM.get_power_state(vm) != 'Halted':
        x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_outside_suspend_halts_the_vm(x, sim):
    """shutdown(suspend) with no operation running: Needs_suspend ->
    [Shutdown] whatever the VM's actions say: domain, device model and
    devices gone, XAPI shows Halted."""
    vm, host, domid = _started(x, sim, actions_after_shutdown='restart',
                               actions_after_crash='restart')
    hv = host.hypervisor
    pv_drivers.load(hv, domid)
    # what an outside daemon does: ask the guest through xenstore
    hv.xenstore.write('/local/domain/%d/control/shutdown' % domid,
                      'suspend')
    _settled(host)
    assert x.VM.get_power_state(vm) == 'Halted'
    assert x.VM.get_domid(vm) == '-1'
    assert domid not in hv.domains
    assert domid not in hv.qemus
    for vbd in x.VM.get_VBDs(vm):
        assert not x.VBD.get_currently_attached(vbd)
    assert host.xenopsd.acted == [(x.VM.get_uuid(vm), domid, 'suspend',
                                   ['shutdown'])]
    _cleanup(x, vm)


@pytest.mark.parametrize('action,state', [('destroy', 'Halted'),
                                          ('restart', 'Running')])
def test_domain_destroyed_outside_applies_on_shutdown(x, sim, action,
                                                      state):
    """No domain for a running VM: Needs_poweroff -> the VM's
    actions_after_shutdown; ``restart`` starts it again on this host."""
    vm, host, domid = _started(x, sim, actions_after_shutdown=action)
    host.hypervisor.destroy_domain(domid)
    _settled(host)
    assert x.VM.get_power_state(vm) == state
    if state == 'Running':
        new = int(x.VM.get_domid(vm))
        assert new != domid and new in host.hypervisor.domains
        assert x.VM.get_resident_on(vm) == host.ref
    assert host.xenopsd.acted == [
        (x.VM.get_uuid(vm), domid, 'poweroff',
         ['start' if action == 'restart' else 'shutdown'])]
    _cleanup(x, vm)


def test_pause_from_outside_is_no_event(x, sim):
    """``paused`` is not compared by domain_looks_different: no check, no
    action; XAPI's record is unchanged."""
    vm, host, domid = _started(x, sim)
    host.hypervisor.pause(domid)
    _settled(host)
    assert host.hypervisor.domain(domid).paused
    assert x.VM.get_power_state(vm) == 'Running'
    assert host.xenopsd.acted == []
    host.hypervisor.unpause(domid)
    _cleanup(x, vm)


def test_unmanaged_domains_and_xapi_operations_are_left_alone(x, sim):
    """A domain of no VM is ignored (unmanaged_domain); what XAPI's own
    operations do to a VM's domain is theirs (the check runs after them and
    finds nothing to do)."""
    host = sim.pools[0].hosts[0]
    hv = host.hypervisor
    dom = hv.create_domain('not-a-xapi-vm', True, 4 << 20, 1)
    hv.domain_shutdown(dom.domid, 'suspend')
    hv.destroy_domain(dom.domid)
    vm, host2, domid = _started(x, sim, actions_after_shutdown='restart')
    x.VM.hard_shutdown(vm)
    x.VM.start(vm, False, False)
    x.VM.hard_reboot(vm)
    for h in sim.pools[0].hosts:
        _settled(h)
        assert h.xenopsd.acted == []
    assert x.VM.get_power_state(vm) == 'Running'
    _cleanup(x, vm)
