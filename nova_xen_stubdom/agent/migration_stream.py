"""Xen migration stream v2 as written and read by the save/restore engine.

Framing follows Xen's ``docs/specs/libxl-migration-stream.pandoc`` and
``libxc-migration-stream.pandoc``: a libxl header ("LibxlFmt", v2), a
LIBXC_CONTEXT record followed inline by the libxc stream ("XENF", v3, x86 HVM
domain header, STATIC_DATA_END, PAGE_DATA, HVM_CONTEXT, HVM_PARAMS, END), then
EMULATOR_XENSTORE_DATA, EMULATOR_CONTEXT (QEMU's device state) and END.

What this project adds travels in *optional* records (type bit 31), which a
Xen reader skips:

* ``XSD_DOMAIN_INFO`` -- JSON: VM uuid, max_pfn, vCPUs (foreign-image and
  destination-capacity checks before any page is written);
* ``XSD_PAGE_ZERO`` -- runs of PFNs whose pages are all zeroes (first PFN,
  count; no page bytes sent);
* ``XSD_PAGE_XBZRLE`` -- pages as XBZRLE deltas (QEMU's encoding) against the
  copy the receiver already holds;
* ``XSD_AUTH_TAG`` -- HMAC-SHA256 over every stream byte since the start,
  keyed with the per-image / per-migration key; a reader applies nothing
  that a following tag has not covered;
* ``XSD_ROUND_END`` -- pre-copy round boundary (progress reporting only).

Errors: :class:`StreamError` for framing (truncation, bad magic, lengths),
:class:`RecordError` for content (bad PFN, bad XBZRLE), :class:`AuthError`
when a tag does not verify.
"""
import hashlib
import hmac
import json
import struct
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# -- libxl level -------------------------------------------------------------
LIBXL_IDENT = 0x4c6962786c466d74          # "LibxlFmt"
LIBXL_VERSION = 2
LHDR_FORMAT = '!QII'                      # ident, version, options (BE)
LREC_END = 0x00000000
LREC_LIBXC_CONTEXT = 0x00000001
LREC_EMULATOR_XENSTORE_DATA = 0x00000002
LREC_EMULATOR_CONTEXT = 0x00000003
EMULATOR_HEADER_FORMAT = '<II'            # emulator id, index
EMULATOR_QEMU_UPSTREAM = 2

# -- libxc level -------------------------------------------------------------
IHDR_MARKER = 0xffffffffffffffff
IHDR_ID = 0x58454E46                      # "XENF"
IHDR_VERSION = 3
IHDR_FORMAT = '!QIIHHI'                   # marker, id, version, opts, res
DHDR_TYPE_X86_HVM = 0x0002
DHDR_FORMAT = '<IHHII'                    # type, page_shift, res, xen ver
RH_FORMAT = '<II'                         # type, body length (before padding)

REC_TYPE_END = 0x00000000
REC_TYPE_PAGE_DATA = 0x00000001
REC_TYPE_X86_TSC_INFO = 0x00000008
REC_TYPE_HVM_CONTEXT = 0x00000009
REC_TYPE_HVM_PARAMS = 0x0000000a
REC_TYPE_STATIC_DATA_END = 0x00000010
REC_TYPE_OPTIONAL = 0x80000000

PAGE_DATA_FORMAT = '<II'                  # count, reserved
PAGE_DATA_PFN_MASK = (1 << 52) - 1
HVM_PARAMS_FORMAT = '<II'                 # count, reserved
X86_TSC_INFO_FORMAT = '<IIQII'            # mode, khz, nsec, incarnation, res

# Optional records of this project ("X" = 0x58 in the second byte keeps them
# clear of anything Xen may number).
XSD_DOMAIN_INFO = REC_TYPE_OPTIONAL | 0x5801
XSD_PAGE_ZERO = REC_TYPE_OPTIONAL | 0x5802
XSD_PAGE_XBZRLE = REC_TYPE_OPTIONAL | 0x5803
XSD_AUTH_TAG = REC_TYPE_OPTIONAL | 0x5804
XSD_ROUND_END = REC_TYPE_OPTIONAL | 0x5805
AUTH_TAG_FORMAT = '<Q32s'                 # sequence number, HMAC-SHA256

