"""One dom0 agent per host: the object every agent entry point receives.

It carries the host's hypervisor backend and the host policy
(``allow_dom0_device_model``), and hands out per-key locks so two entry
points working on the same guest (a link racing a teardown) serialise while
different guests proceed in parallel.
"""
import contextlib
import threading
from typing import Dict, Iterator, Optional

from nova_xen_stubdom.dom0 import hypervisor as backend_mod
from nova_xen_stubdom.dom0 import errors


class HostAgent:
    """The dom0 agent of one host.

    :param backend: the host's :class:`HypervisorBackend` (``xen`` or ``sim``).
    :param host_uuid: XAPI uuid of the host this agent runs on.
    :param allow_dom0_device_model: host policy; when False a guest without
        a stub domain gets no device model at all.  None (the default) reads
        ``[xen_stubdom] allow_dom0_device_model`` (False unless set).
    """

    def __init__(self, backend: backend_mod.HypervisorBackend,
                 host_uuid: str, *,
                 allow_dom0_device_model: Optional[bool] = None):
        self.backend = backend
        self.host_uuid = host_uuid
        if allow_dom0_device_model is None:
            from nova_xen_stubdom import conf
            allow_dom0_device_model = \
                conf.CONF.xen_stubdom.allow_dom0_device_model
        self.allow_dom0_device_model = bool(allow_dom0_device_model)
        self._locks: Dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def __repr__(self) -> str:
        return '<HostAgent host=%s backend=%s>' % (
            self.host_uuid, type(self.backend).__name__)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Serialise work on *key* (usually a guest VM uuid)."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def domain_info(self, domid: int) -> backend_mod.DomainInfo:
        try:
            return self.backend.domain_info(domid)
        except KeyError:
            raise errors.DomainNotFound(domid=domid)

    def domain_by_vm_uuid(self, vm_uuid: str
                          ) -> Optional[backend_mod.DomainInfo]:
        """The running domain of XAPI VM *vm_uuid*, or None."""
        for info in self.backend.list_domains():
            if info.vm_uuid == vm_uuid:
                return info
        return None
