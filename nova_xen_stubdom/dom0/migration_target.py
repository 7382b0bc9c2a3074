"""The destination of a live migration (see :mod:`.live_migration`).

:class:`LiveMigrationTarget` listens on a port of the agent's range,
accepts only a sender with a verified host certificate (TLS) holding the
per-migration key, asks its caller for a
paused domain when the domain description arrives (refusing early if it
does not fit), writes each batch only after its tag verified, restores CPU
and device state, reports "ready", and unpauses on "go".  On any failure
it destroys what it prepared.

The listener is built for hostile peers on the network: every connection
gets ``handshake_timeout`` seconds for its TLS and key handshakes (a silent
or dripping client is dropped), up to ``max_pending`` handshakes run at once
on their own threads (a hostile client does not hold up the real source),
a connection arriving when all are taken evicts the oldest pending one (so
idle connections cannot fill the slots and lock the source out; the
kernel's accept queue is bounded too), and the first connection that
completes both handshakes is the migration: the listener closes then.
"""
import collections
import logging
import socket
import threading
import time
import traceback
from typing import Callable, Dict, Optional, Tuple

from nova_xen_stubdom import emucore
from nova_xen_stubdom.dom0 import hypervisor as hv
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import migration_pump
from nova_xen_stubdom.dom0 import migration_tls
from nova_xen_stubdom.dom0 import records
from nova_xen_stubdom.dom0 import page_populate
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
    #: of those, PFNs this host had no frame for until it populated one
    populated: int = 0
    #: this process's CPU seconds (every thread) from the domain's being
    #: prepared to "ready": what receiving the stream costs the host
    stream_cpu_s: float = 0.0


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
                 tls: Optional[migration_tls.TlsConfig] = None,
                 handshake_timeout: float = 10,
                 max_pending: int = 8,
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
        #: None: plain TCP with an HMAC-tagged stream (tests, baseline)
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        #: connections that presented a wrong migration key
        self.key_refusals = 0
        #: connections dropped otherwise: failed TLS, silent past the
        #: deadline, garbage, or over max_pending
        self.rejected = 0
        self._lock = threading.Lock()
        #: connections in their handshakes, oldest first: accepted socket
        #: -> the socket that owns the connection now (its TLS socket)
        self._pending = collections.OrderedDict()   # type: Dict
        self._claimed: Optional[threading.Thread] = None
        #: "TLSv1.3 TLS_AES_256_GCM_SHA384" of the accepted connection
        self.channel = ''

    def start(self) -> Tuple[str, int]:
        if self.tls is not None:
            # fail now on a missing certificate, not in the first handshake
            try:
                self.tls.context(server=True)
            except migration_tls.TlsError as e:
                raise MigrationError(str(e))
        self._listener, self.port = wire.bind_in_range(
            self.listen_address, self.port_min, self.port_max,
            backlog=self.max_pending)
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
                with self._lock:
                    claimed = self._claimed
                if claimed is not None:
                    self._listener.close()
                    self._drop_pending()
                    claimed.join()
                    return
                if time.monotonic() > deadline:
                    self._fail('no source connected within %.0f s'
                               % self.accept_timeout)
                    return
                try:
                    conn, peer = self._listener.accept()
                except socket.timeout:
                    continue
                self._admit(conn, peer)
            self._fail('cancelled', state='cancelled')
        except Exception as e:     # never leave wait() hanging
            LOG.exception('migration receiver failed')
            self._fail(str(e))
        finally:
            self._listener.close()
            with self._lock:
                claimed = self._claimed
            if claimed is None or not claimed.is_alive():
                self._drop_pending()
            self._done.set()

    def _admit(self, conn: socket.socket, peer) -> None:
        """Start the handshakes of one connection on its own thread; with
        max_pending already running, the oldest of them is dropped."""
        with self._lock:
            if len(self._pending) >= self.max_pending:
                _, oldest = self._pending.popitem(last=False)
                LOG.warning('migration receiver on port %(p)d: %(n)d '
                            'handshakes pending, dropping the oldest for '
                            '%(peer)s', {'p': self.port, 'n': self.max_pending,
                                         'peer': peer})
                # its thread fails its handshake and counts the rejection
                wire.hard_shutdown(oldest)
            t = threading.Thread(target=self._handshake, args=(conn, peer),
                                 name='migration-handshake-%d' % self.port,
                                 daemon=True)
            self._pending[conn] = conn
        t.start()

    def _drop_pending(self) -> None:
        with self._lock:
            pending = list(self._pending.values())
        for conn in pending:
            wire.hard_shutdown(conn)

    def _handshake(self, conn: socket.socket, peer) -> None:
        deadline = time.monotonic() + self.handshake_timeout
        chan = conn
        try:
            # Control messages are tiny and latency is downtime: no
            # Nagle delay behind the source's delayed ACKs.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.handshake_timeout)
            if self.tls is not None:
                chan = self.tls.wrap(conn, server=True)
                with self._lock:
                    evicted = conn not in self._pending
                    if not evicted:
                        self._pending[conn] = chan
                if evicted:         # while being wrapped: finish it off
                    wire.hard_shutdown(chan)
                migration_tls.handshake(chan)
            keys = wire.server_handshake(chan, self._key, deadline)
            chan.settimeout(None)
        except (wire.WireError, migration_tls.TlsError, OSError) as e:
            # A wrong key or a stray/hostile client: refuse it and keep
            # waiting for the real source.
            with self._lock:
                self._pending.pop(conn, None)
                if isinstance(e, wire.KeyRefused):
                    self.key_refusals += 1
                else:
                    self.rejected += 1
            LOG.warning('migration receiver on port %(p)d refused '
                        '%(peer)s: %(e)s',
                        {'p': self.port, 'peer': peer, 'e': e})
            chan.close()
            return
        with self._lock:
            self._pending.pop(conn, None)
            if self._claimed is not None or self._cancel.is_set() or \
                    self._done.is_set():
                chan.close()
                return
            self._claimed = threading.current_thread()
        if self.tls is not None:
            self.channel = migration_tls.version_of(chan)
        LOG.info('migration receiver on port %(p)d: source %(peer)s '
                 'accepted (%(c)s)', {'p': self.port, 'peer': peer,
                                      'c': self.channel or 'plain TCP'})
        try:
            self._receive(chan, keys)
        except Exception as e:     # never leave wait() hanging
            LOG.exception('migration receiver failed')
            self._fail(str(e))

    def _receive(self, conn: socket.socket, keys: wire.SessionKeys) -> None:
        # one thread of its own reads and writes the connection from now
        # on: the next bytes are decrypted while a batch is applied, and
        # acknowledgements go out without a second thread in the TLS object
        pump = migration_pump.Pump(conn)
        ctrl = wire.ControlChannel(pump, keys.control, 'dst')
        holder = {'view': None, 'populate': None, 'cpu': 0.0}
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
            # refuse a CPU this host cannot offer before a domain is made
            # or a page written (the source still runs the guest)
            saverestore.check_cpu_policy(self.backend, res.cpuid_policy,
                                         res.msr_policy)
            domid = self._prepare(info)
            self.result.domid = domid
            holder['cpu'] = time.process_time()
            saverestore.apply_cpu_policy(self.backend, domid,
                                         res.cpuid_policy, res.msr_policy)
            dinfo = self.backend.domain_info(domid)
            if dinfo.max_pfn < max_pfn:
                raise MigrationError('prepared domain has %d pages, the '
                                     'guest %d' % (dinfo.max_pfn, max_pfn))
            holder['view'] = self.backend.map_memory(domid, writable=True)
            # pages the source has and this fresh domain lacks (firmware's)
            # are populated before they are written, never dropped
            holder['populate'] = page_populate.Populator(
                self.backend, domid,
                saverestore.hole_runs(self.backend, holder['view']))
            return memoryview(holder['view'])[:max_pfn * PAGE_SIZE]

        def applied(seq: int, res: emucore.RestoreResult) -> None:
            # Tell the source how many segments are in memory: its rate
            # estimate and switch-over wait on it.
            ctrl.send({'msg': 'applied', 'tags': seq + 1})

        try:
            if self.tls is not None:
                # TLS's AEAD authenticated every byte: no HMAC tags
                reader = emucore.StreamReader(wire.SocketSource(pump),
                                              channel_integrity=True)
            else:
                reader = emucore.StreamReader(wire.SocketSource(pump),
                                              keys.stream)
            res = reader.restore(
                prepare=prepare, on_segment=applied,
                before_pages=lambda rec: holder['populate'](rec))
            c = saverestore.contents_of(res)
            domid = self.result.domid
            self.result.pages = res.pages
            self.result.populated = holder['populate'].populated
            res = None
            saverestore.clear_special_pages(holder['view'], c.hvm_params)
            saverestore._release(holder['view'])
            holder['view'] = None
            saverestore.apply_domain_state(self.backend, domid, c)
            self._restore_dev(domid, c.device_state, c.xenstore)
            if self._cancel.is_set():
                raise MigrationError('cancelled on the destination')
            self.result.stream_cpu_s = time.process_time() - holder['cpu']
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
            except (OSError, wire.WireError):
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
                pump.flush(5)
            except (OSError, wire.WireError):
                pass
            wire.hard_shutdown(conn, socket.SHUT_WR)
            saverestore._release(holder['view'])
            self._fail(reason, state='cancelled' if self._cancel.is_set()
                       else 'failed')
        finally:
            self._cancel_watch = True
            pump.close()

    def _watch_cancel(self, conn: socket.socket) -> None:
        while not self._done.is_set() and not getattr(self, '_cancel_watch',
                                                      False):
            if self._cancel.wait(0.2):
                if self.result.state != 'running':
                    wire.hard_shutdown(conn)
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