REC_NAMES = {
    REC_TYPE_END: 'END', REC_TYPE_PAGE_DATA: 'PAGE_DATA',
    REC_TYPE_X86_TSC_INFO: 'X86_TSC_INFO', REC_TYPE_HVM_CONTEXT: 'HVM_CONTEXT',
    REC_TYPE_HVM_PARAMS: 'HVM_PARAMS',
    REC_TYPE_STATIC_DATA_END: 'STATIC_DATA_END',
    XSD_DOMAIN_INFO: 'XSD_DOMAIN_INFO', XSD_PAGE_ZERO: 'XSD_PAGE_ZERO',
    XSD_PAGE_XBZRLE: 'XSD_PAGE_XBZRLE', XSD_AUTH_TAG: 'XSD_AUTH_TAG',
    XSD_ROUND_END: 'XSD_ROUND_END',
}
LREC_NAMES = {
    LREC_END: 'END', LREC_LIBXC_CONTEXT: 'LIBXC_CONTEXT',
    LREC_EMULATOR_XENSTORE_DATA: 'EMULATOR_XENSTORE_DATA',
    LREC_EMULATOR_CONTEXT: 'EMULATOR_CONTEXT',
}
#: a record body larger than this is refused before it is buffered
MAX_RECORD_BYTES = 64 << 20
ZERO_PAGE = bytes(PAGE_SIZE)


class StreamError(Exception):
    """The stream's framing is broken (truncated, bad magic, bad length)."""


class RecordError(StreamError):
    """A record's content is invalid."""


class AuthError(StreamError):
    """The stream is not authentic: a tag is missing or does not verify."""


def _pad(n: int) -> int:
    return (8 - n % 8) % 8


# -- XBZRLE (QEMU's encoding: <zero-run uleb128><data-run uleb128><bytes>)...
def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def xbzrle_encode(old: bytes, new: bytes, limit: int) -> Optional[bytes]:
    """Delta of *new* against *old*; None when longer than *limit* bytes."""
    a = np.frombuffer(old, dtype=np.uint8)
    b = np.frombuffer(new, dtype=np.uint8)
    diff = np.flatnonzero(a != b)
    if diff.size == 0:
        return b''
    # run boundaries of consecutive differing bytes
    breaks = np.flatnonzero(np.diff(diff) != 1)
    starts = np.concatenate(([diff[0]], diff[breaks + 1]))
    ends = np.concatenate((diff[breaks], [diff[-1]])) + 1
    if int((ends - starts).sum()) + 2 * starts.size > limit:
        return None
    out = bytearray()
    pos = 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        out += _uleb(s - pos)
        out += _uleb(e - s)
        out += new[s:e]
        pos = e
        if len(out) > limit:
            return None
    return bytes(out)


def xbzrle_decode(delta: bytes, page: memoryview) -> None:
    """Apply *delta* to *page* (a writable PAGE_SIZE view) in place."""
    pos = i = 0
    n = len(delta)

    def uleb() -> int:
        nonlocal i
        val = shift = 0
        while True:
            if i >= n:
                raise RecordError('XBZRLE delta truncated inside a length')
            byte = delta[i]
            i += 1
            val |= (byte & 0x7f) << shift
            if not byte & 0x80:
                return val
            shift += 7
            if shift > 21:
                raise RecordError('XBZRLE length too long')

    while i < n:
        pos += uleb()
        run = uleb()
        if run == 0 or pos + run > PAGE_SIZE or i + run > n:
            raise RecordError('XBZRLE run out of bounds (offset %d, length %d)'
                              % (pos, run))
        page[pos:pos + run] = delta[i:i + run]
        i += run
        pos += run


try:
    # The native data plane's kernels (same encoding, ~25x faster).
    from nova_xen_stubdom import emucore as _emucore
    xbzrle_encode = _emucore.xbzrle_encode   # noqa: F811
    xbzrle_decode = _emucore.xbzrle_decode   # noqa: F811
except ImportError:      # C extension not built: the Python versions above
    _emucore = None


