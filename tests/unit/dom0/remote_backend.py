"""A hypervisor that outlives the dom0 daemon, for kill -9 tests.

On a real host the domains, their xenstore nodes and PCI assignments live
in Xen and xenstored, not in the daemon: killing the daemon loses none of
them.  An in-memory backend dies with the daemon, so a crash test over it
proves nothing about loss.  Here the backend (the in-memory
:class:`FakeBackend`) lives in a separate "hypervisor" process, a
:mod:`multiprocessing.managers` server on a unix socket, and the daemon
reaches it through a proxy (agent.conf ``backend =
tests.unit.dom0.remote_backend:connect``).

A *gate* lets a test stop the daemon at a chosen hypervisor call: the call
that matches blocks in the hypervisor process until the test lets it go,
so the test can kill the daemon exactly there (no timing guesses).  A
call the test *drops* never happens -- what a call from a process that
died before making it looks like.

Standard library only: the dom0 tests run on Python 3.6 too.
"""
import os
import threading
from multiprocessing import managers
from typing import Optional

from tests.unit.dom0 import fakes

#: environment of the daemon process: the hypervisor's address and key
ADDRESS_ENV = 'NXS_TEST_HYPERVISOR_ADDRESS'
AUTHKEY_ENV = 'NXS_TEST_HYPERVISOR_AUTHKEY'


class Gate:
    """Hold the first ``xs_write`` whose path ends with a suffix."""

    def __init__(self) -> None:
        self._suffix: Optional[str] = None
        self._reached = threading.Event()
        self._released = threading.Event()
        self._drop = False

    def arm(self, suffix: str) -> None:
        self._suffix = suffix
        self._reached.clear()
        self._released.clear()

    def wait_reached(self, timeout: float) -> bool:
        return self._reached.wait(timeout)

    def release(self, drop: bool) -> None:
        self._drop = drop
        self._released.set()

    def hold(self, path: str) -> bool:
        """Called by the backend; True: perform the call."""
        if self._suffix is None or not path.endswith(self._suffix):
            return True
        self._suffix = None
        self._reached.set()
        self._released.wait(120)
        return not self._drop


class GatedBackend(fakes.FakeBackend):
    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def xs_write(self, path, value):
        if self.gate.hold(path):
            super().xs_write(path, value)

    def domain_ids(self):
        return sorted(self.domains)

    def xs_items(self, prefix):
        return {k: v for k, v in self.xs.items() if k.startswith(prefix)}


_GATE = Gate()
_BACKEND = GatedBackend(_GATE)


def _backend() -> GatedBackend:
    return _BACKEND


def _gate() -> Gate:
    return _GATE


class HypervisorManager(managers.BaseManager):
    pass


HypervisorManager.register('backend', callable=_backend)
HypervisorManager.register('gate', callable=_gate)


def start(address: str, authkey: bytes) -> HypervisorManager:
    """Start the hypervisor process; its backend and gate as proxies."""
    mgr = HypervisorManager(address=address, authkey=authkey)
    mgr.start()
    return mgr


def connect(**_kwargs):
    """The daemon's backend: a proxy of the hypervisor process's."""
    mgr = HypervisorManager(address=os.environ[ADDRESS_ENV],
                            authkey=bytes.fromhex(os.environ[AUTHKEY_ENV]))
    mgr.connect()
    return mgr.backend()
