"""ctypes bindings of the Xen 4.17 libraries the ``xen`` backend uses.

Constants and struct layouts transcribed from the Xen 4.17 public headers
(``tools/include/xenctrl.h``, ``tools/include/xenforeignmemory.h``,
``tools/include/xenstore.h``, ``xen/include/public/domctl.h``,
``xen/include/public/hvm/params.h``), one prototype table
(:data:`PROTOTYPES`) that ``tests/unit/dom0/test_xen_backend_headers.py``
compiles against the real headers, and :class:`XenLibraries`, which binds
the libraries to it.  :mod:`nova_xen_stubdom.dom0.xen_backend` is the
backend built on them.
"""
import ctypes
import re
import mmap as mmaplib
from typing import Callable, Dict, List, Optional, Tuple

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0.hypervisor import PAGE_SIZE

__all__ = ['PAGE_SIZE']

PRIVCMD = '/dev/xen/privcmd'

# -- constants from the Xen 4.17 public headers ------------------------------
# xen/include/public/domctl.h
XEN_DOMINF_dying = 1 << 0
XEN_DOMINF_hvm_guest = 1 << 1
XEN_DOMINF_shutdown = 1 << 2
XEN_DOMINF_paused = 1 << 3
XEN_DOMINF_shutdownshift = 16
XEN_DOMINF_shutdownmask = 255
# xen/include/public/sched.h SHUTDOWN_*: the code a guest passes to
# SCHEDOP_shutdown, by value
SHUTDOWN_REASONS = ('poweroff', 'reboot', 'suspend', 'crash', 'watchdog',
                    'soft_reset')