class StreamWriter:
    """Writes one v2 stream to *sink* (a ``write(bytes)`` callable).

    Every byte goes through a running HMAC-SHA256 when *key* is given;
    :meth:`tag` writes an ``XSD_AUTH_TAG`` covering everything so far.
    """

    def __init__(self, sink: Callable[[bytes], object],
                 key: Optional[bytes] = None, compat: bool = False) -> None:
        if compat and key:
            raise ValueError('a compatible stream carries no optional '
                             'records, so no authentication tags')
        self._sink = sink
        #: only records of Xen's spec: what Xen's own tools accept
        #: (verify-stream-v2 refuses optional records it does not know)
        self.compat = compat
        self._mac = hmac.new(key, digestmod=hashlib.sha256) if key else None
        self._seq = 0
        self.bytes_written = 0

    def _out(self, data) -> None:
        if self._mac is not None:
            self._mac.update(data)
        self._sink(data)
        self.bytes_written += data.nbytes if isinstance(data, memoryview) \
            else len(data)

    def record(self, rtype: int, *parts) -> None:
        parts = [p if isinstance(p, (bytes, bytearray))
                 else memoryview(p).cast('B') for p in parts]
        length = sum(len(p) for p in parts)
        self._out(struct.pack(RH_FORMAT, rtype, length))
        for p in parts:
            if len(p):
                self._out(p)
        pad = _pad(length)
        if pad:
            self._out(bytes(pad))

    # -- headers --------------------------------------------------------------
    def libxl_header(self) -> None:
        self._out(struct.pack(LHDR_FORMAT, LIBXL_IDENT, LIBXL_VERSION, 0))
        self.record(LREC_LIBXC_CONTEXT)

    def libxc_header(self, xen_version: Tuple[int, int] = (4, 17)) -> None:
        self._out(struct.pack(IHDR_FORMAT, IHDR_MARKER, IHDR_ID, IHDR_VERSION,
                              0, 0, 0))
        self._out(struct.pack(DHDR_FORMAT, DHDR_TYPE_X86_HVM, PAGE_SHIFT, 0,
                              xen_version[0], xen_version[1]))

    def domain_info(self, info: dict) -> None:
        if self.compat:
            return
        self.record(XSD_DOMAIN_INFO, json.dumps(info, sort_keys=True).encode())

    def static_data_end(self) -> None:
        self.record(REC_TYPE_STATIC_DATA_END)

    def tsc_info(self) -> None:
        self.record(REC_TYPE_X86_TSC_INFO,
                    struct.pack(X86_TSC_INFO_FORMAT, 0, 0, 0, 0, 0))

    # -- pages ----------------------------------------------------------------
    def page_data(self, pfns: np.ndarray, pages) -> None:
        """PAGE_DATA: *pfns* (uint64 array), *pages* (4 KiB per PFN)."""
        self.record(REC_TYPE_PAGE_DATA,
                    struct.pack(PAGE_DATA_FORMAT, len(pfns), 0),
                    np.ascontiguousarray(pfns, dtype='<u8').tobytes(), pages)

    def zero_pages(self, pfns: np.ndarray) -> None:
        """XSD_PAGE_ZERO for sorted *pfns*, as (first PFN, count) runs."""
        pfns = np.asarray(pfns, dtype=np.int64)
        if not pfns.size:
            return
        if self.compat:
            # the spec has no zero-page record: send them as data
            for i in range(0, pfns.size, 1024):
                chunk = pfns[i:i + 1024]
                self.page_data(chunk, bytes(PAGE_SIZE * chunk.size))
            return
        breaks = np.flatnonzero(np.diff(pfns) != 1)
        firsts = np.concatenate((pfns[:1], pfns[breaks + 1]))
        lasts = np.concatenate((pfns[breaks], pfns[-1:]))
        runs = np.empty(2 * firsts.size, dtype='<u8')
        runs[0::2] = firsts
        runs[1::2] = lasts - firsts + 1
        self.record(XSD_PAGE_ZERO,
                    struct.pack(PAGE_DATA_FORMAT, firsts.size, 0),
                    runs.tobytes())

    def xbzrle_pages(self, pfns: List[int], deltas: List[bytes]) -> None:
        if self.compat:
            raise ValueError('XBZRLE records are not in Xen\'s spec')
        lens = np.array([len(d) for d in deltas], dtype='<u4')
        lens_b = lens.tobytes() + bytes(_pad(lens.nbytes))
        self.record(XSD_PAGE_XBZRLE,
                    struct.pack(PAGE_DATA_FORMAT, len(pfns), 0),
                    np.array(pfns, dtype='<u8').tobytes(), lens_b,
                    b''.join(deltas))

    def round_end(self, round_no: int, pages: int) -> None:
        if self.compat:
            return
        self.record(XSD_ROUND_END, struct.pack('<II', round_no, pages))

    # -- CPU / device state ---------------------------------------------------
    def hvm_context(self, blob: bytes) -> None:
        self.record(REC_TYPE_HVM_CONTEXT, blob)

    def hvm_params(self, params: Dict[int, int]) -> None:
        items = sorted(params.items())
        body = struct.pack(HVM_PARAMS_FORMAT, len(items), 0) + b''.join(
            struct.pack('<QQ', k, v) for k, v in items)
        self.record(REC_TYPE_HVM_PARAMS, body)

    def libxc_end(self) -> None:
        self.record(REC_TYPE_END)

    def emulator_xenstore(self, data: Dict[str, str]) -> None:
        body = b''.join(k.encode() + b'\0' + v.encode() + b'\0'
                        for k, v in sorted(data.items()))
        self.record(LREC_EMULATOR_XENSTORE_DATA,
                    struct.pack(EMULATOR_HEADER_FORMAT, EMULATOR_QEMU_UPSTREAM,
                                0), body)

    def emulator_context(self, state: bytes) -> None:
        self.record(LREC_EMULATOR_CONTEXT,
                    struct.pack(EMULATOR_HEADER_FORMAT, EMULATOR_QEMU_UPSTREAM,
                                0), state)

    def libxl_end(self) -> None:
        self.record(LREC_END)

    def tag(self) -> None:
        """Authenticate everything written so far (no-op without a key).

        The MAC covers the tag record's own header but not its body.
        """
        if self._mac is None:
            return
        self._seq += 1
        body_len = struct.calcsize(AUTH_TAG_FORMAT)
        self._out(struct.pack(RH_FORMAT, XSD_AUTH_TAG, body_len))
        body = struct.pack(AUTH_TAG_FORMAT, self._seq,
                           self._mac.copy().digest())
        self._sink(body)
        self.bytes_written += len(body)


