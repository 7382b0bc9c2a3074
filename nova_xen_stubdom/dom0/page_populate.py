"""Give a restored domain a frame for every page the stream carries.

A fresh domain does not have every PFN the saved guest had: its firmware
(hvmloader) populated pages above RAM -- ACPI tables, its own allocations
-- that ``xl create -p`` never made (tests/realxen s3 saw 28 populated
PFNs above RAM in the saved guest, 16 in the fresh one).  Writing those
pages through a foreign mapping lands in placeholder memory and is lost.
libxc's restore populates each PFN of a page batch the domain lacks before
it writes it (tools/libs/guest/xg_sr_restore.c process_page_data ->
populate_pfns, pfn_is_populated; PFNs of type XTAB or BROKEN carry no page
and are not populated: xg_sr_common.h page_type_to_populate).  This does
the same for our readers, through :meth:`HypervisorBackend.populate_physmap`.
"""
import array
import bisect
import struct
from typing import Any, List, Tuple

from nova_xen_stubdom.emucore import format as fmt

#: XEN_DOMCTL_PFINFO_XTAB (0xf) and _BROKEN (0xd) as PAGE_DATA type nibbles
_NO_FRAME_TYPES = (0xf, 0xd)
_HEAD = struct.Struct('<II')
_RUN = struct.Struct(fmt.ZERO_RUN_ENTRY_FORMAT)


class PopulateError(Exception):
    """The destination could not be given a frame for a page the stream
    carries: restoring on would silently lose that page."""


def record_pfns(rtype: int, body: Any) -> List[int]:
    """The PFNs a verified page record writes (PAGE_DATA, NX_ZERO_RUNS,
    NX_XBZRLE_PAGES; layouts in doc/source/emucore.rst)."""
    mv = memoryview(body).cast('B')
    count = _HEAD.unpack_from(mv)[0]
    if rtype == fmt.REC_TYPE_NX_ZERO_RUNS:
        out: List[int] = []
        for i in range(count):
            start, pages = _RUN.unpack_from(mv, 8 + 16 * i)
            out.extend(range(start, start + pages))
        return out
    words = array.array('Q', bytes(mv[8:8 + 8 * count]))
    if rtype == fmt.REC_TYPE_NX_XBZRLE_PAGES:
        return words.tolist()
    mask = fmt.PAGE_DATA_PFN_MASK
    shift = fmt.PAGE_DATA_TYPE_SHIFT
    return [w & mask for w in words if (w >> shift) not in _NO_FRAME_TYPES]


class Populator:
    """``before_pages`` hook of emucore's restore: populates the PFNs of
    each page record that lie in the destination's holes, once each."""

    def __init__(self, backend: Any, domid: int,
                 holes: List[Tuple[int, int]]) -> None:
        self.backend = backend
        self.domid = domid
        self._holes = sorted(holes)
        self._starts = [start for start, _ in self._holes]
        self._done = set()
        #: PFNs this restore gave a frame (reported, and checked by tests)
        self.populated = 0

    def _in_hole(self, pfn: int) -> bool:
        i = bisect.bisect_right(self._starts, pfn) - 1
        return i >= 0 and pfn < self._holes[i][1]

    def __call__(self, rec: Any) -> None:
        if not self._holes:
            return
        want = sorted({p for p in record_pfns(rec.rtype, rec.body)
                       if p not in self._done and self._in_hole(p)})
        if not want:
            return
        try:
            self.backend.populate_physmap(self.domid, want)
        except OSError:
            self._one_by_one(want)      # names the PFN Xen refused
        self._done.update(want)
        self.populated += len(want)

    def _one_by_one(self, pfns: List[int]) -> None:
        for pfn in pfns:
            try:
                self.backend.populate_physmap(self.domid, [pfn])
            except OSError as e:
                raise PopulateError(
                    'domain %d: no frame for PFN %#x, a page the stream '
                    'carries: %s' % (self.domid, pfn, e))
