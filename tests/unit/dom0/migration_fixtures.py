"""Helpers of the save/restore and migration engine tests.

``HvBackend`` is the simulator's own ``SimBackend`` on a bare simulated
:class:`~nova_xen_stubdom.sim.hypervisor.Hypervisor` (real shm guest
memory, a workload thread dirtying pages, a log-dirty bitmap), so the engine
is tested against the same domains the simulator runs.  On dom0's Python
3.6, where the simulator does not import, it is the stdlib-only
:class:`~tests.unit.dom0.memhost.MemBackend` with the same surface.
"""
import random
import socket
import threading
from typing import List, Optional

try:
    from nova_xen_stubdom.sim import hypervisor as simhv
    from nova_xen_stubdom.sim.backend import SimBackend as _Base

    def _hypervisor(name: str, memory: int):
        return simhv.Hypervisor(name, memory, 2)

    def _base_kwargs(hyp) -> dict:
        return {'hypervisor': hyp}
except ImportError:         # Python 3.6: the simulator needs dataclasses
    from tests.unit.dom0 import memhost
    _Base = memhost.MemBackend

    def _hypervisor(name: str, memory: int):
        return memhost.MemHypervisor(name)

    def _base_kwargs(hyp) -> dict:
        return {'hypervisor': hyp}

PAGE = 4096


class HvBackend(_Base):
    """The simulator's own backend (or the 3.6 stand-in), plus PFNs that are
    dirty in every round (a guest that never settles)."""

    def __init__(self, hyp) -> None:
        super().__init__(**_base_kwargs(hyp))
        self.hyp = hyp
        self.always_dirty: List[int] = []

    def fetch_dirty_bitmap(self, domid, clear=True):
        bm = super().fetch_dirty_bitmap(domid, clear)
        for pfn in self.always_dirty:
            bm[pfn >> 3] |= 1 << (pfn & 7)
        return bm


def make_host(name: str, memory_mb: int = 1024) -> HvBackend:
    return HvBackend(_hypervisor(name, memory_mb << 20))


def fill(backend: HvBackend, domid: int, seed: int = 1,
         nonzero_fraction: float = 0.6) -> None:
    """Give the guest recognisable content: some pages zero, some not."""
    d = backend.hyp.domain(domid)
    mem = memoryview(d.memory()).cast('B')
    rng = random.Random(seed)
    for pfn in range(d.max_pfn):
        if rng.random() < nonzero_fraction:
            # Random.randbytes (3.9+) is exactly this
            mem[pfn * PAGE:(pfn + 1) * PAGE] = rng.getrandbits(
                PAGE * 8).to_bytes(PAGE, 'little')
    del mem


#: pages hvmloader populated above RAM in the saved guest (ACPI tables and
#: its own data, below RESERVED_MEMBASE 0xfc000): tests/realxen s3 found 12
#: such pages a fresh `xl create -p` domain lacks
FIRMWARE_PFNS = list(range(0xfc000 - 12, 0xfc000))


def firmware_guest(backend: HvBackend, uuid: str = 'vm-x',
                   size: int = 4 << 20):
    """An HVM guest in Xen's physmap layout (sim.physmap 'xen') whose
    firmware populated FIRMWARE_PFNS; a page below and above the VGA hole
    and each firmware page hold a distinct byte."""
    dom = backend.hyp.create_domain(uuid, True, size, 1, layout='xen')
    dom.populate(FIRMWARE_PFNS)
    mem = dom.memory()
    for i, pfn in enumerate([1, 0xc0] + FIRMWARE_PFNS):
        mem[pfn * PAGE:(pfn + 1) * PAGE] = bytes([i + 1]) * PAGE
    del mem
    return dom


def same_pages(a, b, pfns) -> bool:
    """Domains *a* and *b* hold the same bytes at *pfns*, each a frame."""
    ma, mb = a.memory(), b.memory()
    try:
        return all(b.physmap.has_frame(p) and
                   ma[p * PAGE:(p + 1) * PAGE] == mb[p * PAGE:(p + 1) * PAGE]
                   for p in pfns)
    finally:
        del ma, mb


def digest(backend: HvBackend, domid: int) -> str:
    """The guest's memory as tests.guest_memory compares it."""
    from tests import guest_memory
    return guest_memory.digest(backend.hyp.domain(domid).memory(),
                               backend.get_hvm_params(domid))


class Proxy:
    """A TCP relay between a source and a receiver that can cut the
    connection or flip a byte after a number of forwarded bytes."""

    def __init__(self, target_port: int, cut_after: Optional[int] = None,
                 flip_at: Optional[int] = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.flip_at = flip_at
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.forwarded = 0
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        src, _ = self.listener.accept()
        dst = socket.create_connection(('127.0.0.1', self.target_port))

        def back():
            try:
                while True:
                    data = dst.recv(65536)
                    if not data:
                        break
                    src.sendall(data)
            except (OSError, EOFError):
                # EOFError: eventlet's socket (when Nova's functional tests
                # monkey-patched this process) closed under the recv
                pass
            try:
                src.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        threading.Thread(target=back, daemon=True).start()
        try:
            while True:
                data = bytearray(src.recv(65536))
                if not data:
                    break
                if self.flip_at is not None and \
                        self.forwarded <= self.flip_at < \
                        self.forwarded + len(data):
                    data[self.flip_at - self.forwarded] ^= 0x40
                if self.cut_after is not None and \
                        self.forwarded + len(data) >= self.cut_after:
                    dst.sendall(data[:self.cut_after - self.forwarded])
                    self.forwarded = self.cut_after
                    break
                dst.sendall(data)
                self.forwarded += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
