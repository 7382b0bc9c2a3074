"""Waiting for a condition in tests: the one way to do it.

A test that needs another thread or process to reach some state waits for
that state, bounded by a generous limit, and never sleeps a fixed time
hoping the other side got there: under load (2 shared cores, a parallel
build) any fixed pause is sometimes too short.
"""

import time
from typing import Callable, TypeVar

T = TypeVar('T')

#: generous on purpose: a loaded CI machine is slow, a hang is still caught
DEFAULT_TIMEOUT = 30.0


def wait_until(predicate: Callable[[], T], what: str,
               timeout: float = DEFAULT_TIMEOUT,
               interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something truthy; return it.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass
    first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %.0f s waiting for %s'
                                 % (timeout, what))
        time.sleep(interval)


def wait_for_clock_past(stamp: float, resolution: float = 0.0) -> None:
    """Return once ``time.time()`` is later than ``stamp`` by more than
    ``resolution`` (the precision a timestamp is recorded with): for tests
    that compare wall-clock timestamps taken before and after."""
    wait_until(lambda: time.time() > stamp + resolution,
               'the wall clock to move past %.6f + %g' % (stamp, resolution),
               interval=0.001)
