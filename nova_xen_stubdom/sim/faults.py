"""Fault injection for tests: failing calls, latency, dropped connections.

In process::

    sim.faults.fail('VM.start', 'HOST_NOT_ENOUGH_FREE_MEMORY', ['1', '0'],
                    count=2)          # next 2 VM.start (or Async.VM.start)
    sim.faults.latency('VM.get_record', 0.5, count=None)   # every call
    sim.faults.drop('*', count=1)     # close the next connection unanswered
    sim.faults.clear()

Over the wire (another process) the same operations are XML-RPC methods
``sim.fail``, ``sim.latency``, ``sim.drop``, ``sim.clear``,
``sim.restart_toolstack``, ``sim.expire_sessions`` -- see
:mod:`nova_xen_stubdom.sim.control`.  A rule may be limited to one host
(its uuid).  Rules match a message's wire name (``VM.start``); ``*`` matches
every message except ``sim.*`` itself.
"""
import dataclasses
import threading
import time
from typing import List, Optional

from nova_xen_stubdom.sim.errors import XapiError


class DropConnection(Exception):
    """The HTTP layer closes the connection without answering."""


@dataclasses.dataclass
class Rule:
    kind: str                  # fail | latency | drop
    method: str
    count: Optional[int]       # None: forever
    host: Optional[str] = None
    code: str = ''
    params: tuple = ()
    seconds: float = 0.0
    hits: int = 0


class Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: List[Rule] = []

    def fail(self, method: str, code: str, params=(), count: Optional[int] = 1,
             host: Optional[str] = None) -> None:
        self._add(Rule('fail', method, count, host, code=code,
                       params=tuple(str(p) for p in params)))

    def latency(self, method: str, seconds: float,
                count: Optional[int] = None,
                host: Optional[str] = None) -> None:
        self._add(Rule('latency', method, count, host,
                       seconds=float(seconds)))

    def drop(self, method: str = '*', count: Optional[int] = 1,
             host: Optional[str] = None) -> None:
        self._add(Rule('drop', method, count, host))

    def clear(self) -> None:
        with self.lock:
            self.rules = []

    def _add(self, rule: Rule) -> None:
        with self.lock:
            self.rules.append(rule)

    def _take(self, kind: str, method: str, host) -> Optional[Rule]:
        with self.lock:
            for rule in self.rules:
                if rule.kind != kind:
                    continue
                if rule.method not in ('*', method):
                    continue
                if rule.host and host is not None and rule.host != host.uuid:
                    continue
                rule.hits += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self.rules.remove(rule)
                return rule
        return None

    def before_call(self, method: str, host, sleep: bool = True) -> float:
        """Dropped connections and latency, before anything is checked.

        Returns the injected latency; it is slept here unless *sleep* is
        False (Async calls sleep inside their task, where cancel works).
        """
        if self._take('drop', method, host) is not None:
            raise DropConnection(method)
        rule = self._take('latency', method, host)
        seconds = rule.seconds if rule is not None else 0.0
        if sleep and seconds:
            time.sleep(seconds)
        return seconds

    def check_fail(self, method: str, host) -> None:
        """Injected failures: after XAPI's own argument checks."""
        rule = self._take('fail', method, host)
        if rule is not None:
            raise XapiError(rule.code, *rule.params)
