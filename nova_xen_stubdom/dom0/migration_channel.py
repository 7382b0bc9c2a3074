"""Transport between two dom0 agents for one live migration.

The connection is TLS with both host certificates verified
(:mod:`.migration_tls`); inside it, a mutual challenge/response on the
per-migration key (which Nova's migrate_data carries from the destination
to the source) authorises this migration, so a peer without the key learns
nothing and sends nothing:

    server -> client   MAGIC, nonce_s (32 bytes)
    client -> server   MAGIC, nonce_c, HMAC(key, "client" | nonce_s | nonce_c)
    server -> client   OK + HMAC(key, "server" | nonce_c | nonce_s)
                       or NO (key refused; the server closes)

Both ends then derive the control key (authenticating the small JSON
control messages: ``ready``, ``go``, ``running``, ``error``) and, for a
stream without TLS (the engine's plain-TCP mode, kept for tests and as the
benchmark baseline), the stream key authenticating the v2 stream's tags; on
TLS the stream relies on the cipher's AEAD and carries segment markers
only.  The key itself never crosses the wire.
"""
import ipaddress
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time
from typing import Optional, Tuple

MAGIC = b'XSDMIG1\0'
NONCE_BYTES = 32
KEY_BYTES = 32
OK = b'OK'
NO = b'NO'
CONTROL_HEADER = '!I'
MAX_CONTROL_BYTES = 64 << 10


class WireError(Exception):
    """The connection failed, was cut, or the peer is not who it claims."""


class KeyRefused(WireError):
    """The peer does not hold this migration's key."""


def new_key() -> bytes:
    """A fresh per-migration key."""
    return os.urandom(KEY_BYTES)


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, label + b''.join(parts), hashlib.sha256).digest()


def recv_exact(sock: socket.socket, n: int, what: str,
               deadline: Optional[float] = None) -> bytes:
    """*n* bytes; with a *deadline* (time.monotonic()) a peer dripping
    bytes cannot stretch the wait past it."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireError('the peer did not send the %s in time' % what)
            sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise WireError('the peer did not send the %s in time' % what)
        except OSError as e:
            raise WireError('connection failed while reading %s: %s'
                            % (what, e))
        if not chunk:
            raise WireError('connection closed by the peer while reading %s '
                            '(%d of %d bytes)' % (what, len(buf), n))
        buf += chunk
    return bytes(buf)


class SessionKeys:
    def __init__(self, key: bytes, nonce_s: bytes, nonce_c: bytes) -> None:
        self.stream = _mac(key, b'stream', nonce_s, nonce_c)
        self.control = _mac(key, b'control', nonce_s, nonce_c)


def client_handshake(sock: socket.socket, key: bytes,
                     deadline: Optional[float] = None) -> SessionKeys:
    hello = recv_exact(sock, len(MAGIC) + NONCE_BYTES, 'handshake', deadline)
    if hello[:len(MAGIC)] != MAGIC:
        raise WireError('the peer is not a nova-xen-stubdom migration '
                        'receiver (bad handshake magic)')
    nonce_s = hello[len(MAGIC):]
    nonce_c = os.urandom(NONCE_BYTES)
    sock.sendall(MAGIC + nonce_c + _mac(key, b'client', nonce_s, nonce_c))
    verdict = recv_exact(sock, 2, 'handshake verdict', deadline)
    if verdict == NO:
        raise KeyRefused('the destination refused the migration key')
    if verdict != OK:
        raise WireError('bad handshake verdict from the destination')
    proof = recv_exact(sock, 32, 'handshake proof', deadline)
    if not hmac.compare_digest(proof, _mac(key, b'server', nonce_c, nonce_s)):
        raise KeyRefused('the destination does not hold the migration key')
    return SessionKeys(key, nonce_s, nonce_c)


def server_handshake(sock: socket.socket, key: bytes,
                     deadline: Optional[float] = None) -> SessionKeys:
    nonce_s = os.urandom(NONCE_BYTES)
    sock.sendall(MAGIC + nonce_s)
    hello = recv_exact(sock, len(MAGIC) + NONCE_BYTES + 32, 'handshake',
                       deadline)
    if hello[:len(MAGIC)] != MAGIC:
        raise WireError('the peer is not a nova-xen-stubdom migration '
                        'sender (bad handshake magic)')
    nonce_c = hello[len(MAGIC):len(MAGIC) + NONCE_BYTES]
    proof = hello[len(MAGIC) + NONCE_BYTES:]
    if not hmac.compare_digest(proof, _mac(key, b'client', nonce_s, nonce_c)):
        try:
            sock.sendall(NO)
        except OSError:
            pass
        raise KeyRefused('a sender presented a wrong migration key')
    sock.sendall(OK + _mac(key, b'server', nonce_c, nonce_s))
    return SessionKeys(key, nonce_s, nonce_c)


class ControlChannel:
    """Authenticated JSON messages on the connection (receiver -> sender
    and sender -> receiver), each ``len | json | HMAC``, with a sequence
    number per direction so messages cannot be replayed or reordered.

    *sock* is the connection's :class:`~.migration_pump.Pump`: once the
    handshakes are over only its thread touches the socket, so waiting for
    a message is waiting on the pump's queue (a ``select`` on the
    descriptor would miss bytes the pump or the TLS object already hold).
    """

    def __init__(self, sock, key: bytes, role: str) -> None:
        self._sock = sock
        self._key = key
        self._send_label = role.encode()
        self._recv_label = b'src' if role == 'dst' else b'dst'
        self._send_seq = 0
        self._recv_seq = 0
        self._lock = threading.Lock()

    def send(self, msg: dict) -> None:
        with self._lock:
            self._send_seq += 1
            body = json.dumps(dict(msg, seq=self._send_seq)).encode()
            tag = _mac(self._key, self._send_label, body)
            self._sock.sendall(struct.pack(CONTROL_HEADER, len(body)) + body
                               + tag)

    def recv(self, timeout: Optional[float]) -> dict:
        """Next message; ``WireError`` on timeout, EOF or a bad tag."""
        if timeout is not None and not self._sock.wait_readable(timeout):
            raise WireError('no answer from the peer within %.1f s'
                            % timeout)
        (n,) = struct.unpack(CONTROL_HEADER,
                             recv_exact(self._sock, 4, 'control message'))
        if n > MAX_CONTROL_BYTES:
            raise WireError('control message of %d bytes refused' % n)
        body = recv_exact(self._sock, n, 'control message')
        tag = recv_exact(self._sock, 32, 'control message tag')
        if not hmac.compare_digest(tag, _mac(self._key, self._recv_label,
                                             body)):
            raise WireError('control message failed authentication')
        msg = json.loads(body)
        self._recv_seq += 1
        if msg.get('seq') != self._recv_seq:
            raise WireError('control message out of sequence')
        return msg

    def pending(self) -> bool:
        """Whether :meth:`recv` would not wait."""
        return self._sock.pending()


def hard_shutdown(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    """Shut the TCP connection down under a (TLS) socket another thread may
    be blocked on; SSLSocket.shutdown would drop its TLS state first."""
    try:
        if getattr(sock, 'pending', None) is None:     # plain TCP
            sock.shutdown(how)
            return
        fd = sock.fileno()
        if fd < 0:
            return
        # through a duplicate descriptor: shutdown acts on the connection
        raw = socket.socket(sock.family, sock.type, fileno=os.dup(fd))
        try:
            raw.shutdown(how)
        finally:
            raw.close()
    except (OSError, ValueError):
        pass


class RateLimitedSink:
    """``write(data)`` onto a socket, capped at *bytes_per_s* (0 = no cap)."""

    def __init__(self, sock: socket.socket, bytes_per_s: float = 0) -> None:
        self._sock = sock
        self._rate = float(bytes_per_s)
        self._start = time.monotonic()
        self.sent = 0

    def __call__(self, data) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise WireError('connection to the destination failed: %s' % e)
        self.sent += memoryview(data).nbytes
        if self._rate:
            # Sleep off whatever went out faster than the cap allows.
            ahead = self.sent / self._rate - (time.monotonic() - self._start)
            if ahead > 0.001:
                time.sleep(ahead)

    #: emucore's StreamWriter writes to a file-like object
    write = __call__


class SocketSource:
    """The migration stream as a file for :class:`emucore.StreamReader`,
    read from the connection's :class:`~.migration_pump.Pump` (which has
    already turned a failed TLS record or a cut into :class:`WireError`).

    ``read(n)`` never returns more than *n* bytes, so nothing after the
    stream's END (the control messages that follow on the same socket) is
    consumed; a short read is retried by the reader, b'' is the end.
    """

    def __init__(self, sock) -> None:
        self._sock = sock

    def read(self, n: int) -> bytes:
        return self._io(self._sock.recv, min(n, 4 << 20))

    def readinto(self, buf) -> int:
        """Received bytes copied into *buf*: page records go to the
        reader's reused buffers (``emucore.reader._FileSource``)."""
        return self._io(self._sock.recv_into, buf)

    @staticmethod
    def _io(call, arg):
        try:
            return call(arg)
        except OSError as e:        # the pump's read timeout
            raise WireError('connection from the source failed: %s' % e)


