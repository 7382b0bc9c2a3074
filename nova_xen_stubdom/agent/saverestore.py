"""Save a stubdom guest into a v2 image, and restore it from one.

A save pauses the guest, reads its memory from the hypervisor (never from
the stubdom), its HVM params and context, and takes QEMU's device state
from the caller (the stubdom writes it to the state disk dom0 attaches for
the save); all of it goes into one Xen migration stream v2 whose every
record is covered by HMAC-SHA256 tags keyed with a per-image key.

A restore reads the image twice: the first pass authenticates and checks
all of it (framing, tags, PFN ranges, the VM it belongs to, that the target
domain is large enough) and writes nothing; only then does the second pass
write pages.  A corrupt, truncated or foreign image is refused with
:class:`ImageError` and nothing is changed.
"""
import dataclasses
import io
import json
import time
from typing import BinaryIO, Callable, Dict, Optional

from oslo_log import log as logging

from nova_xen_stubdom.agent import backend as hv
from nova_xen_stubdom.agent import migration_pages as mp
from nova_xen_stubdom.agent import migration_stream as ms

LOG = logging.getLogger(__name__)


class ImageError(Exception):
    """A save image is unusable (corrupt, truncated, foreign, too big)."""


@dataclasses.dataclass
class SaveStats:
    bytes_written: int
    pages: int
    zero_pages: int
    seconds: float


@dataclasses.dataclass
class ImageContents:
    """What an image holds besides pages."""
    info: dict = dataclasses.field(default_factory=dict)
    hvm_context: Optional[bytes] = None
    hvm_params: Optional[Dict[int, int]] = None
    device_state: Optional[bytes] = None
    xenstore: Dict[str, str] = dataclasses.field(default_factory=dict)
    complete: bool = False


def domain_info_record(info: hv.DomainInfo) -> dict:
    return {'vm_uuid': info.vm_uuid, 'max_pfn': info.max_pfn,
            'vcpus': info.vcpus, 'hvm': info.hvm,
            'memory_bytes': info.max_pfn * ms.PAGE_SIZE}


def write_preamble(writer: ms.StreamWriter, info: hv.DomainInfo) -> None:
    writer.libxl_header()
    writer.libxc_header()
    writer.domain_info(domain_info_record(info))
    writer.static_data_end()
    writer.tsc_info()
    writer.tag()


def write_trailer(writer: ms.StreamWriter, backend: hv.HypervisorBackend,
                  domid: int, device_state: bytes,
                  xenstore: Optional[Dict[str, str]]) -> None:
    """CPU context, params, device state and the ends (guest paused)."""
    writer.hvm_context(backend.get_hvm_context(domid))
    writer.hvm_params(backend.get_hvm_params(domid))
    writer.libxc_end()
    writer.emulator_xenstore(xenstore or {})
    writer.emulator_context(device_state)
    # The last tag precedes END (a Xen reader stops at END); END carries
    # nothing, so every byte of content is covered.
    writer.tag()
    writer.libxl_end()


