"""Stand-ins of libxenctrl/libxenforeignmemory/libxenstore for XenBackend.

Every stand-in symbol is a real ctypes C function pointer (CFUNCTYPE) built
from the backend's own prototype table, so the backend's arguments go
through ctypes' C marshalling exactly as with the real libraries: out
structures are written at the addresses the backend passed, strings arrive
as bytes, pointers as addresses.  Foreign memory is emulated with anonymous
mmap()s at the address the backend asks for (MAP_FIXED), filled with a
per-PFN pattern.
"""
import ctypes
import errno
import mmap
import uuid

from nova_xen_stubdom.dom0 import xen_libs as xl

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                  ctypes.c_int, ctypes.c_int, ctypes.c_long]
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_mprotect = _libc.mprotect
_mprotect.restype = ctypes.c_int
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

XCH, FMEM, XSH = 0x1000, 0x2000, 0x3000


def page_pattern(pfn: int) -> bytes:
    return pfn.to_bytes(8, 'little') * (xl.PAGE_SIZE // 8)


class FakeLib:
    """Attributes: C function pointers calling ``impl.<symbol>``."""

    def __init__(self, group: str, impl):
        self._keep = []
        for sym, (restype, argtypes) in xl.PROTOTYPES[group].items():
            proto = ctypes.CFUNCTYPE(restype, *argtypes)
            fn = proto(self._recorder(impl, sym, restype))
            self._keep.append(fn)
            setattr(self, sym, fn)

    @staticmethod
    def _recorder(impl, sym, restype):
        target = getattr(impl, sym)
        failed = {ctypes.c_void_p: None, ctypes.c_bool: False,
                  None: None}.get(restype, -1)

        def call(*args):
            impl.calls.append((sym,) + args)
            if sym in impl.fail:
                impl.errno = impl.fail[sym]
                return impl.fail_value.get(sym, failed)
            return target(*args)
        return call


class FakeXen:
    """A tiny hypervisor + xenstore behind the fake libraries."""

    def __init__(self):
        self.calls = []
        self.errno = 0
        self.fail = {}          # symbol -> errno to fail with
        self.fail_value = {}    # symbol -> return value on failure
        self.domains = {}       # domid -> dict
        self.xenstore = {}      # path -> value
        self.perms = {}         # path -> [(id, bits)]
        self.targets = {}       # xs_set_target: stub domid -> guest domid
        self.params = {}        # (domid, param) -> value
        self.contexts = {}      # domid -> bytes
        self.set_contexts = {}
        self.dirty = {}         # domid -> set of PFNs
        self.holes = {}         # domid -> set of PFNs the map refuses
        self.absent = {}        # domid -> PFNs getpageframeinfo3 says XTAB
        self.mmap_flags = []    # libc mmap calls: (prot, flags, fd)
        self.no_frames = set()  # PFNs populate_physmap cannot give a frame
        self.populated = {}     # domid -> PFNs populate_physmap gave one
        self.allocs = {}        # address -> python buffer (until free())
        self.hbufs = {}         # address -> buffer (hypercall pages)
        self.freed = []
        #: serialised (cpuid, msrs) per domid, and index -> system policy
        self.cpu_policies = {}
        self.system_policies = {}
        self.policy_objs = {}   # xc_cpu_policy_t handles alive
        self.tsc = {}           # domid -> (mode, nsec, khz, incarnation)
        self.introduced = {}    # domid -> (store mfn, port)
        self.resumed = []
        self.add_domain(0, hvm=False, max_gpfn=0, vcpus=4)

    def add_domain(self, domid, *, hvm=True, max_gpfn=15, vcpus=1,
                   paused=False, dying=False, vm_uuid=None):
        flags = (xl.XEN_DOMINF_hvm_guest if hvm else 0) | \
            (xl.XEN_DOMINF_paused if paused else 0) | \
            (xl.XEN_DOMINF_dying if dying else 0)
        self.domains[domid] = dict(flags=flags, max_gpfn=max_gpfn,
                                   vcpus=vcpus, vm_uuid=vm_uuid)

    def libs(self) -> xl.XenLibraries:
        return xl.XenLibraries(FakeLib('xenctrl', self),
                               FakeLib('xenforeignmemory', self),
                               FakeLib('xenstore', self), FakeLib('c', self),
                               FakeLib('xenguest', self),
                               get_errno=lambda: self.errno)

    def names(self, prefix=''):
        return [c[0] for c in self.calls if c[0].startswith(prefix)]

    def _err(self, e, value=-1):
        self.errno = e
        return value

    # -- libxenctrl ----------------------------------------------------------
    def xc_interface_open(self, logger, dlogger, flags):
        return XCH

    def xc_interface_close(self, xch):
        return 0

    def xc_domain_getinfolist(self, xch, first, count, info):
        doms = sorted(d for d in self.domains if d >= first)[:count]
        for i, domid in enumerate(doms):
            d = self.domains[domid]
            rec = info[i]
            rec.domain = domid
            rec.flags = d['flags']
            rec.nr_online_vcpus = d['vcpus']
            if d['vm_uuid']:
                ctypes.memmove(ctypes.addressof(rec.handle),
                               uuid.UUID(d['vm_uuid']).bytes, 16)
        return len(doms)

    def xc_get_pfn_type_batch(self, xch, domid, num, arr):
        if domid not in self.domains:
            return self._err(errno.ESRCH)
        absent = self.absent.get(domid, ())
        for i in range(num):
            arr[i] = xl.XEN_DOMCTL_PFINFO_XTAB if arr[i] in absent else 0
        return 0

    def xc_domain_populate_physmap_exact(self, xch, domid, n, order, flags,
                                         arr):
        if domid not in self.domains:
            return self._err(errno.ESRCH)
        pfns = [arr[i] for i in range(n)]
        if order or flags or any(p in self.no_frames for p in pfns):
            return self._err(errno.ENOMEM)
        for p in pfns:
            self.holes.get(domid, set()).discard(p)
            self.absent.get(domid, set()).discard(p)
        self.populated.setdefault(domid, []).extend(pfns)
        return 0

    def xc_domain_maximum_gpfn(self, xch, domid, out):
        if domid not in self.domains:
            return self._err(errno.ESRCH)
        out[0] = self.domains[domid]['max_gpfn']
        return 0

    def _flag(self, domid, bit, on):
        if domid not in self.domains:
            return self._err(errno.ESRCH)
        d = self.domains[domid]
        d['flags'] = (d['flags'] | bit) if on else (d['flags'] & ~bit)
        return 0

    def xc_domain_pause(self, xch, domid):
        return self._flag(domid, xl.XEN_DOMINF_paused, True)

    def xc_domain_unpause(self, xch, domid):
        return self._flag(domid, xl.XEN_DOMINF_paused, False)

    def xc_domain_set_target(self, xch, domid, target):
        if domid not in self.domains or target not in self.domains:
            return self._err(errno.ESRCH)
        return 0

    def xc__hypercall_buffer_alloc_pages(self, xch, b, nr_pages):
        buf = ctypes.create_string_buffer(nr_pages * xl.PAGE_SIZE)
        addr = ctypes.addressof(buf)
        self.hbufs[addr] = buf
        b[0].hbuf = addr
        return addr

    def xc__hypercall_buffer_free_pages(self, xch, b, nr_pages):
        assert len(self.hbufs[b[0].hbuf]) == nr_pages * xl.PAGE_SIZE
        del self.hbufs[b[0].hbuf]

    def xc_logdirty_control(self, xch, domid, op, hbuf, pages, mode, stats):
        if domid not in self.domains:
            return self._err(errno.ESRCH)
        if op == xl.XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY:
            self.dirty[domid] = set()
            return 0
        if op == xl.XEN_DOMCTL_SHADOW_OP_OFF:
            self.dirty.pop(domid, None)
            return 0
        if domid not in self.dirty:
            return self._err(errno.EINVAL)
        buf = self.hbufs[hbuf[0].hbuf]
        nlongs = (pages + 63) // 64
        words = [0] * nlongs
        for pfn in self.dirty[domid]:
            if pfn < pages:
                words[pfn // 64] |= 1 << (pfn % 64)
        raw = b''.join(w.to_bytes(8, 'little') for w in words)
        ctypes.memmove(buf, raw, len(raw))
        stats[0].dirty_count = len(self.dirty[domid])
        if op == xl.XEN_DOMCTL_SHADOW_OP_CLEAN:
            self.dirty[domid] = set()
        return pages

    def xc_domain_hvm_getcontext(self, xch, domid, buf, size):
        ctx = self.contexts.get(domid)
        if ctx is None:
            return self._err(errno.EINVAL)
        if not buf:
            return len(ctx) + 64        # Xen's size is an upper bound
        ctypes.memmove(buf, ctx, len(ctx))
        return len(ctx)

    def xc_domain_hvm_setcontext(self, xch, domid, buf, size):
        self.set_contexts[domid] = ctypes.string_at(buf, size)
        return 0

    def xc_hvm_param_get(self, xch, domid, param, out):
        out[0] = self.params.get((domid, param), 0)
        return 0

    def xc_hvm_param_set(self, xch, domid, param, value):
        self.params[(domid, param)] = value
        return 0

    def xc_domain_get_tsc_info(self, xch, domid, mode, nsec, khz, inc):
        if domid not in self.tsc:
            return self._err(errno.ESRCH)
        mode[0], nsec[0], khz[0], inc[0] = self.tsc[domid]
        return 0

    def xc_domain_set_tsc_info(self, xch, domid, mode, nsec, khz, inc):
        self.tsc[domid] = (mode, nsec, khz, inc + 1)   # tsc_set_info
        return 0

    # -- libxenguest ---------------------------------------------------------
    POLICY_SIZE = (64, 8)       # what xc_cpu_policy_get_size reports

    def xc_cpu_policy_get_size(self, xch, nr_leaves, nr_msrs):
        nr_leaves[0], nr_msrs[0] = self.POLICY_SIZE
        return 0

    def xc_cpu_policy_init(self):
        handle = 0x5000 + len(self.policy_objs) * 16
        self.policy_objs[handle] = None
        return handle

    def xc_cpu_policy_destroy(self, policy):
        self.policy_objs.pop(policy)

    def xc_cpu_policy_get_domain(self, xch, domid, policy):
        if domid not in self.cpu_policies:
            return self._err(errno.ESRCH)
        self.policy_objs[policy] = self.cpu_policies[domid]
        return 0

    def xc_cpu_policy_get_system(self, xch, index, policy):
        if index not in self.system_policies:
            return self._err(errno.EOPNOTSUPP)
        self.policy_objs[policy] = self.system_policies[index]
        return 0

    def xc_cpu_policy_serialise(self, xch, policy, leaves, nr_leaves, msrs,
                                nr_msrs):
        cpuid, msr = self.policy_objs[policy]
        if len(cpuid) > nr_leaves[0] * 24 or len(msr) > nr_msrs[0] * 16:
            return self._err(errno.ENOBUFS)
        ctypes.memmove(leaves, cpuid, len(cpuid))
        ctypes.memmove(msrs, msr, len(msr))
        nr_leaves[0], nr_msrs[0] = len(cpuid) // 24, len(msr) // 16
        return 0

    def xc_set_domain_cpu_policy(self, xch, domid, nr_l, leaves, nr_m, msrs,
                                 err_leaf, err_subleaf, err_msr):
        self.cpu_policies[domid] = (ctypes.string_at(leaves, nr_l * 24),
                                    ctypes.string_at(msrs, nr_m * 16))
        return 0

    def xc_domain_iomem_permission(self, xch, domid, first, nr, allow):
        return 0

    def xc_domain_ioport_permission(self, xch, domid, first, nr, allow):
        return 0

    def xc_domain_irq_permission(self, xch, domid, pirq, allow):
        return 0

    def xc_assign_device(self, xch, domid, sbdf, flag):
        return 0

    def xc_deassign_device(self, xch, domid, sbdf):
        return 0

    # -- libxenforeignmemory --------------------------------------------------
    def xenforeignmemory_open(self, logger, flags):
        return FMEM

    def xenforeignmemory_close(self, fmem):
        return 0

    def xenforeignmemory_map2(self, fmem, domid, addr, prot, flags, n, arr,
                              err):
        assert flags & xl.MAP_FIXED and addr
        got = _mmap(addr, n * xl.PAGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE,
                    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | xl.MAP_FIXED,
                    -1, 0)
        assert got == addr
        holes = self.holes.get(domid, ())
        for i in range(n):
            if arr[i] in holes:
                err[i] = -errno.EINVAL
                continue
            err[i] = 0
            ctypes.memmove(addr + i * xl.PAGE_SIZE, page_pattern(arr[i]),
                           xl.PAGE_SIZE)
        assert _mprotect(addr, n * xl.PAGE_SIZE, prot) == 0
        return addr

    def xenforeignmemory_unmap(self, fmem, addr, n):
        return _munmap(addr, n * xl.PAGE_SIZE)

    # -- libxenstore ----------------------------------------------------------
    def _alloc(self, buf):
        addr = ctypes.addressof(buf)
        self.allocs[addr] = buf
        return addr

    def xs_open(self, flags):
        return XSH

    def xs_close(self, xsh):
        return None

    def xs_read(self, xsh, t, path, length):
        value = self.xenstore.get(path.decode())
        if value is None:
            self.errno = errno.ENOENT
            return None
        raw = value.encode()
        length[0] = len(raw)
        return self._alloc(ctypes.create_string_buffer(raw))

    def xs_write(self, xsh, t, path, data, length):
        self.xenstore[path.decode()] = data[:length].decode()
        return True

    def xs_rm(self, xsh, t, path):
        path = path.decode()
        doomed = [p for p in self.xenstore
                  if p == path or p.startswith(path + '/')]
        if not doomed:
            self.errno = errno.ENOENT
            return False
        for p in doomed:
            del self.xenstore[p]
        return True

    def xs_directory(self, xsh, t, path, num):
        path = path.decode().rstrip('/')
        kids = sorted({p[len(path) + 1:].split('/')[0]
                       for p in self.xenstore if p.startswith(path + '/')})
        if not kids:
            self.errno = errno.ENOENT
            return None
        strings = [ctypes.create_string_buffer(k.encode()) for k in kids]
        arr = (ctypes.c_void_p * len(kids))(
            *[ctypes.addressof(s) for s in strings])
        arr._strings = strings          # one "allocation", as libxenstore
        num[0] = len(kids)
        return self._alloc(arr)

    def xs_get_permissions(self, xsh, t, path, num):
        perms = self.perms.get(path.decode())
        if perms is None:
            self.errno = errno.ENOENT
            return None
        arr = (xl.XsPermissions * len(perms))()
        for i, (domid, bits) in enumerate(perms):
            arr[i].id, arr[i].perms = domid, bits
        num[0] = len(perms)
        return self._alloc(arr)

    def xs_transaction_start(self, xsh):
        self.transactions = getattr(self, 'transactions', 0) + 1
        return 40 + self.transactions

    def xs_transaction_end(self, xsh, t, abort):
        # xen.conflicts: how many commits xenstored answers EAGAIN first
        if not abort and getattr(self, 'conflicts', 0):
            self.conflicts -= 1
            self.errno = errno.EAGAIN
            return False
        return True

    def xs_set_target(self, xsh, domid, target):
        self.targets = getattr(self, 'targets', {})
        self.targets[domid] = target
        return True

    def xs_introduce_domain(self, xsh, domid, mfn, port):
        self.introduced[domid] = (mfn, port)
        return True

    def xs_resume_domain(self, xsh, domid):
        self.resumed.append(('xs', domid))
        return True

    def xc_domain_resume(self, xch, domid, fast):
        self.resumed.append(('xc', domid, fast))
        return 0

    def xs_set_permissions(self, xsh, t, path, perms, num):
        self.perms[path.decode()] = [(perms[i].id, perms[i].perms)
                                     for i in range(num)]
        return True

    # -- libc -----------------------------------------------------------------
    def mmap(self, addr, length, prot, flags, fd, off):
        self.mmap_flags.append((prot, flags, fd))
        return _mmap(addr, length, prot, flags, fd, off)

    def munmap(self, addr, length):
        return _munmap(addr, length)

    def free(self, addr):
        del self.allocs[addr]
        self.freed.append(addr)
