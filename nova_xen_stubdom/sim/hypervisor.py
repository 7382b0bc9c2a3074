"""A simulated Xen hypervisor for one host.

Domains have real guest memory: a sparse shared-memory file of the VM's size
(under the state dir or ``/dev/shm``) that the dom0 agent maps.  A workload
thread per domain dirties pages at a configurable rate (bytes/s) while the
domain runs and, with log-dirty on, sets bits in the dirty bitmap.  The
hypervisor also keeps the host's xenstore, the HVM context/params blobs,
consoles, which domain runs each guest's device model, which domain holds
which PV frontend, and PCI grants (iomem/ioport/irq, assigned devices).
"""
import dataclasses
import errno
import hashlib
import logging
import mmap
import os
import random
import struct
import tempfile
import threading
import time
from typing import Dict, List, Optional

from nova_xen_stubdom.sim import cpu as simcpu
from nova_xen_stubdom.sim.physmap import CONSOLE_PFN, XENSTORE_PFN, Physmap
from nova_xen_stubdom.sim.xenstore import Xenstore

LOG = logging.getLogger(__name__)
PAGE_SIZE = 4096
#: workload tick (s): pages dirtied per tick = rate * tick / PAGE_SIZE
_TICK = 0.02


@dataclasses.dataclass
class Frontend:
    domid: int          # domain holding the frontend (guest or stubdom)
    kind: str           # 'vbd' | 'vif'
    devid: str          # xvda / 51712 / 0 ...
    backend_domid: int  # 0: dom0's blkback/netback
    #: VDI file for a disk, network bridge for a NIC
    target: str
    vm_device_ref: str = ''   # VBD/VIF ref when plugged through XAPI


#: Linux's MADV_POPULATE_WRITE (not in Python's mmap before 3.13)
MADV_POPULATE_WRITE = 23


