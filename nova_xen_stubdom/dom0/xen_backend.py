"""``XenBackend``: the dom0 agent's hypervisor seam on a real Xen host.

It drives Xen through its C libraries with :mod:`ctypes` (no extra Python
dependency): ``libxenctrl`` for domains, log-dirty, HVM state and PCI
grants, ``libxenforeignmemory`` for guest memory, ``libxenstore`` for
xenstore.  Signatures and struct layouts follow the Xen 4.17 headers
(Debian bookworm's ``libxen-dev``; ``XEN_DOMCTL_INTERFACE_VERSION`` 0x15).
libxenctrl's ABI changes with every Xen release, so the library is loaded by
its 4.17 soname first; another version is used only when asked for
explicitly (``libxenctrl=`` argument).

Where it is tested: against recording stand-ins of these libraries
(argument marshalling, struct layouts, bitmap conversion, chunked mapping,
error paths), against the real libraries without a hypervisor (symbols
resolve, opening fails with a clear error), and on real Xen 4.17 in the
realxen tier's daemon scenario (``tests/realxen/dom0/d1-daemon.sh``,
``doc/source/realxen.rst``): domain listing, pause/unpause, both targets,
xenstore reads/writes/permissions, console reads, the read-only mapping of
an HVM guest, its HVM context and params, and the state disk.  Log-dirty,
writes of HVM state and memory (restore), and PCI have not run on a
hypervisor yet.

Which library calls each method makes:

===================  =====================================================
list_domains         xc_domain_getinfolist (batches), xc_domain_maximum_gpfn,
                     xs_read (``vm``, ``target``)
domain_info          xc_domain_getinfolist(domid, 1), xc_domain_maximum_gpfn
pause / unpause      xc_domain_pause / xc_domain_unpause
set_target           xc_domain_set_target
xs_set_target        xs_set_target (xenstored does not follow the above)
map_memory           mmap (reservation), xc_get_pfn_type_batch (HVM: which
                     PFNs have a page), xenforeignmemory_map2 (MAP_FIXED
                     chunks), xenforeignmemory_unmap + munmap on release
populate_physmap     xc_domain_populate_physmap_exact (order 0), then
                     xenforeignmemory_map2 over the open views' holes
enable_logdirty      xc_logdirty_control(SHADOW_OP_ENABLE_LOGDIRTY)
fetch_dirty_bitmap   xc__hypercall_buffer_alloc_pages, xc_logdirty_control
                     (SHADOW_OP_CLEAN, or PEEK without *clear*)
disable_logdirty     xc_logdirty_control(SHADOW_OP_OFF),
                     xc__hypercall_buffer_free_pages
get/set_hvm_context  xc_domain_hvm_getcontext / xc_domain_hvm_setcontext
get/set_hvm_params   xc_hvm_param_get / xc_hvm_param_set
xs_*                 xs_read, xs_write, xs_rm, xs_directory,
                     xs_get_permissions, xs_set_permissions, free
iomem/ioport/irq     xc_domain_iomem_permission, xc_domain_ioport_permission,
                     xc_domain_irq_permission
(de)assign_device    xc_assign_device / xc_deassign_device (SBDF encoded as
                     libxl does: seg<<16 | bus<<8 | dev<<3 | func)
===================  =====================================================
"""
import ctypes
import ctypes.util
import errno as errnolib
import logging
import os
import threading
import uuid as uuidlib
from typing import Dict, List, Optional, Tuple

from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import xen_devices
from nova_xen_stubdom.dom0 import xen_memory
from nova_xen_stubdom.dom0.hypervisor import (PAGE_SIZE, DomainInfo,
                                              HypervisorBackend)
