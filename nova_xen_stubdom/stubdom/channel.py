"""dom0's side of the stub domain init's save/restore protocol (xenstore).

The init (``init.sh``) polls ``~/nova-xen-stubdom/command`` inside the stub
domain; these helpers write that node and wait for ``.../result``.  The
device state itself travels on a virtual disk (``statedisk`` format) that
the caller attaches to the stub domain first and detaches after.

Protocol (paths under ``/local/domain/<stub>/nova-xen-stubdom/``):

``restore-disk``  written before the stub domain boots: the vdev name
                  (e.g. ``xvdz``) of the attached state disk; the init
                  verifies it and starts QEMU with ``-incoming``.
``command``       ``"<seq> save <vdev>"`` or ``"<seq> cont"``; a new
                  sequence number makes a new command.
``result``        ``"<seq> ok <length> <sha256>"`` (save), ``"<seq> ok"``
                  (cont) or ``"<seq> error <reason>"``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from typing import Callable

NAMESPACE = "nova-xen-stubdom"
_VDEV_RE = re.compile(r"^xvd[a-z]{1,2}$")
_seq = itertools.count(int(time.time()) % 100000)


class StubdomChannelError(Exception):
    """The stub domain refused, failed or did not answer a command."""


@dataclasses.dataclass(frozen=True)
class SaveResult:
    length: int
    sha256: str


def node(stub_domid: int, name: str) -> str:
    return "/local/domain/%d/%s/%s" % (stub_domid, NAMESPACE, name)


def _check_vdev(vdev: str) -> None:
    if not _VDEV_RE.match(vdev):
        raise ValueError("bad virtual disk name %r (expected xvdX)" % vdev)


def announce_restore_disk(backend, stub_domid: int, vdev: str) -> None:
    """Tell a stub domain (before it boots) where its saved state is."""
    _check_vdev(vdev)
    path = node(stub_domid, "restore-disk")
    backend.xs_write(path, vdev)
    backend.xs_set_perms(path, ["n0", "r%d" % stub_domid])


def _command(backend, stub_domid: int, text: str, timeout: float,
             poll: float, sleep: Callable[[float], None],
             clock: Callable[[], float]) -> str:
    seq = str(next(_seq))
    result = node(stub_domid, "result")
    # The stub domain writes the result node: it must own it.
    backend.xs_write(result, "")
    backend.xs_set_perms(result, ["n%d" % stub_domid])
    cmd = node(stub_domid, "command")
    backend.xs_write(cmd, "%s %s" % (seq, text))
    backend.xs_set_perms(cmd, ["n0", "r%d" % stub_domid])
    deadline = clock() + timeout
    while True:
        value = backend.xs_read(result) or ""
        if value.split(" ", 1)[0] == seq:
            rest = value[len(seq) + 1:]
            if rest.startswith("ok"):
                return rest[2:].strip()
            raise StubdomChannelError(
                "stub domain %d: %s failed: %s"
                % (stub_domid, text.split()[0], rest.partition(" ")[2]))
        if clock() >= deadline:
            raise StubdomChannelError(
                "stub domain %d did not answer %r within %.0f s"
                % (stub_domid, text, timeout))
        sleep(poll)


def request_save(backend, stub_domid: int, vdev: str, timeout: float = 120,
                 poll: float = 0.2, sleep=time.sleep,
                 clock=time.monotonic) -> SaveResult:
    """Ask the stub domain's QEMU to stop and write its device state to the
    attached disk ``vdev``; returns what the stub domain reports writing
    (check it against ``statedisk.read_state_file`` of the disk)."""
    _check_vdev(vdev)
    out = _command(backend, stub_domid, "save %s" % vdev, timeout, poll,
                   sleep, clock)
    try:
        length, digest = out.split()
        return SaveResult(int(length), digest)
    except ValueError:
        raise StubdomChannelError("stub domain %d: malformed save result %r"
                                  % (stub_domid, out))


def request_cont(backend, stub_domid: int, timeout: float = 30,
                 poll: float = 0.2, sleep=time.sleep,
                 clock=time.monotonic) -> None:
    """Resume the stub domain's QEMU after a save that was abandoned."""
    _command(backend, stub_domid, "cont", timeout, poll, sleep, clock)
