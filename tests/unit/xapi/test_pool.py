"""SessionPool on its own: the bound, waits, failures, close."""
import itertools
import threading

import pytest

from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import pool as xpool


def _pool(size):
    counter = itertools.count(1)
    return xpool.SessionPool(lambda: 's%d' % next(counter), size)


def test_reuses_idle_sessions_before_creating():
    p = _pool(2)
    a = p.acquire()
    p.release(a)
    assert p.acquire() == a
    assert p.count == 1


def test_bound_and_timeout():
    p = _pool(2)
    p.acquire()
    p.acquire()
    with pytest.raises(errors.XAPITimeout):
        p.acquire(timeout=0.05)
    assert p.count == 2 and p.in_use == 2


def test_waiter_gets_the_released_session():
    p = _pool(1)
    a = p.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(p.acquire(timeout=10)))
    t.start()
    p.release(a)
    t.join(10)
    assert got == [a]
    assert p.peak_in_use == 1


def test_failed_connect_gives_the_slot_back():
    calls = []

    def connect():
        calls.append(1)
        if len(calls) == 1:
            raise errors.XAPIConnectionError('u', 'login', OSError('x'))
        return 'ok'
    p = xpool.SessionPool(connect, 1)
    with pytest.raises(errors.XAPIConnectionError):
        p.acquire()
    assert p.count == 0 and p.in_use == 0
    assert p.acquire(timeout=1) == 'ok'


def test_discard_frees_the_slot():
    p = _pool(1)
    a = p.acquire()
    p.discard(a)
    b = p.acquire(timeout=1)
    assert b != a


def test_close_wakes_waiters_and_returns_idle():
    p = _pool(2)
    a = p.acquire()
    b = p.acquire()
    p.release(b)
    errs = []
    p2 = _pool(1)
    p2.acquire()

    def waiter():
        try:
            p2.acquire()
        except errors.XAPIClosed as exc:
            errs.append(exc)
    t = threading.Thread(target=waiter)
    t.start()
    p2.close()
    t.join(10)
    assert len(errs) == 1
    assert p.close() == [b]
    p.release(a)                 # after close: not kept for reuse
    assert p.count == 0
    with pytest.raises(errors.XAPIClosed):
        p.acquire()


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        _pool(0)
