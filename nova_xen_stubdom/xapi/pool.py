"""A bounded pool of logged-in XAPI sessions.

Built on ``threading.Condition``: with eventlet's monkey patching (Nova's
default) it becomes a green condition, with native threads it is the real
one, so the bound holds in both modes. Logins happen outside the lock so a
slow login does not stall callers that could reuse an idle session.
"""
import collections
import threading
import time
from typing import Callable, Generic, List, Optional, TypeVar

from nova_xen_stubdom.xapi import errors

S = TypeVar('S')


class SessionPool(Generic[S]):
    """At most *size* sessions exist at once; callers wait for a free one.

    :param connect: creates (logs in) a new session; may raise, in which
        case the reserved slot is given back.
    :param size: maximum number of sessions ([xen_stubdom]
        connection_concurrent).
    """

    def __init__(self, connect: Callable[[], S], size: int) -> None:
        if size < 1:
            raise ValueError('session pool size must be >= 1, got %r' % size)
        self._connect = connect
        self._size = size
        self._cond = threading.Condition(threading.Lock())
        self._idle: collections.deque = collections.deque()
        self._count = 0          # sessions existing or being created
        self._in_use = 0
        self._peak_in_use = 0
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def peak_in_use(self) -> int:
        """Highest number of sessions handed out at the same time."""
        return self._peak_in_use

    @property
    def count(self) -> int:
        """Sessions that exist (idle or in use) or are being logged in."""
        return self._count

    def acquire(self, timeout: Optional[float] = None) -> S:
        """Return an idle session, log in a new one if below the bound, or
        wait for one to be released.

        :raises XAPIClosed: the pool was closed.
        :raises XAPITimeout: none became free within *timeout* seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise errors.XAPIClosed('XAPI client is closed')
                if self._idle:
                    self._take()
                    return self._idle.popleft()
                if self._count < self._size:
                    self._count += 1
                    self._take()
                    break
                remaining = (None if deadline is None
                             else deadline - time.monotonic())
                if remaining is not None and remaining <= 0:
                    raise errors.XAPITimeout(
                        'no free XAPI session within %ss (%d in use)'
                        % (timeout, self._in_use))
                self._cond.wait(remaining)
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._in_use -= 1
                self._cond.notify()
            raise

    def _take(self) -> None:
        self._in_use += 1
        self._peak_in_use = max(self._peak_in_use, self._in_use)

    def release(self, session: S) -> None:
        """Give *session* back for reuse."""
        with self._cond:
            self._in_use -= 1
            if self._closed:
                # NOTE(xapi): close() could not log it out while it was in
                # use; the caller (client) logs it out after this returns.
                self._count -= 1
                self._cond.notify()
                return
            self._idle.append(session)
            self._cond.notify()

    def discard(self, session: S) -> None:
        """Forget *session* (broken or invalid); frees its slot."""
        with self._cond:
            self._in_use -= 1
            self._count -= 1
            self._cond.notify()

    def drain_idle(self) -> List[S]:
        """Remove and return every idle session (the caller logs them out)."""
        with self._cond:
            idle = list(self._idle)
            self._idle.clear()
            self._count -= len(idle)
            self._cond.notify_all()
            return idle

    def close(self) -> List[S]:
        """Refuse further checkouts; return the idle sessions to log out."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return self.drain_idle()

    @property
    def closed(self) -> bool:
        return self._closed
