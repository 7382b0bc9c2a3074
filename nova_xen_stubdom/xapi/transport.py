"""HTTP(S) transports for the XenAPI SDK with timeouts and verified TLS.

``XenAPI.Session`` is an ``xmlrpc.client.ServerProxy``; it accepts a
transport, and the stdlib transports have no socket timeout and (for https)
only the system CA bundle unless given an ``ssl.SSLContext``. We hand it our
own transport so that every call has a deadline and ``[xen_stubdom] ca_file``
is honoured.
"""
import http.client
import ipaddress
import select
import ssl
import urllib.parse
import xmlrpc.client
from typing import Optional


def make_ssl_context(verify: bool = True,
                     ca_file: Optional[str] = None) -> ssl.SSLContext:
    """TLS context for XAPI: verified (system or *ca_file* CAs) by default.

    :param verify: False disables certificate and host name checks (test
        pools only).
    :param ca_file: PEM bundle of CAs to trust instead of the system's.
    """
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_file)


def _connection_dropped(sock) -> bool:
    """True if the peer closed an idle keep-alive connection (or sent
    something unasked): reading it would give EOF or garbage."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _TimeoutMixin:
    """Gives the connection a socket timeout that can change per call, and
    sends each request exactly once.

    The pool hands a session to one caller at a time, so setting
    :attr:`timeout` before a call does not race with other callers.

    NOTE(xapi): ``xmlrpc.client.Transport.request`` silently sends a
    request a second time when the connection resets, which would run a
    non-idempotent XAPI message (VM.start, VM.clone) twice if the host
    dropped the connection after executing it. We instead check a reused
    connection before sending (the case that resend exists for: a server
    closing idle keep-alive connections) and leave any retry to the
    client, which knows which messages are safe to resend.
    """

    timeout: Optional[float] = None

    def request(self, host, handler, request_body, verbose=False):
        conn = self._connection[1] if self._connection[0] == host else None
        if conn is not None and conn.sock is not None and \
                _connection_dropped(conn.sock):
            self.close()
        return self.single_request(host, handler, request_body, verbose)

    def set_timeout(self, timeout: Optional[float]) -> None:
        self.timeout = timeout
        conn = getattr(self, '_connection', (None, None))[1]
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)


class TimeoutTransport(_TimeoutMixin, xmlrpc.client.Transport):
    """Plain-HTTP transport with a socket timeout."""

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, x509 = self.get_host_info(host)
        self._connection = host, http.client.HTTPConnection(
            chost, timeout=self.timeout)
        return self._connection[1]


class TimeoutSafeTransport(_TimeoutMixin, xmlrpc.client.SafeTransport):
    """HTTPS transport with a socket timeout and an explicit SSL context."""

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, x509 = self.get_host_info(host)
        self._connection = host, http.client.HTTPSConnection(
            chost, timeout=self.timeout, context=self.context)
        return self._connection[1]


def make_transport(url: str, ssl_context: Optional[ssl.SSLContext] = None,
                   timeout: Optional[float] = None):
    """Transport for *url* (http or https)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == 'https':
        transport = TimeoutSafeTransport(context=ssl_context)
    elif scheme == 'http':
        transport = TimeoutTransport()
    else:
        raise ValueError('XAPI URL must be http:// or https://, got %r'
                         % url)
    transport.timeout = timeout
    return transport


def master_url(current_url: str, master_address: str) -> str:
    """URL of the pool master named by ``HOST_IS_SLAVE``.

    Real XAPI names the master by IP address: the scheme, port and path of
    the URL we used are kept. The simulator serves each host on its own
    loopback port and names the master as ``IP:PORT``; a full URL is also
    accepted as is.

    :param current_url: URL of the pool member that refused the login.
    :param master_address: ``HOST_IS_SLAVE``'s parameter.
    """
    address = (master_address or '').strip()
    if not address:
        raise ValueError('HOST_IS_SLAVE named no master address')
    if '://' in address:
        return address
    cur = urllib.parse.urlsplit(current_url)
    host, port = address, None
    if address.startswith('['):                   # [v6] or [v6]:port
        end = address.index(']')
        host = address[1:end]
        rest = address[end + 1:]
        if rest.startswith(':'):
            port = int(rest[1:])
    elif address.count(':') == 1:                 # v4/name:port
        host, p = address.split(':')
        port = int(p)
    # else: bare v4, name, or bare v6 (several colons)
    if port is None:
        port = cur.port
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    netloc = '[%s]' % host if is_v6 else host
    if port is not None:
        netloc += ':%d' % port
    return urllib.parse.urlunsplit((cur.scheme, netloc, cur.path,
                                    cur.query, cur.fragment))


def redact_url(url: str) -> str:
    """*url* without any user:password part, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ''
        if parts.port:
            netloc += ':%d' % parts.port
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts)
