"""Checks against XAPI's datamodel: calls, records and errors.

Used by the simulator (and its tests) and by the client layer's checker:

* :func:`check_call` -- a message exists (``Async.`` allowed), has this many
  parameters, and each value has the wire type the datamodel declares;
* :func:`check_call_types` -- the same from type names only
  (``'string' 'ref' 'bool' 'int' 'float' 'map' 'set' 'datetime'``);
* :func:`check_record` -- a record has every field of its class, and no
  other, each of the right wire type;
* :func:`check_error` -- an ``ErrorDescription`` is one of XAPI's errors,
  with its parameter count, listed for the message or generic.

Each returns a list of problems (empty when faithful).
"""
import xmlrpc.client
from typing import Any, List, Sequence

from nova_xen_stubdom.datamodel.schema import Type, load

#: Errors XAPI raises from its common call path (dispatch, session and RBAC
#: checks, argument unmarshalling, the generic allowed-operations and memory
#: checks) for any message, although the datamodel lists them nowhere or
#: only for some messages.
GENERIC_ERRORS = frozenset({
    'MESSAGE_METHOD_UNKNOWN', 'MESSAGE_PARAMETER_COUNT_MISMATCH',
    'MESSAGE_REMOVED', 'MESSAGE_DEPRECATED', 'SESSION_INVALID',
    'SESSION_NOT_REGISTERED', 'RBAC_PERMISSION_DENIED', 'FIELD_TYPE_ERROR',
    'HANDLE_INVALID', 'UUID_INVALID', 'INVALID_VALUE', 'INTERNAL_ERROR',
    'NOT_IMPLEMENTED', 'MAP_DUPLICATE_KEY',
    'DB_UNIQUENESS_CONSTRAINT_VIOLATION',
    'OTHER_OPERATION_IN_PROGRESS', 'OPERATION_NOT_ALLOWED', 'TASK_CANCELLED',
    'VM_BAD_POWER_STATE', 'VM_IS_TEMPLATE', 'HOST_NOT_ENOUGH_FREE_MEMORY',
    'NO_HOSTS_AVAILABLE', 'HOST_IS_SLAVE', 'HOST_OFFLINE', 'HOST_DISABLED',
    'DEVICE_ALREADY_ATTACHED', 'DEVICE_ALREADY_DETACHED',
    'DEVICE_ALREADY_EXISTS', 'VDI_IN_USE', 'VDI_READONLY',
    'VM_HAS_PCI_ATTACHED',
    'LICENCE_RESTRICTION',
    # event.from's token parser (the datamodel lists only EVENTS_LOST)
    'EVENT_FROM_TOKEN_PARSE_FAILURE',
})