class StreamConsumer:
    """Folds the records of one stream into :class:`ImageContents` and,
    once :meth:`attach` gave it memory, pages into that memory.

    With ``apply=False`` records are only checked (the restore's first pass).
    """

    def __init__(self, apply: bool = True) -> None:
        self.contents = ImageContents()
        self.applier: Optional[mp.PageApplier] = None
        self._apply = apply
        self._max_pfn: Optional[int] = None
        self._seen_end = False

    @property
    def max_pfn(self) -> Optional[int]:
        return self._max_pfn

    def attach(self, mem) -> None:
        self.applier = mp.PageApplier(mem)

    def feed(self, rec: ms.Record,
             on_info: Optional[Callable[[dict], None]] = None) -> None:
        c = self.contents
        if c.complete:
            raise ms.StreamError('data after the libxl END record')
        if rec.level == 'libxc':
            if rec.type == ms.XSD_DOMAIN_INFO:
                try:
                    c.info = json.loads(bytes(rec.body))
                    self._max_pfn = int(c.info['max_pfn'])
                except (ValueError, KeyError, TypeError) as e:
                    raise ms.RecordError('bad XSD_DOMAIN_INFO: %s' % e)
                if on_info:
                    on_info(c.info)
                return
            if rec.type in (ms.REC_TYPE_PAGE_DATA, ms.XSD_PAGE_ZERO,
                            ms.XSD_PAGE_XBZRLE):
                if self._max_pfn is None:
                    raise ms.RecordError('page record before XSD_DOMAIN_INFO')
                if self._apply:
                    if self.applier is None:
                        raise ms.RecordError('page record before the target '
                                             'domain was prepared')
                    self.applier.apply(rec)
                else:
                    mp.check_record(rec, self._max_pfn)
            elif rec.type == ms.REC_TYPE_HVM_CONTEXT:
                c.hvm_context = bytes(rec.body)
            elif rec.type == ms.REC_TYPE_HVM_PARAMS:
                c.hvm_params = ms.decode_hvm_params(rec.body)
            elif rec.type == ms.REC_TYPE_END:
                if c.hvm_context is None or c.hvm_params is None:
                    raise ms.RecordError('libxc stream ends without '
                                         'HVM_CONTEXT and HVM_PARAMS')
                self._seen_end = True
            elif rec.type & ms.REC_TYPE_OPTIONAL or rec.type in (
                    ms.REC_TYPE_STATIC_DATA_END, ms.REC_TYPE_X86_TSC_INFO):
                pass
            else:
                raise ms.RecordError('unexpected libxc record %s in an HVM '
                                     'stream' % rec.name)
            return
        if rec.type == ms.LREC_LIBXC_CONTEXT:
            return
        if rec.type == ms.LREC_EMULATOR_CONTEXT:
            c.device_state = ms.decode_emulator(rec.body)
        elif rec.type == ms.LREC_EMULATOR_XENSTORE_DATA:
            c.xenstore = ms.decode_emulator_xenstore(rec.body)
        elif rec.type == ms.LREC_END:
            if not self._seen_end:
                raise ms.RecordError('libxl END before the libxc END')
            if c.device_state is None:
                raise ms.RecordError('stream ends without EMULATOR_CONTEXT '
                                     '(the device model\'s state)')
            c.complete = True
        elif not rec.type & ms.REC_TYPE_OPTIONAL:
            raise ms.RecordError('unexpected libxl record %s' % rec.name)


def save_domain(backend: hv.HypervisorBackend, domid: int, out: BinaryIO,
                key: bytes, device_state: Callable[[], bytes],
                xenstore: Optional[Callable[[], Dict[str, str]]] = None
                ) -> SaveStats:
    """Pause *domid* and write its whole state to *out*.

    *device_state* is called with the guest paused and returns QEMU's saved
    device state (read back from the stubdom's state disk).  The guest is
    left paused on success (the caller destroys it and its stubdom); on
    failure it is unpaused again if this call paused it, and the caller
    discards the partial image.
    """
    start = time.monotonic()
    info = backend.domain_info(domid)
    if not info.hvm:
        raise ImageError('domain %d is not an HVM guest' % domid)
    paused_here = not info.paused
    if paused_here:
        backend.pause(domid)
    view = None
    try:
        writer = ms.StreamWriter(out.write, key)
        write_preamble(writer, info)
        view = backend.map_memory(domid)
        mem = mp.as_pages(view, info.max_pfn)
        sender = mp.PageSender(mem, writer, after_batch=lambda n: writer.tag())
        sender.send_all()
        counters = sender.counters
        del mem, sender
        write_trailer(writer, backend, domid, device_state(),
                      xenstore() if xenstore else None)
        out.flush()
    except Exception:
        if paused_here:
            try:
                backend.unpause(domid)
            except Exception:
                LOG.exception('could not unpause domain %d after a failed '
                              'save', domid)
        raise
    finally:
        _release(view)
    LOG.info('saved domain %(domid)d: %(bytes)d bytes in %(s).2f s',
             {'domid': domid, 'bytes': writer.bytes_written,
              's': time.monotonic() - start})
    return SaveStats(writer.bytes_written, counters.pages, counters.zero,
                     time.monotonic() - start)


