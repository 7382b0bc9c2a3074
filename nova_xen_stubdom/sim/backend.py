"""``SimBackend``: the dom0 agent's hypervisor seam on a simulated host.

Built by the simulator for each host (``SimBackend(host_runtime)``), or
standalone for unit tests of the agent (``SimBackend()`` owns a private
hypervisor and an empty PCI host).  Its public methods are exactly
:class:`HypervisorBackend`'s (a unit test holds it to that, so the agent
cannot come to depend on something only the simulator has); what only a
simulation has -- ``create_domain``, ``destroy_domain``, ``set_dirty_rate``,
``console`` (the log as lines), ``inject_fault`` -- lives on
``backend.sim`` (:class:`SimControls`), beside the attributes
``sysfs_root`` and ``hypervisor``.
"""
import errno
import os
import tempfile
import uuid as uuidlib
from typing import Dict, List, Optional, Tuple

from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.dom0 import errors as dom0_errors
from nova_xen_stubdom.dom0 import hypervisor as dom0_hypervisor
from nova_xen_stubdom.dom0.hypervisor import DomainInfo, HypervisorBackend
from nova_xen_stubdom.dom0.xen_libs import SAVED_HVM_PARAMS
from nova_xen_stubdom.sim.hypervisor import Frontend, Hypervisor


class BackendFault(OSError):
    """An injected hypervisor failure (``SimBackend.sim.inject_fault``)."""


