"""Guest memory in and out of a v2 stream: batching, zero pages, XBZRLE.

:class:`PageSender` reads pages from the mapped guest memory of the source
and writes them as PAGE_DATA / XSD_PAGE_ZERO / XSD_PAGE_XBZRLE records;
:class:`PageApplier` writes them into the destination's memory.
"""
import dataclasses
from typing import Callable, Dict, Optional

import numpy as np

from nova_xen_stubdom.agent import migration_stream as ms

PAGE_SIZE = ms.PAGE_SIZE
WORDS = PAGE_SIZE // 8
#: pages per PAGE_DATA record (4 MiB): big enough to amortise the per-record
#: cost, small enough that a receiver buffers little before a tag verifies
BATCH_PAGES = 1024
#: an XBZRLE delta is used only when it is smaller than this
XBZRLE_LIMIT = PAGE_SIZE * 3 // 4


def as_pages(view, max_pfn: int) -> np.ndarray:
    """The mapped guest memory as a (max_pfn, PAGE_SIZE) uint8 array."""
    return np.frombuffer(view, dtype=np.uint8,
                         count=max_pfn * PAGE_SIZE).reshape(max_pfn, PAGE_SIZE)


def bitmap_to_pfns(bitmap, max_pfn: int) -> np.ndarray:
    """Set bits of a log-dirty bitmap (bit n = PFN n, LSB first) as PFNs."""
    bits = np.unpackbits(np.frombuffer(bytes(bitmap), dtype=np.uint8),
                         bitorder='little')
    pfns = np.flatnonzero(bits[:max_pfn])
    return pfns


@dataclasses.dataclass
class PageCounters:
    #: pages sent as full PAGE_DATA
    full: int = 0
    #: pages sent as zero-page runs
    zero: int = 0
    #: pages sent as XBZRLE deltas
    xbzrle: int = 0
    #: bytes of XBZRLE deltas
    xbzrle_bytes: int = 0
    #: lower bound: 4 KiB for every non-zero page in the first pass plus
    #: every page sent again after being re-dirtied
    bound_bytes: int = 0

    @property
    def pages(self) -> int:
        return self.full + self.zero + self.xbzrle


class XbzrleCache:
    """Last-sent copies of pages that were re-dirtied (FIFO, bounded)."""

    def __init__(self, max_pages: int) -> None:
        self.max_pages = max_pages
        self._slab = np.zeros((max(max_pages, 1), PAGE_SIZE), dtype=np.uint8)
        self._slot: Dict[int, int] = {}
        self._owner = np.full(max(max_pages, 1), -1, dtype=np.int64)
        self._next = 0

    def get(self, pfn: int) -> Optional[np.ndarray]:
        slot = self._slot.get(pfn)
        return None if slot is None else self._slab[slot]

    def forget(self, pfn: int) -> None:
        """*pfn* was sent some other way: its cached copy is stale."""
        slot = self._slot.pop(pfn, None)
        if slot is not None:
            self._owner[slot] = -1

    def put(self, pfn: int, page: np.ndarray) -> None:
        if not self.max_pages:
            return
        slot = self._slot.get(pfn)
        if slot is None:
            slot = self._next
            self._next = (self._next + 1) % self.max_pages
            old = int(self._owner[slot])
            if old >= 0:
                del self._slot[old]
            self._owner[slot] = pfn
            self._slot[pfn] = slot
        self._slab[slot] = page


