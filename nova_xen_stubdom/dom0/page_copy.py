"""Guest memory into a v2 stream: which pages go, in which batches.

The stream itself (PAGE_DATA, zero-page runs, XBZRLE deltas, CRC32C, HMAC
tags) is emucore's: :class:`PageSender` only chooses the PFNs of each round
and hands them to :meth:`emucore.StreamWriter.write_pages` one batch at a
time, so that the live sender can tag, check for abort and read the
receiver's acknowledgements between batches.  The receiving side is
:meth:`emucore.StreamReader.restore`.
"""
import array
import bisect
from typing import Any, Callable, Optional, Sequence

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

    def send_all(self, skip: Sequence[int] = ()) -> None:
        """First pass: every page but the ascending PFNs *skip*, in
        batches (contiguous where nothing is skipped).

        *skip* are PFNs the hypervisor has no page for (an HVM guest's
        MMIO hole up to its special pages below 4 GiB: a 32 MiB guest
        spans ~1 M PFNs); like libxc's save (XTAB PFNs), they are not sent,
        and the restore leaves them as the new domain has them.
        """
        for start in range(0, self.max_pfn, BATCH_PAGES):
            end = min(start + BATCH_PAGES, self.max_pfn)
            lo = bisect.bisect_left(skip, start)
            hi = bisect.bisect_left(skip, end, lo)
            if hi - lo == end - start:
                continue            # nothing here
            if hi > lo:
                holes = set(skip[lo:hi])
                pfns = array.array('Q', (p for p in range(start, end)
                                         if p not in holes))
            else:
                pfns = range(start, end)
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
