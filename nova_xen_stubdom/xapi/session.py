"""One XAPI session: an SDK proxy, its transport and its session reference."""
import http.client
import socket
import xmlrpc.client
from typing import Optional

import XenAPI

from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import transport as xtransport

#: Exceptions meaning "the connection failed", as opposed to an XAPI error.
CONNECTION_ERRORS = (OSError, http.client.HTTPException,
                     xmlrpc.client.ProtocolError)


def parse_envelope(result, method: str):
    """Value of an XAPI result envelope, or raise its error.

    :raises XAPIError: ``Status`` is ``Failure`` (subclass per code).
    :raises XAPIProtocolError: not an XAPI envelope.
    """
    if not isinstance(result, dict) or 'Status' not in result:
        raise errors.XAPIProtocolError(
            'XAPI %s: answer without Status: %r' % (method, result))
    if result['Status'] == 'Success':
        if 'Value' not in result:
            raise errors.XAPIProtocolError(
                'XAPI %s: success without Value' % method)
        return result['Value']
    description = result.get('ErrorDescription')
    if not description:
        raise errors.XAPIProtocolError(
            'XAPI %s: failure without ErrorDescription' % method)
    raise errors.from_failure(description, method=method)


class XAPISession:
    """A logged-in (or about to be) session on one XAPI endpoint.

    Used by one caller at a time (the pool guarantees it), so the per-call
    socket timeout can live on the transport.
    """

    def __init__(self, url: str, ssl_context=None) -> None:
        self.url = url
        self.transport = xtransport.make_transport(url, ssl_context)
        # NOTE(xapi): the SDK's Session is the XML-RPC proxy; we send raw
        # messages through it (session ref first) rather than through
        # ``session.xenapi`` so that SESSION_INVALID is ours to handle: the
        # SDK would silently re-login up to three times.
        self.proxy = XenAPI.Session(url, transport=self.transport)
        self.ref: Optional[str] = None

    def invoke(self, method: str, args, timeout: Optional[float]):
        """Send *method* with *args* (session reference NOT included)."""
        return self.raw(method, [self.ref] + list(args), timeout)

    def raw(self, method: str, args, timeout: Optional[float]):
        """Send *method* with exactly *args*; return the decoded value."""
        self.transport.set_timeout(timeout)
        try:
            result = getattr(self.proxy, method)(*args)
        except CONNECTION_ERRORS:
            # NOTE(xapi): the HTTP connection is in an unknown state; the
            # next call opens a new one. The session ref stays valid.
            self.transport.close()
            raise
        return parse_envelope(result, method)

    def close_connection(self) -> None:
        self.transport.close()

    def interrupt(self) -> None:
        """Make a call blocked on this session (in another thread) return
        now, with a connection error.

        NOTE(xapi): ``shutdown`` rather than ``close``: closing a socket
        does not wake a thread blocked reading it, shutting it down does
        (green sockets included).
        """
        conn = (self.transport._connection or (None, None))[1]
        sock = getattr(conn, 'sock', None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __repr__(self) -> str:
        return '<XAPISession %s %s>' % (xtransport.redact_url(self.url),
                                        _short(self.ref))


def _short(ref: Optional[str]) -> str:
    # NOTE(xapi): a session ref is a bearer credential; log only its tail.
    if not ref:
        return '(not logged in)'
    return '...' + ref[-6:]
