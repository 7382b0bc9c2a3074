"""One pool's object database: records per class, references, events.

Every record carries every live datamodel field of its class.  Each change
bumps a generation counter; ``event.from`` reads changes newer than a token's
generation (as XAPI does), and deletions are kept as tombstones for a while.
"""
import copy
import re
import threading
import uuid as uuidlib
from typing import Any, Callable, Dict, List, Optional, Tuple

from nova_xen_stubdom.datamodel import schema as schemalib
from nova_xen_stubdom.sim.errors import XapiError, handle_invalid
from nova_xen_stubdom.datamodel.schema import NULL_REF, EPOCH, Type

_UUID_RE = re.compile(r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
                      r'[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')
#: XAPI keeps each table's recent deletions in a queue: at 512 entries it
#: is cut back to the newest 256 (xen-api ocaml/database/db_cache_types.ml
#: Table.remove); older deletions are forgotten and event.from no longer
#: reports them -- silently (fold_over_deleted), never EVENTS_LOST
DELETED_QUEUE_UPPER = 512
DELETED_QUEUE_LOWER = 256


def new_ref() -> str:
    return 'OpaqueRef:%s' % uuidlib.uuid4()


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def type_default(t: Type) -> Any:
    return {'int': 0, 'float': 0.0, 'bool': False, 'string': '',
            'datetime': EPOCH, 'ref': NULL_REF, 'set': [], 'map': {},
            'option': None, 'record': {}}.get(
        t.kind, _enum_first(t) if t.kind == 'enum' else '')


def _enum_first(t: Type) -> str:
    values = schemalib.load().enums.get(t.name) or ['']
    return values[0]


def _split_top(s: str, sep: str) -> List[str]:
    out, depth, cur, quoted = [], 0, '', False
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in '({':
            depth += 1
        elif not quoted and ch in ')}':
            depth -= 1
        if not quoted and depth == 0 and s.startswith(sep, i):
            out.append(cur)
            cur = ''
            i += len(sep)
            continue
        cur += ch
        i += 1
    if cur.strip():
        out.append(cur)
    return [x.strip() for x in out]


def parse_default(t: Type, text: str) -> Any:
    """A datamodel default (as written in XAPI's IDL) -> internal value."""
    text = text.strip()
    k = t.kind
    if k == 'string':
        return text[1:-1] if text.startswith('"') else text
    if k == 'int':
        return int(text)
    if k == 'float':
        return float(text)
    if k == 'bool':
        return text == 'true'
    if k == 'ref':
        return NULL_REF if text in ('Null', 'OpaqueRef:NULL') else text
    if k in ('enum', 'datetime'):
        return text
    if k == 'set':
        inner = text[1:-1].strip()
        return [parse_default(t.elem, x) for x in _split_top(inner, ',')] \
            if inner else []
    if k == 'map':
        inner = text[1:-1].strip()
        out = {}
        for item in (_split_top(inner, ',') if inner else []):
            kk, vv = _split_top(item, ' -> ')
            out[parse_default(t.elem, kk)] = parse_default(t.value, vv)
        return out
    return type_default(t)


