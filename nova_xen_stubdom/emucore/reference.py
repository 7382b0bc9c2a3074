"""Pure-Python reference of the C kernels, for tests only.

Slow and obviously correct: tests compare every accelerator of the C module
against these on random inputs.  Production code never imports this module
(there is no silent fallback; see ``_native``).
"""

from typing import List, Optional, Tuple

_CRC32C_POLY = 0x82F63B78


def _crc_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C, bit-reflected, pre/post inverted (as iSCSI, RFC 3720)."""
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = (c >> 8) ^ _TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def is_zero(data: bytes) -> bool:
    return not any(data)


def _uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def xbzrle_encode(
    old: bytes, new: bytes, limit: Optional[int] = None
) -> Optional[bytes]:
    """QEMU's XBZRLE: (zrun, nzrun, new bytes)*, trailing zrun omitted."""
    old, new = bytes(old), bytes(new)
    n = len(new)
    limit = n if limit is None else limit
    out = bytearray()
    i = 0
    while i < n:
        j = i
        while j < n and old[j] == new[j]:
            j += 1
        if j == n:
            break
        k = j
        while k < n and old[k] != new[k]:
            k += 1
        out += _uleb(j - i) + _uleb(k - j) + new[j:k]
        if len(out) > limit:
            return None
        i = k
    return bytes(out)


def _uleb_get(src: bytes, i: int) -> Tuple[int, int]:
    if i >= len(src):
        raise ValueError('truncated length at %d' % i)
    if not src[i] & 0x80:
        return src[i], 1
    if i + 1 >= len(src) or src[i + 1] & 0x80:
        raise ValueError('length longer than 2 bytes at %d' % i)
    return (src[i] & 0x7F) | (src[i + 1] << 7), 2


def xbzrle_decode(delta: bytes, old: bytes) -> bytes:
    """Apply delta to old; ValueError on anything QEMU's decoder refuses."""
    page = bytearray(old)
    src = bytes(delta)
    i = d = 0
    while i < len(src):
        z, n = _uleb_get(src, i)
        if i and not z:
            raise ValueError('empty zero run mid-page at %d' % i)
        i += n
        d += z
        if d > len(page):
            raise ValueError('zero run past the page at %d' % i)
        nz, n = _uleb_get(src, i)
        if not nz:
            raise ValueError('empty non-zero run at %d' % i)
        i += n
        if d + nz > len(page) or i + nz > len(src):
            raise ValueError('non-zero run past the page or input at %d' % i)
        page[d: d + nz] = src[i: i + nz]
        d += nz
        i += nz
    return bytes(page)


def bitmap_pfns(
    bm: bytes, npages: int, start: int = 0, max_count: int = 1024
) -> Tuple[List[int], int]:
    out = []
    p = start
    while p < npages:
        if bm[p // 8] >> (p % 8) & 1:
            out.append(p)
            if len(out) == max_count:
                return out, p + 1
        p += 1
    return out, npages


def bitmap_count(bm: bytes, npages: int) -> int:
    return sum(bm[p // 8] >> (p % 8) & 1 for p in range(npages))
