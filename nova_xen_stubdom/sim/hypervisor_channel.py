"""The simulated hypervisor as a dom0 daemon in another process sees it.

On a real host the dom0 daemon reaches Xen and xenstored through
libxenctrl/libxenstore (:mod:`nova_xen_stubdom.dom0.xen_backend`): the
hypervisor's state is not in the daemon's memory.  The simulator keeps its
hypervisor (domains, xenstore, PCI grants, dirty bitmaps) in its own
process, so each simulated host's daemon process
(:mod:`.dom0_process`) gets a :class:`RemoteSimBackend` that forwards every
:class:`HypervisorBackend` call over one connected unix socket pair to
:func:`serve`, a thread of the simulator that runs it on the host's
:class:`SimBackend` -- the same object the in-process agent uses, so faults
a test injects there (``backend.sim.inject_fault``) reach the daemon too.

Wire: :mod:`nova_xen_stubdom.dom0.daemon_protocol`'s framing (4-byte
length + JSON object), one request at a time: ``{"m": name, "a": [args]}``
-> ``{"r": value}`` or ``{"e": [exception type, message]}``.  Bytes travel
as ``{"$b": base64}``, :class:`DomainInfo` as ``{"$d": fields}``.  Errors
come back as the exception type the in-process backend raises
(``KeyError`` for a missing domain, ``BackendFault`` for an injected
fault, ...), so the agent's handling is the same in both places.

Guest memory does not cross the socket: ``memory_path`` names the
domain's memory file (``/dev/shm/nxs-sim-mem-*/dom<N>-*.mem``) and the
daemon maps it itself, as dom0's foreign mappings share the guest's pages.
The log-dirty bitmap is fetched and cleared by one call (``max_pfn/8``
bytes a round), atomic with respect to the simulated workload as before.
"""
import abc
import base64
import logging
import mmap
import os
import socket
import threading
import weakref
from typing import Any, Dict, List, Tuple

from nova_xen_stubdom.dom0 import daemon_protocol as proto
from nova_xen_stubdom.dom0 import records
from nova_xen_stubdom.dom0.hypervisor import DomainInfo, HypervisorBackend

LOG = logging.getLogger(__name__)

#: environment variable: the daemon process's end of the socket pair (fd)
FD_ENV = 'NOVA_XEN_STUBDOM_SIM_HYPERVISOR_FD'

#: forwarded unchanged: HypervisorBackend's methods whose arguments and
#: results are JSON-able after :func:`encode` (map_memory is mapped here,
#: close is local)
FORWARDED = (
    'list_domains', 'domain_info', 'pause', 'unpause', 'set_target',
    'xs_set_target', 'enable_logdirty', 'disable_logdirty',
    'get_hvm_context', 'set_hvm_context', 'set_hvm_params',
    'xs_read', 'xs_write', 'xs_rm', 'xs_list', 'xs_set_perms',
    'xs_get_perms', 'read_console', 'attach_disk', 'detach_disk',
    'vdi_path', 'iomem_permission', 'ioport_permission', 'irq_permission',
    'assign_device', 'deassign_device', 'get_hvm_param', 'resume_domain',
    'xs_introduce_domain', 'get_cpu_policy', 'set_cpu_policy',
    'host_cpu_policy', 'get_tsc_info', 'set_tsc_info', 'populate_physmap')
#: what only the channel answers (see :func:`_extra`)
_EXTRA = ('fetch_dirty_bitmap', 'get_hvm_params', 'memory_path',
          'sysfs_root', 'domain_holes')


