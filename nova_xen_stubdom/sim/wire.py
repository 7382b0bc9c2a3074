"""XAPI's XML-RPC value encoding, driven by datamodel types.

Inside the simulator values are plain Python: ``int``, ``float``, ``bool``,
``str`` (strings, enums, refs, datetimes as ``YYYYMMDDTHH:MM:SSZ``), ``list``
(sets), ``dict`` (maps, records) and ``None`` (an empty option).  On the wire
XAPI sends ints as decimal strings, datetimes as ``dateTime.iso8601``, map
keys as strings and refs as ``OpaqueRef:<uuid>``.  :func:`decode` checks a
client's value against a type and raises ``FIELD_TYPE_ERROR`` naming the
parameter or field, as XAPI does.
"""
import datetime
import xmlrpc.client
from typing import Any

from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.datamodel.schema import Type, load


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y%m%dT%H:%M:%SZ')


def encode(t: Type, v: Any) -> Any:
    k = t.kind
    if k == 'int':
        return str(int(v))
    if k == 'float':
        return float(v)
    if k == 'bool':
        return bool(v)
    if k == 'datetime':
        return xmlrpc.client.DateTime(v if isinstance(v, str) else str(v))
    if k in ('string', 'enum', 'ref'):
        return '' if v is None else str(v)
    if k == 'set':
        return [encode(t.elem, x) for x in (v or [])]
    if k == 'map':
        return {_key(t.elem, kk): encode(t.value, vv)
                for kk, vv in (v or {}).items()}
    if k == 'option':
        return [] if v is None else encode(t.elem, v)
    if k == 'record':
        return encode_record(t.name, v)
    if k == 'void':
        return ''
    return encode_any(v)


def _key(t: Type, k: Any) -> str:
    if t.kind == 'bool':
        return 'true' if k else 'false'
    return str(k)


def encode_any(v: Any) -> Any:
    """A value of no declared type as XAPI puts it on the wire: ints as
    decimal strings, None as '', containers recursively."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return {str(k): encode_any(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [encode_any(x) for x in v]
    return '' if v is None else v


def encode_record(cls: str, rec: dict) -> dict:
    fields = load().live_fields(cls) if cls in load().classes else {}
    out = {}
    for name, value in rec.items():
        f = fields.get(name)
        out[name] = encode(f.type, value) if f else encode_any(value)
    return out


def decode(t: Type, v: Any, field: str) -> Any:
    """Client value -> internal value; FIELD_TYPE_ERROR [field] if bad."""
    k = t.kind
    try:
        if k == 'int':
            if isinstance(v, bool):
                raise ValueError
            return int(v)
        if k == 'float':
            if isinstance(v, bool):
                raise ValueError
            return float(v)
        if k == 'bool':
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.lower() in ('true', 'false'):
                return v.lower() == 'true'
            raise ValueError
        if k == 'datetime':
            if isinstance(v, xmlrpc.client.DateTime):
                return v.value
            if isinstance(v, datetime.datetime):
                return v.strftime('%Y%m%dT%H:%M:%SZ')
            if isinstance(v, str):
                return v
            raise ValueError
        if k == 'string':
            if isinstance(v, str):
                return v
            raise ValueError
        if k == 'enum':
            values = load().enums.get(t.name)
            if not isinstance(v, str):
                raise ValueError
            if values is not None:
                # XAPI matches enum names case-insensitively
                for candidate in values:
                    if candidate.lower() == v.lower():
                        return candidate
                raise XapiError('INVALID_VALUE', field, v)
            return v
        if k == 'ref':
            if isinstance(v, str):
                return v
            raise ValueError
        if k == 'set':
            if not isinstance(v, (list, tuple)):
                raise ValueError
            return [decode(t.elem, x, field) for x in v]
        if k == 'map':
            if not isinstance(v, dict):
                raise ValueError
            return {decode(t.elem, kk, field): decode(t.value, vv, field)
                    for kk, vv in v.items()}
        if k == 'option':
            if v in ([], None):
                return None
            return decode(t.elem, v, field)
        if k == 'record':
            if not isinstance(v, dict):
                raise ValueError
            return decode_record(t.name, v)
        return v
    except (ValueError, TypeError):
        raise XapiError('FIELD_TYPE_ERROR', field)


def decode_record(cls: str, rec: dict) -> dict:
    fields = load().live_fields(cls)
    out = {}
    for name, value in rec.items():
        f = fields.get(name)
        if f is None:
            # XAPI ignores unknown members of a record argument
            continue
        out[name] = decode(f.type, value, name)
    return out
