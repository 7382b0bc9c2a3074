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
from typing import List, Optional

from nova_xen_stubdom.dom0.migration_channel import WireError


class _Buffer:
    """One pooled buffer of a queue: bytes [start, end) are still due."""
    __slots__ = ('data', 'start', 'end')

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.start = 0
        self.end = 0


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
    whatever arrives into buffers that :meth:`recv` / :meth:`recv_into`
    copy out of.  The other threads only touch the queues.  The cipher's
    and the kernel's work run outside the GIL, so encoding (or applying)
    and the TLS records proceed on two cores.

    Both queues hold ``CHUNK``-sized buffers taken from a pool and given
    back once their bytes went out or were read: a gigabyte through the
    pump allocates a few dozen buffers, not a fresh one per fill (each
    fresh megabyte is 256 page faults and the kernel clearing each page,
    which profiled at a tenth of a migration's CPU).  Writes are appended
    to the last buffer while it has room, so the small records between
    page batches share TLS records instead of costing one each.

    Both queues are bounded (*out_limit*, *in_limit* bytes): a producer
    faster than the wire waits in :meth:`sendall`, and a consumer slower
    than the wire stops this thread reading, so TCP pushes back on the
    peer.  A failed or cut connection fails every waiting call with
    :class:`WireError`.  The object looks enough like a socket
    (``recv``, ``recv_into``, ``sendall``, ``settimeout``, ``pending``)
    for ``migration_channel.recv_exact``, ``SocketSource`` and
    ``ControlChannel``.
    """

    #: bytes of one pooled buffer (one fill of the receive side)
    CHUNK = 1 << 20

    def __init__(self, sock: socket.socket, out_limit: int = 16 << 20,
                 in_limit: int = 32 << 20) -> None:
        self.sock = sock
        self._out_limit = out_limit
        self._in_limit = in_limit
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._out = collections.deque()     # _Buffers still to send
        self._out_bytes = 0
        self._in = collections.deque()      # _Buffers received, unread
        #: the last of _in, which the pump thread is still filling: a
        #: reader that emptied it must leave it there
        self._filling = None                # type: Optional[_Buffer]
        self._in_bytes = 0
        # buffers given back; at most what the two queues can hold
        self._pool: List[bytearray] = []
        self._pool_max = (out_limit + in_limit) // self.CHUNK + 2
        #: buffers allocated (not taken from the pool) so far
        self.buffers_made = 0
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

    # -- the pool (callers hold self._cond) -----------------------------------
    def _take(self) -> _Buffer:
        if self._pool:
            return _Buffer(self._pool.pop())
        self.buffers_made += 1
        return _Buffer(bytearray(self.CHUNK))

    def _give(self, buf: _Buffer) -> None:
        if len(self._pool) < self._pool_max:
            self._pool.append(buf.data)

    # -- the other threads' side ----------------------------------------------
    #: writes up to this size are appended to the last queued buffer
    #: under the lock; larger ones are copied outside it, so the pump
    #: thread is not held up behind a megabyte's copy
    SMALL = 64 << 10

    def sendall(self, data) -> None:
        """Queue *data* (copied: the caller may reuse its buffer) to go
        after everything queued before; waits while *out_limit* bytes are
        queued."""
        view = memoryview(data).cast('B')
        n = view.nbytes
        if not n:
            return
        with self._send_lock:           # one writer's bytes stay together
            done = 0
            while done < n:
                with self._cond:
                    self._wait_out()
                    tail = self._out[-1] if self._out else None
                    if n - done <= self.SMALL and tail is not None and \
                            len(tail.data) - tail.end >= n - done:
                        tail.data[tail.end:tail.end + n - done] = view[done:]
                        tail.end += n - done
                        self._out_bytes += n - done
                        break
                    buf = self._take()
                k = min(n - done, len(buf.data))
                buf.data[:k] = view[done:done + k]
                buf.end = k
                with self._cond:
                    self._out.append(buf)
                    self._out_bytes += k
                self._wake()
                done += k
        self._wake()

    def _wait_out(self) -> None:
        """Until the send queue has room; raises once the connection
        failed or is closing.  Holds self._cond."""
        while self._out_bytes >= self._out_limit and \
                self._error is None and not self._closing:
            self._cond.wait()
        if self._error is not None:
            raise WireError(self._error)
        if self._closing:
            raise WireError('the connection is closing')

    def _wait_in(self) -> bool:
        """Until received bytes are queued (True), or the end (False);
        raises on an error or the timeout.  Holds self._cond."""
        deadline = None if self._timeout is None \
            else time.monotonic() + self._timeout
        while not self._in_bytes:
            if self._error is not None:
                raise WireError(self._error)
            if self._eof:
                return False
            if deadline is None:
                self._cond.wait()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout('timed out')
                self._cond.wait(left)
        return True

    def recv_into(self, target) -> int:
        """Copy received bytes into *target* (a writable buffer), as many
        as are queued up to its size, waiting for at least one (within the
        timeout set by :meth:`settimeout`); 0 at the end of the
        connection."""
        out = memoryview(target).cast('B')
        parts = []
        finished = []       # emptied: back to the pool once copied
        with self._cond:
            if not self._wait_in():
                return 0
            starved = self._in_bytes >= self._in_limit
            want = min(out.nbytes, self._in_bytes)
            got = 0
            while got < want:
                head = self._in[0]
                k = min(want - got, head.end - head.start)
                parts.append((head, head.start, k))
                head.start += k
                got += k
                if head.start == head.end and head is not self._filling:
                    finished.append(self._in.popleft())
            self._in_bytes -= got
        # the copy outside the lock: the pump goes on queueing behind it
        # (a taken part is this reader's until it is given back)
        at = 0
        for buf, start, k in parts:
            out[at:at + k] = buf.data[start:start + k]
            at += k
        if finished:
            with self._cond:
                for buf in finished:
                    self._give(buf)
        if starved:
            self._wake()
        return got

    def recv(self, n: int) -> bytes:
        """Up to *n* received bytes, as :meth:`recv_into`; b'' at the end
        of the connection."""
        with self._cond:
            if not self._wait_in():
                return b''
            n = min(n, self._in_bytes)
        buf = bytearray(n)
        return bytes(buf[:self.recv_into(buf)])

    def settimeout(self, timeout: Optional[float]) -> None:
        self._timeout = timeout

    def pending(self) -> bool:
        """Whether :meth:`recv` would return (data, end or error) now."""
        with self._cond:
            return bool(self._in_bytes) or self._eof or \
                self._error is not None

    def wait_readable(self, timeout: Optional[float]) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: self._in_bytes or self._eof or
                self._error is not None,
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
        fill = None         # the _Buffer being received into
        cur = None          # the memoryview being sent (a retried TLS
        #                     write must be given the same bytes again)
        while True:
            with self._cond:
                if self._error is not None or \
                        (self._closing and (cur is None and not self._out)):
                    return
                if cur is None and self._out:
                    head = self._out[0]
                    cur = memoryview(head.data)[head.start:head.end]
                may_read = not self._eof and \
                    self._in_bytes < self._in_limit
                if may_read and fill is None:
                    fill = self._take()
            moved = False
            want_write = False
            cut = None          # why sending failed
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
                    # the peer closed (its last message, e.g. why it
                    # failed, may be waiting unread): read what is there
                    # first, then fail
                    n = 0
                    cut = 'connection to the peer failed: %s' % e
                if n:
                    moved = True
                    cur = cur[n:]
                    with self._cond:
                        head = self._out[0]
                        head.start += n
                        self._out_bytes -= n
                        if not cur.nbytes:
                            cur = None
                            if head.start == head.end:
                                self._out.popleft()
                                self._give(head)
                        self._cond.notify_all()
            if may_read:
                # fill the buffer as far as the socket has bytes now; a
                # buffer part filled stays the queue's last, and later
                # bytes go behind the ones a reader may be copying out
                failed = None
                data = fill.data
                at = fill.end           # only this thread moves it
                new = 0
                while at + new < len(data):
                    try:
                        n = sock.recv_into(memoryview(data)[at + new:])
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
                    new += n
                if new:
                    with self._cond:
                        if not at:      # its first bytes: queue it
                            self._in.append(fill)
                        fill.end += new
                        self._in_bytes += new
                        if fill.end == len(data):
                            fill = None
                        self._filling = fill
                        self._cond.notify_all()
                    moved = True
                elif self._eof:
                    with self._cond:
                        self._cond.notify_all()
                    moved = True
                if failed is None:
                    failed = cut
                if failed is not None:
                    # after what arrived before it (the peer's last
                    # message, then the cut): readers get both, in order
                    self._fail(failed)
                    return
            if cut is not None:
                self._fail(cut)
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
