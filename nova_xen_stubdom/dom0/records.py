"""Plain data records for the dom0 payload (Python 3.6, standard library).

``dataclasses`` arrived in Python 3.7; dom0 on XCP-ng 8.3 runs 3.6 and
installs nothing from PyPI.  :func:`record` gives a class declared with
annotated fields what the payload used from dataclasses: an ``__init__``
taking the fields in declaration order (defaults and
``field(default_factory=...)`` included), ``__repr__``, ``__eq__``, and
optional immutability; :func:`asdict` and :func:`replace` work as their
dataclasses namesakes.  One implementation on every Python, so what the
tests check on 3.11 is what runs on 3.6.
"""
MYPY = False
if MYPY:    # annotations only: typing costs each plugin process ~5 ms
    from typing import Any, Callable, Dict, List, Tuple  # noqa: F401

_FIELDS = '__record_fields__'
_NO_DEFAULT = object()


class _Factory:
    __slots__ = ('factory',)

    def __init__(self, factory: 'Callable[[], Any]') -> None:
        self.factory = factory


def field(*, default_factory: 'Callable[[], Any]') -> 'Any':
    """A field whose default is ``default_factory()`` per instance."""
    return _Factory(default_factory)


def fields(obj_or_cls: 'Any') -> 'Tuple[str, ...]':
    """Field names of a record class or instance, in declaration order."""
    return tuple(name for name, _ in getattr(obj_or_cls, _FIELDS))


def _collect(cls: type) -> 'List[Tuple[str, Any]]':
    spec = []           # type: List[Tuple[str, Any]]
    for base in reversed(cls.__mro__[1:]):
        spec.extend(getattr(base, _FIELDS, ()))
    names = [n for n, _ in spec]
    for name in cls.__dict__.get('__annotations__', {}):
        default = cls.__dict__.get(name, _NO_DEFAULT)
        if name in names:
            spec[names.index(name)] = (name, default)
        else:
            spec.append((name, default))
            names.append(name)
        if isinstance(default, _Factory):
            # a mutable default lives in __init__, never on the class
            delattr(cls, name)
    seen_default = False
    for name, default in spec:
        if default is not _NO_DEFAULT:
            seen_default = True
        elif seen_default:
            raise TypeError('non-default field %r follows a default field in '
                            '%s' % (name, cls.__name__))
    return spec


def record(cls: type = None, *, frozen: bool = False) -> 'Any':
    """Class decorator: make *cls* a record of its annotated fields."""
    def wrap(cls: type) -> type:
        spec = _collect(cls)
        setattr(cls, _FIELDS, tuple(spec))

        def __init__(self, *args: 'Any', **kwargs: 'Any') -> None:
            if len(args) > len(spec):
                raise TypeError('%s takes %d arguments, %d given'
                                % (cls.__name__, len(spec), len(args)))
            values = dict(zip((n for n, _ in spec), args))
            for name in kwargs:
                if name in values:
                    raise TypeError('%s: %r given twice'
                                    % (cls.__name__, name))
                if name not in dict(spec):
                    raise TypeError('%s has no field %r'
                                    % (cls.__name__, name))
            values.update(kwargs)
            for name, default in spec:
                if name in values:
                    value = values[name]
                elif isinstance(default, _Factory):
                    value = default.factory()
                elif default is _NO_DEFAULT:
                    raise TypeError('%s: missing field %r'
                                    % (cls.__name__, name))
                else:
                    value = default
                object.__setattr__(self, name, value)
            post = getattr(self, '__post_init__', None)
            if post is not None:
                post()

        def __repr__(self) -> str:
            return '%s(%s)' % (type(self).__name__, ', '.join(
                '%s=%r' % (n, getattr(self, n)) for n, _ in spec))

        def __eq__(self, other: 'Any') -> bool:
            if type(other) is not type(self):
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n)
                       for n, _ in spec)

        cls.__init__ = __init__
        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        if frozen:
            def __setattr__(self, name: str, value: 'Any') -> None:
                raise AttributeError('%s is frozen' % cls.__name__)

            def __hash__(self) -> int:
                return hash(tuple(getattr(self, n) for n, _ in spec))

            cls.__setattr__ = __setattr__
            cls.__delattr__ = __setattr__
            cls.__hash__ = __hash__
        else:
            cls.__hash__ = None     # mutable and compared by value
        return cls
    return wrap if cls is None else wrap(cls)


def _plain(value: 'Any') -> 'Any':
    if hasattr(type(value), _FIELDS):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def asdict(obj: 'Any') -> 'Dict[str, Any]':
    """The record as a dict, nested records, lists and dicts copied."""
    if not hasattr(type(obj), _FIELDS):
        raise TypeError('asdict() wants a record, not %s'
                        % type(obj).__name__)
    return {n: _plain(getattr(obj, n)) for n, _ in getattr(obj, _FIELDS)}


def replace(obj: 'Any', **changes: 'Any') -> 'Any':
    """A new record like *obj* with *changes* applied."""
    values = {n: getattr(obj, n) for n, _ in getattr(obj, _FIELDS)}
    values.update(changes)
    return type(obj)(**values)
