"""A stdlib-only host for the engine tests on dom0's Python 3.6.

The save/restore and migration tests normally run the engine against the
simulator's own domains (``SimBackend`` on a bare simulated hypervisor);
the simulator needs Python >= 3.7.  On 3.6 they run against this: the same
small surface (``create_domain``, ``destroy_domain``, ``domain(d)`` with
``memory()``, ``logdirty``, ``domains``, ``shutdown``) over anonymous
mmap()ed guest memory, a log-dirty bitmap, HVM context records shaped as
Xen's (header, one CPU record per vCPU that depends on the domain, end) and
the special-page HVM params.  No workload thread: these tests drive dirty
pages explicitly (``HvBackend.always_dirty``).
"""
import hashlib
import mmap
import struct
import threading
from typing import Dict, Optional

from nova_xen_stubdom.dom0 import cpu_policy as cp
from nova_xen_stubdom.dom0 import hypervisor as hv
from nova_xen_stubdom.dom0.xen_libs import SAVED_HVM_PARAMS
from nova_xen_stubdom.sim import physmap
from tests.unit.dom0.dict_xenstore import DictXenstore
from tests.unit.dom0.no_pci import NoVdisNoPci

PAGE = hv.PAGE_SIZE
HVM_TYPE_END, HVM_TYPE_HEADER, HVM_TYPE_CPU = 0, 1, 2
HVM_SAVE_MAGIC = 0x54381286


def _record(typecode: int, instance: int, body: bytes) -> bytes:
    return struct.pack('<HHI', typecode, instance, len(body)) + body


#: the stand-in host's HVM maximum CPU policy (the simulator's is richer)
HOST_FEATURES = ['fpu', 'tsc', 'sse2', 'sse4_2', 'avx', 'avx2', 'lm', 'nx']