class Domain:
    def __init__(self, hv: 'Hypervisor', domid: int, vm_uuid: str, hvm: bool,
                 memory_bytes: int, vcpus: int, name: str = '',
                 layout: str = 'compact'):
        self.hv = hv
        self.domid = domid
        self.vm_uuid = vm_uuid
        self.hvm = hvm
        self.name = name
        #: which PFNs have a frame (sim.physmap: compact, or Xen's layout)
        self.physmap = Physmap(max(1, memory_bytes // PAGE_SIZE), layout,
                               hvm)
        self.max_pfn = self.physmap.max_pfn
        self.vcpus = vcpus
        self.paused = True
        self.target: Optional[int] = None
        #: the guest's SCHEDOP_shutdown reason once it shut itself down
        #: (the domain exists until the toolstack destroys it)
        self.shutdown_reason: Optional[str] = None
        self.created = time.time()
        self.dirty_rate = hv.default_dirty_rate if domid else 0
        self.logdirty = False
        # held by the workload while it writes: pausing takes it, so once
        # pause() returns no guest write is in flight (as with Xen's pause)
        self.lock = threading.RLock()
        self.bitmap = bytearray((self.max_pfn + 7) // 8)
        self.hvm_context = (_initial_hvm_context(domid, vm_uuid, vcpus)
                            if hvm else b'')
        # HVM_PARAM_STORE_PFN (1), STORE_EVTCHN (2), CONSOLE_PFN (17),
        # CONSOLE_EVTCHN (18): the special pages sit at the top of RAM
        self.hvm_params: Dict[int, int] = (
            {1: self.max_pfn - 1, 2: 1, 17: self.max_pfn - 2, 18: 2}
            if hvm else {})
        if self.physmap.layout == 'xen':
            self.hvm_params.update({1: XENSTORE_PFN, 17: CONSOLE_PFN})
        #: CPU policy and TSC state (sim.cpu: Xen's per-domain policy)
        self.cpu = simcpu.DomainCpu(hv.cpu_policy, hv.cpu_khz)
        self.console: List[str] = []
        #: what the guest prints once it first runs (see devicemodel)
        self.boot_log: List[str] = []
        self.pages_dirtied = 0
        self.mem_path = ''
        self._mm: Optional[mmap.mmap] = None
        self._fd = -1
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if domid != 0:
            self._alloc_memory()

    # -- memory --------------------------------------------------------------
    def _alloc_memory(self) -> None:
        fd, path = tempfile.mkstemp(prefix='dom%d-' % self.domid,
                                    suffix='.mem', dir=self.hv.mem_dir)
        os.ftruncate(fd, self.max_pfn * PAGE_SIZE)
        if self.hv.preallocate_memory:
            # as Xen gives a domain its RAM when it is built: the first
            # touch of a page then costs no tmpfs allocation (which made a
            # fresh domain's first write or read ~5x slower than a copy)
            os.posix_fallocate(fd, 0, self.max_pfn * PAGE_SIZE)
        self._fd, self.mem_path = fd, path
        self._mm = mmap.mmap(fd, self.max_pfn * PAGE_SIZE)
        if self.hv.preallocate_memory:
            # and mapped up front, as privcmd maps a foreign domain's
            # frames when the mapping is made (Linux 5.14+; best effort)
            try:
                self._mm.madvise(MADV_POPULATE_WRITE)
            except (AttributeError, OSError, ValueError):
                pass

    def memory(self) -> memoryview:
        if self._mm is None:
            raise KeyError(self.domid)
        return memoryview(self._mm)

    def populate(self, pfns) -> int:
        """XENMEM_populate_physmap for these PFNs: a new frame reads as
        zeros, so what was written where there was none is gone (as with a
        foreign mapping of an unpopulated PFN on Xen).  Returns how many
        PFNs got a frame."""
        with self.lock:
            new = self.physmap.populate(pfns)
            if self._mm is not None:
                for pfn in new:
                    self._mm[pfn * PAGE_SIZE:(pfn + 1) * PAGE_SIZE] = \
                        bytes(PAGE_SIZE)
            return len(new)

    def dirty(self, pfns) -> None:
        """The guest wrote these pages (workload or the agent's restore)."""
        with self.lock:
            for pfn in pfns:
                if self.logdirty:
                    self.bitmap[pfn >> 3] |= 1 << (pfn & 7)
            self.pages_dirtied += len(pfns)

    def _workload(self) -> None:
        rng = random.Random(self.domid * 7919 + int(self.created))
        carry = 0.0
        while not self._stop.wait(_TICK if self.dirty_rate else 5 * _TICK):
            if self.paused or not self.dirty_rate or self._mm is None:
                continue
            carry += self.dirty_rate * _TICK / PAGE_SIZE
            n = int(carry)
            if not n:
                continue
            carry -= n
            # the guest writes its RAM, never a gap
            pfns = [p for p in (rng.randrange(self.physmap.ram_pages)
                                for _ in range(n))
                    if self.physmap.has_frame(p)]
            stamp = struct.pack('<QQ', self.domid, time.monotonic_ns())
            with self.lock:
                mm = self._mm
                if self.paused or mm is None:
                    continue
                for pfn in pfns:
                    off = pfn * PAGE_SIZE + rng.randrange(0, PAGE_SIZE - 16,
                                                          16)
                    try:
                        mm[off:off + 16] = stamp
                    except (ValueError, TypeError):  # unmapped under us
                        return
                self.dirty(pfns)

    def start_workload(self) -> None:
        if self._thread is None and self.domid != 0:
            self._thread = threading.Thread(
                target=self._workload, name='sim-dom%d-workload' % self.domid,
                daemon=True)
            self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self.lock:
            self._release_locked()

    def _release_locked(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                # a caller still holds a view: the file goes anyway; the
                # mapping dies with the last view
                LOG.warning('dom%d memory still mapped at destroy', self.domid)
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.mem_path:
            try:
                os.unlink(self.mem_path)
            except FileNotFoundError:
                pass


#: Xen's HVM save format (xen/include/public/arch-x86/hvm/save.h): records
#: of (typecode u16, instance u16, length u32) + body, HEADER first, END last
HVM_SAVE_MAGIC = 0x54381286
HVM_TYPE_END, HVM_TYPE_HEADER, HVM_TYPE_CPU = 0, 1, 2
_HVM_CPU_SIZE = 1024


def _hvm_record(typecode: int, instance: int, body: bytes) -> bytes:
    return struct.pack('<HHI', typecode, instance, len(body)) + body


def _initial_hvm_context(domid: int, vm_uuid: str, vcpus: int = 1) -> bytes:
    """A blob shaped like Xen's HVM context: a HEADER record (magic,
    version 1, changeset, cpuid, gtsc_khz), one CPU record per vCPU whose
    registers depend on the domain (so a restore can be checked byte for
    byte) and the END record."""
    out = _hvm_record(HVM_TYPE_HEADER, 0, struct.pack(
        '<IIQII', HVM_SAVE_MAGIC, 1, 0, 0x50654, 2600000))
    for cpu in range(max(1, vcpus)):
        seed = ('%s/%d/%d' % (vm_uuid, domid, cpu)).encode()
        regs = b''.join(hashlib.sha256(seed + bytes([i])).digest()
                        for i in range(_HVM_CPU_SIZE // 32))
        out += _hvm_record(HVM_TYPE_CPU, cpu, regs)
    return out + _hvm_record(HVM_TYPE_END, 0, b'')


def walk_hvm_context(blob: bytes):
    """[(typecode, instance, body)] of an HVM context; ValueError if the
    records do not tile the blob or the END record is missing."""
    out, off = [], 0
    while off < len(blob):
        if off + 8 > len(blob):
            raise ValueError('truncated HVM record header at %d' % off)
        typecode, instance, length = struct.unpack_from('<HHI', blob, off)
        body = blob[off + 8:off + 8 + length]
        if len(body) != length:
            raise ValueError('HVM record at %d: length %d, %d bytes left'
                             % (off, length, len(body)))
        out.append((typecode, instance, body))
        off += 8 + length
        if typecode == HVM_TYPE_END:
            if off != len(blob):
                raise ValueError('data after the END record')
            return out
    raise ValueError('no END record')


class Hypervisor:
    def __init__(self, host_uuid: str, total_memory: int, cpus: int,
                 mem_dir: Optional[str] = None,
                 default_dirty_rate: int = 0):
        self.host_uuid = host_uuid
        self.total_memory = total_memory
        self.cpus = cpus
        self._own_dir = mem_dir is None
        if mem_dir is None:
            base = '/dev/shm' if os.path.isdir('/dev/shm') else None
            mem_dir = tempfile.mkdtemp(prefix='nxs-sim-mem-', dir=base)
        os.makedirs(mem_dir, exist_ok=True)
        self.mem_dir = mem_dir
        if not self._own_dir:
            # memory of domains that died with an earlier simulator process
            for name in os.listdir(mem_dir):
                if name.endswith('.mem'):
                    os.unlink(os.path.join(mem_dir, name))
        if self._own_dir:
            # a test that forgets shutdown() must not leave /dev/shm behind
            import shutil
            import weakref
            weakref.finalize(self, shutil.rmtree, mem_dir, True)
        self.default_dirty_rate = default_dirty_rate
        #: allocate each domain's memory file when it is created (the
        #: benchmarks: timings without tmpfs page allocation in them);
        #: off, memory files stay sparse (tests run many domains)
        self.preallocate_memory = False
        #: the host's HVM maximum CPU policy and TSC rate (sim.cpu); a test
        #: gives hosts of one pool different CPUs by replacing it
        self.cpu_policy = simcpu.host_policy()
        self.cpu_khz = simcpu.DEFAULT_KHZ
        self.lock = threading.RLock()
        self.domains: Dict[int, Domain] = {}
        self.xenstore = Xenstore()
        self._next_domid = 1
        #: guest domid -> domid running its device model (0 = dom0)
        self.device_models: Dict[int, int] = {}
        #: guest domid -> how the device-model wrapper decided its start
        #: (sim.xenopsd_dm.WrapperRun)
        self.dm_wrapper_runs: Dict[int, object] = {}
        #: QMP commands xenopsd sent device models: (guest domid, command,
        #: arguments) -- see sim/xenopsd_pci.py
        self.xenopsd_qmp: List[tuple] = []
        self.frontends: List[Frontend] = []
        #: the host's PCI functions, grants and assignments
        #: (``sim.pci.PciHost``; set by the host)
        self.pci = None
        #: guest domid -> its running device model (sim.devicemodel.Qemu)
        self.qemus: Dict[int, object] = {}
        #: stub domid -> its QEMU watcher (sim.devicemodel.StubQemu)
        self.stub_qemus: Dict[int, object] = {}
        from nova_xen_stubdom.sim import devicemodel
        #: listeners(domain, event) for 'create', 'unpause', 'shutdown',
        #: 'destroy'
        self.listeners: List = [devicemodel.on_domain]
        dom0 = Domain(self, 0, '', False, 0, cpus, 'Domain-0')
        dom0.paused = False
        self.domains[0] = dom0
        self.xenstore.write('/local/domain/0/name', 'Domain-0')
        self.xenstore.write('/local/domain/0/domid', '0')

    # -- domains -------------------------------------------------------------
    def create_domain(self, vm_uuid: str, hvm: bool, memory_bytes: int,
                      vcpus: int, name: str = '',
                      layout: str = 'compact') -> Domain:
        with self.lock:
            domid = self._next_domid
            self._next_domid += 1
            dom = Domain(self, domid, vm_uuid, hvm, memory_bytes, vcpus, name,
                         layout)
            self.domains[domid] = dom
        xs = self.xenstore
        base = '/local/domain/%d' % domid
        xs.write(base, '')
        xs.set_perms(base, ['n0', 'r%d' % domid])
        xs.write(base + '/name', name or 'domain-%d' % domid)
        xs.write(base + '/domid', str(domid))
        xs.write(base + '/vm', '/vm/%s' % vm_uuid)
        for sub in ('device', 'data', 'control', 'attr', 'error', 'drivers'):
            xs.write('%s/%s' % (base, sub), '')
            xs.set_perms('%s/%s' % (base, sub), ['n%d' % domid])
        xs.write('/vm/%s/uuid' % vm_uuid, vm_uuid)
        xs.write('/vm/%s/domains/%d' % (vm_uuid, domid), base)
        dom.console.append('[sim] domain %d (%s) created, %s, %d MiB, %d vCPU'
                           % (domid, name, 'HVM' if hvm else 'PV',
                              memory_bytes >> 20, vcpus))
        dom.start_workload()
        for listener in list(self.listeners):
            listener(dom, 'create')
        return dom

    def domain(self, domid: int) -> Domain:
        try:
            return self.domains[domid]
        except KeyError:
            raise KeyError('no domain %d on host %s'
                           % (domid, self.host_uuid))

    def pause(self, domid: int) -> None:
        dom = self.domain(domid)
        with dom.lock:
            dom.paused = True

    def domain_shutdown(self, domid: int, reason: str) -> None:
        """The guest in *domid* made ``SCHEDOP_shutdown`` with *reason*:
        it runs no vCPU and stays, shut down, until the toolstack acts;
        Xen then fires ``@releaseDomain`` (xen/common/domain.c
        ``domain_shutdown`` -> ``send_global_virq(VIRQ_DOM_EXC)``, which
        xenstored turns into that watch), so listeners hear 'shutdown'."""
        dom = self.domain(domid)
        with dom.lock:
            dom.paused = True
            dom.shutdown_reason = reason
        for listener in list(self.listeners):
            listener(dom, 'shutdown')

    def resume_domain(self, domid: int) -> None:
        """XEN_DOMCTL_resumedomain (xen/common/domain.c domain_resume) after
        libxc's fast resume (xc_domain_resume, fast=1): a domain that shut
        down to suspend runs on, its suspend hypercall answering
        "cancelled"; one that did not shut down is left as it is."""
        dom = self.domain(domid)
        with dom.lock:
            if dom.shutdown_reason != 'suspend':
                return
            dom.shutdown_reason = None
            dom.paused = False
        dom.console.append('[sim] domain %d resumed (suspend cancelled)'
                           % domid)

    def unpause(self, domid: int) -> None:
        dom = self.domain(domid)
        with dom.lock:
            dom.paused = False
            boot, dom.boot_log = dom.boot_log, []
        dom.console.append('[sim] domain %d running' % domid)
        dom.console.extend(boot)
        for listener in list(self.listeners):
            listener(dom, 'unpause')

    def destroy_domain(self, domid: int) -> None:
        if domid == 0:
            raise ValueError('dom0 cannot be destroyed')
        with self.lock:
            dom = self.domains.pop(domid, None)
            if dom is None:
                return
            self.device_models.pop(domid, None)
            self.dm_wrapper_runs.pop(domid, None)
            for guest, dm in list(self.device_models.items()):
                if dm == domid:
                    # a stub domain never outlives its guest; the reverse is
                    # the agent's business -- record the dangling guest
                    self.device_models[guest] = -1
            self.frontends = [f for f in self.frontends if f.domid != domid]
        if self.pci is not None:
            self.pci.domain_destroyed(domid)
        for listener in list(self.listeners):
            listener(dom, 'destroy')
        xs = self.xenstore
        vm_path = xs.read('/local/domain/%d/vm' % domid)
        xs.rm('/local/domain/%d' % domid)
        if vm_path:
            xs.rm(vm_path + '/domains/%d' % domid)
            if not xs.list(vm_path + '/domains'):
                xs.rm(vm_path)
        xs.forget_domain(domid)
        dom.release()

    def set_target(self, stub: int, guest: int) -> None:
        """``xc_domain_set_target``: the hypervisor's privilege only.
        xenstored learns of a target from its own ``XS_SET_TARGET``
        (``xs_set_target``), which libxl sends as well (xen-project/xen
        tools/libs/light/libxl_dm.c libxl__spawn_stub_dm); see
        :meth:`SimBackend.xs_set_target`.

        A domain gets one target for life (xen-project/xen
        ``xen/common/domctl.c`` ``do_domctl``, ``XEN_DOMCTL_set_target``):
        ``-ESRCH`` (here KeyError) for a missing domain, ``-EINVAL`` for a
        domain as its own target or one whose ``d->target`` is set already
        -- the reference is held until the domain is destroyed, so a stub
        domain whose guest died cannot serve another."""
        with self.lock:
            self.domain(guest)
            dom = self.domain(stub)
            if stub == guest or dom.target is not None:
                raise OSError(errno.EINVAL, 'XEN_DOMCTL_set_target: domain '
                              '%d %s' % (stub, 'is its own target'
                                         if stub == guest else
                                         'already has target %s'
                                         % dom.target))
            dom.target = guest

    def memory_used(self) -> int:
        with self.lock:
            return sum(d.physmap.pages() * PAGE_SIZE
                       for d in self.domains.values() if d.domid != 0)

    def find_by_uuid(self, vm_uuid: str) -> Optional[Domain]:
        with self.lock:
            for d in self.domains.values():
                if d.vm_uuid == vm_uuid and d.domid != 0:
                    return d
        return None

    # -- devices -------------------------------------------------------------
    def add_frontend(self, fe: Frontend) -> None:
        self.domain(fe.domid)
        with self.lock:
            self.frontends.append(fe)
        kind = 'vbd' if fe.kind == 'vbd' else 'vif'
        self.xenstore.write('/local/domain/%d/device/%s/%s/backend-id'
                            % (fe.domid, kind, fe.devid),
                            str(fe.backend_domid), caller=0)
        self.xenstore.write('/local/domain/%d/device/%s/%s/state'
                            % (fe.domid, kind, fe.devid), '4')

    def remove_frontend(self, domid: int, kind: str, devid: str) -> None:
        with self.lock:
            self.frontends = [f for f in self.frontends
                              if not (f.domid == domid and f.kind == kind
                                      and f.devid == devid)]
        self.xenstore.rm('/local/domain/%d/device/%s/%s' % (domid, kind,
                                                            devid))

    def frontends_of(self, domid: int) -> List[Frontend]:
        with self.lock:
            return [f for f in self.frontends if f.domid == domid]

    def shutdown(self) -> None:
        for domid in [d for d in list(self.domains) if d != 0]:
            self.destroy_domain(domid)
        if self._own_dir:
            import shutil
            # what is left is ours (the PCI sysfs view); memory files are gone
            shutil.rmtree(self.mem_dir, ignore_errors=True)
