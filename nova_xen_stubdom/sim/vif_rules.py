"""XAPI's rules for a VIF: which of ``attach``/``plug``/``unplug`` it allows,
and what ``VIF.create`` accepts.

Modelled on xapi-project/xen-api ``ocaml/xapi/xapi_vif_helpers.ml``:

* ``valid_operations``: one operation at a time
  (``OTHER_OPERATION_IN_PROGRESS``); plug/unplug only while the VM is
  ``Running`` (``VM_BAD_POWER_STATE [vm, running, <actual>]`` -- a *paused*
  VM is refused too); ``DEVICE_ALREADY_ATTACHED`` / ``DEVICE_ALREADY_DETACHED``
  for a plug / unplug that has nothing to do; no plug/unplug while the VM is
  being shut down, suspended or paused (``OPERATION_NOT_ALLOWED``); and for a
  running **HVM** VM (``Helpers.domain_type = hvm``) the guest must be able
  to take the device: its ``VM_guest_metrics.can_use_hotplug_vif`` is
  ``yes``, or ``unspecified`` with ``PV_drivers_detected``; ``no`` gives
  ``OPERATION_NOT_ALLOWED ["VM states it does not support VIF hotplug."]``;
  no guest metrics, or ``unspecified`` without PV drivers, gives
  ``VM_MISSING_PV_DRIVERS [vm]`` (``Xapi_pv_driver_version.make_error_opt``:
  drivers count when ``PV_drivers_version`` has ``major`` and ``minor``).
  A PV VM (our stub domains) has no such check.
* ``create``: ``device`` must be an unsigned decimal (``INVALID_DEVICE``),
  ``MAC`` a valid MAC (``MAC_INVALID``, ``Helpers.is_valid_MAC``), and the
  device unique on its VM (``DEVICE_ALREADY_EXISTS``, :mod:`devices`).

``VIF.plug``/``unplug`` check ``assert_operation_valid`` first
(``message_forwarding.ml`` ``VIF.plug``/``unplug_common`` via
``with_vif_marked``), and ``allowed_operations`` is refreshed after each
VIF and VM operation (``update_allowed_operations``, ``unmark_vifs``).
The guest agent sets ``can_use_hotplug_vif`` from the guest's xenstore key
``feature/hotplug/vif`` (``xapi_guest_agent.ml``).
"""
import hashlib
import re
from typing import Dict, Optional, Tuple

from nova_xen_stubdom.sim.errors import XapiError

ALL_OPS = ('attach', 'plug', 'unplug')
#: VM operations during which no VIF may be (un)plugged
_BLOCKING_VM_OPS = ('clean_shutdown', 'hard_shutdown', 'suspend', 'pause')
_DEVICE = re.compile(r'^[0-9]+$')
#: Helpers.is_valid_MAC: six colon-separated hex pairs
_MAC = re.compile(r'^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$')

Refusal = Optional[Tuple[str, list]]


def _has_pv_drivers(gm: Optional[dict]) -> bool:
    version = (gm or {}).get('PV_drivers_version') or {}
    try:
        int(version['major'])
        int(version['minor'])
    except (KeyError, ValueError):
        return False
    return True


def is_hvm(rec: dict) -> bool:
    """``Helpers.domain_type``: the VM's ``domain_type``, else its boot
    policy (as sim/vm.py ``is_hvm``; not imported: vm imports us)."""
    if rec['domain_type'] in ('hvm', 'pvh', 'pv', 'pv_in_pvh'):
        return rec['domain_type'] == 'hvm'
    return rec['HVM_boot_policy'] != ''


def valid_operations(db, vif: str) -> Dict[str, Refusal]:
    """op -> None (allowed) or (error code, params), as XAPI computes it."""
    rec = db.get('VIF', vif)
    table: Dict[str, Refusal] = {op: None for op in ALL_OPS}

    def refuse(code: str, params: list, ops) -> None:
        for op in ops:
            if table[op] is None:
                table[op] = (code, list(params))

    if rec['current_operations']:
        refuse('OTHER_OPERATION_IN_PROGRESS',
               ['VIF', vif, '{%s}' % '; '.join(
                   rec['current_operations'].values()),
                '{%s}' % '; '.join(rec['current_operations'])], ALL_OPS)
    vm = rec['VM']
    if not db.exists('VM', vm):
        return table
    vm_rec = db.get('VM', vm)
    if vm_rec['is_control_domain']:
        refuse('OPERATION_NOT_ALLOWED',
               ['Control domain does not support hotplug'], ['plug'])
    state = vm_rec['power_state']
    plugged = rec['currently_attached'] or rec.get('reserved', False)
    if state == 'Running':
        if plugged:
            refuse('DEVICE_ALREADY_ATTACHED', [vif], ['plug'])
        else:
            refuse('DEVICE_ALREADY_DETACHED', [vif], ['unplug'])
    else:
        refuse('VM_BAD_POWER_STATE', [vm, 'running', state.lower()],
               ['plug', 'unplug'])
    for op in vm_rec['current_operations'].values():
        if op in _BLOCKING_VM_OPS:
            refuse('OPERATION_NOT_ALLOWED',
                   ['Current operation on VM:%s is %s' % (vm, op)],
                   ['plug', 'unplug'])
    if state == 'Running' and is_hvm(vm_rec):
        gm_ref = vm_rec['guest_metrics']
        gm = db.get('VM_guest_metrics', gm_ref) \
            if db.exists('VM_guest_metrics', gm_ref) else None
        claim = (gm or {}).get('can_use_hotplug_vif', 'unspecified')
        if claim == 'no':
            refuse('OPERATION_NOT_ALLOWED',
                   ['VM states it does not support VIF hotplug.'],
                   ['plug', 'unplug'])
        elif claim != 'yes' and not (gm or {}).get('PV_drivers_detected') \
                and not _has_pv_drivers(gm):
            refuse('VM_MISSING_PV_DRIVERS', [vm], ['plug', 'unplug'])
    return table


def assert_operation_valid(db, vif: str, op: str) -> None:
    refusal = valid_operations(db, vif)[op]
    if refusal is not None:
        code, params = refusal
        raise XapiError(code, *params)


def update_allowed_operations(db, vif: str) -> None:
    table = valid_operations(db, vif)
    db.set('VIF', vif, allowed_operations=sorted(
        op for op, refusal in table.items() if refusal is None))


def check_create(rec: dict, vm_other_config: dict) -> None:
    """``xapi_vif_helpers.create``: the device number and the MAC (an
    empty MAC is generated from the VM's ``other_config:mac_seed`` when it
    has one -- ``gen_mac`` -- else refused)."""
    if not _DEVICE.match(rec['device'] or ''):
        raise XapiError('INVALID_DEVICE', rec['device'])
    seed = vm_other_config.get('mac_seed')
    if rec['MAC'] == '' and seed:
        text = '%s/%s' % (seed, rec['device'])
        digest = hashlib.sha256(text.encode()).digest()
        rec['MAC'] = ':'.join('%02x' % b for b in digest[:6])
        rec['MAC_autogenerated'] = True
    if not _MAC.match(rec['MAC'] or ''):
        raise XapiError('MAC_INVALID', rec['MAC'])
