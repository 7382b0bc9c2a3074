"""Live migration of a stubdom guest between two dom0 agents over TCP.

Source (:class:`LiveMigrationSource`)::

    connect + TLS (both host certificates verified, the destination's
    naming its host) + key handshake -> preamble (domain info) ->
    log-dirty on ->
    round 1: every page -> rounds 2..n: pages dirtied meanwhile, until the
    dirty set fits ``downtime_ms`` at the measured rate (or the round limit,
    or force-complete) -> pause -> last round -> HVM params/context ->
    device state -> wait "ready" -> "go" -> wait "running".

Destination (``migration_target.LiveMigrationTarget``) listens on a port
of the agent's range, accepts only a sender holding the per-migration key,
asks its caller for a paused domain when the domain description arrives
(refusing early if it does not fit), writes each batch only after its tag
verified, restores CPU and device state, reports "ready", and unpauses on
"go".

The source guest keeps running until the destination reports "ready"; any
failure before "go" leaves it running (unpaused if this migration paused
it) and the destination destroys what it prepared.

A guest that is paused when the migration starts does not change its
memory: it goes in one pass (no pre-copy rounds), "go" tells the
destination to leave it paused, and a failure leaves it paused here.
"""
import logging
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

from nova_xen_stubdom.dom0 import guest_suspend
from nova_xen_stubdom.dom0 import hypervisor as hv
from nova_xen_stubdom.dom0 import page_copy as mp
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import migration_pump
from nova_xen_stubdom.dom0 import migration_tls
from nova_xen_stubdom.dom0 import records
from nova_xen_stubdom.dom0 import saverestore
from nova_xen_stubdom import emucore

LOG = logging.getLogger(__name__)
PAGE_SIZE = emucore.format.PAGE_SIZE


class MigrationError(Exception):
    """The migration failed; the guest still runs on the source."""


class MigrationAborted(MigrationError):
    """The migration was aborted; the guest still runs on the source."""


class SwitchoverUnknown(MigrationError):
    """"go" was sent but "running" never came back: the guest may run on
    the destination, so the source stays paused for the operator."""


@records.record
class Progress:
    #: guest memory size in bytes
    memory_total: int
    #: stream bytes sent so far
    memory_processed: int
    #: dirty memory still to send, in bytes
    memory_remaining: int
    round: int
    phase: str


@records.record
class MigrationStats:
    rounds: int = 0
    bytes_sent: int = 0
    bound_bytes: int = 0
    pages_full: int = 0
    pages_zero: int = 0
    pages_xbzrle: int = 0
    total_s: float = 0.0
    #: from the destination's domain being prepared to its "ready": the
    #: pages, CPU and device state on the wire (what the transport costs)
    stream_s: float = 0.0
    #: this process's CPU seconds (every thread) over stream_s
    stream_cpu_s: float = 0.0
    downtime_s: float = 0.0
    last_round_pages: int = 0
    forced: bool = False
    reason: str = ''
    #: seconds from the pause to: last round sent, device state sent,
    #: destination ready, destination running
    switchover: Dict[str, float] = records.field(default_factory=dict)
    #: "TLSv1.3 TLS_AES_256_GCM_SHA384", or '' on plain TCP
    channel: str = ''
    #: how the guest was stopped: 'paused' (no PV drivers), 'suspended'
    #: (its PV drivers suspended it), '' (its owner had paused it)
    stopped: str = ''

    def as_dict(self) -> dict:
        return records.asdict(self)


