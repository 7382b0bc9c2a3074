"""VBDs and VIFs as XAPI keeps them: one device per slot of a VM, hot-plug
into the running domain, no destroy while plugged, links from the VM and
from what backs the device; VM power-on messages naming a host."""
import xmlrpc.client

import XenAPI
import pytest

from nova_xen_stubdom.sim import introspect, testing
from tests.functional.sim.test_stubdom_seam import _vbd, _vdi, _vif


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


@pytest.mark.parametrize('cls', ['VBD', 'VIF'])
def test_device_slot_plug_unplug_destroy(sim, x, cls):
    vm = x.VM.create(testing.vm_record('dev', hvm=False))
    net = x.network.get_all()[0]
    vdi = _vdi(x, name='scratch')
    if cls == 'VBD':
        api, kind, devname = x.VBD, 'vbd', 'xvdb'
        make = lambda: _vbd(x, vm, vdi, '1')    # noqa: E731
        backing_refs = lambda: x.VDI.get_VBDs(vdi)    # noqa: E731
    else:
        api, kind, devname = x.VIF, 'vif', '1'
        make = lambda: _vif(x, vm, '1', '02:00:00:00:00:09')  # noqa: E731
        backing_refs = lambda: x.network.get_VIFs(net)    # noqa: E731
    dev = make()
    assert dev in getattr(x.VM, 'get_%ss' % cls)(vm)
    assert dev in backing_refs()
    assert _fail(make) == ['DEVICE_ALREADY_EXISTS', '1']
    # hot-plug needs a running domain
    assert _fail(api.plug, dev) == ['VM_BAD_POWER_STATE', vm, 'running',
                                    'halted']
    x.VM.start(vm, False, False)
    host = sim.pools[0].host_by_ref(x.VM.get_resident_on(vm))
    domid = int(x.VM.get_domid(vm))
    assert (kind, devname) in introspect.frontends(host, domid)
    # unplug / plug of the running domain's device
    api.unplug(dev)
    assert not api.get_currently_attached(dev)
    assert (kind, devname) not in introspect.frontends(host, domid)
    assert _fail(api.unplug, dev) == ['DEVICE_ALREADY_DETACHED', dev]
    api.plug(dev)
    assert api.get_currently_attached(dev)
    assert (kind, devname) in introspect.frontends(host, domid)
    assert _fail(api.plug, dev) == ['DEVICE_ALREADY_ATTACHED', dev]
    details = _fail(api.destroy, dev)
    assert details[0] == 'OPERATION_NOT_ALLOWED'
    assert details[1].startswith('%s ' % cls) and 'attached' in details[1]
    # shutdown detaches every device of the domain
    x.VM.hard_shutdown(vm)
    assert not api.get_currently_attached(dev)
    assert introspect.domains(host)[1:] == []
    api.destroy(dev)
    assert getattr(x.VM, 'get_%ss' % cls)(vm) == []
    assert dev not in backing_refs()
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_power_on_messages_naming_a_host(sim, x):
    vm = x.VM.create(testing.vm_record('on', hvm=False))
    bogus = 'OpaqueRef:00000000-0000-0000-0000-000000000001'
    assert _fail(x.VM.start_on, vm, bogus, False, False) == [
        'HANDLE_INVALID', 'host', bogus]
    target = sim.host(1)
    x.VM.start_on(vm, target.ref, False, False)
    assert x.VM.get_resident_on(vm) == target.ref
    x.VM.suspend(vm)
    assert _fail(x.VM.resume_on, vm, bogus, False, False) == [
        'HANDLE_INVALID', 'host', bogus]
    assert x.VM.get_power_state(vm) == 'Suspended'
    x.VM.resume_on(vm, target.ref, False, False)
    assert x.VM.get_power_state(vm) == 'Running'
    assert x.VM.get_resident_on(vm) == target.ref
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_side_channel_envelopes(sim):
    proxy = xmlrpc.client.ServerProxy(sim.url)
    assert proxy.sim.no_such_thing() == {
        'Status': 'Failure',
        'ErrorDescription': ['MESSAGE_METHOD_UNKNOWN', 'sim.no_such_thing']}
    bad = proxy.sim.domains()       # missing its host uuid
    assert bad['Status'] == 'Failure'
    assert bad['ErrorDescription'][0] == 'INTERNAL_ERROR'
    ok = proxy.sim.domains(sim.host(0).uuid)
    assert ok['Status'] == 'Success'
    # ints on the wire are decimal strings, as XAPI sends them
    assert ok['Value'][0]['domid'] == '0'