from nova_xen_stubdom.dom0.xen_libs import (  # noqa: F401
    XEN_SYSCTL_cpu_policy_hvm_max,
    GETINFO_BATCH, MAP_ANONYMOUS, MAP_CHUNK_PAGES, MAP_FAILED, MAP_FIXED,
    MAP_NORESERVE, MAP_PRIVATE, PRIVCMD, PROT_NONE, PROT_READ, PROT_WRITE,
    SAVED_HVM_PARAMS, XBT_NULL, XEN_DOMCTL_DEV_RDM_RELAXED,
    XEN_DOMCTL_DEV_RDM_STRICT, XEN_DOMCTL_SHADOW_OP_CLEAN,
    XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, XEN_DOMCTL_SHADOW_OP_OFF,
    XEN_DOMCTL_SHADOW_OP_PEEK, XEN_DOMINF_dying, XEN_DOMINF_hvm_guest,
    XEN_DOMINF_paused, XEN_DOMINF_shutdown, XEN_DOMINF_shutdownmask,
    XEN_DOMINF_shutdownshift, SHUTDOWN_REASONS, XcDomainInfo,
    XcHypercallBuffer, XcShadowOpStats,
    XenLibraries, XsPermissions, bitmap_from_xen, encode_sbdf,
    perms_from_structs, perms_to_structs, xen_pfn_t)

LOG = logging.getLogger(__name__)
#: xs_write_all's attempts while xenstored answers EAGAIN (libxl retries
#: without a bound; a store that conflicts this often is an error here)
XS_TRANSACTION_RETRIES = 20


