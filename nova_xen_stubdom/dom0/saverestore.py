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
import io
import json
import logging
import mmap
import time
from typing import (Any, BinaryIO, Callable, Dict, List, Optional,
                    Tuple)

from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.dom0 import hypervisor as hv
from nova_xen_stubdom.dom0 import page_copy as mp
from nova_xen_stubdom.dom0 import page_populate
from nova_xen_stubdom.dom0 import records
from nova_xen_stubdom import emucore

LOG = logging.getLogger(__name__)
PAGE_SIZE = emucore.format.PAGE_SIZE
# xen/include/public/hvm/params.h
HVM_PARAM_STORE_PFN, HVM_PARAM_STORE_EVTCHN = 1, 2
HVM_PARAM_IOREQ_PFN, HVM_PARAM_BUFIOREQ_PFN = 5, 6
_CLEARED_PAGES = (HVM_PARAM_STORE_PFN, HVM_PARAM_IOREQ_PFN,
                  HVM_PARAM_BUFIOREQ_PFN)


class ImageError(Exception):
    """A save image is unusable (corrupt, truncated, foreign, too big)."""


@records.record
class SaveStats:
    bytes_written: int
    pages: int
    zero_pages: int
    seconds: float


@records.record
class ImageContents:
    """What an image holds besides pages."""
    info: dict = records.field(default_factory=dict)
    hvm_context: Optional[bytes] = None
    hvm_params: Optional[Dict[int, int]] = None
    #: X86_CPUID_POLICY and X86_MSR_POLICY bodies (empty: an image written
    #: before they were carried) and X86_TSC_INFO (mode, khz, nsec,
    #: incarnation)
    cpuid_policy: bytes = b''
    msr_policy: bytes = b''
    tsc_info: Optional[Tuple[int, int, int, int]] = None
    device_state: Optional[bytes] = None
    xenstore: Dict[str, str] = records.field(default_factory=dict)
    complete: bool = False
    #: pages the stream wrote, and how many of them the destination had
    #: no frame for until the restore populated one (page_populate)
    pages: int = 0
    populated: int = 0


def domain_info_record(info: hv.DomainInfo) -> dict:
    return {'vm_uuid': info.vm_uuid, 'max_pfn': info.max_pfn,
            'vcpus': info.vcpus, 'hvm': info.hvm,
            'memory_bytes': info.max_pfn * PAGE_SIZE}


def write_preamble(writer: emucore.StreamWriter,
                   backend: hv.HypervisorBackend, info: hv.DomainInfo) -> None:
    """Headers, the domain description (full mode) and the static data:
    the domain's CPU policy, as libxc's x86_hvm_static_data writes it
    (xg_sr_common_x86.c, write_x86_cpu_policy_records)."""
    writer.write_header()
    if writer.mode == 'full':
        writer.write_domain_info(domain_info_record(info))
    cpuid, msrs = backend.get_cpu_policy(info.domid)
    writer.write_static_data(cpuid_policy=cpuid, msr_policy=msrs)


def write_trailer(writer: emucore.StreamWriter, backend: hv.HypervisorBackend,
                  domid: int, device_state: bytes,
                  xenstore: Optional[Dict[str, str]]) -> None:
    """TSC, CPU context, params (libxc's x86_hvm_end_of_checkpoint order),
    device state and the ends (guest paused)."""
    mode, khz, nsec, incarnation = backend.get_tsc_info(domid)
    writer.write_tsc_info(mode, khz, nsec, incarnation)
    writer.write_hvm_context(backend.get_hvm_context(domid))
    writer.write_hvm_params(sorted(backend.get_hvm_params(domid).items()))
    writer.end_libxc()
    writer.write_emulator_xenstore_data(xenstore or None)
    writer.write_emulator_context(device_state)
    # close() writes the final tag (every byte of content is covered) and
    # the libxl END.
    writer.close()