#: Errors real XAPI raises from a message although its datamodel entry does
#: not list them (plugin runner, memory and vCPU constraint checks).
_MEM = frozenset({'MEMORY_CONSTRAINT_VIOLATION'})
_VCPU = frozenset({'VALUE_NOT_SUPPORTED'})
MESSAGE_ERRORS = {
    'host.call_plugin': frozenset({'XENAPI_PLUGIN_FAILURE'}),
    # xapi_vm_lifecycle.ml check_op_for_feature (via with_vm_operation)
    'VM.clean_shutdown': frozenset({'VM_LACKS_FEATURE'}),
    'VM.clean_reboot': frozenset({'VM_LACKS_FEATURE'}),
    'VM.shutdown': frozenset({'VM_LACKS_FEATURE'}),
    # ocaml/xapi/xapi_vm.ml set_suspend_VDI
    'VM.set_suspend_VDI': frozenset({
        'SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL', 'VDI_INCOMPATIBLE_TYPE'}),
    'VM.call_plugin': frozenset({'XENAPI_PLUGIN_FAILURE'}),
    'VM.set_memory_limits': _MEM, 'VM.set_memory_static_range': _MEM,
    'VM.set_memory_dynamic_range': _MEM, 'VM.set_memory': _MEM,
    'VM.set_memory_static_max': _MEM,
    'VM.set_VCPUs_max': _VCPU, 'VM.set_VCPUs_at_startup': _VCPU,
    # ocaml/xapi/xapi_vm.ml power_state_reset
    'VM.power_state_reset': frozenset({'CANNOT_RESET_CONTROL_DOMAIN',
                                       'HOST_IS_LIVE', 'DOMAIN_EXISTS'}),
    # iSCSI SRs (sim/iscsi.py): xapi_sr.ml introduce/scan, xapi_pbd.ml
    # create_common/plug, xapi_vdi.ml introduce_dbonly, SM backend failures
    'SR.introduce': frozenset({'SR_UUID_EXISTS'}),
    'SR.scan': frozenset({'SR_NOT_ATTACHED', 'SR_BACKEND_FAILURE'}),
    'PBD.create': frozenset({'PBD_EXISTS', 'VALUE_NOT_SUPPORTED'}),
    'PBD.plug': frozenset({'SR_BACKEND_FAILURE', 'SR_NOT_SHARABLE'}),
    'VDI.introduce': frozenset({'LOCATION_NOT_UNIQUE', 'SR_HAS_NO_PBDS',
                                'SR_BACKEND_FAILURE'}),
    'VDI.destroy': frozenset({'SR_OPERATION_NOT_SUPPORTED'}),
    # xapi_vbd.ml plug; xapi_vbd_helpers.ml valid_operations
    # (sim/vbd_rules.py) for the rest
    'VBD.plug': frozenset({'SR_NOT_ATTACHED',
                           'DISK_VBD_MUST_BE_READWRITE_FOR_HVM',
                           'VM_MISSING_PV_DRIVERS', 'VDI_NOT_MANAGED'}),
    'VBD.unplug': frozenset({'VM_MISSING_PV_DRIVERS', 'VBD_NOT_UNPLUGGABLE',
                             'VDI_NOT_MANAGED'}),
    'VBD.unplug_force': frozenset({'VM_MISSING_PV_DRIVERS',
                                   'VBD_NOT_UNPLUGGABLE',
                                   'VDI_NOT_MANAGED'}),
    # xapi_vbd.ml create
    'VBD.create': frozenset({'VBD_CDS_MUST_BE_READONLY'}),
    # xapi_vif_helpers.ml valid_operations / create (sim/vif_rules.py)
    'VIF.plug': frozenset({'VM_MISSING_PV_DRIVERS'}),
    'VIF.unplug': frozenset({'VM_MISSING_PV_DRIVERS'}),
    'VIF.unplug_force': frozenset({'VM_MISSING_PV_DRIVERS'}),
    'VIF.create': frozenset({'INVALID_DEVICE', 'MAC_INVALID'}),
    'VM.start': frozenset({'SR_NOT_ATTACHED'}),
    'VM.start_on': frozenset({'SR_NOT_ATTACHED'}),
}


#: XAPI errors defined in ocaml/xapi-consts/api_errors.ml whose parameter
#: list the datamodel does not document (xapi-errors.json lists them under
#: ``names_without_parameters_listed``): parameter count from the source.
ERRORS_WITHOUT_PARAMS = {
    # ocaml/xapi/xapi_vm.ml set_suspend_VDI: ["<uuid> : <md5>"; same]
    'SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL': 2,
}

#: (message, error) -> parameter count XAPI really raises where its source
#: differs from the error's declared parameter list.
SOURCE_ARITY = {
    # ocaml/xapi/xapi_xenops.ml, builder_of_vm/make_direct_boot_record:
    # INVALID_VALUE [kernel|ramdisk; path; reason]
    ('VM.start', 'INVALID_VALUE'): 3, ('VM.start_on', 'INVALID_VALUE'): 3,
    ('VM.resume', 'INVALID_VALUE'): 3, ('VM.resume_on', 'INVALID_VALUE'): 3,
}


def wire_type_problem(t: Type, v: Any, where: str) -> List[str]:
    k = t.kind
    bad = ['%s: expected %s, got %r' % (where, t, v)]
    if k == 'int':
        if isinstance(v, bool):
            return bad
        if isinstance(v, int):
            return []
        if isinstance(v, str):
            try:
                int(v)
                return []
            except ValueError:
                return bad
        return bad
    if k == 'float':
        return [] if isinstance(v, (int, float)) and not isinstance(
            v, bool) else bad
    if k == 'bool':
        return [] if isinstance(v, bool) else bad
    if k == 'string':
        return [] if isinstance(v, str) else bad
    if k == 'datetime':
        return [] if isinstance(v, (str, xmlrpc.client.DateTime)) else bad
    if k == 'enum':
        values = load().enums.get(t.name)
        if not isinstance(v, str):
            return bad
        if values is not None and v.lower() not in {x.lower()
                                                    for x in values}:
            return ['%s: %r is not a value of enum %s' % (where, v, t.name)]
        return []
    if k == 'ref':
        return [] if isinstance(v, str) and v.startswith('OpaqueRef:') \
            else bad
    if k == 'set':
        if not isinstance(v, (list, tuple)):
            return bad
        out = []
        for i, x in enumerate(v):
            out += wire_type_problem(t.elem, x, '%s[%d]' % (where, i))
        return out
    if k == 'map':
        if not isinstance(v, dict):
            return bad
        out = []
        for kk, vv in v.items():
            if t.elem.kind in ('int',) and isinstance(kk, str):
                out += wire_type_problem(t.elem, kk, '%s key' % where)
            elif t.elem.kind not in ('int',):
                out += wire_type_problem(t.elem, kk, '%s key' % where)
            out += wire_type_problem(t.value, vv, '%s[%r]' % (where, kk))
        return out
    if k == 'record':
        if not isinstance(v, dict):
            return bad
        return check_record(t.name, v, where=where)
    if k == 'option':
        if v in ([], None):
            return []
        return wire_type_problem(t.elem, v, where)
    return []


