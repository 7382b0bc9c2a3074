"""The dom0 agent's access to the hypervisor: one interface, two backends.

``xen`` talks to a real hypervisor (libxenctrl, xenstore, foreign memory
mappings) and only works inside a real dom0; ``sim`` drives the embedded
simulator's domains (guest memory in shared-memory files, a log-dirty bitmap
kept by a simulated workload, a xenstore tree with permissions).  Everything
above this seam -- stubdom wiring, PCI grants, save/restore, migration -- is
written once against :class:`HypervisorBackend`.

Backends are found by name with :func:`load_backend`: ``xen`` here; the
simulator registers ``sim`` when it is imported (dom0 code never imports
the simulator), and ``module:Class`` names any other.
"""
import abc
import importlib
from typing import Dict, List, Optional, Tuple

from nova_xen_stubdom.dom0 import records

PAGE_SIZE = 4096

#: name -> "module:Class" (``sim`` is added by nova_xen_stubdom.sim.backend)
BACKENDS = {
    'xen': 'nova_xen_stubdom.dom0.xen_backend:XenBackend',
}


@records.record
class DomainInfo:
    #: Xen domain id
    domid: int
    #: XAPI VM uuid this domain runs (xenstore /vm path), '' if unknown
    vm_uuid: str
    #: True for HVM guests, False for PV (stub domains are PV)
    hvm: bool
    #: the guest's PFN span, PFNs 0 .. max_pfn-1 (xc_domain_maximum_gpfn
    #: + 1: for an HVM guest up to its special pages below 4 GiB, with
    #: gaps that have no frame -- :meth:`HypervisorBackend.hole_runs`)
    max_pfn: int
    vcpus: int
    paused: bool
    #: domid this stub domain serves (its xenstore ``target``), or None
    target: Optional[int] = None
    #: why the domain shut down, while it still exists (Xen's
    #: ``SHUTDOWN_*`` code as a name: poweroff, reboot, suspend, crash,
    #: watchdog, soft_reset); None while it has not shut down
    shutdown: Optional[str] = None