class SimBackend(HypervisorBackend):
    def __init__(self, host=None, *, hypervisor: Optional[Hypervisor] = None,
                 pci=None, memory: int = 64 << 30, cpus: int = 8):
        #: method name -> calls left before it fails (1 = the next call)
        self.faults: Dict[str, int] = {}
        #: simulation-only controls (not part of the hypervisor seam)
        self.sim = SimControls(self)
        if host is not None:
            self.host = host
            self.hypervisor = host.hypervisor
            self.pci = host.pci
            self.sysfs_root = host.sysfs_root
        else:
            from nova_xen_stubdom.sim import pci as pcilib
            self.host = None
            self.hypervisor = hypervisor or Hypervisor(
                str(uuidlib.uuid4()), memory, cpus)
            self.pci = pci or pcilib.PciHost()
            self.hypervisor.pci = self.pci
            self.sysfs_root = tempfile.mkdtemp(prefix='nxs-sim-sysfs-')
            self.pci.write_sysfs(self.sysfs_root)
            import shutil
            import weakref
            weakref.finalize(self, shutil.rmtree, self.sysfs_root, True)

    def _maybe_fail(self, method: str) -> None:
        left = self.faults.get(method)
        if left is None:
            return
        if left <= 1:
            del self.faults[method]
            raise BackendFault('injected failure of %s' % method)
        self.faults[method] = left - 1

    # -- domains -----------------------------------------------------------
    def _info(self, d) -> DomainInfo:
        return DomainInfo(domid=d.domid, vm_uuid=d.vm_uuid, hvm=d.hvm,
                          max_pfn=d.max_pfn if d.domid else 0,
                          vcpus=d.vcpus, paused=d.paused, target=d.target,
                          shutdown=d.shutdown_reason)

    def list_domains(self) -> List[DomainInfo]:
        self._maybe_fail('list_domains')
        with self.hypervisor.lock:
            doms = sorted(self.hypervisor.domains.values(),
                          key=lambda d: d.domid)
        return [self._info(d) for d in doms]

    def domain_info(self, domid: int) -> DomainInfo:
        self._maybe_fail('domain_info')
        return self._info(self.hypervisor.domain(domid))

    def pause(self, domid: int) -> None:
        self._maybe_fail('pause')
        self.hypervisor.pause(domid)

    def unpause(self, domid: int) -> None:
        self._maybe_fail('unpause')
        self.hypervisor.unpause(domid)

    def set_target(self, stub_domid: int, guest_domid: int) -> None:
        self._maybe_fail('set_target')
        try:
            self.hypervisor.set_target(stub_domid, guest_domid)
        except OSError as exc:
            # what xen_backend.set_target raises for libxenctrl's errno
            raise dom0_errors.HypervisorCallFailed(
                call='xc_domain_set_target', errno=exc.errno,
                strerror=os.strerror(exc.errno),
                detail=': stub domain %d -> guest %d' % (stub_domid,
                                                         guest_domid))

    def xs_set_target(self, stub_domid: int, guest_domid: int) -> None:
        self._maybe_fail('xs_set_target')
        # xenstored checks both domains exist (do_set_target)
        self.hypervisor.domain(stub_domid)
        self.hypervisor.domain(guest_domid)
        self.hypervisor.xenstore.set_target(stub_domid, guest_domid)

    # -- console -------------------------------------------------------------
    def read_console(self, domid: int) -> str:
        return ''.join(line + '\n' for line in self.sim.console(domid))

    # -- guest memory and CPU state ------------------------------------------
    def map_memory(self, domid: int, writable: bool = False) -> memoryview:
        self._maybe_fail('map_memory')
        dom = self.hypervisor.domain(domid)
        view = dom.memory()
        return view if writable else view.toreadonly()

    def populate_physmap(self, domid: int, pfns: List[int]) -> None:
        self._maybe_fail('populate_physmap')
        self.hypervisor.domain(domid).populate(pfns)

    def hole_runs(self, view: memoryview) -> List[Tuple[int, int]]:
        """PFN runs with no frame of the domain *view* maps (the xen
        backend's hole_runs: what saves and migrations leave out)."""
        obj = view.obj
        for dom in list(self.hypervisor.domains.values()):
            if dom._mm is not None and dom._mm is obj:
                with dom.lock:
                    return list(dom.physmap.holes)
        return []

    def enable_logdirty(self, domid: int) -> None:
        self._maybe_fail('enable_logdirty')
        dom = self.hypervisor.domain(domid)
        with dom.lock:
            dom.logdirty = True
            dom.bitmap[:] = bytes(len(dom.bitmap))

    def disable_logdirty(self, domid: int) -> None:
        self._maybe_fail('disable_logdirty')
        dom = self.hypervisor.domain(domid)
        with dom.lock:
            dom.logdirty = False

    def fetch_dirty_bitmap(self, domid: int, clear: bool = True) -> bytearray:
        self._maybe_fail('fetch_dirty_bitmap')
        dom = self.hypervisor.domain(domid)
        with dom.lock:
            if not dom.logdirty:
                raise RuntimeError('log-dirty mode is off for domain %d'
                                   % domid)
            out = bytearray(dom.bitmap)
            if clear:
                dom.bitmap[:] = bytes(len(dom.bitmap))
        return out

    def get_hvm_context(self, domid: int) -> bytes:
        self._maybe_fail('get_hvm_context')
        dom = self.hypervisor.domain(domid)
        if not dom.hvm:
            raise ValueError('domain %d is not HVM' % domid)
        return bytes(dom.hvm_context)

    def set_hvm_context(self, domid: int, blob: bytes) -> None:
        self._maybe_fail('set_hvm_context')
        dom = self.hypervisor.domain(domid)
        if not dom.hvm:
            raise ValueError('domain %d is not HVM' % domid)
        dom.hvm_context = bytes(blob)

    def get_hvm_params(self, domid: int) -> Dict[int, int]:
        """What libxc's write_hvm_params reads: its list of params, zero
        values left out (xg_sr_save_x86_hvm.c); the event channels are the
        host's own and do not travel."""
        self._maybe_fail('get_hvm_params')
        params = self.hypervisor.domain(domid).hvm_params
        return {i: params[i] for i in SAVED_HVM_PARAMS if params.get(i)}

    def get_hvm_param(self, domid: int, index: int) -> int:
        self._maybe_fail('get_hvm_param')
        return self.hypervisor.domain(domid).hvm_params.get(index, 0)

    def resume_domain(self, domid: int) -> None:
        self._maybe_fail('resume_domain')
        self.hypervisor.resume_domain(domid)

    def xs_introduce_domain(self, domid: int, store_pfn: int,
                            store_port: int) -> None:
        self._maybe_fail('xs_introduce_domain')
        self.hypervisor.domain(domid)
        self.hypervisor.xenstore.introduce(domid, store_pfn, store_port)

    def set_hvm_params(self, domid: int, params: Dict[int, int]) -> None:
        self._maybe_fail('set_hvm_params')
        self.hypervisor.domain(domid).hvm_params.update(
            {int(k): int(v) for k, v in params.items()})

    # -- CPU policy and TSC ------------------------------------------------
    def get_cpu_policy(self, domid: int) -> Tuple[bytes, bytes]:
        self._maybe_fail('get_cpu_policy')
        return self.hypervisor.domain(domid).cpu.policy.serialise()

    def set_cpu_policy(self, domid: int, cpuid: bytes, msrs: bytes) -> None:
        self._maybe_fail('set_cpu_policy')
        try:
            new = cpu_policy.CpuPolicy.parse(cpuid, msrs)
        except cpu_policy.PolicyError as e:
            raise OSError(errno.EINVAL, 'set_cpu_policy: %s' % e)
        self.hypervisor.domain(domid).cpu.set_policy(
            new, self.hypervisor.cpu_policy)

    def host_cpu_policy(self) -> Tuple[bytes, bytes]:
        return self.hypervisor.cpu_policy.serialise()

    def get_tsc_info(self, domid: int) -> Tuple[int, int, int, int]:
        self._maybe_fail('get_tsc_info')
        return self.hypervisor.domain(domid).cpu.tsc_info()

    def set_tsc_info(self, domid: int, mode: int, khz: int, nsec: int,
                     incarnation: int) -> None:
        self._maybe_fail('set_tsc_info')
        self.hypervisor.domain(domid).cpu.set_tsc_info(
            mode, khz, nsec, incarnation, self.hypervisor.cpu_khz)

    # -- xenstore (as dom0) --------------------------------------------------
    def xs_read(self, path: str) -> Optional[str]:
        self._maybe_fail('xs_read')
        return self.hypervisor.xenstore.read(path)

    def xs_write(self, path: str, value: str) -> None:
        self._maybe_fail('xs_write')
        self.hypervisor.xenstore.write(path, value)

    def xs_rm(self, path: str) -> None:
        self._maybe_fail('xs_rm')
        self.hypervisor.xenstore.rm(path)

    def xs_list(self, path: str) -> List[str]:
        self._maybe_fail('xs_list')
        return self.hypervisor.xenstore.list(path)

    def xs_set_perms(self, path: str, perms: List[str]) -> None:
        self._maybe_fail('xs_set_perms')
        self.hypervisor.xenstore.set_perms(path, perms)

    def xs_get_perms(self, path: str) -> List[str]:
        self._maybe_fail('xs_get_perms')
        return self.hypervisor.xenstore.get_perms(path)

    # -- disks (additive; dom0's blkback) ------------------------------------
    def attach_disk(self, domid: int, path: str, devid: str) -> None:
        """Give *domid* a PV disk frontend ``devid`` (e.g. ``xvdb``) backed
        by the file *path* (a VDI's file: ``SimBackend.vdi_path``)."""
        self._maybe_fail('attach_disk')
        for fe in self.hypervisor.frontends_of(domid):
            if fe.kind == 'vbd' and fe.devid == devid:
                raise ValueError('domain %d already has disk %s'
                                 % (domid, devid))
        self.hypervisor.add_frontend(Frontend(domid, 'vbd', devid, 0, path))

    def detach_disk(self, domid: int, devid: str) -> None:
        self._maybe_fail('detach_disk')
        self.hypervisor.remove_frontend(domid, 'vbd', devid)

    def vdi_path(self, vdi_uuid: str) -> str:
        """The file holding a VDI's contents on this simulated host."""
        if self.host is None:
            raise KeyError('standalone backend has no VDIs')
        from nova_xen_stubdom.sim import storage
        return storage.vdi_path(self.host.pool, vdi_uuid)

    # -- PCI pass-through ----------------------------------------------------
    def iomem_permission(self, domid: int, first_mfn: int, nr_mfns: int,
                         allow: bool) -> None:
        self._maybe_fail('iomem_permission')
        self.hypervisor.domain(domid)
        self.pci.iomem_permission(domid, first_mfn, nr_mfns, allow)

    def ioport_permission(self, domid: int, first_port: int, nr_ports: int,
                          allow: bool) -> None:
        self._maybe_fail('ioport_permission')
        self.hypervisor.domain(domid)
        self.pci.ioport_permission(domid, first_port, nr_ports, allow)

    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        self._maybe_fail('irq_permission')
        self.hypervisor.domain(domid)
        self.pci.irq_permission(domid, pirq, allow)

    def assign_device(self, domid: int, sbdf: str) -> None:
        self._maybe_fail('assign_device')
        self.hypervisor.domain(domid)
        self.pci.assign_device(domid, sbdf)

    def deassign_device(self, domid: int, sbdf: str) -> None:
        self._maybe_fail('deassign_device')
        self.pci.deassign_device(domid, sbdf)

    def close(self) -> None:
        """Standalone backends: destroy every domain and remove files."""
        if self.host is None:
            self.hypervisor.shutdown()
            import shutil
            shutil.rmtree(self.sysfs_root, ignore_errors=True)


