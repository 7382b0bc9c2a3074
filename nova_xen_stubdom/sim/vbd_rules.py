"""XAPI's rules for a VBD: which operations its ``allowed_operations``
lists and which ``VBD.plug``/``unplug``/``unplug_force`` refuse.

Modelled on xapi-project/xen-api ``ocaml/xapi/xapi_vbd_helpers.ml``
``valid_operations`` (in its order; the first refusal of an op stands):

* any current operation refuses all but ``pause``/``unpause``
  (``OTHER_OPERATION_IN_PROGRESS ["VBD", vbd, op]``);
* a VBD not ``unpluggable`` is never unplugged (``VBD_NOT_UNPLUGGABLE``);
  only a CD takes ``insert``/``eject`` (``VBD_NOT_REMOVABLE_MEDIA``), an
  empty one no ``eject`` (``VBD_IS_EMPTY``), a full one no ``insert``
  (``VBD_NOT_EMPTY``);
* the power-state, VM-operation and HVM guest-claim rules it shares with
  the VIF helper (:mod:`hotplug_rules`, claim ``can_use_hotplug_vbd``);
  outside ``Running`` also no ``pause``/``unpause`` unless ``Paused``;
* on a running HVM VM a CD drive is never (un)plugged
  (``OPERATION_NOT_ALLOWED ["HVM CDROMs cannot be hotplugged/unplugged,
  only inserted or ejected"]``);
* an unmanaged VDI refuses everything (``VDI_NOT_MANAGED``).

The VDI sharing checks (``VDI_IN_USE``/``VDI_READONLY``, XAPI's
``expensive_sharing_checks``) run at plug time in :mod:`devices`
(``_assert_attachable``), as XAPI runs them only on the error path.
``VBD.plug``/``unplug`` assert the op valid first (``message_forwarding.ml``
``VBD.plug``/``unplug`` via ``with_vbd_marked``); ``allowed_operations`` is
refreshed after each VBD and VM operation (``update_allowed_operations``,
``unmark_vbds``).
"""
from nova_xen_stubdom.sim import hotplug_rules as rules
from nova_xen_stubdom.datamodel.schema import NULL_REF

ALL_OPS = ('attach', 'eject', 'unplug', 'unplug_force', 'insert', 'plug',
           'pause', 'unpause')
_PLUG_OPS = ('plug', 'unplug', 'unplug_force')


def valid_operations(db, vbd: str) -> rules.Table:
    """op -> None (allowed) or (error code, params), as XAPI computes it."""
    rec = db.get('VBD', vbd)
    table = rules.new_table(ALL_OPS)
    current = sorted(set(rec['current_operations'].values()))
    if current:
        busy = [op for op in current if op not in ('pause', 'unpause')]
        rules.refuse(table, 'OTHER_OPERATION_IN_PROGRESS',
                     ['VBD', vbd, (busy or current)[0]],
                     [op for op in ALL_OPS
                      if op not in ('pause', 'unpause')] +
                     (['pause', 'unpause'] if busy else []))
    if not rec['unpluggable']:
        rules.refuse(table, 'VBD_NOT_UNPLUGGABLE', [vbd],
                     ['unplug', 'unplug_force'])
    if rec['type'] != 'CD':
        rules.refuse(table, 'VBD_NOT_REMOVABLE_MEDIA', [vbd],
                     ['insert', 'eject'])
    if rec['empty']:
        rules.refuse(table, 'VBD_IS_EMPTY', [vbd], ['eject'])
    else:
        rules.refuse(table, 'VBD_NOT_EMPTY', [vbd], ['insert'])
    vm = rec['VM']
    if not db.exists('VM', vm):
        return table
    vm_rec = db.get('VM', vm)
    state = vm_rec['power_state']
    if state not in ('Running', 'Paused'):
        rules.refuse(table, 'VM_BAD_POWER_STATE',
                     [vm, 'running', state.lower()], ['pause', 'unpause'])
    plugged = rec['currently_attached'] or rec.get('reserved', False)
    rules.power_and_vm_ops(table, vm, vm_rec, vbd, plugged,
                           ('unplug', 'unplug_force'))
    rules.guest_claim(table, db, vm, vm_rec, 'vbd', _PLUG_OPS)
    if state == 'Running' and rules.is_hvm(vm_rec) and rec['type'] == 'CD':
        rules.refuse(table, 'OPERATION_NOT_ALLOWED',
                     ['HVM CDROMs cannot be hotplugged/unplugged, only '
                      'inserted or ejected'], _PLUG_OPS)
    if not rec['empty'] and rec['VDI'] != NULL_REF and \
            db.exists('VDI', rec['VDI']) and \
            not db.get('VDI', rec['VDI']).get('managed', True):
        rules.refuse(table, 'VDI_NOT_MANAGED', [vbd], ALL_OPS)
    return table


def assert_operation_valid(db, vbd: str, op: str) -> None:
    rules.assert_allowed(valid_operations(db, vbd), op)


def update_allowed_operations(db, vbd: str) -> None:
    db.set('VBD', vbd, allowed_operations=rules.allowed(
        valid_operations(db, vbd)))
