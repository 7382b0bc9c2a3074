"""xenopsd acts on a VM's other_config:pci by itself (unmanaged
pass-through): xen-api ocaml/xapi/xapi_xenops.ml MD.pcis_of_vm ->
ocaml/xenopsd/xc/xenops_server_xen.ml PCI.plug -> ocaml/xenopsd/xc/device.ml
PCI._pci_add; XAPI then records PCI.attached_VMs (xapi_xenops.ml
update_pci), which VM_HAS_PCI_ATTACHED checks (xapi_vm_lifecycle.ml)."""
import XenAPI
import pytest

from nova_xen_stubdom.sim import pool as sim_pool
from nova_xen_stubdom.sim import testing
from tests.functional.sim.conftest import _check_errors

GPU = '0000:81:00.0'


@pytest.fixture
def gsim():
    with testing.running_sim(hosts=2, host_configs=[
            sim_pool.HostConfig(pci_devices='gpu'),
            sim_pool.HostConfig(pci_devices='gpu')]) as s:
        yield s
        assert _check_errors(s) == []


@pytest.fixture
def gx(gsim):
    session = testing.login(gsim)
    yield session.xenapi
    session.xenapi.session.logout()


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def _pci_ref(x, host):
    return [p for p in x.host.get_PCIs(host)
            if x.PCI.get_pci_id(p) == GPU][0]


def test_other_config_pci_is_plugged_by_xenopsd(gsim, gx):
    x = gx
    host = x.host.get_all()[0]
    vm = x.VM.create(testing.vm_record(
        'unmanaged', hvm=False, other_config={'pci': '0/' + GPU}))
    x.VM.start_on(vm, host, False, False)
    rt = gsim.pools[0].host_by_ref(host)
    domid = int(x.VM.get_domid(vm))
    # assigned to the guest itself, which holds the BARs and the IRQ
    assert rt.pci.owner[GPU] == domid
    assert rt.pci.missing_grants(domid, rt.pci.devices[GPU]) == []
    pci = _pci_ref(x, host)
    assert x.VM.get_attached_PCIs(vm) == [pci]
    # xapi_vm_lifecycle: no suspend / migration with a passed-through PCI
    other = x.host.get_all()[1]
    assert _fail(x.VM.pool_migrate, vm, other, {}) == [
        'VM_HAS_PCI_ATTACHED', vm]
    x.VM.hard_shutdown(vm)
    assert x.VM.get_attached_PCIs(vm) == []
    assert rt.pci.is_clean()
    x.VM.destroy(vm)


def test_other_config_pci_of_a_device_already_assigned_fails_start(gsim,
                                                                   gx):
    """Xen refuses xc_assign_device of a device any domU holds (EBUSY,
    xen/drivers/passthrough/pci.c device_assigned), the same guest
    included: a second owner -- e.g. our own agent -- makes xenopsd's
    PCI.plug, and so VM.start, fail."""
    x = gx
    host = x.host.get_all()[0]
    rt = gsim.pools[0].host_by_ref(host)
    first = x.VM.create(testing.vm_record(
        'a', hvm=False, other_config={'pci': '0/' + GPU}))
    x.VM.start_on(first, host, False, False)
    second = x.VM.create(testing.vm_record(
        'b', hvm=False, other_config={'pci': '0/' + GPU}))
    details = _fail(x.VM.start_on, second, host, False, False)
    assert details[0] == 'INTERNAL_ERROR' and 'EBUSY' in details[1]
    assert x.VM.get_power_state(second) == 'Halted'
    assert rt.pci.owner[GPU] == int(x.VM.get_domid(first))
    x.VM.hard_shutdown(first)
    assert rt.pci.is_clean()
    for v in (first, second):
        x.VM.destroy(v)
