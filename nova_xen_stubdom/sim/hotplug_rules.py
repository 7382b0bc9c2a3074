"""What XAPI's VBD and VIF rules share: the operation table, the power
state and VM-operation checks, and the HVM guest's claim to hot-plug.

xapi-project/xen-api ``ocaml/xapi/xapi_vbd_helpers.ml`` and
``ocaml/xapi/xapi_vif_helpers.ml`` ``valid_operations`` follow one shape:
a table op -> first refusal; plug/unplug only while the VM is ``Running``
(``VM_BAD_POWER_STATE [vm, running, <actual>]``); ``DEVICE_ALREADY_ATTACHED``
/ ``DEVICE_ALREADY_DETACHED`` for a plug / unplug with nothing to do; none
while the VM is being shut down, suspended or paused
(``OPERATION_NOT_ALLOWED ["Current operation on VM:<vm> is <op>"]``); and
for a running **HVM** VM (``Helpers.domain_type = hvm``) the guest must be
able to take the device: ``VM_guest_metrics.can_use_hotplug_<vbd|vif>``
``yes``, or ``unspecified`` with ``PV_drivers_detected``; ``no`` gives
``OPERATION_NOT_ALLOWED ["VM states it does not support <VBD|VIF>
hotplug."]``; no guest metrics, or ``unspecified`` without drivers, gives
``VM_MISSING_PV_DRIVERS [vm]`` (``Xapi_pv_driver_version.make_error_opt``:
drivers count when ``PV_drivers_version`` has ``major`` and ``minor``).
A PV VM (our stub domains) has no such check.  The guest agent sets the
claims from the guest's xenstore ``feature/hotplug/{vbd,vif}``
(``xapi_guest_agent.ml``).
"""
from typing import Dict, Iterable, Optional, Tuple

from nova_xen_stubdom.sim.errors import XapiError

Refusal = Optional[Tuple[str, list]]
Table = Dict[str, Refusal]
#: VM operations during which no device may be (un)plugged
_BLOCKING_VM_OPS = ('clean_shutdown', 'hard_shutdown', 'suspend', 'pause')


def is_hvm(rec: dict) -> bool:
    """``Helpers.domain_type``: the VM's ``domain_type``, else its boot
    policy (as sim/vm.py ``is_hvm``; not imported: vm imports us)."""
    if rec['domain_type'] in ('hvm', 'pvh', 'pv', 'pv_in_pvh'):
        return rec['domain_type'] == 'hvm'
    return rec['HVM_boot_policy'] != ''


def _has_pv_drivers(gm: Optional[dict]) -> bool:
    version = (gm or {}).get('PV_drivers_version') or {}
    try:
        int(version['major'])
        int(version['minor'])
    except (KeyError, ValueError):
        return False
    return True


def new_table(ops: Iterable[str]) -> Table:
    return {op: None for op in ops}


def refuse(table: Table, code: str, params: list, ops: Iterable[str]
           ) -> None:
    """``set_errors``: the first refusal of each op stands."""
    for op in ops:
        if table[op] is None:
            table[op] = (code, list(params))


def power_and_vm_ops(table: Table, vm: str, vm_rec: dict, ref: str,
                     plugged: bool, unplug_ops: Tuple[str, ...]) -> None:
    """The power-state and VM-current-operation rules (both helpers)."""
    state = vm_rec['power_state']
    if state == 'Running':
        if plugged:
            refuse(table, 'DEVICE_ALREADY_ATTACHED', [ref], ['plug'])
        else:
            refuse(table, 'DEVICE_ALREADY_DETACHED', [ref], unplug_ops)
    else:
        refuse(table, 'VM_BAD_POWER_STATE', [vm, 'running', state.lower()],
               ('plug',) + unplug_ops)
    for op in vm_rec['current_operations'].values():
        if op in _BLOCKING_VM_OPS:
            refuse(table, 'OPERATION_NOT_ALLOWED',
                   ['Current operation on VM:%s is %s' % (vm, op)],
                   ['plug', 'unplug'])


def guest_claim(table: Table, db, vm: str, vm_rec: dict, kind: str,
                ops: Iterable[str]) -> None:
    """A running HVM guest's claim to take *kind* ('vbd'/'vif') hot-plug."""
    if vm_rec['power_state'] != 'Running' or not is_hvm(vm_rec):
        return
    gm_ref = vm_rec['guest_metrics']
    gm = db.get('VM_guest_metrics', gm_ref) \
        if db.exists('VM_guest_metrics', gm_ref) else None
    claim = (gm or {}).get('can_use_hotplug_' + kind, 'unspecified')
    if claim == 'no':
        refuse(table, 'OPERATION_NOT_ALLOWED',
               ['VM states it does not support %s hotplug.' % kind.upper()],
               ops)
    elif claim != 'yes' and not (gm or {}).get('PV_drivers_detected') \
            and not _has_pv_drivers(gm):
        refuse(table, 'VM_MISSING_PV_DRIVERS', [vm], ops)


def assert_allowed(table: Table, op: str) -> None:
    refusal = table[op]
    if refusal is not None:
        code, params = refusal
        raise XapiError(code, *params)


def allowed(table: Table) -> list:
    return sorted(op for op, refusal in table.items() if refusal is None)
