"""Guests with PV drivers are neither live-migrated nor suspended
(``driver/pv_guests.py``), and no VM of ours lets xenopsd restart it on its
own (xen-api ``ocaml/xenopsd/lib/xenops_server.ml`` ``VM_check_state``)."""
import pytest

from nova import exception

from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import pv_guests
from nova_xen_stubdom.driver import vmbuild
from tests.unit.driver import test_driver_api as api


class _Ctx:
    host_name = 'host1'

    def __init__(self, pv):
        self.pv = pv
        self.calls = []

    def call_plugin(self, fn, **args):
        self.calls.append((fn, args))
        return {'domid': 7, 'pv_drivers': self.pv}


def test_live_migration_of_a_pv_driver_guest_is_refused():
    ctx = _Ctx(True)
    with pytest.raises(exception.MigrationPreCheckError,
                       match='has PV drivers loaded.*xenopsd halts a VM.*'
                             'stays on host1 -- use cold migration'):
        pv_guests.check_live_migration(ctx, api._Instance, 'vm-uuid')
    assert ctx.calls == [('guest_pv_drivers', {'guest_vm_uuid': 'vm-uuid'})]


def test_guest_without_pv_drivers_passes():
    pv_guests.check_live_migration(_Ctx(False), api._Instance, 'vm-uuid')
    pv_guests.check_suspend(_Ctx(False), api._Instance, 'vm-uuid')


def test_suspend_of_a_pv_driver_guest_rolls_back_with_a_reason():
    with pytest.raises(exception.InstanceFaultRollback) as e:
        pv_guests.check_suspend(_Ctx(True), api._Instance, 'vm-uuid')
    inner = e.value.inner_exception
    assert isinstance(inner, exception.InstanceSuspendFailure)
    assert 'has PV drivers loaded' in str(inner)
    assert 'stop or shelve it instead' in str(inner)


def test_no_vm_of_ours_is_restarted_by_xenopsd():
    """xenopsd applies actions_after_shutdown to a running VM whose domain
    disappeared (Needs_poweroff): ``restart`` would start a second copy on
    a migration's source.  Guest and stub domain are ``destroy`` on every
    exit."""
    cfg = guest_config.resolve(api._Flavor(), api._image())
    guest = vmbuild.guest_record(api._Instance, cfg, 'OpaqueRef:h')
    stub = vmbuild.stubdom_record(api._Instance, cfg, 'OpaqueRef:h', 'g',
                                  '/k', '/r')
    for rec in (guest, stub):
        assert (rec['actions_after_shutdown'], rec['actions_after_reboot'],
                rec['actions_after_crash']) == ('destroy',) * 3