def test_vif_hotplug_rules_on_hvm_guest(sim, x):
    """xen-api ocaml/xapi/xapi_vif_helpers.ml valid_operations: a running
    HVM guest takes VIF.plug/unplug only if it claims PV drivers with VIF
    hot-plug (VM_guest_metrics.can_use_hotplug_vif); a paused one never;
    allowed_operations says so; create checks device and MAC."""
    sim.pools[0].hosts[0].config.allow_dom0_dm = True
    vm = x.VM.create(testing.vm_record('hvm', hvm=True))
    assert _fail(_vif, x, vm, 'eth1', '02:00:00:00:00:01') == [
        'INVALID_DEVICE', 'eth1']
    assert _fail(_vif, x, vm, '1', '02:00:00:00:00') == [
        'MAC_INVALID', '02:00:00:00:00']
    booted = _vif(x, vm, '0', '02:00:00:00:00:01')
    x.VM.start(vm, False, False)
    assert x.VIF.get_currently_attached(booted)
    late = _vif(x, vm, '1', '02:00:00:00:00:02')
    # the simulated guest reports no PV drivers: can_use_hotplug_vif = no
    refusal = ['OPERATION_NOT_ALLOWED',
               'VM states it does not support VIF hotplug.']
    assert _fail(x.VIF.plug, late) == refusal
    assert _fail(x.VIF.unplug, booted) == refusal
    assert 'plug' not in x.VIF.get_allowed_operations(late)
    # no claim either way and no drivers: the PV-driver fallback
    gm = x.VM.get_guest_metrics(vm)
    sim.pools[0].db.set('VM_guest_metrics', gm,
                        can_use_hotplug_vif='unspecified')
    assert _fail(x.VIF.plug, late) == ['VM_MISSING_PV_DRIVERS', vm]
    testing.report_pv_drivers(sim, vm)
    assert 'plug' in x.VIF.get_allowed_operations(late)
    x.VIF.plug(late)
    host = sim.pools[0].host_by_ref(x.VM.get_resident_on(vm))
    assert ('vif', '1') in introspect.frontends(host,
                                                int(x.VM.get_domid(vm)))
    x.VM.pause(vm)
    assert _fail(x.VIF.unplug, late) == ['VM_BAD_POWER_STATE', vm,
                                         'running', 'paused']
    x.VM.unpause(vm)
    x.VIF.unplug(late)
    x.VM.hard_shutdown(vm)
    for vif in (booted, late):
        x.VIF.destroy(vif)
    x.VM.destroy(vm)


def _vbd_of(x, vm, vdi, userdevice, type_, mode, unpluggable=True):
    return x.VBD.create({'VM': vm, 'VDI': vdi, 'userdevice': userdevice,
                         'bootable': False, 'mode': mode, 'type': type_,
                         'unpluggable': unpluggable, 'empty': False,
                         'other_config': {}, 'qos_algorithm_type': '',
                         'qos_algorithm_params': {}})


