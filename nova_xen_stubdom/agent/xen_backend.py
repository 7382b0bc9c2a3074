"""``XenBackend``: the dom0 agent's hypervisor seam on a real Xen host.

It drives Xen through its C libraries with :mod:`ctypes` (no extra Python
dependency): ``libxenctrl`` for domains, log-dirty, HVM state and PCI
grants, ``libxenforeignmemory`` for guest memory, ``libxenstore`` for
xenstore.  Signatures and struct layouts follow the Xen 4.17 headers
(Debian bookworm's ``libxen-dev``; ``XEN_DOMCTL_INTERFACE_VERSION`` 0x15).
libxenctrl's ABI changes with every Xen release, so the library is loaded by
its 4.17 soname first; another version is used only when asked for
explicitly (``libxenctrl=`` argument).

Honesty note: in this project the backend is exercised against recording
stand-ins of these libraries (argument marshalling, struct layouts, bitmap
conversion, chunked mapping, error paths) and against the real libraries
*without* a hypervisor (symbols resolve, opening fails with a clear error).
It has not been run against a live hypervisor here.

Which library calls each method makes:

===================  =====================================================
list_domains         xc_domain_getinfolist (batches), xc_domain_maximum_gpfn,
                     xs_read (``vm``, ``target``)
domain_info          xc_domain_getinfolist(domid, 1), xc_domain_maximum_gpfn
pause / unpause      xc_domain_pause / xc_domain_unpause
set_target           xc_domain_set_target
xs_set_target        xs_set_target (xenstored does not follow the above)
map_memory           mmap (reservation), xenforeignmemory_map2 (MAP_FIXED
                     chunks), xenforeignmemory_unmap + munmap on release
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
import mmap as mmaplib
import os
import re
import threading
import uuid as uuidlib
import weakref
from typing import Callable, Dict, List, Optional, Tuple

from nova_xen_stubdom.agent import errors
from nova_xen_stubdom.agent.backend import (PAGE_SIZE, DomainInfo,
                                            HypervisorBackend)

LOG = logging.getLogger(__name__)

PRIVCMD = '/dev/xen/privcmd'

# -- constants from the Xen 4.17 public headers ------------------------------
# xen/include/public/domctl.h
XEN_DOMINF_dying = 1 << 0
XEN_DOMINF_hvm_guest = 1 << 1
XEN_DOMINF_shutdown = 1 << 2
XEN_DOMINF_paused = 1 << 3
XEN_DOMCTL_SHADOW_OP_OFF = 0
XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY = 2
XEN_DOMCTL_SHADOW_OP_CLEAN = 11
XEN_DOMCTL_SHADOW_OP_PEEK = 12
XEN_DOMCTL_DEV_RDM_STRICT = 0
XEN_DOMCTL_DEV_RDM_RELAXED = 1
# xen/include/public/hvm/params.h: what libxc's HVM save stream carries
# (tools/libs/guest/xg_sr_save_x86_hvm.c, write_hvm_params)
HVM_PARAM_STORE_PFN = 1
HVM_PARAM_IOREQ_PFN = 5
HVM_PARAM_BUFIOREQ_PFN = 6
HVM_PARAM_VIRIDIAN = 9
HVM_PARAM_IDENT_PT = 12
HVM_PARAM_CONSOLE_PFN = 17
HVM_PARAM_ACPI_IOPORTS_LOCATION = 19
HVM_PARAM_PAGING_RING_PFN = 27
HVM_PARAM_MONITOR_RING_PFN = 28
HVM_PARAM_SHARING_RING_PFN = 29
HVM_PARAM_IOREQ_SERVER_PFN = 32
HVM_PARAM_NR_IOREQ_SERVER_PAGES = 33
HVM_PARAM_VM_GENERATION_ID_ADDR = 34
HVM_PARAM_X87_FIP_WIDTH = 36
HVM_PARAM_VM86_TSS_SIZED = 37
HVM_PARAM_MCA_CAP = 38
SAVED_HVM_PARAMS = (
    HVM_PARAM_STORE_PFN, HVM_PARAM_IOREQ_PFN, HVM_PARAM_BUFIOREQ_PFN,
    HVM_PARAM_PAGING_RING_PFN, HVM_PARAM_MONITOR_RING_PFN,
    HVM_PARAM_SHARING_RING_PFN, HVM_PARAM_VM86_TSS_SIZED,
    HVM_PARAM_CONSOLE_PFN, HVM_PARAM_ACPI_IOPORTS_LOCATION,
    HVM_PARAM_VIRIDIAN, HVM_PARAM_IDENT_PT, HVM_PARAM_VM_GENERATION_ID_ADDR,
    HVM_PARAM_IOREQ_SERVER_PFN, HVM_PARAM_NR_IOREQ_SERVER_PAGES,
    HVM_PARAM_X87_FIP_WIDTH, HVM_PARAM_MCA_CAP,
)
# tools/include/xenstore_lib.h, enum xs_perm_type
XS_PERM_NONE, XS_PERM_READ, XS_PERM_WRITE = 0, 1, 2
_PERM_LETTERS = {XS_PERM_NONE: 'n', XS_PERM_READ: 'r', XS_PERM_WRITE: 'w',
                 XS_PERM_READ | XS_PERM_WRITE: 'b'}
_PERM_BITS = {v: k for k, v in _PERM_LETTERS.items()}
XBT_NULL = 0

PROT_NONE = mmaplib.PROT_READ & 0
PROT_READ = mmaplib.PROT_READ
PROT_WRITE = mmaplib.PROT_WRITE
MAP_PRIVATE = mmaplib.MAP_PRIVATE
MAP_ANONYMOUS = mmaplib.MAP_ANONYMOUS
MAP_FIXED = 0x10            # Linux, every architecture Xen dom0 runs on
MAP_NORESERVE = 0x4000      # Linux x86/arm
MAP_FAILED = ctypes.c_void_p(-1).value

#: pages per xenforeignmemory_map2 call (libxc batches 1024 as well)
MAP_CHUNK_PAGES = 1024
#: domains per xc_domain_getinfolist call
GETINFO_BATCH = 256

# -- struct mirrors -----------------------------------------------------------
xen_pfn_t = ctypes.c_ulong          # x86: unsigned long


class XenArchDomainConfig(ctypes.Structure):
    """struct xen_arch_domainconfig (x86, public/arch-x86/xen.h)."""
    _fields_ = [('emulation_flags', ctypes.c_uint32),
                ('misc_flags', ctypes.c_uint32)]


class XcDomainInfo(ctypes.Structure):
    """xc_domaininfo_t = struct xen_domctl_getdomaininfo (4.17): 112 bytes."""
    _fields_ = [('domain', ctypes.c_uint16),
                ('pad1', ctypes.c_uint16),
                ('flags', ctypes.c_uint32),
                ('tot_pages', ctypes.c_uint64),
                ('max_pages', ctypes.c_uint64),
                ('outstanding_pages', ctypes.c_uint64),
                ('shr_pages', ctypes.c_uint64),
                ('paged_pages', ctypes.c_uint64),
                ('shared_info_frame', ctypes.c_uint64),
                ('cpu_time', ctypes.c_uint64),
                ('nr_online_vcpus', ctypes.c_uint32),
                ('max_vcpu_id', ctypes.c_uint32),
                ('ssidref', ctypes.c_uint32),
                ('handle', ctypes.c_uint8 * 16),
                ('cpupool', ctypes.c_uint32),
                ('gpaddr_bits', ctypes.c_uint8),
                ('pad2', ctypes.c_uint8 * 7),
                ('arch_config', XenArchDomainConfig)]


class XcHypercallBuffer(ctypes.Structure):
    """struct xc_hypercall_buffer (tools/include/xenctrl.h): 40 bytes."""
    _fields_ = [('hbuf', ctypes.c_void_p),
                ('param_shadow', ctypes.c_void_p),
                ('dir', ctypes.c_int),
                ('ubuf', ctypes.c_void_p),
                ('sz', ctypes.c_size_t)]


class XcShadowOpStats(ctypes.Structure):
    """struct xen_domctl_shadow_op_stats: 8 bytes."""
    _fields_ = [('fault_count', ctypes.c_uint32),
                ('dirty_count', ctypes.c_uint32)]


class XsPermissions(ctypes.Structure):
    """struct xs_permissions (xenstore_lib.h): 8 bytes."""
    _fields_ = [('id', ctypes.c_uint), ('perms', ctypes.c_int)]


_p = ctypes.c_void_p
_u32 = ctypes.c_uint32
_int = ctypes.c_int
#: name -> (restype, argtypes), transcribed from the 4.17 headers
PROTOTYPES: Dict[str, Dict[str, Tuple]] = {
    'xenctrl': {
        'xc_interface_open': (_p, [_p, _p, ctypes.c_uint]),
        'xc_interface_close': (_int, [_p]),
        'xc_domain_getinfolist': (_int, [_p, _u32, ctypes.c_uint,
                                         ctypes.POINTER(XcDomainInfo)]),
        'xc_domain_maximum_gpfn': (_int, [_p, _u32,
                                          ctypes.POINTER(xen_pfn_t)]),
        'xc_domain_pause': (_int, [_p, _u32]),
        'xc_domain_unpause': (_int, [_p, _u32]),
        'xc_domain_set_target': (_int, [_p, _u32, _u32]),
        'xc_logdirty_control': (ctypes.c_longlong, [
            _p, _u32, ctypes.c_uint, ctypes.POINTER(XcHypercallBuffer),
            ctypes.c_ulong, ctypes.c_uint, ctypes.POINTER(XcShadowOpStats)]),
        'xc__hypercall_buffer_alloc_pages': (_p, [
            _p, ctypes.POINTER(XcHypercallBuffer), _int]),
        'xc__hypercall_buffer_free_pages': (None, [
            _p, ctypes.POINTER(XcHypercallBuffer), _int]),
        'xc_domain_hvm_getcontext': (_int, [_p, _u32, _p, _u32]),
        'xc_domain_hvm_setcontext': (_int, [_p, _u32, _p, _u32]),
        'xc_hvm_param_get': (_int, [_p, _u32, _u32,
                                    ctypes.POINTER(ctypes.c_uint64)]),
        'xc_hvm_param_set': (_int, [_p, _u32, _u32, ctypes.c_uint64]),
        'xc_domain_iomem_permission': (_int, [_p, _u32, ctypes.c_ulong,
                                              ctypes.c_ulong,
                                              ctypes.c_uint8]),
        'xc_domain_ioport_permission': (_int, [_p, _u32, _u32, _u32, _u32]),
        'xc_domain_irq_permission': (_int, [_p, _u32, _u32, ctypes.c_bool]),
        'xc_assign_device': (_int, [_p, _u32, _u32, _u32]),
        'xc_deassign_device': (_int, [_p, _u32, _u32]),
    },
    'xenforeignmemory': {
        'xenforeignmemory_open': (_p, [_p, ctypes.c_uint]),
        'xenforeignmemory_close': (_int, [_p]),
        'xenforeignmemory_map2': (_p, [_p, _u32, _p, _int, _int,
                                       ctypes.c_size_t,
                                       ctypes.POINTER(xen_pfn_t),
                                       ctypes.POINTER(_int)]),
        'xenforeignmemory_unmap': (_int, [_p, _p, ctypes.c_size_t]),
    },
    'xenstore': {
        'xs_open': (_p, [ctypes.c_ulong]),
        'xs_close': (None, [_p]),
        'xs_read': (_p, [_p, _u32, ctypes.c_char_p,
                         ctypes.POINTER(ctypes.c_uint)]),
        'xs_write': (ctypes.c_bool, [_p, _u32, ctypes.c_char_p,
                                     ctypes.c_char_p, ctypes.c_uint]),
        'xs_rm': (ctypes.c_bool, [_p, _u32, ctypes.c_char_p]),
        'xs_set_target': (ctypes.c_bool, [_p, _u32, _u32]),
        'xs_directory': (_p, [_p, _u32, ctypes.c_char_p,
                              ctypes.POINTER(ctypes.c_uint)]),
        'xs_get_permissions': (_p, [_p, _u32, ctypes.c_char_p,
                                    ctypes.POINTER(ctypes.c_uint)]),
        'xs_set_permissions': (ctypes.c_bool, [_p, _u32, ctypes.c_char_p,
                                               ctypes.POINTER(XsPermissions),
                                               ctypes.c_uint]),
    },
    'c': {
        'mmap': (_p, [_p, ctypes.c_size_t, _int, _int, _int, ctypes.c_long]),
        'munmap': (_int, [_p, ctypes.c_size_t]),
        'free': (None, [_p]),
    },
}

#: sonames tried in order; libxenctrl's ABI is per Xen release
SONAMES = {
    'xenctrl': ('libxenctrl.so.4.17',),
    'xenforeignmemory': ('libxenforeignmemory.so.1',),
    'xenstore': ('libxenstore.so.4', 'libxenstore.so.3.0'),
    'c': ('libc.so.6',),
}


class XenLibraries:
    """The four C libraries, bound to :data:`PROTOTYPES`.

    ``get_errno`` reads the errno of the last call (ctypes' private copy for
    libraries loaded with ``use_errno``).  Tests pass stand-ins.
    """

    def __init__(self, xenctrl, xenforeignmemory, xenstore, c,
                 get_errno: Callable[[], int] = ctypes.get_errno):
        self.get_errno = get_errno
        for name, lib in (('xenctrl', xenctrl),
                          ('xenforeignmemory', xenforeignmemory),
                          ('xenstore', xenstore), ('c', c)):
            for sym, (restype, argtypes) in PROTOTYPES[name].items():
                try:
                    fn = getattr(lib, sym)
                except AttributeError:
                    raise errors.XenUnavailable(
                        privcmd=PRIVCMD,
                        reason='lib%s has no symbol %s (not the Xen 4.17 '
                               'ABI?)' % (name, sym))
                fn.restype = restype
                fn.argtypes = argtypes
                setattr(self, sym, fn)

    @classmethod
    def load(cls, libxenctrl: Optional[str] = None) -> 'XenLibraries':
        """dlopen the libraries by soname.

        :raises XenUnavailable: a library or one of its symbols is missing.
        """
        libs = {}
        for name, sonames in SONAMES.items():
            if name == 'xenctrl' and libxenctrl:
                sonames = (libxenctrl,)
            failures = []
            for soname in sonames:
                try:
                    libs[name] = ctypes.CDLL(soname, use_errno=True)
                    break
                except OSError as exc:
                    failures.append(str(exc))
            else:
                raise errors.XenUnavailable(
                    privcmd=PRIVCMD,
                    reason='cannot load lib%s (%s); install the Xen 4.17 '
                           'runtime libraries (Debian: libxenmisc4.17, '
                           'libxenstore4, libxenforeignmemory1)'
                           % (name, '; '.join(failures)))
        return cls(libs['xenctrl'], libs['xenforeignmemory'],
                   libs['xenstore'], libs['c'])


def encode_sbdf(sbdf: str) -> int:
    """``[dddd:]bb:dd.f`` -> Xen's machine_sbdf (libxl's pci_encode_bdf)."""
    m = re.fullmatch(r'(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):'
                     r'([0-9a-fA-F]{1,2})\.([0-7])', sbdf.strip())
    if not m:
        raise errors.InvalidArgument(name='sbdf', value=sbdf,
                                     reason='not a PCI address dddd:bb:dd.f')
    seg = int(m.group(1) or '0', 16)
    bus, dev, func = (int(m.group(i), 16) for i in (2, 3, 4))
    if dev > 0x1f:
        raise errors.InvalidArgument(name='sbdf', value=sbdf,
                                     reason='device number above 0x1f')
    return (seg << 16) | (bus << 8) | (dev << 3) | func


def perms_to_structs(perms: List[str]) -> 'ctypes.Array':
    if not perms:
        raise errors.InvalidArgument(name='perms', value=perms,
                                     reason='owner entry required')
    arr = (XsPermissions * len(perms))()
    for i, p in enumerate(perms):
        if len(p) < 2 or p[0] not in _PERM_BITS or not p[1:].isdigit():
            raise errors.InvalidArgument(name='perms', value=p,
                                         reason='expected [nrwb]<domid>')
        arr[i].id = int(p[1:])
        arr[i].perms = _PERM_BITS[p[0]]
    return arr


def perms_from_structs(arr, count: int) -> List[str]:
    out = []
    for i in range(count):
        # XS_PERM_ENOENT_OK/OWNER/IGNORE are internal flags, not access
        letter = _PERM_LETTERS[arr[i].perms & (XS_PERM_READ | XS_PERM_WRITE)]
        out.append('%s%d' % (letter, arr[i].id))
    return out


def bitmap_from_xen(raw: bytes, nr_pfns: int) -> bytearray:
    """Xen's log-dirty bitmap (array of unsigned long, bit n = PFN n; x86 is
    little-endian so byte n//8 holds PFN n in bit n%8) -> exactly
    ceil(nr_pfns/8) bytes with bits past *nr_pfns* cleared."""
    nbytes = (nr_pfns + 7) // 8
    out = bytearray(raw[:nbytes])
    if len(out) < nbytes:
        out.extend(bytes(nbytes - len(out)))
    if nr_pfns % 8:
        out[-1] &= (1 << (nr_pfns % 8)) - 1
    return out


class _Mapping:
    """One mapped guest: its reservation and the chunks in it."""

    def __init__(self, domid: int, base: int, pages: int):
        self.domid = domid
        self.base = base
        self.pages = pages
        self.chunks: List[Tuple[int, int]] = []     # (addr, pages) foreign
        self.holes: List[int] = []                  # PFNs Xen refused
        self.released = False


class XenBackend(HypervisorBackend):
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
        self._mappings: Dict[int, _Mapping] = {}
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
            target=int(target) if target and target.isdigit() else None)

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
        self._xc('xc_domain_set_target', stub_domid, guest_domid,
                 detail='stub domain %d -> guest %d' % (stub_domid,
                                                        guest_domid))

    def xs_set_target(self, stub_domid: int, guest_domid: int) -> None:
        if not self.libs.xs_set_target(self.xsh, stub_domid, guest_domid):
            raise self._xs_fail('xs_set_target', '%d -> %d' % (
                stub_domid, guest_domid))

    # -- guest memory ---------------------------------------------------------
    def map_memory(self, domid: int, writable: bool = False) -> memoryview:
        """Map PFNs 0..max_pfn-1 of *domid* into one contiguous view.

        A PROT_NONE reservation is taken first and foreign chunks are placed
        into it with ``MAP_FIXED``, so the view is contiguous.  PFNs Xen
        refuses (holes such as the MMIO window below 4 GiB) are backed by
        zero-filled anonymous pages instead of staying unmapped (touching an
        unmapped page of a privcmd mapping is SIGBUS); they are listed by
        :meth:`holes`.  The mapping is released -- unmapped -- when the
        returned view (and every view derived from it) is released or
        garbage-collected, or on :meth:`close`.
        """
        pages = self.domain_info(domid).max_pfn
        if pages <= 0:
            raise errors.InvalidArgument(name='domid', value=domid,
                                         reason='domain has no guest memory')
        size = pages * PAGE_SIZE
        prot = PROT_READ | (PROT_WRITE if writable else 0)
        base = self.libs.mmap(None, size, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                              -1, 0)
        if base in (None, MAP_FAILED):
            raise self._fail('mmap', 'reserving %d bytes' % size)
        mapping = _Mapping(domid, base, pages)
        try:
            for first in range(0, pages, self.map_chunk_pages):
                count = min(self.map_chunk_pages, pages - first)
                self._map_chunk(mapping, first, count, prot)
        except BaseException:
            self._release(mapping)
            raise
        if mapping.holes:
            LOG.warning('domain %d: %d of %d pages could not be mapped '
                        '(holes, read as zeros)', domid, len(mapping.holes),
                        pages)
        view_type = type('ForeignMapping', (ctypes.c_char * size,), {})
        region = view_type.from_address(base)
        weakref.finalize(region, self._release, mapping)
        with self._lock:
            self._mappings[base] = mapping
        view = memoryview(region).cast('B')
        return view if writable else view.toreadonly()

    def _map_chunk(self, mapping: _Mapping, first: int, count: int,
                   prot: int) -> None:
        pfns = (xen_pfn_t * count)(*range(first, first + count))
        errs = (ctypes.c_int * count)()
        addr = mapping.base + first * PAGE_SIZE
        got = self.libs.xenforeignmemory_map2(
            self.fmem, mapping.domid, addr, prot, MAP_FIXED, count, pfns,
            errs)
        if not got:
            raise self._fail('xenforeignmemory_map2', 'domain %d PFNs '
                             '%#x..%#x' % (mapping.domid, first,
                                           first + count - 1))
        bad = [i for i in range(count) if errs[i]]
        if not bad:
            mapping.chunks.append((addr, count))
            return
        # some PFNs failed: replace the chunk by anonymous memory in one
        # MAP_FIXED mmap (drops the whole privcmd mapping, never splits it,
        # and leaves no gap another thread's mmap could take), then map only
        # the runs Xen accepted over it
        self._anon(addr, count, prot)
        bad_set = set(bad)
        mapping.holes.extend(first + i for i in bad)
        i = 0
        while i < count:
            if i in bad_set:
                i += 1
                continue
            j = i
            while j < count and j not in bad_set:
                j += 1
            run = (xen_pfn_t * (j - i))(*range(first + i, first + j))
            run_errs = (ctypes.c_int * (j - i))()
            run_addr = addr + i * PAGE_SIZE
            if not self.libs.xenforeignmemory_map2(
                    self.fmem, mapping.domid, run_addr, prot, MAP_FIXED,
                    j - i, run, run_errs) or any(run_errs):
                raise self._fail('xenforeignmemory_map2', 'domain %d PFNs '
                                 '%#x..%#x (retry without holes)' % (
                                     mapping.domid, first + i,
                                     first + j - 1))
            mapping.chunks.append((run_addr, j - i))
            i = j

    def _anon(self, addr: int, pages: int, prot: int) -> None:
        got = self.libs.mmap(addr, pages * PAGE_SIZE, prot,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
        if got != addr:
            raise self._fail('mmap', 'anonymous pages at %#x' % addr)

    def _release(self, mapping: _Mapping) -> None:
        with self._lock:
            if mapping.released:
                return
            mapping.released = True
            self._mappings.pop(mapping.base, None)
        for addr, count in mapping.chunks:
            if self.fmem:
                self.libs.xenforeignmemory_unmap(self.fmem, addr, count)
        # whatever is left of the reservation (holes, unmapped tail)
        self.libs.munmap(mapping.base, mapping.pages * PAGE_SIZE)

    def holes(self, view: memoryview) -> List[int]:
        """PFNs of a mapping from :meth:`map_memory` that read as zeros."""
        base = ctypes.addressof(view.obj) if view.obj is not None else None
        mapping = self._mappings.get(base)
        return list(mapping.holes) if mapping else []

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

    def xs_write(self, path: str, value: str) -> None:
        data = value.encode()
        if not self.libs.xs_write(self.xsh, XBT_NULL, path.encode(), data,
                                  len(data)):
            raise self._xs_fail('xs_write', path)

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

    def xs_set_perms(self, path: str, perms: List[str]) -> None:
        arr = perms_to_structs(perms)
        if not self.libs.xs_set_permissions(self.xsh, XBT_NULL,
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