class HypervisorBackend(metaclass=abc.ABCMeta):
    """What the dom0 agent needs from one host's hypervisor."""

    # -- domains -----------------------------------------------------------
    @abc.abstractmethod
    def list_domains(self) -> List[DomainInfo]:
        """Every domain on the host, dom0 included."""

    @abc.abstractmethod
    def domain_info(self, domid: int) -> DomainInfo:
        """Raise ``KeyError`` if the domain does not exist."""

    @abc.abstractmethod
    def pause(self, domid: int) -> None:
        ...

    @abc.abstractmethod
    def unpause(self, domid: int) -> None:
        ...

    @abc.abstractmethod
    def set_target(self, stub_domid: int, guest_domid: int) -> None:
        """Give *stub_domid* privilege over *guest_domid*.

        Xen's xc_domain_set_target.
        """

    @abc.abstractmethod
    def xs_set_target(self, stub_domid: int, guest_domid: int) -> None:
        """Tell xenstored the same (``xs_set_target``): it does not learn
        of the hypervisor's target, and libxl sends both."""

    # -- guest memory and CPU state ------------------------------------------
    @abc.abstractmethod
    def map_memory(self, domid: int, writable: bool = False) -> memoryview:
        """Map the whole guest physical memory (max_pfn * PAGE_SIZE bytes).

        The caller releases the view; the mapping stays valid until then.
        """

    def hole_runs(self, view: memoryview) -> List[Tuple[int, int]]:
        """[start, stop) runs of PFNs of a :meth:`map_memory` view with no
        frame behind them (an HVM guest's gaps), ascending: what a save or a
        migration's first pass leaves out, and what a restore populates
        before writing there.  Default: every PFN has a frame."""
        return []

    @abc.abstractmethod
    def populate_physmap(self, domid: int, pfns: List[int]) -> None:
        """Give *domid* a frame at each PFN of *pfns* it has none for
        (order 0: xc_domain_populate_physmap_exact, as libxc's restore in
        xg_sr_restore.c populate_pfns); views from :meth:`map_memory`
        then reach the new frames.  OSError if the hypervisor refuses."""

    @abc.abstractmethod
    def enable_logdirty(self, domid: int) -> None:
        ...

    @abc.abstractmethod
    def disable_logdirty(self, domid: int) -> None:
        ...

    @abc.abstractmethod
    def fetch_dirty_bitmap(self, domid: int, clear: bool = True) -> bytearray:
        """The log-dirty bitmap (bit n = PFN n, little-endian bit order).

        With *clear*, dirty tracking restarts from an empty bitmap atomically.
        """

    @abc.abstractmethod
    def get_hvm_context(self, domid: int) -> bytes:
        """The HVM save records (CPU, LAPIC, ...) as Xen's HVM_CONTEXT blob."""

    @abc.abstractmethod
    def set_hvm_context(self, domid: int, blob: bytes) -> None:
        ...

    @abc.abstractmethod
    def get_hvm_params(self, domid: int) -> Dict[int, int]:
        ...

    @abc.abstractmethod
    def set_hvm_params(self, domid: int, params: Dict[int, int]) -> None:
        ...

    @abc.abstractmethod
    def get_hvm_param(self, domid: int, index: int) -> int:
        """One HVM parameter (xc_hvm_param_get), 0 when unset; e.g.
        HVM_PARAM_CALLBACK_IRQ, non-zero once the guest's PV drivers
        registered their event-channel callback."""

    @abc.abstractmethod
    def resume_domain(self, domid: int) -> None:
        """Cooperative resume of a guest that suspended itself
        (xc_domain_resume with fast=1, then xs_resume_domain, as libxl's
        libxl__domain_resume with suspend_cancel): its suspend hypercall
        returns "cancelled" and its PV drivers keep their backends."""

    @abc.abstractmethod
    def xs_introduce_domain(self, domid: int, store_pfn: int,
                            store_port: int) -> None:
        """Tell xenstored where the domain's ring and event channel are
        (xs_introduce_domain, as libxl__build_post after a restore)."""

    # -- CPU policy and TSC (libxc's X86_CPUID_POLICY, X86_MSR_POLICY and
    # X86_TSC_INFO records; tools/libs/guest/xg_sr_common_x86.c) -----------
    @abc.abstractmethod
    def get_cpu_policy(self, domid: int) -> Tuple[bytes, bytes]:
        """The domain's policy as (cpuid leaves, MSR entries), serialised
        as xc_cpu_policy_get_domain + xc_cpu_policy_serialise give them
        (see :mod:`nova_xen_stubdom.dom0.cpu_policy`)."""

    @abc.abstractmethod
    def set_cpu_policy(self, domid: int, cpuid: bytes, msrs: bytes) -> None:
        """Apply a serialised policy (xc_set_domain_cpu_policy, as libxc's
        restore does in x86_static_data_complete); OSError if Xen refuses."""

    @abc.abstractmethod
    def host_cpu_policy(self) -> Tuple[bytes, bytes]:
        """The host's HVM maximum policy (xc_cpu_policy_get_system with
        XEN_SYSCTL_cpu_policy_hvm_max): all an HVM guest may be offered."""

    @abc.abstractmethod
    def get_tsc_info(self, domid: int) -> Tuple[int, int, int, int]:
        """(mode, khz, nsec, incarnation): xc_domain_get_tsc_info."""

    @abc.abstractmethod
    def set_tsc_info(self, domid: int, mode: int, khz: int, nsec: int,
                     incarnation: int) -> None:
        """xc_domain_set_tsc_info."""

    # -- xenstore -----------------------------------------------------------
    @abc.abstractmethod
    def xs_read(self, path: str) -> Optional[str]:
        """None when the node does not exist."""

    @abc.abstractmethod
    def xs_write(self, path: str, value: str) -> None:
        ...

    @abc.abstractmethod
    def xs_rm(self, path: str) -> None:
        ...

    @abc.abstractmethod
    def xs_list(self, path: str) -> List[str]:
        ...

    @abc.abstractmethod
    def xs_set_perms(self, path: str, perms: List[str]) -> None:
        """Xenstore permission list, e.g. ``['n0', 'r5']`` (owner first)."""

    @abc.abstractmethod
    def xs_get_perms(self, path: str) -> List[str]:
        ...

    def xs_write_all(self, nodes: List[Tuple[str, str, Optional[List[str]]]]
                     ) -> None:
        """Write each ``(path, value, permissions or None)`` in order,
        the permissions right after their node, so that no other client of
        the store sees only part of them: one transaction on a real
        xenstore (:class:`XenBackend`; libxl_device.c
        ``libxl__device_generic_add``).  This default writes them one by
        one, for stores where nothing reacts in between."""
        for path, value, perms in nodes:
            self.xs_write(path, value)
            if perms is not None:
                self.xs_set_perms(path, perms)

    # -- consoles (optional) ------------------------------------------------
    def read_console(self, domid: int) -> str:
        """The domain's console output so far (xenconsoled's log).

        Not abstract: a backend without console access raises
        NotImplementedError and the driver reports no console output.
        """
        raise NotImplementedError('%s has no console access'
                                  % type(self).__name__)

    # -- disks of stub domains (the state disk) -----------------------------
    @abc.abstractmethod
    def attach_disk(self, domid: int, path: str, devid: str) -> None:
        """Give *domid* a PV disk frontend *devid* (e.g. ``xvdz``) backed by
        the dom0 file or block device *path* (blkback, as libxl does)."""

    @abc.abstractmethod
    def detach_disk(self, domid: int, devid: str) -> None:
        """Remove the disk :meth:`attach_disk` gave *domid*."""

    @abc.abstractmethod
    def vdi_path(self, vdi_uuid: str) -> str:
        """The dom0 path of a raw VDI's contents (``KeyError`` if none)."""

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Release library handles and mappings (default: nothing held)."""

    # -- PCI pass-through ---------------------------------------------------
    @abc.abstractmethod
    def iomem_permission(self, domid: int, first_mfn: int, nr_mfns: int,
                         allow: bool) -> None:
        ...

    @abc.abstractmethod
    def ioport_permission(self, domid: int, first_port: int, nr_ports: int,
                          allow: bool) -> None:
        ...

    @abc.abstractmethod
    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        ...

    @abc.abstractmethod
    def assign_device(self, domid: int, sbdf: str) -> None:
        """Put PCI device ``dddd:bb:dd.f`` behind *domid*'s IOMMU context."""

    @abc.abstractmethod
    def deassign_device(self, domid: int, sbdf: str) -> None:
        ...


def load_backend(name: str, **kwargs) -> HypervisorBackend:
    """Instantiate the backend registered under *name* (``sim`` or
    ``xen``), or named ``module:Class`` (agent.conf is root's file)."""
    target = BACKENDS.get(name) or (name if ':' in name else None)
    if target is None:
        raise ValueError('unknown hypervisor backend %r (known: %s)'
                         % (name, ', '.join(sorted(BACKENDS))))
    module, _, cls = target.partition(':')
    return getattr(importlib.import_module(module), cls)(**kwargs)
