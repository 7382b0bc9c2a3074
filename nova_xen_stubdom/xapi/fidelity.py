"""Check recorded XAPI calls against the XAPI datamodel.

A call passes when its message exists (``Async.`` variants only for
messages that are not implicit field accessors), is not removed, and each
parameter matches the datamodel type: refs are ``OpaqueRef:`` strings, ints
are Python ints or decimal strings (XAPI's wire form), floats
are floats, maps/sets recurse into keys and values, and a ``T record``
argument (``VM.create``) has only fields of T with the right types and every
field XAPI requires at construction (RW or RO/constructor without default).

The datamodel comes from the simulator's compact schema
(:mod:`nova_xen_stubdom.datamodel.schema`), the same one the simulator
serves; the client layer imports nothing of the simulator.
"""
import json
from typing import Iterable, List, Optional

from nova_xen_stubdom.xapi import recorder


def _schema():
    from nova_xen_stubdom.datamodel import schema
    return schema.load()


def _check_value(t, shape, where: str, problems: List[str],
                 schema) -> None:
    kind = t.kind
    if kind == 'any':
        return
    if shape == 'null':
        problems.append('%s: None is not an XAPI value (wants %s)'
                        % (where, t))
        return
    if kind == 'option':
        _check_value(t.elem, shape, where, problems, schema)
        return
    if kind in ('set', 'map', 'record'):
        want = list if kind == 'set' else dict
        if not isinstance(shape, want):
            problems.append('%s: wants %s, got %s' % (where, t,
                                                      _describe(shape)))
            return
        if kind == 'set':
            for s in shape:
                _check_value(t.elem, s, where + '[]', problems, schema)
        elif kind == 'map':
            for key, s in shape.items():
                _check_key(t.elem, key, where, problems)
                _check_value(t.value, s, '%s[%r]' % (where, key), problems,
                             schema)
        else:
            _check_record(t.name, shape, where, problems, schema)
        return
    if not isinstance(shape, str):
        problems.append('%s: wants %s, got %s' % (where, t, _describe(shape)))
        return
    ok = {
        'ref': ('ref',),
        'string': ('string', 'ref', 'decimal'),
        'enum': ('string',),
        'datetime': ('datetime', 'string', 'decimal'),
        # ints travel as decimal strings; the client encodes Python ints
        'int': ('int', 'decimal'),
        'float': ('float',),
        'bool': ('bool',),
    }.get(kind)
    if ok is None:
        problems.append('%s: unsupported datamodel type %s' % (where, t))
    elif shape not in ok:
        hint = ''
        if kind == 'int' and shape == 'string':
            hint = ' (not a decimal integer)'
        elif kind == 'ref' and shape == 'string':
            hint = ' (a uuid or name where a reference is needed?)'
        problems.append('%s: wants %s, got %s%s' % (where, t, shape, hint))


def _check_key(t, key: str, where: str, problems: List[str]) -> None:
    if t.kind == 'ref' and not key.startswith('OpaqueRef:'):
        problems.append('%s: map key %r is not a reference' % (where, key))


def _check_record(cls: str, shape: dict, where: str, problems: List[str],
                  schema) -> None:
    if cls not in schema.classes:
        problems.append('%s: unknown class %s' % (where, cls))
        return
    fields = schema.live_fields(cls)
    for name, s in shape.items():
        field = fields.get(name)
        if field is None:
            problems.append('%s: %s has no field %r' % (where, cls, name))
            continue
        _check_value(field.type, s, '%s.%s' % (where, name), problems,
                     schema)
    missing = sorted(n for n, f in fields.items()
                     if f.qualifier in ('RW', 'RO/constructor')
                     and f.default is None and n not in shape)
    if missing:
        problems.append('%s: %s record lacks required fields %s'
                        % (where, cls, ', '.join(missing)))


def _describe(shape) -> str:
    if isinstance(shape, dict):
        return 'map'
    if isinstance(shape, list):
        return 'set'
    return str(shape)


def check_call(rec: recorder.CallRecord, schema=None) -> List[str]:
    """Problems of one recorded call (empty when it is faithful)."""
    schema = schema or _schema()
    name = rec.name
    if name.startswith('HTTP '):
        return _check_http(rec)
    is_async = name.startswith('Async.')
    base = name[len('Async.'):] if is_async else name
    msg = schema.message(base)
    if msg is None:
        return ['%s: no such message in the XAPI datamodel' % name]
    problems = []
    if msg.state == 'removed':
        problems.append('%s: removed from XAPI' % name)
    if is_async and msg.implicit and msg.name not in ('create', 'destroy'):
        # XAPI generates Async variants for explicit messages and for the
        # implicit constructor/destructor only.
        problems.append('%s: implicit messages other than create/destroy '
                        'have no Async variant' % name)
    params = list(msg.params)
    if _has_session(msg):
        params = params[1:]
    if len(rec.param_types) != len(params):
        problems.append('%s: %d parameters given, the datamodel has %d (%s)'
                        % (name, len(rec.param_types), len(params),
                           ', '.join('%s %s' % (t, n) for t, n in params)))
        return problems
    shapes = rec.param_shapes or tuple(json.dumps(t)
                                       for t in rec.param_types)
    for (t, pname), s in zip(params, shapes):
        _check_value(t, json.loads(s), '%s(%s)' % (name, pname), problems,
                     schema)
    if not problems:
        # NOTE(xapi): the simulator's own (coarser) checker must agree;
        # a disagreement means one of the two checkers is wrong.
        from nova_xen_stubdom.datamodel import fidelity as dm_fidelity
        problems = ['%s (simulator checker)' % p
                    for p in dm_fidelity.check_call_types(
                        name, rec.param_types,
                        with_session=not _has_session(msg))]
    return problems


def _has_session(msg) -> bool:
    return bool(msg.params) and msg.params[0][0].kind == 'ref' and \
        msg.params[0][0].name == 'session'


def _check_http(rec: recorder.CallRecord) -> List[str]:
    from nova_xen_stubdom.xapi import handlers
    _, verb, path = rec.name.split(' ', 2)
    allowed = handlers.HANDLERS.get(path)
    if allowed is None:
        return ['%s: not an XAPI HTTP handler the client knows' % rec.name]
    problems = []
    query = json.loads(rec.param_shapes[0]) if rec.param_shapes else {}
    for key, shape in query.items():
        if key not in allowed:
            problems.append('%s: unknown query parameter %r' % (rec.name,
                                                                key))
        elif key in ('vdi', 'base', 'task_id') and shape != 'ref':
            problems.append('%s: %s must be a reference' % (rec.name, key))
    if 'vdi' not in query:
        problems.append('%s: no vdi given' % rec.name)
    return problems


def check_calls(records: Iterable[recorder.CallRecord],
                schema=None) -> List[str]:
    """Problems of every distinct call in *records*."""
    schema = schema or _schema()
    problems: List[str] = []
    for rec in sorted(set(records)):
        problems.extend(check_call(rec, schema))
    return problems


def message_exists(name: str, schema=None) -> Optional[str]:
    """None when *name* (maybe ``Async.``) is a datamodel message, else a
    problem string."""
    schema = schema or _schema()
    base = name[len('Async.'):] if name.startswith('Async.') else name
    if schema.message(base) is None:
        return '%s: no such message in the XAPI datamodel' % name
    return None