def test_cd_vbds_are_read_only_and_hvm_disks_read_write(sim, x):
    """xen-api ocaml/xapi/xapi_vbd.ml: create refuses a CD VBD that is not
    read-only (VBD_CDS_MUST_BE_READONLY); plug refuses a read-only disk VBD
    on an HVM guest (DISK_VBD_MUST_BE_READWRITE_FOR_HVM, CA-83260), which a
    PV VM may have.  The config drive is therefore the guest's CD and its
    stub domain's read-only disk."""
    sim.pools[0].hosts[0].config.allow_dom0_dm = True
    hvm = x.VM.create(testing.vm_record('hvm', hvm=True))
    pv = x.VM.create(testing.vm_record('pv', hvm=False))
    vdi = _vdi(x, name='drive')
    assert _fail(_vbd_of, x, hvm, vdi, '3', 'CD', 'RW') == [
        'VBD_CDS_MUST_BE_READONLY']
    cd = _vbd_of(x, hvm, vdi, '3', 'CD', 'RO')
    ro_disk = _vbd_of(x, hvm, vdi, '4', 'Disk', 'RO')
    pv_disk = _vbd_of(x, pv, vdi, '3', 'Disk', 'RO')
    x.VBD.destroy(ro_disk)
    x.VM.start(hvm, False, False)
    assert x.VBD.get_currently_attached(cd)
    ro_disk = _vbd_of(x, hvm, vdi, '4', 'Disk', 'RO')
    # a guest XAPI lets hot-plug (xapi_vbd_helpers.ml valid_operations)
    testing.report_pv_drivers(sim, hvm)
    assert _fail(x.VBD.plug, ro_disk) == [
        'DISK_VBD_MUST_BE_READWRITE_FOR_HVM', ro_disk]
    x.VM.start(pv, False, False)
    assert x.VBD.get_currently_attached(pv_disk)
    for vm in (hvm, pv):
        x.VM.hard_shutdown(vm)
    for vbd in (cd, ro_disk, pv_disk):
        x.VBD.destroy(vbd)
    for vm in (hvm, pv):
        x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_vbd_hotplug_rules_on_hvm_guest(sim, x):
    """xen-api ocaml/xapi/xapi_vbd_helpers.ml valid_operations: a running
    HVM guest takes VBD.plug/unplug/unplug_force only if it claims PV
    drivers with VBD hot-plug (VM_guest_metrics.can_use_hotplug_vbd); a
    paused one never; an HVM CD drive is never (un)plugged; a VBD not
    ``unpluggable`` is never unplugged; allowed_operations says so.  A PV
    VM (our stub domains) has no guest-metrics check."""
    sim.pools[0].hosts[0].config.allow_dom0_dm = True
    vm = x.VM.create(testing.vm_record('hvm', hvm=True))
    vdi = _vdi(x, name='scratch')
    booted = _vbd(x, vm, vdi, '0')
    x.VM.start(vm, False, False)
    assert x.VBD.get_currently_attached(booted)
    late = _vbd_of(x, vm, _vdi(x, name='late'), '1', 'Disk', 'RW')
    # the simulated guest reports no PV drivers: can_use_hotplug_vbd = no
    refusal = ['OPERATION_NOT_ALLOWED',
               'VM states it does not support VBD hotplug.']
    assert _fail(x.VBD.plug, late) == refusal
    assert _fail(x.VBD.unplug, booted) == refusal
    assert _fail(x.VBD.unplug_force, booted) == refusal
    assert 'plug' not in x.VBD.get_allowed_operations(late)
    assert 'unplug' not in x.VBD.get_allowed_operations(booted)
    # no claim either way and no drivers: the PV-driver fallback
    gm = x.VM.get_guest_metrics(vm)
    sim.pools[0].db.set('VM_guest_metrics', gm,
                        can_use_hotplug_vbd='unspecified')
    assert _fail(x.VBD.plug, late) == ['VM_MISSING_PV_DRIVERS', vm]
    testing.report_pv_drivers(sim, vm)
    assert 'plug' in x.VBD.get_allowed_operations(late)
    x.VBD.plug(late)
    assert x.VBD.get_currently_attached(late)
    assert 'unplug' in x.VBD.get_allowed_operations(late)
    # an HVM CD drive is inserted/ejected, never (un)plugged
    cd = _vbd_of(x, vm, _vdi(x, name='cd'), '3', 'CD', 'RO')
    assert _fail(x.VBD.plug, cd) == [
        'OPERATION_NOT_ALLOWED',
        'HVM CDROMs cannot be hotplugged/unplugged, only inserted or '
        'ejected']
    fixed = _vbd_of(x, vm, _vdi(x, name='fixed'), '4', 'Disk', 'RW',
                    unpluggable=False)
    x.VBD.plug(fixed)
    assert _fail(x.VBD.unplug, fixed) == ['VBD_NOT_UNPLUGGABLE', fixed]
    x.VM.pause(vm)
    assert _fail(x.VBD.unplug, late) == ['VM_BAD_POWER_STATE', vm,
                                         'running', 'paused']
    x.VM.unpause(vm)
    x.VBD.unplug(late)
    assert not x.VBD.get_currently_attached(late)
    # a PV VM: no guest-metrics rule
    pv = x.VM.create(testing.vm_record('pv', hvm=False))
    x.VM.start(pv, False, False)
    pv_vbd = _vbd_of(x, pv, _vdi(x, name='pv'), '1', 'Disk', 'RW')
    x.VBD.plug(pv_vbd)
    x.VBD.unplug(pv_vbd)
    for v in (vm, pv):
        x.VM.hard_shutdown(v)
    assert 'plug' not in x.VBD.get_allowed_operations(late)
    for v in (vm, pv):
        for vbd in x.VM.get_VBDs(v):
            x.VBD.destroy(vbd)
        x.VM.destroy(v)


def test_pv_vm_consoles_come_from_vncterm(sim, x):
    """xen-api ocaml/xapi/xapi_xenops.ml (PV boot record: ``vncterm = not
    other_config:disable_pv_vnc``) and ocaml/xenopsd/xc/service.ml
    ``PV_Vnc.start`` (vncterm ``-T -v 127.0.0.1:1`` writes ``console/
    vnc-port`` and ``tc-port``): a running PV VM lists an ``rfb`` and a
    ``vt100`` console (xenops_server_xen.ml ``get_state``); with
    ``disable_pv_vnc`` xenopsd starts no vncterm and XAPI lists none."""
    plain = x.VM.create(testing.vm_record('pv', hvm=False))
    quiet = x.VM.create(testing.vm_record(
        'quiet', hvm=False, other_config={'disable_pv_vnc': 'true'}))
    for vm in (plain, quiet):
        x.VM.start(vm, False, False)
    protocols = sorted(x.console.get_protocol(c)
                       for c in x.VM.get_consoles(plain))
    assert protocols == ['rfb', 'vt100']
    assert x.VM.get_consoles(quiet) == []
    for vm in (plain, quiet):
        x.VM.hard_shutdown(vm)
        assert x.VM.get_consoles(vm) == []
        x.VM.destroy(vm)
