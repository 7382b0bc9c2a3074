"""Guest memory of a real Xen domain: the xen backend's ``map_memory``.

A mixin of :class:`nova_xen_stubdom.dom0.xen_backend.XenBackend` (kept
apart to keep modules small): it uses the backend's bound libraries
(``libs``), handles (``xch``, ``fmem``), ``domain_info``, ``_fail``,
``_lock`` and ``_mappings``.
"""
import array
import ctypes
import logging
import weakref
from typing import List, Tuple

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0.hypervisor import PAGE_SIZE
from nova_xen_stubdom.dom0.xen_libs import (
    MAP_ANONYMOUS, MAP_FAILED, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE,
    PFINFO_NO_PAGE, PROT_NONE, PROT_READ, PROT_WRITE,
    XEN_DOMCTL_PFINFO_LTAB_MASK, XEN_DOMCTL_PFINFO_XTAB, xen_pfn_t)

LOG = logging.getLogger(__name__)


class Mapping:
    """One mapped guest: its reservation and the chunks in it."""

    def __init__(self, domid: int, base: int, pages: int):
        self.domid = domid
        self.base = base
        self.pages = pages
        self.chunks: List[Tuple[int, int]] = []     # (addr, pages) foreign
        #: [start, stop) PFN runs with no page (an HVM guest's MMIO hole
        #: is ~1 M PFNs: runs, not a list of PFNs)
        self.holes: List[Tuple[int, int]] = []
        self.prot = 0
        self.released = False

    def hole_pages(self) -> int:
        return sum(stop - start for start, stop in self.holes)


