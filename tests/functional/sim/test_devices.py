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