def check_call(name: str, params: Sequence[Any]) -> List[str]:
    """*params* as sent on the wire, session first if the message has one."""
    msg = load().message(name[6:] if name.startswith('Async.') else name)
    if msg is None:
        return ['%s: no such message in the datamodel' % name]
    problems = []
    if msg.state == 'removed':
        problems.append('%s: removed from the API' % name)
    if len(params) != len(msg.params):
        return problems + ['%s: %d parameters, the datamodel has %d (%s)' % (
            name, len(params), len(msg.params),
            ', '.join(n for _t, n in msg.params))]
    for (t, pname), value in zip(msg.params, params):
        problems += wire_type_problem(t, value, '%s(%s)' % (name, pname))
    return problems


_TYPE_NAMES = {'int': 'int', 'float': 'float', 'bool': 'bool',
               'string': 'string', 'datetime': 'datetime', 'enum': 'string',
               'ref': 'ref', 'set': 'set', 'map': 'map', 'record': 'map',
               'option': None, 'any': None}


def check_call_types(name: str, types: Sequence[str],
                     with_session: bool = False) -> List[str]:
    """Like :func:`check_call` from coarse type names; *types* excludes the
    session unless *with_session*."""
    msg = load().message(name[6:] if name.startswith('Async.') else name)
    if msg is None:
        return ['%s: no such message in the datamodel' % name]
    decl = list(msg.params)
    if not with_session and decl and decl[0][1] == 'session_id':
        decl = decl[1:]
    if len(types) != len(decl):
        return ['%s: %d parameters, the datamodel has %d (%s)' % (
            name, len(types), len(decl), ', '.join(n for _t, n in decl))]
    problems = []
    for (t, pname), got in zip(decl, types):
        want = _TYPE_NAMES.get(t.kind)
        ok = want is None or got == want or (
            # ints are sent as decimal strings
            t.kind == 'int' and got == 'string') or (
            t.kind == 'ref' and got == 'string') or (
            t.kind == 'enum' and got == 'string')
        if not ok:
            problems.append('%s(%s): expected %s, sent %s' % (
                name, pname, t, got))
    return problems


def check_record(cls: str, record: dict, where: str = '') -> List[str]:
    schema = load()
    if cls not in schema.classes:
        return ['%s: no class %s' % (where or cls, cls)]
    fields = schema.live_fields(cls)
    where = where or cls
    problems = ['%s: missing field %s' % (where, f)
                for f in fields if f not in record]
    problems += ['%s: field %s is not in the datamodel' % (where, f)
                 for f in record if f not in fields]
    for name, value in record.items():
        if name in fields:
            problems += wire_type_problem(fields[name].type, value,
                                          '%s.%s' % (where, name))
    return problems


def check_error(message: str, description: Sequence[str]) -> List[str]:
    """*description*: the ``ErrorDescription`` list XAPI returned."""
    schema = load()
    if not description:
        return ['%s: empty ErrorDescription' % message]
    code, params = description[0], list(description[1:])
    if code not in schema.errors and code not in ERRORS_WITHOUT_PARAMS:
        return ['%s: %s is not an XAPI error' % (message, code)]
    problems = []
    expected = schema.errors.get(code)
    if code in ERRORS_WITHOUT_PARAMS and \
            len(params) != ERRORS_WITHOUT_PARAMS[code]:
        problems.append('%s: %s has %d parameters, got %d' % (
            message, code, ERRORS_WITHOUT_PARAMS[code], len(params)))
    name = message[6:] if message.startswith('Async.') else message
    if SOURCE_ARITY.get((name, code)) == len(params):
        expected = None
    if expected and len(params) != len(expected):
        problems.append('%s: %s has %d parameters (%s), got %d: %r' % (
            message, code, len(expected), ', '.join(expected), len(params),
            params))
    for p in params:
        if not isinstance(p, str):
            problems.append('%s: %s parameter %r is not a string'
                            % (message, code, p))
    msg = schema.message(name)
    if code not in GENERIC_ERRORS and \
            code not in MESSAGE_ERRORS.get(name, ()) and \
            (msg is None or code not in msg.errors):
        problems.append('%s: %s is neither listed for this message nor '
                        'generic' % (message, code))
    return problems