class Record:
    __slots__ = ('level', 'type', 'body')

    def __init__(self, level: str, rtype: int, body: memoryview) -> None:
        self.level = level          # 'libxl' or 'libxc'
        self.type = rtype
        self.body = body

    @property
    def name(self) -> str:
        names = LREC_NAMES if self.level == 'libxl' else REC_NAMES
        return names.get(self.type, '0x%08x' % self.type)


class StreamReader:
    """Walks a v2 stream from *read* (``read(n) -> bytes``, short on EOF).

    :meth:`segments` yields lists of records, each list closed by a verified
    ``XSD_AUTH_TAG`` (when a key is given) -- nothing of a segment is handed
    out before its tag verified.  Without a key, each record is its own
    segment.  The last segment ends with the libxl END record.
    """

    def __init__(self, read: Callable[[int], bytes],
                 key: Optional[bytes] = None) -> None:
        self._read = read
        self._mac = hmac.new(key, digestmod=hashlib.sha256) if key else None
        self._seq = 0
        self.bytes_read = 0

    def _exact(self, n: int, what: str) -> bytes:
        chunks = []
        got = 0
        while got < n:
            c = self._read(n - got)
            if not c:
                raise StreamError('stream truncated in %s: expected %d bytes, '
                                  'got %d' % (what, n, got))
            chunks.append(c)
            got += len(c)
        data = chunks[0] if len(chunks) == 1 else b''.join(chunks)
        self.bytes_read += n
        return data

    def _in(self, n: int, what: str, authed: bool = True) -> bytes:
        data = self._exact(n, what)
        if self._mac is not None and authed:
            self._mac.update(data)
        return data

    def _header(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self._in(struct.calcsize(fmt), what))

    def _record(self, level: str) -> Record:
        rtype, length = self._header(RH_FORMAT, '%s record header' % level)
        if length > MAX_RECORD_BYTES:
            raise StreamError('%s record 0x%08x claims %d bytes (limit %d)'
                              % (level, rtype, length, MAX_RECORD_BYTES))
        total = length + _pad(length)
        # The tag record's own body is not part of what it authenticates.
        is_tag = rtype == XSD_AUTH_TAG
        raw = self._in(total, '%s record 0x%08x body' % (level, rtype),
                       authed=not is_tag) if total else b''
        if any(raw[length:]):
            raise StreamError('non-zero padding after record 0x%08x' % rtype)
        return Record(level, rtype, memoryview(raw)[:length])

    def _check_tag(self, rec: Record) -> None:
        if len(rec.body) != struct.calcsize(AUTH_TAG_FORMAT):
            raise RecordError('XSD_AUTH_TAG body is %d bytes, expected %d'
                              % (len(rec.body),
                                 struct.calcsize(AUTH_TAG_FORMAT)))
        seq, digest = struct.unpack(AUTH_TAG_FORMAT, rec.body)
        self._seq += 1
        if seq != self._seq:
            raise AuthError('authentication tag %d out of sequence '
                            '(expected %d)' % (seq, self._seq))
        if self._mac is None:
            return
        if not hmac.compare_digest(self._mac.copy().digest(), digest):
            raise AuthError('authentication tag %d does not verify: the '
                            'stream was altered or written with another key'
                            % seq)

    def _check_headers(self) -> None:
        ident, version, _opts = self._header(LHDR_FORMAT, 'libxl header')
        if ident != LIBXL_IDENT:
            raise StreamError('not a libxl migration stream (ident 0x%016x, '
                              'expected 0x%016x "LibxlFmt")'
                              % (ident, LIBXL_IDENT))
        if version != LIBXL_VERSION:
            raise StreamError('libxl stream version %d, expected %d'
                              % (version, LIBXL_VERSION))

    def _check_libxc_headers(self) -> None:
        marker, ident, version, opts, _r1, _r2 = self._header(
            IHDR_FORMAT, 'libxc image header')
        if marker != IHDR_MARKER or ident != IHDR_ID:
            raise StreamError('bad libxc image header (marker 0x%x, id 0x%x)'
                              % (marker, ident))
        if version not in (2, 3):
            raise StreamError('libxc stream version %d unsupported' % version)
        if opts & 1:
            raise StreamError('big-endian libxc streams are not supported')
        dtype, page_shift, _r, _maj, _min = self._header(
            DHDR_FORMAT, 'libxc domain header')
        if dtype != DHDR_TYPE_X86_HVM:
            raise StreamError('domain type %d, expected x86 HVM (%d)'
                              % (dtype, DHDR_TYPE_X86_HVM))
        if page_shift != PAGE_SHIFT:
            raise StreamError('page shift %d, expected %d'
                              % (page_shift, PAGE_SHIFT))

    def segments(self) -> Iterator[List[Record]]:
        self._check_headers()
        level = 'libxl'
        pending: List[Record] = []
        while True:
            rec = self._record(level)
            if rec.type == XSD_AUTH_TAG:
                self._check_tag(rec)
                if pending:
                    yield pending
                pending = []
                continue
            pending.append(rec)
            if level == 'libxl' and rec.type == LREC_LIBXC_CONTEXT:
                self._check_libxc_headers()
                level = 'libxc'
            elif level == 'libxc' and rec.type == REC_TYPE_END:
                level = 'libxl'
            elif level == 'libxl' and rec.type == LREC_END:
                if self._mac is not None and len(pending) > 1:
                    raise AuthError('stream ends with %d record(s) no '
                                    'authentication tag covers'
                                    % (len(pending) - 1))
                yield pending
                return
            if self._mac is None:
                yield pending
                pending = []


