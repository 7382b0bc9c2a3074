"""One dom0 agent per host: the object every agent entry point receives.

It carries the host's hypervisor backend, its configuration
(:class:`config.AgentConfig`: host policy such as
``allow_dom0_device_model`` and migration defaults), and hands out per-key
locks so two entry points working on the same guest (a link racing a
teardown) serialise while different guests proceed in parallel.
"""
import contextlib
import fcntl
import os
import re
import threading
from typing import Dict, Iterator, Optional

from nova_xen_stubdom.dom0 import hypervisor as backend_mod
from nova_xen_stubdom.dom0 import config as config_mod
from nova_xen_stubdom.dom0 import errors


class HostAgent:
    """The dom0 agent of one host.

    :param backend: the host's :class:`HypervisorBackend` (``xen`` or ``sim``).
    :param host_uuid: XAPI uuid of the host this agent runs on.
    :param allow_dom0_device_model: host policy; when False a guest without
        a stub domain gets no device model at all.  None (the default) takes
        *config*'s (False unless agent.conf says otherwise).
    :param config: the agent's settings (default: all defaults).
    :param lock_dir: where :meth:`lock` takes ``fcntl.flock`` file locks, so
        that other processes (the device-model wrapper, a second daemon
        started by mistake) are excluded too; None: in-process locks only.
    :param journal: the daemon's :class:`JobJournal` (None: jobs are not
        journaled, as in the simulator's in-process agent).
    """

    def __init__(self, backend: backend_mod.HypervisorBackend,
                 host_uuid: str, *,
                 allow_dom0_device_model: Optional[bool] = None,
                 config: Optional[config_mod.AgentConfig] = None,
                 lock_dir: Optional[str] = None, journal=None):
        self.backend = backend
        self.host_uuid = host_uuid
        self.config = config or config_mod.AgentConfig()
        if allow_dom0_device_model is None:
            allow_dom0_device_model = self.config.allow_dom0_device_model
        self.allow_dom0_device_model = bool(allow_dom0_device_model)
        self.lock_dir = lock_dir
        self.journal = journal
        if lock_dir:
            os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        self._locks: Dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    #: how :meth:`lock` takes a file lock (:func:`file_lock`; the
    #: simulator's in-process agent polls instead, see sim/dom0_process.py)
    file_lock = staticmethod(lambda path: file_lock(path))

    def __repr__(self) -> str:
        return '<HostAgent host=%s backend=%s>' % (
            self.host_uuid, type(self.backend).__name__)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Serialise work on *key* (usually a guest VM uuid): threads of
        this process, and with *lock_dir* every process locking the same
        key (flock is per open file, so the thread lock comes first)."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if not self.lock_dir:
                yield
                return
            with self.file_lock(os.path.join(self.lock_dir,
                                             _lock_name(key))):
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


def _lock_name(key: str) -> str:
    if not re.match(r'^[A-Za-z0-9_.:-]{1,200}$', key) or key.startswith('.'):
        raise errors.InvalidArgument(name='lock key', value=key,
                                     reason='letters, digits, _.:- only')
    return key + '.lock'


@contextlib.contextmanager
def file_lock(path: str, blocking: bool = True) -> Iterator[None]:
    """``fcntl.flock`` on *path* (created 0600) for the ``with`` body.

    The kernel drops the lock when the process dies, kill -9 included, so
    a crashed holder never leaves a domain locked.

    :raises BlockingIOError: not *blocking* and another process holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
