"""An in-memory HypervisorBackend for the agent's unit tests."""
from typing import Dict, List

from nova_xen_stubdom.dom0 import hypervisor as backend
from tests.unit.dom0.dict_xenstore import DictXenstore
from tests.unit.dom0.no_pci import NoVdisNoPci


class FakeBackend(NoVdisNoPci, DictXenstore, backend.HypervisorBackend):
    def __init__(self) -> None:
        DictXenstore.__init__(self)
        self.domains: Dict[int, backend.DomainInfo] = {
            0: backend.DomainInfo(0, '', False, 1024, 1, False)}
        self.calls: List[tuple] = []
        self.consoles: Dict[int, str] = {}
        self._next = 1

    def add_domain(self, vm_uuid: str, hvm: bool) -> int:
        domid = self._next
        self._next += 1
        self.domains[domid] = backend.DomainInfo(domid, vm_uuid, hvm, 256,
                                                 1, False)
        return domid

    def list_domains(self):
        return list(self.domains.values())

    def domain_info(self, domid):
        return self.domains[domid]

    def pause(self, domid):
        self.domains[domid].paused = True

    def unpause(self, domid):
        self.domains[domid].paused = False

    def set_target(self, stub_domid, guest_domid):
        self.calls.append(('set_target', stub_domid, guest_domid))
        self.domains[stub_domid].target = guest_domid

    def xs_set_target(self, stub_domid, guest_domid):
        self.calls.append(('xs_set_target', stub_domid, guest_domid))

    def map_memory(self, domid, writable=False):
        raise NotImplementedError

    def populate_physmap(self, domid, pfns):
        raise NotImplementedError

    def enable_logdirty(self, domid):
        raise NotImplementedError

    def disable_logdirty(self, domid):
        raise NotImplementedError

    def fetch_dirty_bitmap(self, domid, clear=True):
        raise NotImplementedError

    def get_hvm_context(self, domid):
        raise NotImplementedError

    def set_hvm_context(self, domid, blob):
        raise NotImplementedError

    def get_hvm_params(self, domid):
        raise NotImplementedError

    def set_hvm_params(self, domid, params):
        raise NotImplementedError

    def get_cpu_policy(self, domid):
        raise NotImplementedError

    def set_cpu_policy(self, domid, cpuid, msrs):
        raise NotImplementedError

    def host_cpu_policy(self):
        raise NotImplementedError

    def get_tsc_info(self, domid):
        raise NotImplementedError

    def set_tsc_info(self, domid, mode, khz, nsec, incarnation):
        raise NotImplementedError

    def get_hvm_param(self, domid, index):
        raise NotImplementedError

    def resume_domain(self, domid):
        raise NotImplementedError

    def xs_introduce_domain(self, domid, store_pfn, store_port):
        self.calls.append(('xs_introduce_domain', domid, store_pfn,
                           store_port))

    def read_console(self, domid):
        return self.consoles.get(domid, '')

    def attach_disk(self, domid, path, devid):
        self.calls.append(('attach_disk', domid, path, devid))

    def detach_disk(self, domid, devid):
        self.calls.append(('detach_disk', domid, devid))
