"""Dirty-bitmap helpers over any buffer (bit i of byte i//8 is pfn i).

That is the layout of Xen's log-dirty bitmap (unsigned longs on a
little-endian host).  A 1 TiB guest (2^28 pages) is a 32 MiB bitmap; the
walk returns PFNs in batches ready for ``StreamWriter.write_pages``.
"""

import array
from typing import Any, Iterator, Optional

from nova_xen_stubdom.emucore import _native

_ec = _native.load()

MAX_PAGES = 1 << 28


def bitmap_bytes(npages: int) -> int:
    """Bytes of a bitmap for npages pages (rounded up to 8 for word access)."""
    return ((npages + 63) // 64) * 8


def new_bitmap(npages: int) -> bytearray:
    """A cleared bitmap for npages pages."""
    return bytearray(bitmap_bytes(npages))


def count(bitmap: Any, npages: Optional[int] = None) -> int:
    """Number of dirty pages among the first npages (all bits by default)."""
    return _ec.bitmap_count(bitmap, -1 if npages is None else npages)


def clear(bitmap: Any, npages: Optional[int] = None) -> None:
    """Clear the first npages bits (all by default)."""
    _ec.bitmap_clear(bitmap, -1 if npages is None else npages)


def merge(dst: Any, src: Any, npages: Optional[int] = None) -> None:
    """dst |= src over the first npages bits (default: the shorter)."""
    _ec.bitmap_merge(dst, src, -1 if npages is None else npages)


def pfns(
    bitmap: Any,
    start: int = 0,
    max_count: int = 1024,
    npages: Optional[int] = None,
) -> 'tuple[array.array, int]':
    """(array('Q') of up to max_count dirty pfns from start, next start)."""
    raw, nxt = _ec.bitmap_pfns(
        bitmap, start, max_count, -1 if npages is None else npages
    )
    out = array.array('Q')
    out.frombytes(raw)
    return out, nxt


def iter_batches(
    bitmap: Any, batch: int = 1024, npages: Optional[int] = None
) -> Iterator[array.array]:
    """Yield array('Q') batches of the dirty pfns, in ascending order."""
    start = 0
    limit = len(memoryview(bitmap).cast('B')) * 8 if npages is None else npages
    while start < limit:
        out, start = pfns(bitmap, start, batch, npages)
        if len(out):
            yield out
