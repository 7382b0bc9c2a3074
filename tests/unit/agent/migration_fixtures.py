"""Helpers of the save/restore and migration engine tests.

``HvBackend`` implements the agent's HypervisorBackend ABC directly on the
simulator's :class:`~nova_xen_stubdom.sim.hypervisor.Hypervisor` (real shm
guest memory, a workload thread dirtying pages, a log-dirty bitmap), so the
engine is tested against the same domains the simulator runs.
"""
import random
import socket
import threading
from typing import List, Optional

from nova_xen_stubdom.agent import backend as hv
from nova_xen_stubdom.sim import hypervisor as simhv

PAGE = 4096


class HvBackend(hv.HypervisorBackend):
    def __init__(self, hyp: simhv.Hypervisor) -> None:
        self.hyp = hyp
        #: PFNs reported dirty by every fetch (a guest that never settles)
        self.always_dirty: List[int] = []

    def list_domains(self) -> List[hv.DomainInfo]:
        return [self.domain_info(d) for d in list(self.hyp.domains)]

    def domain_info(self, domid: int) -> hv.DomainInfo:
        d = self.hyp.domain(domid)
        return hv.DomainInfo(d.domid, d.vm_uuid, d.hvm, d.max_pfn, d.vcpus,
                             d.paused, d.target)

    def pause(self, domid):
        self.hyp.pause(domid)

    def unpause(self, domid):
        self.hyp.unpause(domid)

    def set_target(self, stub, guest):
        self.hyp.set_target(stub, guest)

    def map_memory(self, domid, writable=False):
        return self.hyp.domain(domid).memory()

    def enable_logdirty(self, domid):
        d = self.hyp.domain(domid)
        with d.lock:
            d.logdirty = True

    def disable_logdirty(self, domid):
        d = self.hyp.domain(domid)
        with d.lock:
            d.logdirty = False

    def fetch_dirty_bitmap(self, domid, clear=True):
        d = self.hyp.domain(domid)
        with d.lock:
            bm = bytearray(d.bitmap)
            if clear:
                d.bitmap[:] = bytes(len(d.bitmap))
        for pfn in self.always_dirty:
            bm[pfn >> 3] |= 1 << (pfn & 7)
        return bm

    def get_hvm_context(self, domid):
        return self.hyp.domain(domid).hvm_context

    def set_hvm_context(self, domid, blob):
        self.hyp.domain(domid).hvm_context = bytes(blob)

    def get_hvm_params(self, domid):
        return dict(self.hyp.domain(domid).hvm_params)

    def set_hvm_params(self, domid, params):
        self.hyp.domain(domid).hvm_params = dict(params)

    def xs_read(self, path):
        return self.hyp.xenstore.read(path)

    def xs_write(self, path, value):
        self.hyp.xenstore.write(path, value)

    def xs_rm(self, path):
        self.hyp.xenstore.rm(path)

    def xs_list(self, path):
        return self.hyp.xenstore.list(path)

    def xs_set_perms(self, path, perms):
        self.hyp.xenstore.set_perms(path, perms)

    def xs_get_perms(self, path):
        return self.hyp.xenstore.get_perms(path)

    def iomem_permission(self, *a):
        raise NotImplementedError

    def ioport_permission(self, *a):
        raise NotImplementedError

    def irq_permission(self, *a):
        raise NotImplementedError

    def assign_device(self, *a):
        raise NotImplementedError

    def deassign_device(self, *a):
        raise NotImplementedError


def make_host(name: str, memory_mb: int = 1024) -> HvBackend:
    return HvBackend(simhv.Hypervisor(name, memory_mb << 20, 2))


def fill(backend: HvBackend, domid: int, seed: int = 1,
         nonzero_fraction: float = 0.6) -> None:
    """Give the guest recognisable content: some pages zero, some not."""
    d = backend.hyp.domain(domid)
    mem = memoryview(d.memory()).cast('B')
    rng = random.Random(seed)
    for pfn in range(d.max_pfn):
        if rng.random() < nonzero_fraction:
            mem[pfn * PAGE:(pfn + 1) * PAGE] = rng.randbytes(PAGE)
    del mem


def digest(backend: HvBackend, domid: int) -> bytes:
    import hashlib
    return hashlib.sha256(backend.hyp.domain(domid).memory()).digest()


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
