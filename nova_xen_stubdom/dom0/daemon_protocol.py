"""The wire between the dom0 daemon and its callers (plugin, wrapper).

One request per connection on the daemon's root-only unix socket: a
4-byte big-endian length, then UTF-8 JSON.  Request ``{"fn": str,
"args": {str: str}}`` (the arguments of ``host.call_plugin``; the wrapper
adds ``"plugin": "nova_xen_stubdom.dm"`` for its own functions); reply
``{"ok": str}`` or ``{"error": {"code": str, "message": str}}``, where
``code`` is the :class:`AgentError` code the plugin hands to XAPI as the
status of ``XENAPI_PLUGIN_FAILURE``.  Standard library only: the plugin
process imports this and :mod:`errors`, nothing else of the payload.
"""
import json
import socket
import struct

from nova_xen_stubdom.dom0 import errors

MYPY = False
if MYPY:    # annotations only: typing costs each plugin process ~5 ms
    from typing import Dict, Optional  # noqa: F401

HEADER = struct.Struct('!I')
#: a console log or a migration status is well below this
MAX_MESSAGE = 16 << 20


class DaemonUnavailable(errors.AgentError):
    msg_fmt = ('the nova-xen-stubdom daemon is not answering on %(path)s: '
               '%(reason)s (is nova-xen-stubdom-agent.service running?)')
    code = 'DAEMON_UNAVAILABLE'


class RemoteError(errors.AgentError):
    """An error the daemon reported; keeps the daemon's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError('connection closed after %d of %d bytes'
                           % (len(buf), n))
        buf += chunk
    return bytes(buf)


def send_message(sock: socket.socket, obj: 'Dict') -> None:
    data = json.dumps(obj).encode('utf-8')
    if len(data) > MAX_MESSAGE:
        raise ValueError('message of %d bytes exceeds %d'
                         % (len(data), MAX_MESSAGE))
    sock.sendall(HEADER.pack(len(data)) + data)


def recv_message(sock: socket.socket) -> 'Dict':
    (length,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if length > MAX_MESSAGE:
        raise ValueError('message of %d bytes exceeds %d'
                         % (length, MAX_MESSAGE))
    obj = json.loads(_recv_exact(sock, length).decode('utf-8'))
    if not isinstance(obj, dict):
        raise ValueError('message is not a JSON object')
    return obj


def call(path: str, fn: str, args: 'Dict[str, str]',
         timeout: 'Optional[float]' = 600.0,
         plugin: 'Optional[str]' = None) -> str:
    """Run *fn* in the daemon listening on *path*; its string result.

    :raises DaemonUnavailable: nothing listens, or the connection broke.
    :raises RemoteError: the function failed in the daemon.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
            request = {'fn': fn, 'args': dict(args)}
            if plugin:
                request['plugin'] = plugin
            send_message(sock, request)
            reply = recv_message(sock)
        except (OSError, EOFError, ValueError) as exc:
            raise DaemonUnavailable(path=path, reason=str(exc))
    finally:
        sock.close()
    if 'ok' in reply and isinstance(reply['ok'], str):
        return reply['ok']
    err = reply.get('error') or {}
    raise RemoteError(str(err.get('code') or 'AGENT_ERROR'),
                      str(err.get('message') or 'malformed daemon reply'))
