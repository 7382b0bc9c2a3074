"""One thread that owns a migration connection's socket once the
handshakes are over (see :class:`Pump`)."""
import collections
import errno
import os
import select
import socket
import ssl
import threading
import time
from typing import Optional

from nova_xen_stubdom.dom0.migration_channel import WireError


class Pump:
    """Every read and write of one connected socket (TLS or plain TCP), done
    by one thread of its own once the handshakes are over.

    One ``ssl.SSLSocket`` must not be read by one thread while another
    writes it (OpenSSL's SSL object is not safe for that), yet a pipelined
    migration needs both at once: the source encodes the next batch while
    the last one is encrypted and sent and the destination's
    acknowledgements come back; the destination decrypts the next bytes
    while the last batch is written into the guest.  So the socket goes
    non-blocking and this thread alone drives it (``select`` on it and on a
    wake-up pipe): it sends what :meth:`sendall` queued, in order, and reads
    whatever arrives into buffers that :meth:`recv` hands out.  The other
    threads only touch the queues.  The cipher's and the kernel's work run
    outside the GIL, so encoding (or applying) and the TLS records proceed
    on two cores.

    Both queues are bounded (*out_limit*, *in_limit* bytes): a producer
    faster than the wire waits in :meth:`sendall`, and a consumer slower
    than the wire stops this thread reading, so TCP pushes back on the
    peer.  A failed or cut connection fails every waiting call with
    :class:`WireError`.  The object looks enough like a socket
    (``recv``, ``sendall``, ``settimeout``, ``pending``) for
    ``migration_channel.recv_exact`` and ``ControlChannel``.
    """

    #: bytes one fill of a receive buffer may take
    CHUNK = 1 << 20

    def __init__(self, sock: socket.socket, out_limit: int = 16 << 20,
                 in_limit: int = 32 << 20) -> None:
        self.sock = sock
        self._out_limit = out_limit
        self._in_limit = in_limit
        self._cond = threading.Condition()
        self._out = collections.deque()     # memoryviews still to send
        self._out_bytes = 0
        self._in = collections.deque()      # memoryviews received
        self._in_bytes = 0
        self._error = None                  # type: Optional[str]
        self._eof = False
        self._closing = False
        self._timeout = None                # type: Optional[float]
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='migration-pump')
        self._thread.start()

    # -- the other threads' side ----------------------------------------------
    def sendall(self, data) -> None:
        """Queue *data* (copied: the caller may reuse its buffer) to go
        after everything queued before; waits while *out_limit* bytes are
        queued."""
        view = memoryview(bytes(data))
        if not view.nbytes:
            return
        with self._cond:
            while self._out_bytes >= self._out_limit and \
                    self._error is None and not self._closing:
                self._cond.wait()
            if self._error is not None:
                raise WireError(self._error)
            if self._closing:
                raise WireError('the connection is closing')
            self._out.append(view)
            self._out_bytes += view.nbytes
        self._wake()

    def recv(self, n: int):
        """Up to *n* received bytes (a memoryview when large), waiting for
        at least one (within the timeout set by :meth:`settimeout`); b''
        at the end of the connection."""
        deadline = None if self._timeout is None \
            else time.monotonic() + self._timeout
        with self._cond:
            while not self._in:
                if self._error is not None:
                    raise WireError(self._error)
                if self._eof:
                    return b''
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout('timed out')
                    self._cond.wait(left)
            head = self._in[0]
            if head.nbytes <= n:
                self._in.popleft()
                out = head
            else:
                out = head[:n]
                self._in[0] = head[n:]
            starved = self._in_bytes >= self._in_limit
            self._in_bytes -= out.nbytes
        if starved:
            self._wake()
        # small reads (headers, control messages) as bytes; large ones
        # (page batches) stay views of the receive buffer
        return bytes(out) if out.nbytes < 4096 else out

    def settimeout(self, timeout: Optional[float]) -> None:
        self._timeout = timeout

    def pending(self) -> bool:
        """Whether :meth:`recv` would return (data, end or error) now."""
        with self._cond:
            return bool(self._in) or self._eof or self._error is not None

    def wait_readable(self, timeout: Optional[float]) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: self._in or self._eof or self._error is not None,
                timeout)

    def flush(self, timeout: float) -> bool:
        """Until everything queued went out (False: not within *timeout*
        or the connection failed)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._out or
                                self._error is not None, timeout)
            return not self._out

    def close(self, flush_timeout: float = 2) -> None:
        """Send what is queued (within *flush_timeout*; a peer that reads
        nothing more loses the rest), stop the thread and close the
        socket."""
        flushed = self.flush(flush_timeout)
        with self._cond:
            self._closing = True
            if not flushed and self._error is None:
                self._error = 'the connection was closed'
            self._cond.notify_all()
        self._wake()
        self._thread.join(5)
        try:
            self.sock.close()
        finally:
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    # socket.socket's names hard_shutdown and the logs use
    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def family(self):
        return self.sock.family

    @property
    def type(self):
        return self.sock.type

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b'x')
        except (BlockingIOError, OSError):
            pass            # already awake (a full pipe), or closed

    # -- the pump thread ------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: the waiting threads must hear of it
            self._fail('connection failed: %s' % e)

    def _fail(self, why: str) -> None:
        with self._cond:
            if self._error is None:
                self._error = why
            self._cond.notify_all()

    def _loop(self) -> None:
        sock = self.sock
        tls = isinstance(sock, ssl.SSLSocket)
        buf = None
        filled = 0
        cur = None          # the memoryview being sent
        while True:
            with self._cond:
                if self._error is not None or \
                        (self._closing and (cur is None and not self._out)):
                    return
                if cur is None and self._out:
                    cur = self._out[0]
                may_read = not self._eof and \
                    self._in_bytes < self._in_limit
            moved = False
            want_write = False
            if cur is not None:
                try:
                    n = sock.send(cur)
                except (ssl.SSLWantWriteError, BlockingIOError,
                        InterruptedError):
                    n = 0
                    want_write = True
                except ssl.SSLWantReadError:
                    n = 0
                except OSError as e:
                    self._fail('connection to the peer failed: %s' % e)
                    return
                if n:
                    moved = True
                    cur = cur[n:]
                    with self._cond:
                        self._out_bytes -= n
                        if not cur.nbytes:
                            self._out.popleft()
                            cur = None
                        self._cond.notify_all()
            if may_read:
                # fill one buffer as far as the socket has bytes now
                got = 0
                failed = None
                while True:
                    if buf is None:
                        buf, filled = bytearray(self.CHUNK), 0
                    try:
                        n = sock.recv_into(memoryview(buf)[filled:])
                    except (ssl.SSLWantReadError, BlockingIOError,
                            InterruptedError):
                        break
                    except ssl.SSLWantWriteError:
                        want_write = True
                        break
                    except ssl.SSLError as e:
                        # a TLS record whose AEAD tag failed, or a broken
                        # TLS session (OpenSSL 3 under Python 3.6: a peer
                        # closing without close_notify)
                        failed = ('TLS record failed authentication or the '
                                  'TLS session broke: %s' % e)
                        break
                    except OSError as e:
                        if e.errno == errno.EAGAIN:
                            break
                        failed = 'connection to the peer failed: %s' % e
                        break
                    if n == 0:
                        with self._cond:
                            self._eof = True
                        break
                    filled += n
                    got += n
                    if filled == len(buf) or got >= self.CHUNK:
                        break
                if filled:
                    view = memoryview(buf)[:filled]
                    buf = None
                    with self._cond:
                        self._in.append(view)
                        self._in_bytes += view.nbytes
                        self._cond.notify_all()
                    moved = True
                elif self._eof:
                    with self._cond:
                        self._cond.notify_all()
                    moved = True
                if failed is not None:
                    # after what arrived before it (the peer's last
                    # message, then the cut): readers get both, in order
                    self._fail(failed)
                    return
            if moved:
                continue
            if tls and may_read and sock.pending():
                continue
            rd = [self._wake_r]
            if may_read:
                rd.append(sock)
            # (a TLS write that wants a read waits on the read side)
            wr = [sock] if cur is not None and \
                (want_write or not tls or not may_read) else []
            ready, _, _ = select.select(rd, wr, [], 1.0)
            if self._wake_r in ready:
                # one read, only when select said so: eventlet's green
                # os.read waits for data instead of raising EAGAIN
                try:
                    os.read(self._wake_r, 65536)
                except (BlockingIOError, OSError):
                    pass
