"""The destination of a live migration (see :mod:`.live_migration`).

:class:`LiveMigrationTarget` listens on a port of the agent's range,
accepts only a sender holding the per-migration key, asks its caller for a
paused domain when the domain description arrives (refusing early if it
does not fit), writes each batch only after its tag verified, restores CPU
and device state, reports "ready", and unpauses on "go".  On any failure
it destroys what it prepared.
"""
import logging
import socket
import threading
import time
import traceback
from typing import Callable, Dict, Optional, Tuple

from nova_xen_stubdom import emucore
from nova_xen_stubdom.dom0 import hypervisor as hv
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import records
from nova_xen_stubdom.dom0 import saverestore
from nova_xen_stubdom.dom0.live_migration import PAGE_SIZE
from nova_xen_stubdom.dom0.live_migration import MigrationError

LOG = logging.getLogger(__name__)


@records.record
class TargetResult:
    state: str = 'waiting'          # waiting | running | failed | cancelled
    domid: Optional[int] = None
    #: "running" with the guest left paused (it was paused on the source)
    paused: bool = False
    error: Optional[str] = None
    pages: int = 0


class LiveMigrationTarget:
    """Receives one guest.  Callbacks (all run on the receiver thread):

    * ``prepare_domain(info) -> domid``: create a paused domain of
      ``info['max_pfn']`` pages (raise to refuse, e.g. out of memory);
    * ``restore_device_state(domid, state, xenstore)``: start the guest's
      new stubdom and feed it QEMU's device state;
    * ``destroy_domain(domid)``: undo ``prepare_domain`` (and the stubdom);
    * ``on_phase(phase)``: "go" just before the guest may start here,
      "running" once it does -- journaled, so a restarted daemon knows
      whether the guest may have run on this host.
    """

    def __init__(self, backend: hv.HypervisorBackend, key: bytes, *,
                 prepare_domain: Callable[[dict], int],
                 restore_device_state: Callable[[int, bytes, Dict[str, str]],
                                                None],
                 destroy_domain: Callable[[int], None],
                 listen_address: str = '127.0.0.1', port_min: int = 49500,
                 port_max: int = 49599, accept_timeout: float = 300,
                 go_timeout: float = 60,
                 on_phase: Callable[[str], None] = lambda phase: None
                 ) -> None:
        self.backend = backend
        self._on_phase = on_phase
        self._key = key
        self._prepare = prepare_domain
        self._restore_dev = restore_device_state
        self._destroy = destroy_domain
        self.listen_address = listen_address
        self.port_min, self.port_max = port_min, port_max
        self.accept_timeout = accept_timeout
        self.go_timeout = go_timeout
        self.result = TargetResult()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None
        self.key_refusals = 0

    def start(self) -> Tuple[str, int]:
        self._listener, self.port = wire.bind_in_range(
            self.listen_address, self.port_min, self.port_max)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(
            target=self._serve, name='migration-receiver-%d' % self.port,
            daemon=True)
        self._thread.start()
        return self.listen_address, self.port

    def wait(self, timeout: Optional[float] = None) -> TargetResult:
        self._done.wait(timeout)
        return self.result

    def cancel(self) -> None:
        """Stop receiving; whatever was prepared is destroyed."""
        self._cancel.set()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(30)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # -- receiver thread ------------------------------------------------------
    def _serve(self) -> None:
        deadline = time.monotonic() + self.accept_timeout
        try:
            while not self._cancel.is_set():
                if time.monotonic() > deadline:
                    self._fail('no source connected within %.0f s'
                               % self.accept_timeout)
                    return
                try:
                    conn, peer = self._listener.accept()
                except socket.timeout:
                    continue
                conn.settimeout(None)
                # Control messages are tiny and latency is downtime: no
                # Nagle delay behind the source's delayed ACKs.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    keys = wire.server_handshake(conn, self._key)
                except wire.WireError as e:
                    # A wrong key or a stray client: refuse it and keep
                    # waiting for the real source.
                    self.key_refusals += 1
                    LOG.warning('migration receiver on port %(p)d refused '
                                '%(peer)s: %(e)s',
                                {'p': self.port, 'peer': peer, 'e': e})
                    conn.close()
                    continue
                self._receive(conn, keys)
                return
            self._fail('cancelled', state='cancelled')
        except Exception as e:     # never leave wait() hanging
            LOG.exception('migration receiver failed')
            self._fail(str(e))
        finally:
            self._listener.close()
            self._done.set()

    def _receive(self, conn: socket.socket, keys: wire.SessionKeys) -> None:
        ctrl = wire.ControlChannel(conn, keys.control, 'dst')
        holder = {'view': None}
        watcher = threading.Thread(target=self._watch_cancel, args=(conn,),
                                   daemon=True)
        watcher.start()

        def prepare(res: emucore.RestoreResult):
            # Runs once the first segment (headers and the domain
            # description) verified, before any page is written.
            info = res.domain_info
            if info is None:
                raise emucore.RecordError('stream carries no domain '
                                          'description before its pages')
            try:
                max_pfn = int(info['max_pfn'])
            except (KeyError, TypeError, ValueError) as e:
                raise emucore.RecordError('bad NX_DOMAIN_INFO: %s' % e)
            domid = self._prepare(info)
            self.result.domid = domid
            dinfo = self.backend.domain_info(domid)
            if dinfo.max_pfn < max_pfn:
                raise MigrationError('prepared domain has %d pages, the '
                                     'guest %d' % (dinfo.max_pfn, max_pfn))
            holder['view'] = self.backend.map_memory(domid, writable=True)
            return memoryview(holder['view'])[:max_pfn * PAGE_SIZE]

        def applied(seq: int, res: emucore.RestoreResult) -> None:
            # Tell the source how many segments are in memory: its rate
            # estimate and switch-over wait on it.
            ctrl.send({'msg': 'applied', 'tags': seq + 1})

        try:
            res = emucore.StreamReader(wire.SocketSource(conn),
                                       keys.stream).restore(
                prepare=prepare, on_segment=applied)
            c = saverestore.contents_of(res)
            domid = self.result.domid
            self.result.pages = res.pages
            res = None
            saverestore._release(holder['view'])
            holder['view'] = None
            self.backend.set_hvm_params(domid, c.hvm_params)
            self.backend.set_hvm_context(domid, c.hvm_context)
            self._restore_dev(domid, c.device_state, c.xenstore)
            if self._cancel.is_set():
                raise MigrationError('cancelled on the destination')
            ctrl.send({'msg': 'ready'})
            msg = ctrl.recv(self.go_timeout)
            if msg.get('msg') != 'go':
                raise MigrationError('source sent %r instead of "go"'
                                     % msg.get('msg'))
            self._on_phase('go')
            if msg.get('paused'):
                self.result.paused = True
            else:
                self.backend.unpause(domid)
            self.result.state = 'running'
            self._on_phase('running')
            try:
                ctrl.send({'msg': 'running'})
            except OSError:
                LOG.warning('guest %d runs here, but the source did not '
                            'hear it', domid)
        except Exception as e:
            traceback.clear_frames(e.__traceback__)
            if self._cancel.is_set():
                reason = 'cancelled on the destination'
            else:
                reason = str(e) or e.__class__.__name__
            LOG.warning('incoming migration failed: %s', reason)
            try:
                ctrl.send({'msg': 'error', 'reason': reason})
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            saverestore._release(holder['view'])
            self._fail(reason, state='cancelled' if self._cancel.is_set()
                       else 'failed')
        finally:
            self._cancel_watch = True
            conn.close()

    def _watch_cancel(self, conn: socket.socket) -> None:
        while not self._done.is_set() and not getattr(self, '_cancel_watch',
                                                      False):
            if self._cancel.wait(0.2):
                if self.result.state != 'running':
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return

    def _fail(self, reason: str, state: str = 'failed') -> None:
        if self.result.state == 'running':
            return
        self.result.state = state
        self.result.error = reason
        if self.result.domid is not None:
            try:
                self._destroy(self.result.domid)
            except Exception:
                LOG.exception('could not destroy domain %d of a failed '
                              'incoming migration', self.result.domid)
