"""Guests with PV drivers: no live migration, no suspend.

A guest whose PV drivers are loaded (``HVM_PARAM_CALLBACK_IRQ`` set; the
agent's ``guest_pv_drivers``) cannot be stopped by pausing for a move or a
save: its drivers hold event channels, grant references and a xenstore
connection that do not travel in the image, and only the guest's own
suspend -- the ``control/shutdown`` = ``suspend`` handshake, ending in
``shutdown(suspend)`` -- lets them reconnect afterwards (libxl
``tools/libs/light/libxl_dom_suspend.c`` ``domain_suspend_callback_common``
uses it for exactly these guests).

That handshake is not ours to run: our guests are XAPI VMs, and xenopsd
answers a domain of its own reaching ``shutdown(suspend)`` outside its
operations by shutting the VM down at once -- pause, device model destroyed,
devices unplugged, domain destroyed -- and XAPI records it Halted
(xapi-project/xen-api ``ocaml/xenopsd/lib/xenops_server.ml``
``VM_check_state``: ``Needs_suspend`` -> ``[Vm.Shutdown]``, "VM %s has
unexpectedly suspended"; hard-coded, no VM setting or xenstore key changes
it; see doc/source/xapi-behaviour.rst).  The source's last pages and the
cooperative resume after a failure would race that teardown.

So the driver refuses, before anything is touched, and says what works
instead: cold migration (the guest shuts down through XAPI and boots on the
destination) for a move, and stop or shelve for setting it aside.  The
dom0 side refuses the handshake as well (``dom0/guest_suspend.py``), for
drivers that load between this check and the switch-over.
"""
from nova import exception
from nova.i18n import _

from nova_xen_stubdom.driver import common


def has_pv_drivers(ctx: 'common.DriverContext', guest_vm_uuid: str) -> bool:
    """Whether the guest of XAPI VM *guest_vm_uuid*, running on *ctx*'s
    host, has its PV drivers loaded (asked of that host's agent)."""
    got = ctx.call_plugin('guest_pv_drivers', guest_vm_uuid=guest_vm_uuid)
    return bool(got.get('pv_drivers'))


def check_live_migration(ctx: 'common.DriverContext', instance,
                         guest_vm_uuid: str) -> None:
    """:raises MigrationPreCheckError: the guest has PV drivers."""
    if has_pv_drivers(ctx, guest_vm_uuid):
        raise exception.MigrationPreCheckError(reason=_(
            'instance %(uuid)s has PV drivers loaded: it can only be '
            'stopped for the switch-over by its own suspend '
            '(control/shutdown), and xenopsd halts a VM that suspends '
            'outside its own operations (VM_check_state: Needs_suspend -> '
            'Shutdown); the guest stays on %(src)s -- use cold migration '
            '(migrate) instead') % {'uuid': instance.uuid,
                                    'src': ctx.host_name})


def check_suspend(ctx: 'common.DriverContext', instance,
                  guest_vm_uuid: str) -> None:
    """:raises InstanceFaultRollback: the guest has PV drivers (Nova puts
    the instance back to ACTIVE and records the inner
    InstanceSuspendFailure as its fault)."""
    if has_pv_drivers(ctx, guest_vm_uuid):
        raise exception.InstanceFaultRollback(
            inner_exception=exception.InstanceSuspendFailure(reason=_(
                'instance %(uuid)s has PV drivers loaded: a paused image '
                'would leave them disconnected after resume, and their own '
                'suspend (control/shutdown) makes xenopsd halt the VM '
                '(VM_check_state: Needs_suspend -> Shutdown); nothing was '
                'changed -- stop or shelve it instead') % {
                    'uuid': instance.uuid}))