def export_domain(backend: hv.HypervisorBackend, domid: int, out: BinaryIO,
                  device_state: Callable[[], bytes]) -> SaveStats:
    """Like :func:`save_domain`, but only records of Xen's spec (no zero
    runs, no tags, no domain description): an image Xen's own tools read
    and ``verify-stream-v2 -f libxl`` accepts.  Unauthenticated: for
    handing a guest to a plain Xen toolstack, not for this driver's
    restores, which refuse it."""
    start = time.monotonic()
    info = backend.domain_info(domid)
    paused_here = not info.paused
    if paused_here:
        backend.pause(domid)
    view = None
    try:
        writer = ms.StreamWriter(out.write, compat=True)
        write_preamble(writer, info)
        view = backend.map_memory(domid)
        sender = mp.PageSender(mp.as_pages(view, info.max_pfn), writer)
        sender.send_all()
        counters = sender.counters
        sender = None
        write_trailer(writer, backend, domid, device_state(), None)
        out.flush()
    finally:
        _release(view)
        if paused_here:
            backend.unpause(domid)
    return SaveStats(writer.bytes_written, counters.pages, counters.zero,
                     time.monotonic() - start)


def _release(view) -> None:
    if view is None:
        return
    try:
        view.release()
    except (BufferError, AttributeError):
        pass


def verify_image(inp: BinaryIO, key: bytes,
                 expected_vm_uuid: Optional[str] = None,
                 max_pfn: Optional[int] = None) -> ImageContents:
    """First pass: check the whole image, write nothing.

    Raises :class:`ImageError` naming what is wrong.
    """
    consumer = StreamConsumer(apply=False)
    try:
        reader = ms.StreamReader(_reader(inp), key)
        for segment in reader.segments():
            for rec in segment:
                consumer.feed(rec)
    except ms.AuthError as e:
        raise ImageError('save image failed authentication: %s' % e)
    except ms.StreamError as e:
        raise ImageError('save image is corrupt or truncated: %s' % e)
    c = consumer.contents
    if not c.complete:
        raise ImageError('save image is incomplete')
    if not c.info:
        raise ImageError('save image carries no domain description')
    if expected_vm_uuid and c.info.get('vm_uuid') != expected_vm_uuid:
        raise ImageError('save image belongs to VM %s, not %s'
                         % (c.info.get('vm_uuid'), expected_vm_uuid))
    if max_pfn is not None and c.info['max_pfn'] > max_pfn:
        raise ImageError('save image holds %d pages but the target domain '
                         'has %d' % (c.info['max_pfn'], max_pfn))
    return c


def restore_domain(backend: hv.HypervisorBackend, domid: int, inp: BinaryIO,
                   key: bytes, expected_vm_uuid: Optional[str] = None
                   ) -> ImageContents:
    """Restore *inp* into the fresh, paused domain *domid*.

    Pages, HVM params and context are written; the device state and the
    emulator's xenstore data are returned for the new stubdom.  The domain
    stays paused.  Nothing is written unless the whole image verified.
    """
    info = backend.domain_info(domid)
    inp.seek(0)
    verify_image(inp, key, expected_vm_uuid, max_pfn=info.max_pfn)
    inp.seek(0)
    view = backend.map_memory(domid, writable=True)
    consumer = StreamConsumer(apply=True)
    try:
        consumer.attach(mp.as_pages(view, info.max_pfn))
        reader = ms.StreamReader(_reader(inp), key)
        for segment in reader.segments():
            for rec in segment:
                consumer.feed(rec)
    except ms.StreamError as e:
        # The image changed between the two passes.
        raise ImageError('save image changed while being restored: %s' % e)
    finally:
        consumer.applier = None
        _release(view)
    c = consumer.contents
    backend.set_hvm_params(domid, c.hvm_params)
    backend.set_hvm_context(domid, c.hvm_context)
    return c


def _reader(inp: BinaryIO):
    read = getattr(inp, 'read1', None) or inp.read
    if isinstance(inp, io.BytesIO):
        read = inp.read
    return read
