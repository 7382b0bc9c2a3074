"""Records which XAPI calls the project makes, with their parameter types.

Every :class:`~nova_xen_stubdom.xapi.client.XAPIClient` records each message
it sends (without values) into its own ``call_log`` and into :data:`GLOBAL`,
so the fidelity test can check the calls of the whole process against the
XAPI datamodel. Values are never stored: only their XAPI type names.
"""
import datetime
import json
import re
import threading
import xmlrpc.client
from typing import Callable, Dict, List, NamedTuple, Sequence, Set, Tuple

from nova_xen_stubdom.xapi import constants


_DECIMAL = re.compile(r'^-?[0-9]+$')


class CallRecord(NamedTuple):
    """One XAPI call: dotted message name and the XAPI types of its
    parameters (the session reference excluded).

    ``param_shapes`` has one JSON string per parameter describing nested
    values without their content: a type name for scalars, ``{key:
    shape}`` for maps (keys are kept: they are field or option names),
    ``[shape, ...]`` (distinct) for sets.
    """
    name: str
    param_types: Tuple[str, ...]
    param_shapes: Tuple[str, ...] = ()


def xapi_type(value) -> str:
    """XAPI type name for a Python value about to be sent.

    ``ref`` for ``OpaqueRef:`` strings, ``string`` for other strings,
    ``bool``/``int``/``float``/``datetime``, ``map`` for dicts, ``set`` for
    lists/tuples/sets, ``null`` for None.
    """
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    if isinstance(value, str):
        return 'ref' if value.startswith(constants.REF_PREFIX) else 'string'
    if isinstance(value, (datetime.datetime, xmlrpc.client.DateTime)):
        return 'datetime'
    if isinstance(value, dict):
        return 'map'
    if isinstance(value, (list, tuple, set, frozenset)):
        return 'set'
    if value is None:
        return 'null'
    return type(value).__name__


def shape(value):
    """Nested XAPI type structure of *value* (no values, map keys kept).

    Strings of decimal digits are ``'decimal'``: XAPI's wire form of an
    ``int``, which callers may pass instead of a Python int.
    """
    if isinstance(value, str) and _DECIMAL.match(value):
        return 'decimal'
    if isinstance(value, dict):
        return {str(k): shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        out = []
        for v in value:
            s = shape(v)
            if s not in out:
                out.append(s)
        return out
    return xapi_type(value)


def make_record(name: str, args: Sequence) -> CallRecord:
    return CallRecord(name, tuple(xapi_type(a) for a in args),
                      tuple(json.dumps(shape(a), sort_keys=True)
                            for a in args))


class CallRecorder:
    """Thread-safe, bounded record of calls, with optional hooks.

    A nova-compute runs for months: the recorder keeps each distinct
    :class:`CallRecord` once with a counter, not every call. Past
    :attr:`max_distinct` distinct records, new ones are kept without their
    shapes (name and top-level types only), which is a small set.
    """

    max_distinct = 5000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[CallRecord, int] = {}
        self._hooks: List[Callable[[CallRecord], None]] = []

    def record(self, name: str, args: Sequence) -> CallRecord:
        rec = make_record(name, args)
        with self._lock:
            key = rec
            if key not in self._counts and \
                    len(self._counts) >= self.max_distinct:
                key = CallRecord(rec.name, rec.param_types)
            self._counts[key] = self._counts.get(key, 0) + 1
            hooks = list(self._hooks)
        for hook in hooks:
            hook(rec)
        return rec

    @property
    def records(self) -> List[CallRecord]:
        """Distinct records, in the order they were first seen."""
        with self._lock:
            return list(self._counts)

    def distinct(self) -> Set[CallRecord]:
        with self._lock:
            return set(self._counts)

    def signatures(self) -> Set[Tuple[str, Tuple[str, ...]]]:
        """The distinct (name, parameter types) pairs, shapes ignored."""
        with self._lock:
            return {(r.name, r.param_types) for r in self._counts}

    def names(self) -> Set[str]:
        with self._lock:
            return {r.name for r in self._counts}

    def count(self, name: str) -> int:
        """How many calls of *name* were recorded."""
        with self._lock:
            return sum(n for r, n in self._counts.items() if r.name == name)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def add_hook(self, hook: Callable[[CallRecord], None]) -> None:
        """Call *hook(record)* for every future record."""
        with self._lock:
            self._hooks.append(hook)

    def remove_hook(self, hook: Callable[[CallRecord], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)


#: Every call made by any client of this process.
GLOBAL = CallRecorder()