XEN_DOMCTL_SHADOW_OP_OFF = 0
XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY = 2
XEN_DOMCTL_SHADOW_OP_CLEAN = 11
XEN_DOMCTL_SHADOW_OP_PEEK = 12
# XEN_DOMCTL_getpageframeinfo3 types (high nibble of each entry): no page
# behind the PFN (an HVM guest's MMIO hole), allocate-only, broken
XEN_DOMCTL_PFINFO_LTAB_MASK = 0xf << 28
XEN_DOMCTL_PFINFO_XTAB = 0xf << 28
XEN_DOMCTL_PFINFO_XALLOC = 0xe << 28
XEN_DOMCTL_PFINFO_BROKEN = 0xd << 28
PFINFO_NO_PAGE = (XEN_DOMCTL_PFINFO_XTAB, XEN_DOMCTL_PFINFO_XALLOC,
                  XEN_DOMCTL_PFINFO_BROKEN)
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
# xen/include/public/sysctl.h, struct xen_sysctl_cpu_policy: the policy an
# HVM guest may at most be given (what a destination can offer)
XEN_SYSCTL_cpu_policy_hvm_max = 3
# tools/include/xenstore_lib.h, enum xs_perm_type
XS_PERM_NONE, XS_PERM_READ, XS_PERM_WRITE = 0, 1, 2
# xen/include/public/hvm/params.h: not saved, the host's own
HVM_PARAM_STORE_EVTCHN = 2
HVM_PARAM_CONSOLE_EVTCHN = 18
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
_pu32 = ctypes.POINTER(ctypes.c_uint32)
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
        # declared in xc_private.h, not in xenctrl.h, but exported (libxc's
        # own save uses it: xg_sr_save.c write_batch); see the header test
        'xc_get_pfn_type_batch': (_int, [_p, _u32, ctypes.c_uint,
                                         ctypes.POINTER(xen_pfn_t)]),
        # tools/include/xenctrl.h (4.17); libxc's restore populates the
        # PFNs a fresh domain lacks with it (xg_sr_restore.c populate_pfns)
        'xc_domain_populate_physmap_exact': (_int, [
            _p, _u32, ctypes.c_ulong, ctypes.c_uint, ctypes.c_uint,
            ctypes.POINTER(xen_pfn_t)]),
        'xc_domain_hvm_getcontext': (_int, [_p, _u32, _p, _u32]),
        'xc_domain_hvm_setcontext': (_int, [_p, _u32, _p, _u32]),
        'xc_hvm_param_get': (_int, [_p, _u32, _u32,
                                    ctypes.POINTER(ctypes.c_uint64)]),
        'xc_hvm_param_set': (_int, [_p, _u32, _u32, ctypes.c_uint64]),
        # tools/include/xenctrl.h; libxc's save/restore use them in
        # xg_sr_common_x86.c write_x86_tsc_info / handle_x86_tsc_info
        'xc_domain_get_tsc_info': (_int, [_p, _u32, _pu32,
                                          ctypes.POINTER(ctypes.c_uint64),
                                          _pu32, _pu32]),
        'xc_domain_set_tsc_info': (_int, [_p, _u32, _u32, ctypes.c_uint64,
                                          _u32, _u32]),
        'xc_domain_iomem_permission': (_int, [_p, _u32, ctypes.c_ulong,
                                              ctypes.c_ulong,
                                              ctypes.c_uint8]),
        'xc_domain_ioport_permission': (_int, [_p, _u32, _u32, _u32, _u32]),
        'xc_domain_irq_permission': (_int, [_p, _u32, _u32, ctypes.c_bool]),
        'xc_assign_device': (_int, [_p, _u32, _u32, _u32]),
        'xc_deassign_device': (_int, [_p, _u32, _u32]),
    },
    # tools/include/xenguest.h (4.17), what libxc's save and restore use
    # (xg_sr_common_x86.c write_x86_cpu_policy_records: init, get_size,
    # get_domain, serialise, destroy; x86_static_data_complete:
    # xc_set_domain_cpu_policy); an xc_cpu_policy_t is opaque
    'xenguest': {
        'xc_cpu_policy_init': (_p, []),
        'xc_cpu_policy_destroy': (None, [_p]),
        'xc_cpu_policy_get_size': (_int, [_p, _pu32, _pu32]),
        'xc_cpu_policy_get_domain': (_int, [_p, _u32, _p]),
        'xc_cpu_policy_get_system': (_int, [_p, ctypes.c_uint, _p]),
        'xc_cpu_policy_serialise': (_int, [_p, _p, _p, _pu32, _p, _pu32]),
        'xc_set_domain_cpu_policy': (_int, [_p, _u32, _u32, _p, _u32, _p,
                                            _pu32, _pu32, _pu32]),
        # declared in xenguest.h (xg_resume.c); libxl's
        # libxl__domain_resume calls it with fast=1 (suspend_cancel)
        'xc_domain_resume': (_int, [_p, _u32, _int]),
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
        'xs_directory': (_p, [_p, _u32, ctypes.c_char_p,
                              ctypes.POINTER(ctypes.c_uint)]),
        'xs_get_permissions': (_p, [_p, _u32, ctypes.c_char_p,
                                    ctypes.POINTER(ctypes.c_uint)]),
        'xs_set_permissions': (ctypes.c_bool, [_p, _u32, ctypes.c_char_p,
                                               ctypes.POINTER(XsPermissions),
                                               ctypes.c_uint]),
        # tools/include/xenstore.h; libxl_dm.c libxl__spawn_stub_dm calls
        # it right after xc_domain_set_target
        # tools/include/xenstore.h (xs_transaction_t is uint32_t): the
        # device nodes of a disk go in one transaction, as libxl writes them
        # (libxl_device.c libxl__device_generic_add)
        'xs_transaction_start': (_u32, [_p]),
        'xs_transaction_end': (ctypes.c_bool, [_p, _u32, ctypes.c_bool]),
        'xs_set_target': (ctypes.c_bool, [_p, ctypes.c_uint,
                                          ctypes.c_uint]),
        # libxl__build_post (introduce after a restore) and
        # libxl__domain_resume (xs_resume_domain)
        'xs_introduce_domain': (ctypes.c_bool, [_p, ctypes.c_uint,
                                                ctypes.c_ulong,
                                                ctypes.c_uint]),
        'xs_resume_domain': (ctypes.c_bool, [_p, ctypes.c_uint]),
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
    'xenguest': ('libxenguest.so.4.17',),
    'xenforeignmemory': ('libxenforeignmemory.so.1',),
    'xenstore': ('libxenstore.so.4', 'libxenstore.so.3.0'),
    'c': ('libc.so.6',),
}


class XenLibraries:
    """The five C libraries, bound to :data:`PROTOTYPES`.

    ``get_errno`` reads the errno of the last call (ctypes' private copy for
    libraries loaded with ``use_errno``).  Tests pass stand-ins.
    """

    def __init__(self, xenctrl, xenforeignmemory, xenstore, c, xenguest,
                 get_errno: Callable[[], int] = ctypes.get_errno):
        self.get_errno = get_errno
        for name, lib in (('xenctrl', xenctrl), ('xenguest', xenguest),
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
                   libs['xenstore'], libs['c'], libs['xenguest'])


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