def check_advertised(address: str, allow_loopback: bool) -> str:
    """*address* if a source on another host can reach it: an unspecified
    address (0.0.0.0, ::) is refused, a loopback one unless allowed (tests,
    the simulator: every host on one machine)."""
    if not address:
        raise WireError('no address to receive migrations on: set '
                        'agent_listen_address (or let the driver pass the '
                        "host's management address)")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise WireError('migration listen address %r is not an IP address'
                        % address)
    if ip.is_unspecified:
        raise WireError('migration listen address %s binds every interface '
                        'but is no address a source can connect to: name '
                        "the host's management address" % address)
    if ip.is_loopback and not allow_loopback:
        raise WireError('migration listen address %s is loopback: no other '
                        'host can reach it (allow it with '
                        'migration_allow_loopback = true, for tests only)'
                        % address)
    return address


def bind_in_range(address: str, port_min: int, port_max: int,
                  backlog: int = 8) -> Tuple[socket.socket, int]:
    """A listening socket on the first free port of the range; *backlog*
    bounds the connections the kernel queues before accept()."""
    last = None
    for port in range(port_min, port_max + 1):
        s = socket.socket(socket.AF_INET6 if ':' in address
                          else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((address, port))
        except OSError as e:
            s.close()
            last = e
            continue
        s.listen(backlog)
        return s, s.getsockname()[1]
    raise WireError('no free port for a migration stream on %s in %d-%d '
                    '(last error: %s)' % (address, port_min, port_max, last))


def connect(address: str, port: int, timeout: float) -> socket.socket:
    try:
        s = socket.create_connection((address, port), timeout=timeout)
    except OSError as e:
        raise WireError('cannot connect to the destination agent at %s:%d: '
                        '%s' % (address, port, e))
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