class LiveMigrationSource:
    """Sends one guest (running or paused) to a
    :class:`LiveMigrationTarget`."""

    def __init__(self, backend: hv.HypervisorBackend, domid: int,
                 address: str, port: int, key: bytes, *,
                 device_state: Callable[[], bytes],
                 xenstore: Optional[Callable[[], Dict[str, str]]] = None,
                 downtime_ms: int = 300, max_rounds: int = 30,
                 bandwidth_bytes: float = 0, xbzrle_cache_pages: int = 16384,
                 progress: Optional[Callable[[Progress], None]] = None,
                 connect_timeout: float = 10, confirm_timeout: float = 60,
                 on_paused: Optional[Callable[[], None]] = None,
                 stop_and_copy: bool = False,
                 device_resume: Optional[Callable[[], None]] = None,
                 stall_rounds: int = 5, max_mem_factor: float = 3.0,
                 on_phase: Optional[Callable[[str], None]] = None,
                 tls: Optional[migration_tls.TlsConfig] = None,
                 peer_identity: Optional[str] = None,
                 window: int = 16) -> None:
        self.backend = backend
        #: None: plain TCP with an HMAC-tagged stream (tests, baseline);
        #: else TLS, the destination's certificate naming *peer_identity*
        self.tls = tls
        self.peer_identity = peer_identity
        #: told 'paused' (this migration paused the guest), 'go' (before
        #: "go" is sent): what a restarted daemon must know to recover
        self._on_phase = on_phase or (lambda phase: None)
        self.domid = domid
        self.address = address
        self.port = port
        self._key = key
        self._device_state = device_state
        self._xenstore = xenstore
        self.downtime_ms = downtime_ms
        self.max_rounds = max_rounds
        self.bandwidth_bytes = bandwidth_bytes
        self.xbzrle_cache_pages = xbzrle_cache_pages
        self._progress_cb = progress
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self._on_paused = on_paused
        #: pre-copy stops after this many rounds without the dirty set
        #: shrinking, or once the stream carried max_mem_factor x memory
        self.stall_rounds = stall_rounds
        self.max_mem_factor = max_mem_factor
        #: undoes ``device_state`` (QEMU runs again) when the guest stays
        self._device_resume = device_resume
        #: pause first and send everything once (the baseline, and what
        #: force-complete degenerates to before the first round)
        self.stop_and_copy = stop_and_copy
        self._abort = threading.Event()
        self._force = threading.Event()
        self.stats = MigrationStats()
        self._acked = 0
        #: segments (batches) sent that the destination has not yet
        #: acknowledged as applied: the sender waits beyond this many
        self.window = window
        #: PFN runs without a page (hole_runs), left out of full passes
        self._holes: List[Tuple[int, int]] = []
        self.progress = Progress(0, 0, 0, 0, 'starting')

    # -- control from other threads -------------------------------------------
    def abort(self) -> None:
        """Stop before the switch-over; the guest keeps running here."""
        self._abort.set()

    def force_complete(self) -> None:
        """Stop pre-copying: pause and send the rest now."""
        self._force.set()

    # -- the migration --------------------------------------------------------
    def run(self) -> MigrationStats:
        start = time.monotonic()
        info = self.backend.domain_info(self.domid)
        #: paused by its owner: it stays paused, wherever it ends up
        was_paused = info.paused
        total = info.max_pfn * PAGE_SIZE
        self.progress = Progress(total, 0, total, 0, 'connecting')
        try:
            sock = wire.connect(self.address, self.port, self.connect_timeout)
        except wire.WireError as e:
            raise MigrationError(str(e))
        paused_at = None
        go_sent = False
        logdirty = False
        view = None
        try:
            sock, keys = self._open(sock)
            # from here one thread of its own reads and writes the socket:
            # batches are encoded here while earlier ones are encrypted and
            # sent and the destination's acknowledgements come in
            sock = migration_pump.Pump(sock)
            ctrl = wire.ControlChannel(sock, keys.control, 'src')
            sink = wire.RateLimitedSink(sock, self.bandwidth_bytes)
            cache = emucore.XbzrleCache(
                self.xbzrle_cache_pages * PAGE_SIZE) \
                if self.xbzrle_cache_pages and not self.stop_and_copy \
                else None
            if self.tls is not None:
                # TLS's AEAD covers every byte: segment markers, no HMAC
                writer = emucore.StreamWriter(sink, mode='full',
                                              channel_integrity=True,
                                              xbzrle_cache=cache)
            else:
                writer = emucore.StreamWriter(sink, mode='full',
                                              key=keys.stream,
                                              xbzrle_cache=cache)
            self._ctrl = ctrl
            saverestore.write_preamble(writer, self.backend, info)
            # The destination prepares its domain once this segment (the
            # domain description) verified; its acknowledgement says the
            # domain is there (or its refusal comes back) before any page
            # goes out, so no memory is sent to a host that says no.
            self._wait_round(self._end_round(writer))
            stream_start = time.monotonic()
            stream_cpu = time.process_time()

            view = self.backend.map_memory(self.domid)
            # An HVM guest's PFNs run up to its special pages below 4 GiB;
            # the holes between are not sent (as save_domain; on real Xen
            # a 32 MiB guest is 8188 pages in 1 M PFNs)
            self._holes = saverestore.hole_runs(self.backend, view)
            self.backend.enable_logdirty(self.domid)
            logdirty = True
            self.backend.fetch_dirty_bitmap(self.domid, clear=True)
            sender = mp.PageSender(view, info.max_pfn, writer,
                                   after_batch=lambda n: self._after_batch(
                                       writer, sender, paused_at is None))
            self._sender = sender

            round_no = 0
            dirty = None
            if not self.stop_and_copy and not was_paused:
                round_no, dirty = self._precopy(info, sender, writer, total)

            # Stop-and-copy.
            self._check_abort()
            if not was_paused:
                self._on_phase('pausing')
                # paused, or (PV drivers) suspended through control/shutdown
                try:
                    self.stats.stopped = guest_suspend.stop(self.backend,
                                                            self.domid)
                except guest_suspend.SuspendError as e:
                    raise MigrationError(str(e))
            paused_at = time.monotonic()
            paused_cpu = time.process_time()
            if self._on_paused:
                self._on_paused()
            round_no += 1
            self._set_progress(sender, writer, total, round_no, 'stopcopy')
            if self.stop_and_copy or was_paused:
                self.stats.reason = 'paused guest' if was_paused \
                    else 'stop-and-copy'
                sender.send_all(self._holes)
                self.stats.last_round_pages = info.max_pfn
            else:
                rest = mp.bitmap_to_pfns(
                    self.backend.fetch_dirty_bitmap(self.domid, clear=True),
                    info.max_pfn)
                # Pages that were already due when pre-copy stopped.
                rest = mp.union(rest, dirty)
                self.stats.last_round_pages = len(rest)
                sender.send(rest)
            writer.end_round()
            sw = self.stats.switchover
            sw['last_round'] = time.monotonic() - paused_at
            saverestore.write_trailer(
                writer, self.backend, self.domid, self._device_state(),
                self._xenstore() if self._xenstore else None)
            sw['device_state'] = time.monotonic() - paused_at
            self._check_abort()
            self._expect(ctrl, 'ready', self.confirm_timeout)
            sw['ready'] = time.monotonic() - paused_at
            self.stats.stream_s = time.monotonic() - stream_start
            self.stats.stream_cpu_s = time.process_time() - stream_cpu
            self._check_abort()
            # journaled before it is sent: after a crash here the guest may
            # run on the destination, so it must stay paused on this side
            self._on_phase('go')
            ctrl.send({'msg': 'go', 'paused': was_paused})
            go_sent = True
            try:
                self._expect(ctrl, 'running', self.confirm_timeout)
            except MigrationError as e:
                raise SwitchoverUnknown(
                    'switch-over sent but the destination did not confirm '
                    'the guest running (%s); the source guest stays paused'
                    % e)
            self.stats.downtime_s = sw['running'] = \
                time.monotonic() - paused_at
            # CPU this process spent in the downtime: what the switch-over
            # costs here, apart from waiting for the machine or the peer
            sw['source_cpu'] = time.process_time() - paused_cpu
            self.stats.rounds = round_no
            self.stats.bytes_sent = writer.offset
            c = sender.counters
            self.stats.pages_full, self.stats.pages_zero = c.full, c.zero
            self.stats.pages_xbzrle = c.xbzrle
            self.stats.bound_bytes = c.bound_bytes
            self.stats.total_s = time.monotonic() - start
            self.progress = Progress(total, writer.offset, 0, round_no,
                                     'completed')
            self._report()
            LOG.info('live migration of domain %(d)d done: %(s)s',
                     {'d': self.domid, 's': self.stats.as_dict()})
            return self.stats
        except wire.WireError as e:
            # Frames below hold views of the guest memory; free them so the
            # mapping can be released below.
            traceback.clear_frames(e.__traceback__)
            err = self._peer_error() or str(e)
            if go_sent:
                raise SwitchoverUnknown(err)
            raise MigrationError('migration stream failed: %s' % err)
        except Exception as e:
            traceback.clear_frames(e.__traceback__)
            raise
        finally:
            if view is not None:
                sender = None  # noqa: F841 (drop exports of the view)
                self._sender = None
                saverestore._release(view)
            if logdirty:
                try:
                    self.backend.disable_logdirty(self.domid)
                except Exception:
                    LOG.exception('could not turn log-dirty off on %d',
                                  self.domid)
            if paused_at is not None and not go_sent:
                if self._device_resume is not None:
                    try:
                        self._device_resume()
                    except Exception:
                        LOG.exception('could not resume the device model of '
                                      'domain %d', self.domid)
                try:
                    if not was_paused:
                        guest_suspend.start_again(self.backend, self.domid)
                except Exception:
                    LOG.exception('could not unpause domain %d after a failed '
                                  'migration', self.domid)
            try:
                sock.close()
            except OSError:
                pass

    def _open(self, sock):
        """TLS (when configured) and the key handshake, within
        connect_timeout; returns (the channel, the session keys)."""
        deadline = time.monotonic() + self.connect_timeout
        sock.settimeout(self.connect_timeout)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_client(sock)
                migration_tls.check_identity(sock, self.peer_identity)
            except migration_tls.TlsError as e:
                sock.close()
                raise MigrationError('TLS to the destination agent at '
                                     '%s:%d failed: %s'
                                     % (self.address, self.port, e))
            self.stats.channel = migration_tls.version_of(sock)
        try:
            keys = wire.client_handshake(sock, self._key, deadline)
        except wire.KeyRefused as e:
            sock.close()
            raise MigrationError('destination agent refused: %s' % e)
        except wire.WireError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock, keys

    def _precopy(self, info, sender, writer, total):
        """Rounds while the guest runs; returns (rounds, still-dirty PFNs).

        Each round is waited for until the destination applied it, so the
        rate is end to end and nothing is still in flight at the pause.
        """
        round_no = 1
        self._set_progress(sender, writer, total, round_no, 'precopy')
        t0 = time.monotonic()
        sender.send_all(self._holes)
        self._wait_round(self._end_round(writer))
        rate = writer.offset / max(time.monotonic() - t0, 1e-6)
        budget = self.max_mem_factor * info.max_pfn * PAGE_SIZE
        best = None
        stalled = 0
        while True:
            dirty = mp.bitmap_to_pfns(
                self.backend.fetch_dirty_bitmap(self.domid, clear=True),
                info.max_pfn)
            # Like libxc: give up pre-copying when it does not converge
            # (the dirty set stopped shrinking, or the stream already
            # carried max_mem_factor times the guest).
            if best is None or len(dirty) < best * 0.9:
                best, stalled = len(dirty), 0
            else:
                stalled += 1
            self.progress.memory_remaining = len(dirty) * PAGE_SIZE
            expect_ms = len(dirty) * PAGE_SIZE / rate * 1000.0
            if expect_ms <= self.downtime_ms:
                self.stats.reason = 'converged'
                return round_no, dirty
            if round_no >= self.max_rounds:
                self.stats.reason = 'round limit'
                self.stats.forced = True
                return round_no, dirty
            if stalled >= self.stall_rounds or \
                    writer.offset > budget:
                self.stats.reason = 'not converging'
                self.stats.forced = True
                return round_no, dirty
            if self._force.is_set():
                self.stats.reason = 'force-complete'
                self.stats.forced = True
                return round_no, dirty
            round_no += 1
            self._set_progress(sender, writer, total, round_no, 'precopy')
            before = writer.offset
            t0 = time.monotonic()
            sender.send(dirty)
            self._wait_round(self._end_round(writer))
            took = time.monotonic() - t0
            if took > 0.002:
                # pages per second is what the next estimate needs; bytes
                # of XBZRLE rounds understate it
                rate = max(len(dirty) * PAGE_SIZE,
                           writer.offset - before) / took

    # -- helpers --------------------------------------------------------------
    @staticmethod
    def _end_round(writer: emucore.StreamWriter) -> int:
        """Close the round's segment; returns how many tags the destination
        must have verified and applied for the round to be in its memory."""
        writer.end_round()
        return writer.stats['tags']

    def _after_batch(self, writer, sender, live: bool) -> None:
        # Every batch is its own authenticated segment: the destination
        # applies it as soon as it arrived whole.
        writer.end_round()
        self.progress.memory_processed = writer.offset
        while self._ctrl.pending():
            self._handle(self._ctrl.recv(1.0))
        # No stop-and-wait per batch: up to `window` segments may be on
        # the wire or in the destination's buffers, unapplied.
        if writer.stats['tags'] - self._acked > self.window:
            self._wait_round(writer.stats['tags'] - self.window)
        self._check_abort()
        if live and self._progress_cb:
            self._report()

    def _handle(self, msg: dict) -> None:
        """A message from the destination during the stream."""
        if msg.get('msg') == 'applied':
            self._acked = int(msg.get('tags', 0))
            return
        if msg.get('msg') == 'error':
            raise MigrationError('destination failed: %s' % msg.get('reason'))
        raise MigrationError('unexpected message from the destination: %s'
                             % msg.get('msg'))

    def _wait_round(self, tags: int) -> None:
        """Until the destination has verified and applied *tags* segments
        (emucore AUTH_TAGs), i.e. everything sent up to a round's end."""
        deadline = time.monotonic() + self.confirm_timeout
        while self._acked < tags:
            self._check_abort()
            left = deadline - time.monotonic()
            if left <= 0:
                raise MigrationError('destination did not apply the round '
                                     '(%d segments) within %.0f s'
                                     % (tags, self.confirm_timeout))
            try:
                msg = self._ctrl.recv(min(left, 0.2))
            except wire.WireError as e:
                if 'no answer' in str(e):
                    continue
                raise
            self._handle(msg)

    def _peer_error(self) -> Optional[str]:
        ctrl = getattr(self, '_ctrl', None)
        if ctrl is None:
            return None
        # the destination's acknowledgements of earlier segments may come
        # before its error: the reason is the first "error" among what it
        # sent before the connection ended
        while True:
            try:
                msg = ctrl.recv(0.5)
            except Exception:
                return None
            if msg.get('msg') == 'error':
                return 'destination failed: %s' % msg.get('reason')

    def _check_abort(self) -> None:
        if self._abort.is_set():
            raise MigrationAborted('live migration of domain %d aborted'
                                   % self.domid)

    def _expect(self, ctrl: wire.ControlChannel, what: str,
                timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MigrationError('destination did not report %r within '
                                     '%.0f s' % (what, timeout))
            try:
                msg = ctrl.recv(min(left, 0.2))
            except wire.WireError as e:
                if 'no answer' in str(e):
                    self._check_abort()
                    continue
                raise
            if msg.get('msg') == what:
                return
            if msg.get('msg') == 'applied':
                continue
            if msg.get('msg') == 'error':
                raise MigrationError('destination failed: %s'
                                     % msg.get('reason'))
            raise MigrationError('expected %r from the destination, got %r'
                                 % (what, msg.get('msg')))

    def _set_progress(self, sender, writer, total, round_no, phase) -> None:
        self.progress.round = round_no
        self.progress.phase = phase
        self.progress.memory_processed = writer.offset
        self._report()

    def _report(self) -> None:
        if self._progress_cb:
            try:
                self._progress_cb(records.replace(self.progress))
            except Exception:
                LOG.exception('migration progress callback failed')
