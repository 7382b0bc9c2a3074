"""TCP transport between two dom0 agents for one live migration.

A connection opens with a mutual challenge/response on the per-migration
key (which Nova's migrate_data carries from the destination to the source),
so a peer without the key learns nothing and sends nothing:

    server -> client   MAGIC, nonce_s (32 bytes)
    client -> server   MAGIC, nonce_c, HMAC(key, "client" | nonce_s | nonce_c)
    server -> client   OK + HMAC(key, "server" | nonce_c | nonce_s)
                       or NO (key refused; the server closes)

Both ends then derive the stream key (authenticating the v2 stream's tags)
and the control key (authenticating the small JSON control messages the
receiver sends back: ``ready``, ``running``, ``error``).  The key itself never
crosses the wire.
"""
import hashlib
import hmac
import json
import os
import select
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


def recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
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


def client_handshake(sock: socket.socket, key: bytes) -> SessionKeys:
    hello = recv_exact(sock, len(MAGIC) + NONCE_BYTES, 'handshake')
    if hello[:len(MAGIC)] != MAGIC:
        raise WireError('the peer is not a nova-xen-stubdom migration '
                        'receiver (bad handshake magic)')
    nonce_s = hello[len(MAGIC):]
    nonce_c = os.urandom(NONCE_BYTES)
    sock.sendall(MAGIC + nonce_c + _mac(key, b'client', nonce_s, nonce_c))
    verdict = recv_exact(sock, 2, 'handshake verdict')
    if verdict == NO:
        raise KeyRefused('the destination refused the migration key')
    if verdict != OK:
        raise WireError('bad handshake verdict from the destination')
    proof = recv_exact(sock, 32, 'handshake proof')
    if not hmac.compare_digest(proof, _mac(key, b'server', nonce_c, nonce_s)):
        raise KeyRefused('the destination does not hold the migration key')
    return SessionKeys(key, nonce_s, nonce_c)


def server_handshake(sock: socket.socket, key: bytes) -> SessionKeys:
    nonce_s = os.urandom(NONCE_BYTES)
    sock.sendall(MAGIC + nonce_s)
    hello = recv_exact(sock, len(MAGIC) + NONCE_BYTES + 32, 'handshake')
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
    number per direction so messages cannot be replayed or reordered."""

    def __init__(self, sock: socket.socket, key: bytes, role: str) -> None:
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
        if timeout is not None:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
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
        ready, _, _ = select.select([self._sock], [], [], 0)
        return bool(ready)


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
    """The migration stream as a file for :class:`emucore.StreamReader`.

    ``read(n)`` never returns more than *n* bytes, so nothing after the
    stream's END (the control messages that follow on the same socket) is
    consumed; a short read is retried by the reader, b'' is the end.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, n: int) -> bytes:
        try:
            return self._sock.recv(min(n, 4 << 20))
        except OSError as e:
            raise WireError('connection from the source failed: %s' % e)


def bind_in_range(address: str, port_min: int,
                  port_max: int) -> Tuple[socket.socket, int]:
    """A listening socket on the first free port of the range."""
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
        s.listen(4)
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