class MemDomain:
    def __init__(self, domid: int, vm_uuid: str, hvm: bool,
                 memory_bytes: int, vcpus: int,
                 cpu_policy: 'cp.CpuPolicy' = None,
                 layout: str = 'compact') -> None:
        self.domid = domid
        #: serialised (cpuid, msrs) and (mode, khz, nsec, incarnation)
        self.cpu = (cpu_policy or cp.build('GenuineIntel',
                                           HOST_FEATURES)).serialise()
        self.tsc = (0, 2600000, 0, 0)
        self.vm_uuid = vm_uuid
        self.hvm = hvm
        self.physmap = physmap.Physmap(max(1, memory_bytes // PAGE), layout,
                                       hvm)
        self.max_pfn = self.physmap.max_pfn
        self.vcpus = vcpus
        self.paused = True
        self.target: Optional[int] = None
        self.logdirty = False
        self.lock = threading.RLock()
        self.bitmap = bytearray((self.max_pfn + 7) // 8)
        self._mm = mmap.mmap(-1, self.max_pfn * PAGE) if domid else None
        ctx = _record(HVM_TYPE_HEADER, 0, struct.pack(
            '<IIQII', HVM_SAVE_MAGIC, 1, 0, 0x50654, 2600000))
        for cpu in range(max(1, vcpus)):
            seed = ('%s/%d/%d' % (vm_uuid, domid, cpu)).encode()
            ctx += _record(HVM_TYPE_CPU, cpu, b''.join(
                hashlib.sha256(seed + bytes([i])).digest()
                for i in range(32)))
        self.hvm_context = ctx + _record(HVM_TYPE_END, 0, b'') if hvm \
            else b''
        self.hvm_params: Dict[int, int] = (
            {1: self.max_pfn - 1, 2: 1, 17: self.max_pfn - 2, 18: 2}
            if hvm else {})
        if self.physmap.layout == 'xen':
            self.hvm_params.update({1: physmap.XENSTORE_PFN,
                                    17: physmap.CONSOLE_PFN})

    def populate(self, pfns) -> int:
        """As the simulator's Domain.populate: new frames read as zeros."""
        with self.lock:
            new = self.physmap.populate(pfns)
            for pfn in new:
                self._mm[pfn * PAGE:(pfn + 1) * PAGE] = bytes(PAGE)
            return len(new)

    def memory(self) -> memoryview:
        if self._mm is None:
            raise KeyError(self.domid)
        return memoryview(self._mm)

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass            # a view is still out; the GC frees it
            self._mm = None


class MemHypervisor:
    def __init__(self, name: str) -> None:
        self.name = name
        self.domains = {0: MemDomain(0, '', False, PAGE, 1)}
        self.cpu_policy = cp.build('GenuineIntel', HOST_FEATURES)
        self._next = 1
        self.lock = threading.Lock()

    def create_domain(self, vm_uuid: str, hvm: bool, memory_bytes: int,
                      vcpus: int = 1, name: str = '',
                      layout: str = 'compact') -> MemDomain:
        with self.lock:
            domid, self._next = self._next, self._next + 1
            dom = self.domains[domid] = MemDomain(domid, vm_uuid, hvm,
                                                  memory_bytes, vcpus,
                                                  self.cpu_policy, layout)
        return dom

    def destroy_domain(self, domid: int) -> None:
        with self.lock:
            dom = self.domains.pop(domid)
        dom.close()

    def domain(self, domid: int) -> MemDomain:
        return self.domains[domid]

    def shutdown(self) -> None:
        for domid in [d for d in self.domains if d]:
            self.destroy_domain(domid)


class MemBackend(NoVdisNoPci, DictXenstore, hv.HypervisorBackend):
    """:class:`HypervisorBackend` over a :class:`MemHypervisor`."""

    def __init__(self, hypervisor: MemHypervisor) -> None:
        DictXenstore.__init__(self)
        self.hyp = self.hypervisor = hypervisor

    def _info(self, d: MemDomain) -> hv.DomainInfo:
        return hv.DomainInfo(d.domid, d.vm_uuid, d.hvm,
                             d.max_pfn if d.domid else 0, d.vcpus,
                             d.paused, d.target)

    def list_domains(self):
        return [self._info(d) for _, d in sorted(self.hyp.domains.items())]

    def domain_info(self, domid):
        return self._info(self.hyp.domain(domid))

    def pause(self, domid):
        self.hyp.domain(domid).paused = True

    def unpause(self, domid):
        self.hyp.domain(domid).paused = False

    def set_target(self, stub_domid, guest_domid):
        self.hyp.domain(stub_domid).target = guest_domid

    def xs_set_target(self, stub_domid, guest_domid):
        self.hyp.domain(stub_domid)     # xenstored checks both exist
        self.hyp.domain(guest_domid)

    def map_memory(self, domid, writable=False):
        view = self.hyp.domain(domid).memory()
        if writable or not hasattr(view, 'toreadonly'):
            # 3.6 has no toreadonly; the engine's reads do not write
            return view
        return view.toreadonly()

    def populate_physmap(self, domid, pfns):
        self.hyp.domain(domid).populate(pfns)

    def hole_runs(self, view):
        for dom in list(self.hyp.domains.values()):
            if dom._mm is not None and dom._mm is view.obj:
                return list(dom.physmap.holes)
        return []

    def enable_logdirty(self, domid):
        d = self.hyp.domain(domid)
        with d.lock:
            d.logdirty = True
            d.bitmap[:] = bytes(len(d.bitmap))

    def disable_logdirty(self, domid):
        self.hyp.domain(domid).logdirty = False

    def fetch_dirty_bitmap(self, domid, clear=True):
        d = self.hyp.domain(domid)
        with d.lock:
            if not d.logdirty:
                raise RuntimeError('log-dirty mode is off for domain %d'
                                   % domid)
            out = bytearray(d.bitmap)
            if clear:
                d.bitmap[:] = bytes(len(d.bitmap))
        return out

    def get_hvm_context(self, domid):
        return bytes(self.hyp.domain(domid).hvm_context)

    def set_hvm_context(self, domid, blob):
        self.hyp.domain(domid).hvm_context = bytes(blob)

    def get_hvm_params(self, domid):
        params = self.hyp.domain(domid).hvm_params     # as SimBackend's
        return {i: params[i] for i in SAVED_HVM_PARAMS if params.get(i)}

    def set_hvm_params(self, domid, params):
        self.hyp.domain(domid).hvm_params.update(
            {int(k): int(v) for k, v in params.items()})

    def get_hvm_param(self, domid, index):
        return self.hyp.domain(domid).hvm_params.get(index, 0)

    def resume_domain(self, domid):
        # no guest here suspends itself (no PV drivers): nothing to resume
        raise NotImplementedError

    def xs_introduce_domain(self, domid, store_pfn, store_port):
        self.hyp.domain(domid).introduced = (store_pfn, store_port)

    def get_cpu_policy(self, domid):
        return self.hyp.domain(domid).cpu

    def set_cpu_policy(self, domid, cpuid, msrs):
        cp.CpuPolicy.parse(cpuid, msrs)     # Xen refuses a malformed one
        self.hyp.domain(domid).cpu = (bytes(cpuid), bytes(msrs))

    def host_cpu_policy(self):
        return self.hyp.cpu_policy.serialise()

    def get_tsc_info(self, domid):
        return self.hyp.domain(domid).tsc

    def set_tsc_info(self, domid, mode, khz, nsec, incarnation):
        self.hyp.domain(domid).tsc = (mode, khz, nsec, incarnation + 1)

    def attach_disk(self, domid, path, devid):
        raise NotImplementedError

    def detach_disk(self, domid, devid):
        raise NotImplementedError