class ForeignMemory:
    """``map_memory``/``holes`` over libxenforeignmemory."""

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
        info = self.domain_info(domid)
        pages = info.max_pfn
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
        mapping = Mapping(domid, base, pages)
        mapping.prot = prot
        try:
            for first in range(0, pages, self.map_chunk_pages):
                count = min(self.map_chunk_pages, pages - first)
                self._map_chunk(mapping, first, count, prot,
                                classify=info.hvm)
        except BaseException:
            self._release(mapping)
            raise
        if mapping.holes:
            LOG.info('domain %d: %d of %d PFNs have no page behind them '
                     '(holes, read as zeros)', domid, mapping.hole_pages(),
                     pages)
        view_type = type('ForeignMapping', (ctypes.c_char * size,), {})
        region = view_type.from_address(base)
        weakref.finalize(region, self._release, mapping)
        with self._lock:
            self._mappings[base] = mapping
        view = memoryview(region).cast('B')
        if writable:
            return view
        if hasattr(view, 'toreadonly'):
            return view.toreadonly()
        # Python < 3.8 (dom0's 3.6): a read-only exporter that keeps the
        # region -- and so the mapping -- alive as long as any derived view
        from nova_xen_stubdom import emucore
        return memoryview(emucore.readonly_memory(region, base, size))

    def _no_page(self, domid: int, first: int, count: int) -> List[int]:
        """Offsets in PFNs first..first+count-1 of HVM *domid* with no
        page behind them (libxc's save asks the same before it maps:
        xg_sr_save.c write_batch).  An HVM guest's PFNs reach its special
        pages just below 4 GiB, so a 32 MiB guest spans ~1 M PFNs, nearly
        all MMIO hole; asking costs one domctl per chunk, mapping them
        one privcmd fault path each -- minutes in a TCG-nested dom0."""
        types = _pfn_array(first, count)
        if self.libs.xc_get_pfn_type_batch(self.xch, domid, count,
                                           types) < 0:
            LOG.debug('xc_get_pfn_type_batch failed (errno %d): mapping '
                      'every PFN', self.libs.get_errno())
            return []
        if bytes(types) == _XTAB_ENTRY * count:
            return list(range(count))   # the common case, compared in C
        codes = memoryview(types).cast('B').cast('L').tolist()
        mask = XEN_DOMCTL_PFINFO_LTAB_MASK
        return [i for i, t in enumerate(codes)
                if t & mask in PFINFO_NO_PAGE]

    def _map_chunk(self, mapping: Mapping, first: int, count: int,
                   prot: int, classify: bool = False) -> None:
        absent = self._no_page(mapping.domid, first, count) \
            if classify else []
        if absent:
            self._map_runs(mapping, first, count, prot, absent)
        else:
            self._map_run(mapping, first, count, prot)

    def _map_run(self, mapping: Mapping, first: int, count: int,
                 prot: int) -> None:
        """Map PFNs first..first+count-1; those Xen refuses become holes."""
        pfns = _pfn_array(first, count)
        errs = (ctypes.c_int * count)()
        addr = mapping.base + first * PAGE_SIZE
        got = self.libs.xenforeignmemory_map2(
            self.fmem, mapping.domid, addr, prot, MAP_FIXED, count, pfns,
            errs)
        if not got:
            raise self._fail('xenforeignmemory_map2', 'domain %d PFNs '
                             '%#x..%#x' % (mapping.domid, first,
                                           first + count - 1))
        # (one C call for the error codes, not one ctypes access each)
        codes = memoryview(errs).cast('B').cast('i').tolist()
        bad = [i for i, e in enumerate(codes) if e]
        if not bad:
            mapping.chunks.append((addr, count))
            return
        self._map_runs(mapping, first, count, prot, bad)

    def _map_runs(self, mapping: Mapping, first: int, count: int,
                  prot: int, bad: List[int]) -> None:
        """PFN offsets *bad* of the range are holes: replace the range by
        anonymous memory in one MAP_FIXED mmap (drops a privcmd mapping
        there whole, never splits it, and leaves no gap another thread's
        mmap could take), then map the runs between the holes over it."""
        addr = mapping.base + first * PAGE_SIZE
        self._anon(addr, count, prot)
        bad_set = set(bad)
        i = 0
        while i < count:
            j = i
            hole = i in bad_set
            while j < count and (j in bad_set) == hole:
                j += 1
            if hole:
                mapping.holes.append((first + i, first + j))
            else:
                self._map_run(mapping, first + i, j - i, prot)
            i = j

    def _anon(self, addr: int, pages: int, prot: int) -> None:
        # MAP_NORESERVE: an HVM guest's gaps span GiBs; charged to dom0's
        # commit limit they make the next fork (Python 3.6's subprocess
        # forks) fail with ENOMEM
        got = self.libs.mmap(addr, pages * PAGE_SIZE, prot,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED |
                             MAP_NORESERVE, -1, 0)
        if got != addr:
            raise self._fail('mmap', 'anonymous pages at %#x' % addr)

    def populate_physmap(self, domid: int, pfns: List[int]) -> None:
        """Give *domid* a frame at each of *pfns* (order 0, as libxc's
        restore: xg_sr_restore.c populate_pfns ->
        xc_domain_populate_physmap_exact), then map them into every live
        mapping of the domain where they were holes, so a view taken
        before keeps writing to the guest, not to placeholder memory."""
        if not pfns:
            return
        arr = (xen_pfn_t * len(pfns))(*pfns)
        if self.libs.xc_domain_populate_physmap_exact(
                self.xch, domid, len(pfns), 0, 0, arr) < 0:
            raise self._fail('xc_domain_populate_physmap_exact',
                             'domain %d, %d PFNs from %#x'
                             % (domid, len(pfns), pfns[0]))
        with self._lock:
            live = [m for m in self._mappings.values()
                    if m.domid == domid and not m.released]
        for mapping in live:
            self._fill_holes(mapping, sorted(set(pfns)))

    def _fill_holes(self, mapping: Mapping, pfns: List[int]) -> None:
        """Map *pfns* (ascending) that are holes of *mapping* over the
        anonymous pages standing in for them."""
        holes: List[Tuple[int, int]] = []
        filled: List[Tuple[int, int]] = []
        for start, stop in mapping.holes:
            cur = start
            for first, last in _runs([p for p in pfns
                                      if start <= p < stop]):
                filled.append((first, last))
                if cur < first:
                    holes.append((cur, first))
                cur = last
            if cur < stop:
                holes.append((cur, stop))
        mapping.holes = holes       # _map_run adds back what Xen refuses
        for first, last in filled:
            self._map_run(mapping, first, last - first, mapping.prot)

    def _release(self, mapping: Mapping) -> None:
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
        return [pfn for start, stop in self.hole_runs(view)
                for pfn in range(start, stop)]

    def hole_runs(self, view: memoryview) -> List[Tuple[int, int]]:
        """:meth:`holes` as ascending [start, stop) runs."""
        obj = getattr(view.obj, 'owner', view.obj)    # readonly_memory
        base = ctypes.addressof(obj) if obj is not None else None
        mapping = self._mappings.get(base)
        return sorted(mapping.holes) if mapping else []


def _runs(pfns: List[int]) -> List[Tuple[int, int]]:
    """Ascending PFNs as [start, stop) runs."""
    out: List[Tuple[int, int]] = []
    for pfn in pfns:
        if out and out[-1][1] == pfn:
            out[-1] = (out[-1][0], pfn + 1)
        else:
            out.append((pfn, pfn + 1))
    return out


def _pfn_array(first: int, count: int) -> 'ctypes.Array':
    """xen_pfn_t[count] = first, first+1, ... (filled in C, not through
    ctypes' per-element path)."""
    return (xen_pfn_t * count).from_buffer(
        array.array('L', range(first, first + count)))


#: a getpageframeinfo3 entry that says "no page" (XTAB), as bytes
_XTAB_ENTRY = ctypes.c_ulong(XEN_DOMCTL_PFINFO_XTAB).value.to_bytes(
    ctypes.sizeof(xen_pfn_t), 'little')
