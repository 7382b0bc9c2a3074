"""XAPI's own errors, with XAPI's parameters, through the SDK."""
import xmlrpc.client

import XenAPI
import pytest

from nova_xen_stubdom.sim import testing


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def _raw(sim, method, *params):
    proxy = xmlrpc.client.ServerProxy(sim.url, allow_none=True)
    return getattr(proxy, method)(*params)


def test_unknown_method(x):
    assert _fail(x.VM.no_such_thing) == ['MESSAGE_METHOD_UNKNOWN',
                                         'VM.no_such_thing']
    assert _fail(x.Nope.get_all) == ['MESSAGE_METHOD_UNKNOWN', 'Nope.get_all']


def test_async_of_getter_is_unknown(x):
    vm = x.VM.get_all()[0]
    assert _fail(x.Async.VM.get_name_label, vm) == [
        'MESSAGE_METHOD_UNKNOWN', 'Async.VM.get_name_label']


def test_parameter_count(x):
    assert _fail(x.VM.start, x.VM.get_all()[0]) == [
        'MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.start', '4', '2']


def test_handle_invalid(x):
    bad = 'OpaqueRef:00000000-0000-0000-0000-000000000000'
    assert _fail(x.VM.get_record, bad) == ['HANDLE_INVALID', 'VM', bad]
    assert _fail(x.VM.start, bad, False, False) == ['HANDLE_INVALID', 'VM',
                                                    bad]
    host = x.host.get_all()[0]
    # a host ref is not a VM ref
    assert _fail(x.VM.get_power_state, host) == ['HANDLE_INVALID', 'VM',
                                                 host]


def test_uuid_invalid(x):
    assert _fail(x.VM.get_by_uuid, 'nope') == ['UUID_INVALID', 'VM', 'nope']


def test_field_type_error(x):
    vm = x.VM.create(testing.vm_record('t'))
    assert _fail(x.VM.start, vm, 'yes please', False) == [
        'FIELD_TYPE_ERROR', 'start_paused']
    assert _fail(x.VM.set_VCPUs_max, vm, 'many') == ['FIELD_TYPE_ERROR',
                                                     'value']
    rec = testing.vm_record('t2')
    del rec['memory_static_max']
    assert _fail(x.VM.create, rec) == ['FIELD_TYPE_ERROR',
                                       'memory_static_max']
    x.VM.destroy(vm)


def test_read_only_field_has_no_setter(x):
    vm = x.VM.get_all()[0]
    assert _fail(x.VM.set_power_state, vm, 'Running') == [
        'MESSAGE_METHOD_UNKNOWN', 'VM.set_power_state']


def test_session_invalid(sim):
    env = _raw(sim, 'VM.get_all', 'OpaqueRef:not-a-session')
    assert env == {'Status': 'Failure', 'ErrorDescription': [
        'SESSION_INVALID', 'OpaqueRef:not-a-session']}


def test_bad_password(sim):
    env = _raw(sim, 'session.login_with_password', 'root', 'wrong', '2.0',
               't')
    assert env['Status'] == 'Failure'
    assert env['ErrorDescription'][0] == 'SESSION_AUTHENTICATION_FAILED'


def test_read_only_session(sim, x):
    ro = testing.login(sim, testing.RO_USER, testing.RO_PASSWORD)
    vm = x.VM.create(testing.vm_record('ro', hvm=False))
    assert ro.xenapi.VM.get_power_state(vm) == 'Halted'
    assert _fail(ro.xenapi.VM.start, vm, False, False) == [
        'RBAC_PERMISSION_DENIED', 'vm.start',
        'No permission in user session']
    assert _fail(ro.xenapi.VM.set_name_label, vm, 'x')[0] == \
        'RBAC_PERMISSION_DENIED'
    assert _fail(ro.xenapi.Async.VM.start, vm, False, False)[0] == \
        'RBAC_PERMISSION_DENIED'
    assert x.VM.get_power_state(vm) == 'Halted'
    ro.xenapi.session.logout()
    x.VM.destroy(vm)


def test_map_duplicate_key(x):
    vm = x.VM.create(testing.vm_record('m'))
    x.VM.add_to_other_config(vm, 'k', 'v')
    uuid = x.VM.get_uuid(vm)
    assert _fail(x.VM.add_to_other_config, vm, 'k', 'w') == [
        'MAP_DUPLICATE_KEY', 'VM', 'other_config', uuid, 'k']
    x.VM.remove_from_other_config(vm, 'k')
    assert x.VM.get_other_config(vm) == {}
    x.VM.add_tags(vm, 'a')
    x.VM.add_tags(vm, 'a')
    assert x.VM.get_tags(vm) == ['a']
    x.VM.remove_tags(vm, 'a')
    assert x.VM.get_tags(vm) == []
    x.VM.destroy(vm)


def test_destroy_running_vm_refused(x):
    vm = x.VM.create(testing.vm_record('d', hvm=False))
    x.VM.start(vm, False, False)
    assert _fail(x.VM.destroy, vm) == ['VM_BAD_POWER_STATE', vm, 'halted',
                                       'running']
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
