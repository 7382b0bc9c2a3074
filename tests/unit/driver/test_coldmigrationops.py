"""ColdMigrationOps.remove_aside: what Nova's delete_instance_files
removes of a deleted instance (the path through Nova is tested in
tests/functional/pci/test_pci_passthrough.py,
TestPciColdMigrationToImageWithoutPassthrough)."""
import contextlib
import types
from unittest import mock

from nova_xen_stubdom.driver import coldmigrationops as cmo
from nova_xen_stubdom.driver import constants as dc

UUID = '9a0d6c1e-1111-4b6e-9d4c-0c6f3a1e2b3c'
INSTANCE = types.SimpleNamespace(uuid=UUID, name='instance-00000007')


def _vm(name, role, uuid=UUID):
    return {'name_label': name, 'uuid': 'vm-' + name,
            'other_config': {dc.OC_NOVA_UUID: uuid, dc.OC_ROLE: role}}


def _vdi(name, uuid=UUID):
    return {'name_label': name, 'other_config': {dc.OC_NOVA_UUID: uuid}}


class _Ctx:
    """The pool's VMs and VDIs, looked up by name as XAPI does."""

    def __init__(self, vms, vdis):
        self.tables = {'VM': vms, 'VDI': vdis}

    def call(self, method, *args):
        cls, op = method.split('.')
        table = self.tables[cls]
        if op == 'get_by_name_label':
            return [r for r, rec in table.items()
                    if rec['name_label'] == args[0]]
        if op == 'get_record':
            return table[args[0]]
        if op == 'get_other_config':
            return table[args[0]]['other_config']
        raise AssertionError('unexpected XAPI call %s' % method)


def _ops(vms, vdis):
    vmops = mock.Mock()
    vmops._operation.side_effect = lambda inst: contextlib.nullcontext()
    return cmo.ColdMigrationOps(_Ctx(vms, vdis), vmops), vmops


def test_removes_the_set_aside_vms_and_disks_only():
    name = INSTANCE.name
    vms = {'g': _vm(name, cmo.RESIZE_SOURCE + dc.ROLE_GUEST),
           's': _vm(name + dc.STUBDOM_SUFFIX,
                    cmo.RESIZE_SOURCE + dc.ROLE_STUBDOM),
           # the instance's own VMs, and another instance's of that name
           'live': _vm(name, dc.ROLE_GUEST),
           'other': _vm(name, cmo.RESIZE_SOURCE + dc.ROLE_GUEST,
                        uuid='another')}
    vdis = {'root-aside': _vdi(name + '-root' + cmo.RESIZE_SUFFIX),
            'root': _vdi(name + '-root'),
            'other-aside': _vdi(name + '-root' + cmo.RESIZE_SUFFIX,
                                uuid='another')}
    ops, vmops = _ops(vms, vdis)
    assert ops.remove_aside(INSTANCE) is True
    vmops.stopper.teardown.assert_called_once_with(
        INSTANCE, mock.ANY, raise_first=True)
    built = vmops.stopper.teardown.call_args[0][1]
    assert (built.guest, built.stubdom, built.vdis) == (
        'g', 's', ['root-aside'])


def test_nothing_set_aside_is_done():
    ops, vmops = _ops({'live': _vm(INSTANCE.name, dc.ROLE_GUEST)},
                      {'root': _vdi(INSTANCE.name + '-root')})
    assert ops.remove_aside(INSTANCE) is True
    vmops.stopper.teardown.assert_not_called()
    vmops._operation.assert_not_called()


def test_a_failed_removal_is_tried_again():
    """False: Nova's _run_pending_deletes counts an attempt and retries."""
    ops, vmops = _ops({'g': _vm(INSTANCE.name,
                                cmo.RESIZE_SOURCE + dc.ROLE_GUEST)}, {})
    vmops.stopper.teardown.side_effect = RuntimeError('VM.destroy failed')
    assert ops.remove_aside(INSTANCE) is False
