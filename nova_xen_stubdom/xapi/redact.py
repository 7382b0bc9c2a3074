"""Masking of secrets in XAPI call arguments before they reach a log.

XAPI takes passwords as plain positional strings (``session.login_*``,
``pool.join``, ``host.call_plugin`` args maps, ``secret.create``), which a
generic key=value masker cannot recognise; the positions are listed here.
"""
from typing import Sequence

from oslo_utils import strutils

MASK = '***'

#: message → positions (in the caller's argument list, session excluded)
#: whose value is a secret.
_SECRET_POSITIONS = {
    'session.login_with_password': (1,),
    'session.slave_local_login_with_password': (1,),
    'session.change_password': (0, 1),
    'pool.join': (2,),
    'pool.join_force': (2,),
    'pool.eject': (),
    'host.set_password': (0,),
    'secret.create': (0,),
}

_SECRET_KEY_HINTS = ('password', 'passwd', 'secret', 'token', 'key')


def _mask_value(value):
    if isinstance(value, dict):
        return {k: (MASK if any(h in str(k).lower() for h in _SECRET_KEY_HINTS)
                    else _mask_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(v) for v in value)
    if isinstance(value, str):
        return strutils.mask_password(value)
    return value


def mask_args(method: str, args: Sequence) -> list:
    """Return a copy of *args* safe to log for XAPI message *method*."""
    name = method[len('Async.'):] if method.startswith('Async.') else method
    secret = _SECRET_POSITIONS.get(name, ())
    return [MASK if i in secret else _mask_value(a)
            for i, a in enumerate(args)]


def format_call(method: str, args: Sequence) -> str:
    """``VM.start('OpaqueRef:…', False, False)`` with secrets masked."""
    return '%s(%s)' % (method, ', '.join(repr(a)
                                         for a in mask_args(method, args)))