# -- record body decoders -----------------------------------------------------
def decode_page_data(body: memoryview, max_pfn: int) -> Tuple[np.ndarray,
                                                              memoryview]:
    count, _res = struct.unpack_from(PAGE_DATA_FORMAT, body)
    need = 8 + 8 * count + PAGE_SIZE * count
    if len(body) != need:
        raise RecordError('PAGE_DATA with %d PFNs is %d bytes, expected %d'
                          % (count, len(body), need))
    raw = np.frombuffer(body, dtype='<u8', count=count, offset=8)
    if (raw & ~np.uint64(PAGE_DATA_PFN_MASK)).any():
        raise RecordError('PAGE_DATA carries page types other than NOTAB; '
                          'only HVM RAM pages are expected')
    _check_pfns(raw, max_pfn, 'PAGE_DATA')
    return raw, body[8 + 8 * count:]


def decode_zero_pages(body: memoryview,
                      max_pfn: int) -> List[Tuple[int, int]]:
    """(first PFN, count) runs of zero pages."""
    count, _res = struct.unpack_from(PAGE_DATA_FORMAT, body)
    if len(body) != 8 + 16 * count:
        raise RecordError('XSD_PAGE_ZERO with %d runs is %d bytes'
                          % (count, len(body)))
    vals = np.frombuffer(body, dtype='<u8', count=2 * count,
                         offset=8).tolist()
    runs = list(zip(vals[0::2], vals[1::2]))
    for first, n in runs:
        if n == 0 or first + n > max_pfn:
            raise RecordError('XSD_PAGE_ZERO run %d+%d beyond the guest\'s '
                              '%d pages' % (first, n, max_pfn))
    return runs