def _shutdown_reason(flags: int) -> Optional[str]:
    """The SHUTDOWN_* name a shut-down domain's getdomaininfo flags carry
    (xen/include/public/domctl.h: the code sits at
    XEN_DOMINF_shutdownshift, masked by XEN_DOMINF_shutdownmask)."""
    if not flags & XEN_DOMINF_shutdown:
        return None
    code = (flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask
    if code < len(SHUTDOWN_REASONS):
        return SHUTDOWN_REASONS[code]
    return 'code-%d' % code


class XenBackend(xen_memory.ForeignMemory, HypervisorBackend):
    """:class:`HypervisorBackend` over libxenctrl/xenforeignmemory/xenstore.

    :param libs: the bound libraries (default: :meth:`XenLibraries.load`).
    :param privcmd: the privcmd device whose absence means "not dom0".
    :param rdm_relaxed: ``xc_assign_device`` flag (libxl's default policy
        for reserved device memory is relaxed).
    :param map_chunk_pages: pages per foreign-map call.
    :raises XenUnavailable: not in a Xen dom0.
    """

    def __init__(self, libs: Optional[XenLibraries] = None, *,
                 privcmd: str = PRIVCMD, rdm_relaxed: bool = True,
                 map_chunk_pages: int = MAP_CHUNK_PAGES,
                 libxenctrl: Optional[str] = None):
        if libs is None:
            libs = XenLibraries.load(libxenctrl)
            if not os.path.exists(privcmd):
                raise errors.XenUnavailable(
                    privcmd=privcmd, reason='%s does not exist (no Xen '
                    'hypervisor, or not running in dom0)' % privcmd)
        if map_chunk_pages < 1:
            raise ValueError('map_chunk_pages must be >= 1')
        self.libs = libs
        self.rdm_relaxed = rdm_relaxed
        self.map_chunk_pages = map_chunk_pages
        self._lock = threading.Lock()
        self._bitmaps: Dict[int, Tuple[XcHypercallBuffer, int]] = {}
        self._mappings: Dict[int, xen_memory.Mapping] = {}
        self.disks = xen_devices.XenDisks(self)
        self.xch = self.fmem = self.xsh = None
        try:
            self.xch = self._open('xc_interface_open', None, None, 0)
            self.fmem = self._open('xenforeignmemory_open', None, 0)
            self.xsh = self._open('xs_open', 0)
        except errors.XenUnavailable:
            self.close()
            raise

    def _open(self, call: str, *args) -> int:
        handle = getattr(self.libs, call)(*args)
        if not handle:
            err = self.libs.get_errno()
            raise errors.XenUnavailable(
                privcmd=PRIVCMD, reason='%s failed: errno %d (%s)' % (
                    call, err, os.strerror(err) if err else 'unknown'))
        return handle

    def close(self) -> None:
        """Release every mapping, bitmap buffer and library handle."""
        for mapping in list(self._mappings.values()):
            self._release(mapping)
        for domid in list(self._bitmaps):
            self._free_bitmap(domid)
        if self.xsh:
            self.libs.xs_close(self.xsh)
            self.xsh = None
        if self.fmem:
            self.libs.xenforeignmemory_close(self.fmem)
            self.fmem = None
        if self.xch:
            self.libs.xc_interface_close(self.xch)
            self.xch = None

    # -- error handling -----------------------------------------------------
    def _fail(self, call: str, detail: str = '', err: Optional[int] = None):
        if err is None:
            err = self.libs.get_errno()
        cls = _DomainGone if err == errnolib.ESRCH else \
            errors.HypervisorCallFailed
        return cls(call=call, errno=err,
                   strerror=os.strerror(err) if err else 'no errno',
                   detail=(': ' + detail) if detail else '')

    def _xc(self, call: str, *args, detail: str = '') -> int:
        """Call a libxenctrl function that returns <0 on failure."""
        rc = getattr(self.libs, call)(self.xch, *args)
        if rc is not None and rc < 0:
            raise self._fail(call, detail)
        return rc

    # -- domains -----------------------------------------------------------
    def _getinfo(self, first: int, count: int) -> List[XcDomainInfo]:
        buf = (XcDomainInfo * count)()
        n = self._xc('xc_domain_getinfolist', first, count, buf,
                     detail='first domain %d' % first)
        return list(buf[:n])

    def _vm_uuid(self, raw: XcDomainInfo) -> str:
        handle = bytes(raw.handle)
        if any(handle):
            # xenopsd creates every domain with its VM's uuid as handle
            return str(uuidlib.UUID(bytes=handle))
        vm = self.xs_read('/local/domain/%d/vm' % raw.domain) or ''
        return vm.rsplit('/', 1)[-1] if vm.startswith('/vm/') else ''

    def _to_info(self, raw: XcDomainInfo) -> DomainInfo:
        domid = raw.domain
        max_pfn = 0
        if domid != 0:
            gpfn = xen_pfn_t(0)
            self._xc('xc_domain_maximum_gpfn', domid, ctypes.byref(gpfn),
                     detail='domain %d' % domid)
            max_pfn = gpfn.value + 1
        target = self.xs_read('/local/domain/%d/target' % domid)
        return DomainInfo(
            domid=domid, vm_uuid=self._vm_uuid(raw),
            hvm=bool(raw.flags & XEN_DOMINF_hvm_guest), max_pfn=max_pfn,
            vcpus=raw.nr_online_vcpus,
            paused=bool(raw.flags & XEN_DOMINF_paused),
            target=int(target) if target and target.isdigit() else None,
            shutdown=_shutdown_reason(raw.flags))

    def list_domains(self) -> List[DomainInfo]:
        out, first = [], 0
        while True:
            batch = self._getinfo(first, GETINFO_BATCH)
            for raw in batch:
                if raw.flags & XEN_DOMINF_dying:
                    continue        # already being torn down
                try:
                    out.append(self._to_info(raw))
                except KeyError:
                    continue        # died between the two calls
            if len(batch) < GETINFO_BATCH:
                return out
            first = batch[-1].domain + 1

    def domain_info(self, domid: int) -> DomainInfo:
        batch = self._getinfo(domid, 1)
        # getinfolist returns the next domain at or after *domid*
        if not batch or batch[0].domain != domid or \
                batch[0].flags & XEN_DOMINF_dying:
            raise KeyError(domid)
        return self._to_info(batch[0])

    def pause(self, domid: int) -> None:
        self._xc('xc_domain_pause', domid, detail='domain %d' % domid)

    def unpause(self, domid: int) -> None:
        self._xc('xc_domain_unpause', domid, detail='domain %d' % domid)

    def set_target(self, stub_domid: int, guest_domid: int) -> None:
        detail = 'stub domain %d -> guest %d' % (stub_domid, guest_domid)
        self._xc('xc_domain_set_target', stub_domid, guest_domid,
                 detail=detail)

    # -- disks and consoles (xen_devices) ---------------------------------
    def attach_disk(self, domid: int, path: str, devid: str) -> None:
        self.domain_info(domid)         # DomainNotFound when gone
        self.disks.attach(domid, path, devid)

    def detach_disk(self, domid: int, devid: str) -> None:
        self.disks.detach(domid, devid)

    def vdi_path(self, vdi_uuid: str) -> str:
        return self.disks.vdi_path(vdi_uuid)

    def read_console(self, domid: int) -> str:
        ref = self.xs_read('/local/domain/%d/console/ring-ref' % domid)
        if ref is None:
            raise NotImplementedError('domain %d has no PV console ring'
                                      % domid)
        try:
            frame = int(ref)
        except ValueError:
            raise errors.AgentError('domain %d: bad console/ring-ref %r'
                                    % (domid, ref))
        base = self.libs.mmap(None, PAGE_SIZE, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                              -1, 0)
        if base in (None, MAP_FAILED):
            raise self._fail('mmap', 'console page of domain %d' % domid)
        try:
            pfns = (xen_pfn_t * 1)(frame)
            errs = (ctypes.c_int * 1)()
            got = self.libs.xenforeignmemory_map2(
                self.fmem, domid, base, PROT_READ, MAP_FIXED, 1, pfns, errs)
            if not got or errs[0]:
                raise self._fail('xenforeignmemory_map2', 'console page '
                                 '%#x of domain %d' % (frame, domid),
                                 err=-errs[0] if errs[0] else None)
            try:
                page = ctypes.string_at(base, PAGE_SIZE)
            finally:
                self.libs.xenforeignmemory_unmap(self.fmem, base, 1)
        finally:
            self.libs.munmap(base, PAGE_SIZE)
        return xen_devices.console_tail(page)

    def xs_set_target(self, stub_domid: int, guest_domid: int) -> None:
        if not self.libs.xs_set_target(self.xsh, stub_domid, guest_domid):
            raise self._xs_fail('xs_set_target', '%d -> %d' % (
                stub_domid, guest_domid))

    # -- log-dirty ------------------------------------------------------------
    def enable_logdirty(self, domid: int) -> None:
        self._xc('xc_logdirty_control', domid,
                 XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, None, 0, 0, None,
                 detail='enable log-dirty, domain %d' % domid)

    def disable_logdirty(self, domid: int) -> None:
        try:
            self._xc('xc_logdirty_control', domid, XEN_DOMCTL_SHADOW_OP_OFF,
                     None, 0, 0, None,
                     detail='disable log-dirty, domain %d' % domid)
        finally:
            self._free_bitmap(domid)

    def _bitmap_buffer(self, domid: int, pfns: int) -> XcHypercallBuffer:
        nbytes = ((pfns + 63) // 64) * 8         # whole unsigned longs
        nr_pages = (nbytes + PAGE_SIZE - 1) // PAGE_SIZE
        cached = self._bitmaps.get(domid)
        if cached is not None and cached[1] >= nr_pages:
            return cached[0]
        self._free_bitmap(domid)
        hbuf = XcHypercallBuffer(hbuf=None, param_shadow=None, dir=0,
                                 ubuf=ctypes.c_void_p(-1).value, sz=0)
        if not self.libs.xc__hypercall_buffer_alloc_pages(
                self.xch, ctypes.byref(hbuf), nr_pages):
            raise self._fail('xc__hypercall_buffer_alloc_pages',
                             '%d pages' % nr_pages)
        self._bitmaps[domid] = (hbuf, nr_pages)
        return hbuf

    def _free_bitmap(self, domid: int) -> None:
        cached = self._bitmaps.pop(domid, None)
        if cached is not None and self.xch:
            self.libs.xc__hypercall_buffer_free_pages(
                self.xch, ctypes.byref(cached[0]), cached[1])

    def fetch_dirty_bitmap(self, domid: int, clear: bool = True) -> bytearray:
        pfns = self.domain_info(domid).max_pfn
        hbuf = self._bitmap_buffer(domid, pfns)
        stats = XcShadowOpStats()
        op = XEN_DOMCTL_SHADOW_OP_CLEAN if clear else \
            XEN_DOMCTL_SHADOW_OP_PEEK
        self._xc('xc_logdirty_control', domid, op, ctypes.byref(hbuf), pfns,
                 0, ctypes.byref(stats),
                 detail='%s dirty bitmap, domain %d (is log-dirty on?)' % (
                     'clean' if clear else 'peek', domid))
        raw = ctypes.string_at(hbuf.hbuf, (pfns + 7) // 8)
        return bitmap_from_xen(raw, pfns)

    # -- HVM state ------------------------------------------------------------
    def get_hvm_context(self, domid: int) -> bytes:
        size = self._xc('xc_domain_hvm_getcontext', domid, None, 0,
                        detail='size query, domain %d' % domid)
        buf = (ctypes.c_uint8 * size)()
        got = self._xc('xc_domain_hvm_getcontext', domid, buf, size,
                       detail='domain %d' % domid)
        return bytes(buf[:got])

    def set_hvm_context(self, domid: int, blob: bytes) -> None:
        buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        self._xc('xc_domain_hvm_setcontext', domid, buf, len(blob),
                 detail='domain %d, %d bytes' % (domid, len(blob)))

    def get_hvm_params(self, domid: int) -> Dict[int, int]:
        """The parameters libxc's HVM save stream carries; like libxc, zero
        values are left out (zero means "not set")."""
        out = {}
        value = ctypes.c_uint64(0)
        for param in SAVED_HVM_PARAMS:
            self._xc('xc_hvm_param_get', domid, param, ctypes.byref(value),
                     detail='domain %d param %d' % (domid, param))
            if value.value:
                out[param] = value.value
        return out

    def set_hvm_params(self, domid: int, params: Dict[int, int]) -> None:
        # keys may arrive as strings (JSON); set in a stable order
        for param, value in sorted((int(k), int(v))
                                   for k, v in params.items()):
            self._xc('xc_hvm_param_set', domid, param, value,
                     detail='domain %d param %d' % (domid, param))

    def get_hvm_param(self, domid: int, index: int) -> int:
        value = ctypes.c_uint64(0)
        self._xc('xc_hvm_param_get', domid, index, ctypes.byref(value),
                 detail='domain %d param %d' % (domid, index))
        return value.value

    def resume_domain(self, domid: int) -> None:
        self._xc('xc_domain_resume', domid, 1, detail='domain %d' % domid)
        if not self.libs.xs_resume_domain(self.xsh, domid):
            raise self._xs_fail('xs_resume_domain', str(domid))

    def xs_introduce_domain(self, domid: int, store_pfn: int,
                            store_port: int) -> None:
        if not self.libs.xs_introduce_domain(self.xsh, domid, store_pfn,
                                             store_port):
            raise self._xs_fail('xs_introduce_domain', '%d pfn 0x%x port %d'
                                % (domid, store_pfn, store_port))

    # -- CPU policy and TSC ---------------------------------------------------
    def _policy(self, call: str, first: int, what: str) -> Tuple[bytes,
                                                                 bytes]:
        """As write_x86_cpu_policy_records: size the arrays, fetch the
        policy into an xc_cpu_policy_t, serialise it."""
        nr_leaves, nr_msrs = ctypes.c_uint32(0), ctypes.c_uint32(0)
        self._xc('xc_cpu_policy_get_size', ctypes.byref(nr_leaves),
                 ctypes.byref(nr_msrs), detail='policy size')
        policy = self.libs.xc_cpu_policy_init()
        if not policy:
            raise self._fail('xc_cpu_policy_init', what, err=errnolib.ENOMEM)
        try:
            leaves = ctypes.create_string_buffer(
                max(1, nr_leaves.value) * cpu_policy.LEAF_SIZE)
            msrs = ctypes.create_string_buffer(
                max(1, nr_msrs.value) * cpu_policy.MSR_SIZE)
            self._xc(call, first, policy, detail=what)
            self._xc('xc_cpu_policy_serialise', policy, leaves,
                     ctypes.byref(nr_leaves), msrs, ctypes.byref(nr_msrs),
                     detail=what)
        finally:
            self.libs.xc_cpu_policy_destroy(policy)
        return (leaves.raw[:nr_leaves.value * cpu_policy.LEAF_SIZE],
                msrs.raw[:nr_msrs.value * cpu_policy.MSR_SIZE])

    def get_cpu_policy(self, domid: int) -> Tuple[bytes, bytes]:
        return self._policy('xc_cpu_policy_get_domain', domid,
                            'domain %d' % domid)

    def host_cpu_policy(self) -> Tuple[bytes, bytes]:
        return self._policy('xc_cpu_policy_get_system',
                            XEN_SYSCTL_cpu_policy_hvm_max, 'HVM max policy')

    def set_cpu_policy(self, domid: int, cpuid: bytes, msrs: bytes) -> None:
        errs = [ctypes.c_uint32(0xffffffff) for _ in range(3)]
        lbuf = ctypes.create_string_buffer(bytes(cpuid), len(cpuid) or 1)
        mbuf = ctypes.create_string_buffer(bytes(msrs), len(msrs) or 1)
        rc = self.libs.xc_set_domain_cpu_policy(
            self.xch, domid, len(cpuid) // cpu_policy.LEAF_SIZE, lbuf,
            len(msrs) // cpu_policy.MSR_SIZE, mbuf,
            *[ctypes.byref(e) for e in errs])
        if rc:
            # Xen names the leaf/subleaf or MSR it refused (the domctl's
            # err_* fields, as libxc's restore prints them)
            raise self._fail('xc_set_domain_cpu_policy', (
                'domain %d: leaf 0x%08x subleaf 0x%08x msr 0x%08x'
                % ((domid,) + tuple(e.value for e in errs))),
                err=-rc if rc < -1 else None)

    def get_tsc_info(self, domid: int) -> Tuple[int, int, int, int]:
        mode, khz, inc = (ctypes.c_uint32(0) for _ in range(3))
        nsec = ctypes.c_uint64(0)
        self._xc('xc_domain_get_tsc_info', domid, ctypes.byref(mode),
                 ctypes.byref(nsec), ctypes.byref(khz), ctypes.byref(inc),
                 detail='domain %d' % domid)
        return mode.value, khz.value, nsec.value, inc.value

    def set_tsc_info(self, domid: int, mode: int, khz: int, nsec: int,
                     incarnation: int) -> None:
        self._xc('xc_domain_set_tsc_info', domid, mode, nsec, khz,
                 incarnation, detail='domain %d' % domid)

    # -- xenstore (as dom0, outside transactions) -----------------------------
    def _xs_fail(self, call: str, path: str):
        return self._fail(call, path)

    def xs_read(self, path: str) -> Optional[str]:
        length = ctypes.c_uint(0)
        ptr = self.libs.xs_read(self.xsh, XBT_NULL, path.encode(),
                                ctypes.byref(length))
        if not ptr:
            if self.libs.get_errno() == errnolib.ENOENT:
                return None
            raise self._xs_fail('xs_read', path)
        try:
            return ctypes.string_at(ptr, length.value).decode(
                'utf-8', 'replace')
        finally:
            self.libs.free(ptr)

    def xs_write(self, path: str, value: str, _t: int = XBT_NULL) -> None:
        data = value.encode()
        if not self.libs.xs_write(self.xsh, _t, path.encode(), data,
                                  len(data)):
            raise self._xs_fail('xs_write', path)

    def xs_write_all(self, nodes: List[Tuple[str, str, Optional[List[str]]]]
                     ) -> None:
        """One xenstore transaction, retried while xenstored answers
        EAGAIN (another writer committed first), as libxl writes a device's
        frontend and backend (libxl_device.c libxl__device_generic_add,
        ``retry_transaction``) and xenopsd too (xen-api device.ml
        ``Generic.add_device``, one ``Xs.transaction``): dom0's blkback
        probes a new backend as soon as its ``state`` appears and then
        watches the frontend's ``state``; seen missing, it unregisters the
        device for good (Linux xen-blkback ``frontend_changed``,
        ``XenbusStateUnknown``)."""
        for _attempt in range(XS_TRANSACTION_RETRIES):
            t = self.libs.xs_transaction_start(self.xsh)
            if not t:
                raise self._xs_fail('xs_transaction_start', nodes[0][0])
            try:
                for path, value, perms in nodes:
                    self.xs_write(path, value, t)
                    if perms is not None:
                        self.xs_set_perms(path, perms, t)
            except BaseException:
                self.libs.xs_transaction_end(self.xsh, t, True)
                raise
            if self.libs.xs_transaction_end(self.xsh, t, False):
                return
            if self.libs.get_errno() != errnolib.EAGAIN:
                raise self._xs_fail('xs_transaction_end', nodes[0][0])
        raise self._fail('xs_transaction_end', '%s: still conflicting '
                         'after %d attempts' % (nodes[0][0],
                                                XS_TRANSACTION_RETRIES),
                         errnolib.EAGAIN)

    def xs_rm(self, path: str) -> None:
        if not self.libs.xs_rm(self.xsh, XBT_NULL, path.encode()):
            if self.libs.get_errno() == errnolib.ENOENT:
                return          # idempotent, as the simulator's
            raise self._xs_fail('xs_rm', path)

    def xs_list(self, path: str) -> List[str]:
        num = ctypes.c_uint(0)
        ptr = self.libs.xs_directory(self.xsh, XBT_NULL, path.encode(),
                                     ctypes.byref(num))
        if not ptr:
            if self.libs.get_errno() == errnolib.ENOENT:
                return []
            raise self._xs_fail('xs_directory', path)
        try:
            # one allocation: the pointer array followed by the strings
            names = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_char_p))
            return sorted(names[i].decode() for i in range(num.value))
        finally:
            self.libs.free(ptr)

    def xs_set_perms(self, path: str, perms: List[str],
                     _t: int = XBT_NULL) -> None:
        arr = perms_to_structs(perms)
        if not self.libs.xs_set_permissions(self.xsh, _t,
                                            path.encode(), arr, len(perms)):
            raise self._xs_fail('xs_set_permissions', path)

    def xs_get_perms(self, path: str) -> List[str]:
        num = ctypes.c_uint(0)
        ptr = self.libs.xs_get_permissions(self.xsh, XBT_NULL,
                                           path.encode(), ctypes.byref(num))
        if not ptr:
            raise self._xs_fail('xs_get_permissions', path)
        try:
            arr = ctypes.cast(ptr, ctypes.POINTER(XsPermissions))
            return perms_from_structs(arr, num.value)
        finally:
            self.libs.free(ptr)

    # -- PCI pass-through -----------------------------------------------------
    def iomem_permission(self, domid: int, first_mfn: int, nr_mfns: int,
                         allow: bool) -> None:
        self._xc('xc_domain_iomem_permission', domid, first_mfn, nr_mfns,
                 1 if allow else 0, detail='domain %d mfn %#x+%d' % (
                     domid, first_mfn, nr_mfns))

    def ioport_permission(self, domid: int, first_port: int, nr_ports: int,
                          allow: bool) -> None:
        self._xc('xc_domain_ioport_permission', domid, first_port, nr_ports,
                 1 if allow else 0, detail='domain %d port %#x+%d' % (
                     domid, first_port, nr_ports))

    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        self._xc('xc_domain_irq_permission', domid, pirq, bool(allow),
                 detail='domain %d pirq %d' % (domid, pirq))

    def assign_device(self, domid: int, sbdf: str) -> None:
        flag = XEN_DOMCTL_DEV_RDM_RELAXED if self.rdm_relaxed else \
            XEN_DOMCTL_DEV_RDM_STRICT
        self._xc('xc_assign_device', domid, encode_sbdf(sbdf), flag,
                 detail='domain %d device %s' % (domid, sbdf))

    def deassign_device(self, domid: int, sbdf: str) -> None:
        self._xc('xc_deassign_device', domid, encode_sbdf(sbdf),
                 detail='domain %d device %s' % (domid, sbdf))


class _DomainGone(errors.HypervisorCallFailed, KeyError):
    """ESRCH: the domain does not exist.  Also a KeyError, so the agent's
    "domain vanished" handling works the same as with the sim backend."""
    code = 'DOMAIN_NOT_FOUND'

    def __str__(self) -> str:
        return Exception.__str__(self)