class Database:
    def __init__(self) -> None:
        self.schema = schemalib.load()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        #: class -> ref -> record
        self.tables: Dict[str, Dict[str, dict]] = {
            c: {} for c in self.schema.classes}
        #: ref -> class
        self.ref_class: Dict[str, str] = {}
        #: (class, ref) -> generation of last add/mod
        self.gen_of: Dict[Tuple[str, str], int] = {}
        #: (class, ref) -> generation of the add
        self.created_gen: Dict[Tuple[str, str], int] = {}
        #: [(generation, class, ref, last record)]
        #: (generation, class, ref, record, generation created)
        self.tombstones: List[Tuple[int, str, str, dict, int]] = []
        self.generation = 0
        #: called (cls, ref, op) after every change, under the lock
        self.listeners: List[Callable[[str, str, str], None]] = []
        self._defaults: Dict[str, dict] = {}

    # -- records -----------------------------------------------------------
    def default_record(self, cls: str) -> dict:
        base = self._defaults.get(cls)
        if base is None:
            base = {}
            for name, f in self.schema.live_fields(cls).items():
                if f.default is not None:
                    try:
                        base[name] = parse_default(f.type, f.default)
                        continue
                    except (ValueError, IndexError):
                        pass
                base[name] = type_default(f.type)
            self._defaults[cls] = base
        return copy.deepcopy(base)

    def create(self, cls: str, fields: Optional[dict] = None,
               ref: Optional[str] = None) -> str:
        with self.lock:
            rec = self.default_record(cls)
            rec.update(copy.deepcopy(fields or {}))
            if 'uuid' in rec and not rec.get('uuid'):
                rec['uuid'] = new_uuid()
            ref = ref or new_ref()
            self.tables[cls][ref] = rec
            self.ref_class[ref] = cls
            self._bump(cls, ref, 'add')
            self.created_gen[(cls, ref)] = self.generation
            return ref

    def destroy(self, cls: str, ref: str) -> None:
        with self.lock:
            rec = self.get(cls, ref)
            del self.tables[cls][ref]
            del self.ref_class[ref]
            self.generation += 1
            self.gen_of.pop((cls, ref), None)
            created = self.created_gen.pop((cls, ref), 0)
            self.tombstones.append((self.generation, cls, ref, rec, created))
            mine = [t for t in self.tombstones if t[1] == cls]
            if len(mine) + 1 >= DELETED_QUEUE_UPPER:
                drop = {id(t) for t in mine[:-DELETED_QUEUE_LOWER]}
                self.tombstones = [t for t in self.tombstones
                                   if id(t) not in drop]
            self._notify(cls, ref, 'del')

    def exists(self, cls: str, ref: str) -> bool:
        return ref in self.tables.get(cls, ())

    def get(self, cls: str, ref: str) -> dict:
        """The live record (callers hold ``lock`` to read it consistently)."""
        try:
            return self.tables[cls][ref]
        except KeyError:
            raise handle_invalid(cls, ref)

    def snapshot(self, cls: str, ref: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.get(cls, ref))

    def set(self, cls: str, ref: str, **values: Any) -> None:
        with self.lock:
            rec = self.get(cls, ref)
            rec.update(values)
            self._bump(cls, ref, 'mod')

    def touch(self, cls: str, ref: str) -> None:
        """Record an in-place modification of a live record."""
        with self.lock:
            self._bump(cls, ref, 'mod')

    def all_refs(self, cls: str) -> List[str]:
        with self.lock:
            return list(self.tables[cls])

    def find(self, cls: str, **match: Any) -> List[str]:
        with self.lock:
            return [r for r, rec in self.tables[cls].items()
                    if all(rec.get(k) == v for k, v in match.items())]

    def by_uuid(self, cls: str, uuid: str) -> str:
        with self.lock:
            for ref, rec in self.tables[cls].items():
                if rec.get('uuid') == uuid:
                    return ref
        raise XapiError('UUID_INVALID', cls, uuid)

    def class_of(self, ref: str) -> Optional[str]:
        return self.ref_class.get(ref)

    # -- references between objects ----------------------------------------
    def link(self, cls: str, ref: str, field: str, other: str) -> None:
        """Append *other* to a set field (e.g. VM.VBDs) if not present."""
        with self.lock:
            if self.exists(cls, ref):
                rec = self.tables[cls][ref]
                if other not in rec[field]:
                    rec[field].append(other)
                    self._bump(cls, ref, 'mod')

    def unlink(self, cls: str, ref: str, field: str, other: str) -> None:
        with self.lock:
            if self.exists(cls, ref):
                rec = self.tables[cls][ref]
                if other in rec[field]:
                    rec[field].remove(other)
                    self._bump(cls, ref, 'mod')

    # -- changes -----------------------------------------------------------
    def _bump(self, cls: str, ref: str, op: str) -> None:
        self.generation += 1
        self.gen_of[(cls, ref)] = self.generation
        self._notify(cls, ref, op)

    def _notify(self, cls: str, ref: str, op: str) -> None:
        for listener in self.listeners:
            listener(cls, ref, op)
        self.changed.notify_all()

    def changes_since(self, gen: int, classes: Optional[set]
                      ) -> List[Tuple[int, str, str, str, dict]]:
        """[(generation, class, ref, op, snapshot)] newer than *gen*."""
        out = []
        with self.lock:
            for (cls, ref), g in self.gen_of.items():
                if g > gen and (classes is None or cls.lower() in classes
                                or ref in classes):
                    op = 'add' if self.created_gen.get((cls, ref), 0) > gen \
                        else 'mod'
                    out.append((g, cls, ref, op,
                                copy.deepcopy(self.tables[cls][ref])))
            for g, cls, ref, rec, created in self.tombstones:
                # fold_over_deleted: only objects that existed at *gen*
                if g > gen and created <= gen and (
                        classes is None or cls.lower() in classes
                        or ref in classes):
                    out.append((g, cls, ref, 'del', rec))
        out.sort(key=lambda x: x[0])
        return out

    @staticmethod
    def valid_uuid(text: str) -> bool:
        return bool(_UUID_RE.match(text or ''))