def decode_xbzrle(body: memoryview, max_pfn: int) -> Tuple[np.ndarray,
                                                           List[memoryview]]:
    count, _res = struct.unpack_from(PAGE_DATA_FORMAT, body)
    off = 8 + 8 * count
    lens_end = off + 4 * count
    lens_end += _pad(lens_end)
    if len(body) < lens_end:
        raise RecordError('XSD_PAGE_XBZRLE truncated in its length table')
    pfns = np.frombuffer(body, dtype='<u8', count=count, offset=8)
    lens = np.frombuffer(body, dtype='<u4', count=count, offset=off)
    if len(body) != lens_end + int(lens.sum()):
        raise RecordError('XSD_PAGE_XBZRLE length table does not match the '
                          'record size')
    _check_pfns(pfns, max_pfn, 'XSD_PAGE_XBZRLE')
    deltas = []
    pos = lens_end
    for n in lens.tolist():
        deltas.append(body[pos:pos + n])
        pos += n
    return pfns, deltas


def decode_hvm_params(body: memoryview) -> Dict[int, int]:
    count, _res = struct.unpack_from(HVM_PARAMS_FORMAT, body)
    if len(body) != 8 + 16 * count:
        raise RecordError('HVM_PARAMS with %d entries is %d bytes'
                          % (count, len(body)))
    vals = np.frombuffer(body, dtype='<u8', count=2 * count, offset=8)
    return {int(vals[i]): int(vals[i + 1]) for i in range(0, 2 * count, 2)}


def decode_emulator(body: memoryview) -> bytes:
    if len(body) < 8:
        raise RecordError('emulator record shorter than its header')
    return bytes(body[8:])


def decode_emulator_xenstore(body: memoryview) -> Dict[str, str]:
    parts = bytes(body[8:]).split(b'\0')
    if parts and parts[-1] == b'':
        parts.pop()
    if len(parts) % 2:
        raise RecordError('EMULATOR_XENSTORE_DATA has an odd number of '
                          'strings')
    return {parts[i].decode(): parts[i + 1].decode()
            for i in range(0, len(parts), 2)}


def _check_pfns(pfns: np.ndarray, max_pfn: int, what: str) -> None:
    if pfns.size and int(pfns.max()) >= max_pfn:
        raise RecordError('%s names PFN %d beyond the guest\'s %d pages'
                          % (what, int(pfns.max()), max_pfn))