def contents_of(res: emucore.RestoreResult) -> ImageContents:
    """The non-page parts of a verified stream, checked to be complete."""
    if res.hvm_context is None:
        raise emucore.RecordError('the libxc stream carries no HVM_CONTEXT')
    if res.emulator_context is None:
        raise emucore.RecordError('stream ends without EMULATOR_CONTEXT '
                                  '(the device model\'s state)')
    if res.domain_info is None:
        raise emucore.RecordError('stream carries no domain description')
    try:
        int(res.domain_info['max_pfn'])
    except (KeyError, TypeError, ValueError) as e:
        raise emucore.RecordError('bad NX_DOMAIN_INFO: %s' % e)
    return ImageContents(info=dict(res.domain_info),
                         hvm_context=res.hvm_context,
                         hvm_params=dict(res.hvm_params),
                         cpuid_policy=res.cpuid_policy,
                         msr_policy=res.msr_policy,
                         tsc_info=res.tsc_info,
                         device_state=res.emulator_context,
                         xenstore=dict(res.emulator_xenstore_data),
                         complete=True)


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
        writer = emucore.StreamWriter(out, mode='full', key=key)
        write_preamble(writer, backend, info)
        view = backend.map_memory(domid)
        sender = mp.PageSender(view, info.max_pfn, writer)
        sender.send_all(hole_runs(backend, view))
        counters = sender.counters
        del sender
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
             {'domid': domid, 'bytes': writer.offset,
              's': time.monotonic() - start})
    return SaveStats(writer.offset, counters.pages, counters.zero,
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
        writer = emucore.StreamWriter(out, mode='compat')
        write_preamble(writer, backend, info)
        view = backend.map_memory(domid)
        sender = mp.PageSender(view, info.max_pfn, writer)
        sender.send_all(hole_runs(backend, view))
        counters = sender.counters
        sender = None
        write_trailer(writer, backend, domid, device_state(), None)
        out.flush()
    finally:
        _release(view)
        if paused_here:
            backend.unpause(domid)
    return SaveStats(writer.offset, counters.pages, counters.zero,
                     time.monotonic() - start)


def hole_runs(backend: hv.HypervisorBackend, view
              ) -> List[Tuple[int, int]]:
    """[start, stop) runs of PFNs of *view* the hypervisor has no page for,
    ascending (HypervisorBackend.hole_runs): what a first full pass leaves
    out (save_domain, export_domain and the live migration's first round)
    and what a restore populates before writing there."""
    return backend.hole_runs(view)


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
    """Check the whole image (tags, framing, every page record, the VM it
    belongs to, that it fits *max_pfn* pages), write nothing.

    Raises :class:`ImageError` naming what is wrong.
    """
    with _image_buffer(inp) as buf:
        try:
            res = emucore.StreamReader(buf, key, allow_trailing=True).verify(
                None if max_pfn is None else max_pfn * PAGE_SIZE)
            return _check_image(res, expected_vm_uuid, max_pfn)
        except emucore.StreamError as e:
            raise _image_error(e)


def _check_image(res: emucore.RestoreResult,
                 expected_vm_uuid: Optional[str],
                 max_pfn: Optional[int]) -> ImageContents:
    c = contents_of(res)
    _check_image_info(c.info, expected_vm_uuid, max_pfn)
    return c


def _check_image_info(info: dict, expected_vm_uuid: Optional[str],
                      max_pfn: Optional[int]) -> None:
    if expected_vm_uuid and info.get('vm_uuid') != expected_vm_uuid:
        raise ImageError('save image belongs to VM %s, not %s'
                         % (info.get('vm_uuid'), expected_vm_uuid))
    if max_pfn is not None and int(info['max_pfn']) > max_pfn:
        raise ImageError('save image holds %d pages but the target domain '
                         'has %d' % (info['max_pfn'], max_pfn))


def _image_error(e: emucore.StreamError) -> ImageError:
    if isinstance(e, emucore.AuthenticationError):
        return ImageError('save image failed authentication: %s' % e)
    if e.offset == 0 and str(e).startswith('bad libxl header'):
        return ImageError('not a libxl migration stream: %s' % e)
    return ImageError('save image is corrupt or truncated: %s' % e)


def _early_refusal(buf: Any, expected_vm_uuid: Optional[str],
                   max_pfn: int) -> None:
    """Refuse a foreign or too big image by its (not yet authenticated)
    domain description, which comes before any page: the full check would
    otherwise stop at the first page beyond the target and call the image
    corrupt.  Only ever refuses; what is accepted is checked again once
    authenticated."""
    try:
        for rec in emucore.StreamReader(
                buf, allow_trailing=True).records(verify_tags=False):
            if rec.rtype == emucore.format.REC_TYPE_NX_DOMAIN_INFO:
                _check_image_info(json.loads(bytes(rec.body)),
                                  expected_vm_uuid, max_pfn)
                return
            if rec.layer == 'libxc' and rec.rtype in (
                    emucore.format.REC_TYPE_PAGE_DATA,
                    emucore.format.REC_TYPE_STATIC_DATA_END):
                return
    except (emucore.StreamError, ValueError):
        return      # the full pass names what is wrong


class _image_buffer:
    """The image as a read-only buffer: an mmap of a real file (no copy,
    the reader verifies it all before writing anything), the buffer of an
    in-memory one.  An image in a VDI is followed by the rest of the volume,
    so the readers ignore what follows the libxl END (no tag covers it)."""

    def __init__(self, inp: BinaryIO) -> None:
        self._inp = inp
        self._map: Optional[mmap.mmap] = None
        self._view: Optional[memoryview] = None

    def __enter__(self) -> Any:
        inp = self._inp
        if isinstance(inp, io.BytesIO):
            self._view = inp.getbuffer()
            return self._view
        try:
            fd = inp.fileno()
        except (AttributeError, io.UnsupportedOperation, OSError):
            inp.seek(0)
            return inp.read()
        if inp.writable():
            inp.flush()
        try:
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except ValueError:          # an empty file cannot be mapped
            return b''
        return self._map

    def __exit__(self, *exc) -> None:
        for obj in (self._view, self._map):
            if obj is None:
                continue
            try:
                obj.release() if obj is self._view else obj.close()
            except BufferError:
                pass     # a view of it is still referenced: GC frees it


def restore_domain(backend: hv.HypervisorBackend, domid: int, inp: BinaryIO,
                   key: bytes, expected_vm_uuid: Optional[str] = None
                   ) -> ImageContents:
    """Restore *inp* into the fresh, paused domain *domid*.

    Pages, HVM params and context are written; the device state and the
    emulator's xenstore data are returned for the new stubdom.  The domain
    stays paused.  Nothing is written unless the whole image verified and
    belongs to this VM (emucore verifies a buffer completely before it
    applies anything; the checks run in between).
    """
    info = backend.domain_info(domid)
    checked = {}

    def check(res: emucore.RestoreResult) -> None:
        c = checked['c'] = _check_image(res, expected_vm_uuid, info.max_pfn)
        check_cpu_policy(backend, c.cpuid_policy, c.msr_policy)

    with _image_buffer(inp) as buf:
        _early_refusal(buf, expected_vm_uuid, info.max_pfn)
        view = backend.map_memory(domid, writable=True)
        populator = page_populate.Populator(backend, domid,
                                            hole_runs(backend, view))
        try:
            mem = memoryview(view)[:info.max_pfn * PAGE_SIZE]
            res = emucore.StreamReader(buf, key, allow_trailing=True).restore(
                mem, prepare=check, before_pages=populator)
            clear_special_pages(mem, checked['c'].hvm_params)
        except emucore.StreamError as e:
            raise _image_error(e)
        except cpu_policy.Incompatible as e:
            raise ImageError('save image refused: %s' % e)
        except page_populate.PopulateError as e:
            raise ImageError('save image cannot be restored: %s' % e)
        finally:
            mem = None
            _release(view)
    c = checked['c']
    c.pages, c.populated = res.pages, populator.populated
    LOG.info('restored domain %d: %d pages written, %d of them populated '
             'first', domid, c.pages, c.populated)
    apply_cpu_policy(backend, domid, c.cpuid_policy, c.msr_policy)
    apply_domain_state(backend, domid, c)
    return c


def check_cpu_policy(backend: hv.HypervisorBackend, cpuid: bytes,
                     msrs: bytes) -> None:
    """Refuse a guest CPU policy this host's HVM maximum cannot offer,
    naming what is missing (cpu_policy.Incompatible)."""
    if not cpuid and not msrs:
        return
    try:
        guest = cpu_policy.CpuPolicy.parse(cpuid, msrs)
    except cpu_policy.PolicyError as e:
        raise emucore.RecordError('bad CPU policy in the stream: %s' % e)
    cpu_policy.require_compatible(
        guest, cpu_policy.CpuPolicy.parse(*backend.host_cpu_policy()))


def apply_cpu_policy(backend: hv.HypervisorBackend, domid: int,
                     cpuid: bytes, msrs: bytes) -> None:
    """Give the new domain the policy the guest had (libxc's restore:
    x86_static_data_complete).  A stream without one (written before it was
    carried) leaves the domain's default, as libxc does for a stream from a
    Xen that had no such records."""
    check_cpu_policy(backend, cpuid, msrs)
    if cpuid or msrs:
        backend.set_cpu_policy(domid, cpuid, msrs)


def clear_special_pages(view: Any, params: Dict[int, int]) -> None:
    """Zero the xenstore ring and ioreq pages the params name, as libxc's
    restore does (xg_sr_restore_x86_hvm.c handle_hvm_params:
    xc_clear_domain_page): their contents belong to the source host's
    xenstored and device model."""
    mem = memoryview(view)
    try:
        for param in _CLEARED_PAGES:
            pfn = int(params.get(param, 0))
            if pfn and (pfn + 1) * PAGE_SIZE <= len(mem):
                mem[pfn * PAGE_SIZE:(pfn + 1) * PAGE_SIZE] = bytes(PAGE_SIZE)
    finally:
        mem.release()


def apply_domain_state(backend: hv.HypervisorBackend, domid: int,
                       c: ImageContents) -> None:
    """TSC, params and context, in the order libxc's restore meets their
    records (handle_x86_tsc_info, then the HVM records), then the domain's
    xenstore ring introduced again (libxl__build_post's
    xs_introduce_domain) with this host's store event channel: the stream
    does not carry the source's (xg_sr_save_x86_hvm.c leaves it out)."""
    if c.tsc_info is not None:
        backend.set_tsc_info(domid, *c.tsc_info)
    backend.set_hvm_params(domid, c.hvm_params)
    backend.set_hvm_context(domid, c.hvm_context)
    store_pfn = int(c.hvm_params.get(HVM_PARAM_STORE_PFN, 0))
    port = backend.get_hvm_param(domid, HVM_PARAM_STORE_EVTCHN)
    if store_pfn and port:
        backend.xs_introduce_domain(domid, store_pfn, port)
