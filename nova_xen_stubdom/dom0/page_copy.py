"""Guest memory into a v2 stream: which pages go, in which batches.

The stream itself (PAGE_DATA, zero-page runs, XBZRLE deltas, CRC32C, HMAC
tags) is emucore's: :class:`PageSender` only chooses the PFNs of each round
and hands them to :meth:`emucore.StreamWriter.write_pages` one batch at a
time, so that the live sender can tag, check for abort and read the
receiver's acknowledgements between batches.  The receiving side is
:meth:`emucore.StreamReader.restore`.
"""
import array
from typing import Any, Callable, List, Optional, Sequence, Tuple

from nova_xen_stubdom import emucore

from nova_xen_stubdom.dom0 import records

PAGE_SIZE = emucore.format.PAGE_SIZE
#: pages per PAGE_DATA record (4 MiB): big enough to amortise the per-record
#: cost, small enough that a receiver buffers little before a tag verifies
BATCH_PAGES = emucore.format.MAX_BATCH


def bitmap_to_pfns(bitmap: Any, max_pfn: int) -> array.array:
    """Set bits of a log-dirty bitmap (bit n = PFN n, LSB first) as PFNs."""
    out = array.array('Q')
    npages = min(max_pfn, len(memoryview(bitmap).cast('B')) * 8)
    for batch in emucore.bitmap.iter_batches(bitmap, 1 << 16, npages):
        out.extend(batch)
    return out


def union(a: array.array, b: Optional[array.array]) -> array.array:
    """Sorted PFNs in *a* or *b* (both ascending)."""
    if not b:
        return a
    return array.array('Q', sorted(set(a).union(b)))


def _without(start: int, end: int, runs: List[Tuple[int, int]],
             k: int) -> Any:
    """PFNs start..end-1 outside runs[k:] (ascending, disjoint): the range
    itself when none overlaps."""
    if k >= len(runs) or runs[k][0] >= end:
        return range(start, end)
    out = array.array('Q')
    pos = start
    while k < len(runs) and runs[k][0] < end:
        a, b = runs[k]
        if a > pos:
            out.extend(range(pos, a))
        pos = max(pos, b)
        if b > end:
            break
        k += 1
    if pos < end:
        out.extend(range(pos, end))
    return out


@records.record
class PageCounters:
    #: pages sent as full PAGE_DATA
    full: int = 0
    #: pages sent as zero-page runs
    zero: int = 0
    #: pages sent as XBZRLE deltas (including "unchanged since last sent")
    xbzrle: int = 0
    #: lower bound: 4 KiB for every non-zero page in the first pass plus
    #: every page sent again after being re-dirtied
    bound_bytes: int = 0

    @property
    def pages(self) -> int:
        return self.full + self.zero + self.xbzrle


class PageSender:
    """Sends sets of PFNs of one guest through an emucore StreamWriter.

    *mem* is the mapped guest memory (any buffer, page p at p * 4096);
    *after_batch(pages)* runs after every batch (the live sender uses it to
    tag the stream, check for abort and for messages from the receiver).
    """

    def __init__(self, mem: Any, max_pfn: int,
                 writer: emucore.StreamWriter,
                 after_batch: Optional[Callable[[int], None]] = None) -> None:
        self.mem = mem
        self.max_pfn = max_pfn
        self.writer = writer
        self._after = after_batch or (lambda pages: None)
        self._bound = 0

    @property
    def counters(self) -> PageCounters:
        st = self.writer.stats
        return PageCounters(full=st['raw_pages'], zero=st['zero_pages'],
                            xbzrle=st['xbzrle_pages'] + st['unchanged_pages'],
                            bound_bytes=self._bound)

    def send_all(self, skip: Sequence[Tuple[int, int]] = ()) -> None:
        """First pass: every page but those in the ascending, disjoint
        [start, stop) PFN runs *skip*, in batches (contiguous where
        nothing is skipped).

        *skip* are PFNs the hypervisor has no page for (an HVM guest's
        MMIO hole up to its special pages below 4 GiB: a 32 MiB guest
        spans ~1 M PFNs); like libxc's save (XTAB PFNs), they are not sent,
        and the restore leaves them as the new domain has them.
        """
        runs = list(skip)
        k = 0
        for start in range(0, self.max_pfn, BATCH_PAGES):
            end = min(start + BATCH_PAGES, self.max_pfn)
            while k < len(runs) and runs[k][1] <= start:
                k += 1
            pfns = _without(start, end, runs, k)
            if not len(pfns):
                continue            # nothing here
            zero_before = self.writer.stats['zero_pages']
            self.writer.write_pages(self.mem, pfns)
            # A zero page sent the first time costs nothing in the bound.
            zero = self.writer.stats['zero_pages'] - zero_before
            self._bound += PAGE_SIZE * (len(pfns) - zero)
            self._after(len(pfns))

    def send(self, pfns: array.array) -> None:
        """Send *pfns* (ascending) again: each costs its full size in the
        bound, whatever the encoding made of it."""
        view = memoryview(pfns)
        for i in range(0, len(pfns), BATCH_PAGES):
            batch = view[i:i + BATCH_PAGES]
            self.writer.write_pages(self.mem, batch)
            self._bound += PAGE_SIZE * len(batch)
            self._after(len(batch))