class PageSender:
    """Sends sets of PFNs of one guest through a :class:`StreamWriter`.

    *after_batch* runs after every record batch (the live sender uses it to
    tag the stream, check for abort and for messages from the receiver).
    """

    def __init__(self, mem: np.ndarray, writer: ms.StreamWriter,
                 xbzrle_cache_pages: int = 0,
                 after_batch: Optional[Callable[[int], None]] = None) -> None:
        self.mem = mem
        self.max_pfn = mem.shape[0]
        self.writer = writer
        self.counters = PageCounters()
        self._cache = XbzrleCache(xbzrle_cache_pages) \
            if xbzrle_cache_pages else None
        self._after = after_batch or (lambda pages: None)
        #: PFNs already sent once (re-sends count towards the bound fully)
        self._sent = np.zeros(self.max_pfn, dtype=bool)

    def send_all(self) -> None:
        """First pass: every page, in contiguous batches (no copies)."""
        for start in range(0, self.max_pfn, BATCH_PAGES):
            end = min(start + BATCH_PAGES, self.max_pfn)
            self._send_batch(np.arange(start, end), contiguous=True)

    def send(self, pfns: np.ndarray, xbzrle: bool = True) -> None:
        """Send *pfns*; *xbzrle* False sends full pages (the stop-and-copy
        round, where encoding time is downtime and bytes are not)."""
        for i in range(0, pfns.size, BATCH_PAGES):
            self._send_batch(pfns[i:i + BATCH_PAGES], contiguous=False,
                             xbzrle=xbzrle)

    def _send_batch(self, pfns: np.ndarray, contiguous: bool,
                    xbzrle: bool = False) -> None:
        if contiguous:
            pages = self.mem[int(pfns[0]):int(pfns[-1]) + 1]
        else:
            pages = self.mem[pfns]          # a private copy of the batch
        nonzero = pages.view(np.uint64).reshape(-1, WORDS).any(axis=1)
        c = self.counters
        resent = self._sent[pfns]
        # A zero page sent for the first time costs nothing in the bound; a
        # page sent again costs its full size (that is what was re-dirtied).
        c.bound_bytes += PAGE_SIZE * int((nonzero | resent).sum())
        self._sent[pfns] = True
        zero_pfns = pfns[~nonzero]
        if zero_pfns.size:
            self.writer.zero_pages(zero_pfns)
            c.zero += zero_pfns.size
            if self._cache is not None and not contiguous:
                for p in zero_pfns.tolist():
                    self._cache.forget(p)
        if nonzero.all():
            data_pfns, data = pfns, pages
        else:
            idx = np.flatnonzero(nonzero)
            data_pfns, data = pfns[idx], pages[idx]
        if data_pfns.size and self._cache is not None and xbzrle:
            data_pfns, data = self._xbzrle(data_pfns, data)
        if data_pfns.size:
            self.writer.page_data(data_pfns, np.ascontiguousarray(data).data)
            c.full += data_pfns.size
            if self._cache is not None and xbzrle:
                for p, page in zip(data_pfns.tolist(), data):
                    self._cache.put(p, page)
            elif self._cache is not None and not contiguous:
                for p in data_pfns.tolist():
                    self._cache.forget(p)
        self._after(pfns.size)

    def _xbzrle(self, pfns: np.ndarray, pages: np.ndarray):
        """Send what delta-encodes well; return the rest for PAGE_DATA."""
        cache = self._cache
        enc_pfns, deltas, keep = [], [], []
        for i, pfn in enumerate(pfns.tolist()):
            old = cache.get(pfn)
            delta = None
            if old is not None:
                delta = ms.xbzrle_encode(old.data, pages[i].data,
                                         XBZRLE_LIMIT)
            if delta is None:
                keep.append(i)
                continue
            enc_pfns.append(pfn)
            deltas.append(delta)
            cache.put(pfn, pages[i])
        if enc_pfns:
            self.writer.xbzrle_pages(enc_pfns, deltas)
            self.counters.xbzrle += len(enc_pfns)
            self.counters.xbzrle_bytes += sum(len(d) for d in deltas)
        if len(keep) == pfns.size:
            return pfns, pages
        return pfns[keep], pages[keep]


class PageApplier:
    """Writes page records into a (max_pfn, PAGE_SIZE) writable array."""

    def __init__(self, mem: np.ndarray) -> None:
        self.mem = mem
        self.max_pfn = mem.shape[0]
        self.pages = 0

    def apply(self, rec: ms.Record) -> bool:
        """Apply a page record; False if *rec* is not a page record."""
        if rec.type == ms.REC_TYPE_PAGE_DATA:
            pfns, data = ms.decode_page_data(rec.body, self.max_pfn)
            self.mem[pfns.astype(np.int64)] = np.frombuffer(
                data, dtype=np.uint8).reshape(-1, PAGE_SIZE)
            self.pages += pfns.size
        elif rec.type == ms.XSD_PAGE_ZERO:
            for first, n in ms.decode_zero_pages(rec.body, self.max_pfn):
                self.mem[first:first + n] = 0
                self.pages += n
        elif rec.type == ms.XSD_PAGE_XBZRLE:
            pfns, deltas = ms.decode_xbzrle(rec.body, self.max_pfn)
            for pfn, delta in zip(pfns.tolist(), deltas):
                ms.xbzrle_decode(delta, self.mem[pfn].data)
            self.pages += pfns.size
        else:
            return False
        return True


def check_record(rec: ms.Record, max_pfn: int) -> bool:
    """Validate a page record without applying it; False if not one."""
    if rec.type == ms.REC_TYPE_PAGE_DATA:
        ms.decode_page_data(rec.body, max_pfn)
    elif rec.type == ms.XSD_PAGE_ZERO:
        ms.decode_zero_pages(rec.body, max_pfn)
    elif rec.type == ms.XSD_PAGE_XBZRLE:
        scratch = np.zeros(PAGE_SIZE, dtype=np.uint8)
        for delta in ms.decode_xbzrle(rec.body, max_pfn)[1]:
            ms.xbzrle_decode(delta, scratch.data)
    else:
        return False
    return True