def encode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {'$b': base64.b64encode(bytes(value)).decode('ascii')}
    if isinstance(value, DomainInfo):
        return {'$d': records.asdict(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {'$b'}:
            return base64.b64decode(value['$b'])
        if set(value) == {'$d'}:
            return DomainInfo(**value['$d'])
        return {k: decode(v) for k, v in value.items()}
    return value


# -- the simulator's side ---------------------------------------------------
def _extra(backend, name: str, args: List[Any]) -> Any:
    if name == 'memory_path':
        dom = backend.hypervisor.domain(int(args[0]))
        if not dom.mem_path:
            raise KeyError('domain %d has no guest memory' % dom.domid)
        return [dom.mem_path, dom.max_pfn * 4096]
    if name == 'sysfs_root':
        return backend.sysfs_root
    if name == 'domain_holes':       # hole_runs by domid: views are local
        dom = backend.hypervisor.domain(int(args[0]))
        with dom.lock:
            return [list(run) for run in dom.physmap.holes]
    if name == 'get_hvm_params':     # int keys: JSON objects have strings
        return sorted(backend.get_hvm_params(*args).items())
    return backend.fetch_dirty_bitmap(*args)


def _answer(backend, request: Dict[str, Any]) -> Dict[str, Any]:
    name, args = request.get('m'), decode(request.get('a') or [])
    if name not in FORWARDED and name not in _EXTRA:
        return {'e': ['ValueError', 'no hypervisor call %r' % (name,)]}
    try:
        if name in FORWARDED:
            return {'r': encode(getattr(backend, name)(*args))}
        return {'r': encode(_extra(backend, name, args))}
    except Exception as exc:
        # KeyError's str() is its repr: send the message itself
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args \
            else str(exc)
        return {'e': [type(exc).__name__, str(msg)]}


def serve(conn: socket.socket, backend) -> threading.Thread:
    """Answer the daemon on *conn* until it closes (the daemon exited)."""
    def loop() -> None:
        with conn:
            while True:
                try:
                    request = proto.recv_message(conn)
                except (OSError, EOFError, ValueError):
                    return
                try:
                    proto.send_message(conn, _answer(backend, request))
                except (OSError, ValueError) as exc:
                    LOG.warning('hypervisor channel: reply lost: %s', exc)
                    return
    thread = threading.Thread(target=loop, name='sim-hypervisor-channel',
                              daemon=True)
    thread.start()
    return thread


# -- the daemon's side -----------------------------------------------------
_ERRORS = {'KeyError': KeyError, 'ValueError': ValueError,
           'TypeError': TypeError, 'RuntimeError': RuntimeError,
           'FileNotFoundError': FileNotFoundError,
           'PermissionError': PermissionError, 'OSError': OSError}


class ChannelError(RuntimeError):
    """The simulator stopped answering (it exited, or the wire broke)."""


class RemoteSimBackend(HypervisorBackend):
    """The hypervisor backend of a simulated host's daemon process (agent.conf
    ``backend = nova_xen_stubdom.sim.hypervisor_channel:RemoteSimBackend``);
    the socket is the inherited fd named by :data:`FD_ENV`."""

    def __init__(self, fd: int = -1) -> None:
        fd = fd if fd >= 0 else int(os.environ[FD_ENV])
        self._sock = socket.socket(fileno=fd)
        # an eventlet simulator hands over its green sockets non-blocking
        self._sock.setblocking(True)
        # one request at a time on the one socket: the daemon's threads
        # take turns (a hypervisor call is short; nothing here waits)
        self._lock = threading.Lock()
        # which domain each mapping of ours shows (hole_runs gets a view)
        self._domid_of = weakref.WeakKeyDictionary()
        self.sysfs_root = self._call('sysfs_root')

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            try:
                proto.send_message(self._sock, {'m': name,
                                                'a': encode(list(args))})
                reply = proto.recv_message(self._sock)
            except (OSError, EOFError, ValueError) as exc:
                raise ChannelError('simulated hypervisor unreachable in %s: '
                                   '%s' % (name, exc))
        if 'e' in reply:
            kind, msg = reply['e']
            raise _ERRORS.get(kind, _remote_error(kind))(msg)
        return decode(reply.get('r'))

    def map_memory(self, domid: int, writable: bool = False) -> memoryview:
        path, size = self._call('memory_path', domid)
        try:
            fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError('no domain %d (memory gone)' % domid)
        try:
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE if writable
                           else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self._domid_of[mm] = domid
        return memoryview(mm)

    def hole_runs(self, view: memoryview) -> List[Tuple[int, int]]:
        domid = self._domid_of.get(view.obj)
        if domid is None:
            return []
        return [tuple(run) for run in self._call('domain_holes', domid)]

    def fetch_dirty_bitmap(self, domid: int, clear: bool = True) -> bytearray:
        return bytearray(self._call('fetch_dirty_bitmap', domid, clear))

    def get_hvm_params(self, domid: int) -> Dict[int, int]:
        return {int(k): int(v) for k, v in self._call('get_hvm_params',
                                                      domid)}

    def close(self) -> None:
        self._sock.close()


_REMOTE_TYPES: Dict[str, type] = {}


def _remote_error(kind: str) -> type:
    """An exception class named as the simulator's (BackendFault, ...): an
    OSError, as BackendFault is, so the agent's ``except OSError`` holds."""
    if kind not in _REMOTE_TYPES:
        _REMOTE_TYPES[kind] = type(kind, (OSError,), {})
    return _REMOTE_TYPES[kind]


def _forwarder(name: str):
    def method(self, *args):
        return self._call(name, *args)
    method.__name__ = name
    method.__doc__ = getattr(HypervisorBackend, name).__doc__
    return method


for _name in FORWARDED:
    setattr(RemoteSimBackend, _name, _forwarder(_name))
abc.update_abstractmethods(RemoteSimBackend)