class SimControls:
    """What only a simulated host has: domains made without XAPI, a guest
    workload's dirty rate, the console as lines, injected failures."""

    def __init__(self, backend: 'SimBackend') -> None:
        self._backend = backend

    def inject_fault(self, method: str, after: int = 1) -> None:
        """Make the *after*-th next call of *method* raise BackendFault
        (e.g. ``fetch_dirty_bitmap`` in the middle of a migration)."""
        be = self._backend
        if not callable(getattr(be, method, None)) and \
                not callable(getattr(self, method, None)):
            raise ValueError('no backend method %r' % method)
        be.faults[method] = int(after)

    def create_domain(self, vm_uuid: str, hvm: bool, memory_bytes: int,
                      vcpus: int = 1, name: str = '',
                      paused: bool = True) -> int:
        self._backend._maybe_fail('create_domain')
        hyp = self._backend.hypervisor
        dom = hyp.create_domain(vm_uuid, hvm, memory_bytes, vcpus, name)
        if not paused:
            hyp.unpause(dom.domid)
        return dom.domid

    def destroy_domain(self, domid: int) -> None:
        self._backend._maybe_fail('destroy_domain')
        self._backend.hypervisor.destroy_domain(domid)

    def set_dirty_rate(self, domid: int, bytes_per_second: int) -> None:
        self._backend._maybe_fail('set_dirty_rate')
        if bytes_per_second < 0:
            raise ValueError('dirty rate must be >= 0')
        hyp = self._backend.hypervisor
        hyp.domain(domid).dirty_rate = int(bytes_per_second)

    def console(self, domid: int) -> List[str]:
        return list(self._backend.hypervisor.domain(domid).console)


# the dom0 side finds this backend by name without importing the simulator
dom0_hypervisor.BACKENDS['sim'] = __name__ + ':SimBackend'
