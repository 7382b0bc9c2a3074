"""Reader of the Xen migration stream v2, hostile input assumed.

The reader walks libxl records, the embedded libxc stream and our optional
records.  Every length and count is bounded before anything is read or
allocated; page records are validated by the C module (``dry_run``) before
any byte of guest memory is written.  Errors are ``StreamError`` /
``RecordError`` / ``AuthenticationError`` naming the record and its byte
offset.

Verify-before-apply:

* A buffer source (bytes, mmap of a save file, memoryview) is verified
  completely first — structure, every page record, CRCs and, with a key,
  every tag — and only then applied.  A tampered, truncated or wrong-key
  image therefore changes nothing.
* A file/socket source (live migration) is applied segment by segment: the
  records up to the next AUTH_TAG are staged in memory (at most
  ``max_segment_bytes``) and applied only once that tag verifies.  Without a
  key there are no segments and each record is applied once it validated;
  the receiver must discard the destination on any error (the migration
  engine does).
"""

import collections
import hmac
import json
import mmap
import struct
import threading
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from nova_xen_stubdom.emucore import _native
from nova_xen_stubdom.emucore import format as fmt
from nova_xen_stubdom.emucore.errors import AuthenticationError
from nova_xen_stubdom.emucore.errors import RecordError
from nova_xen_stubdom.emucore.errors import StreamError

_ec = _native.load()

_RH = struct.Struct(fmt.RH_FORMAT)
_PAGE_RECORDS = (
    fmt.REC_TYPE_PAGE_DATA,
    fmt.REC_TYPE_NX_ZERO_RUNS,
    fmt.REC_TYPE_NX_XBZRLE_PAGES,
)
# Largest body each page record can have with EMU_MAX_BATCH pages.
_PAGE_BOUNDS = {
    fmt.REC_TYPE_PAGE_DATA: 8 + fmt.MAX_BATCH * (8 + fmt.PAGE_SIZE),
    fmt.REC_TYPE_NX_ZERO_RUNS: 8 + fmt.MAX_BATCH * 16,
    fmt.REC_TYPE_NX_XBZRLE_PAGES: fmt.padded(8 + fmt.MAX_BATCH * 10)
    + fmt.MAX_BATCH * (fmt.PAGE_SIZE - 1),
}
# One batch of records with headers: the most a BATCH_CRC32C covers.
_CRC_WINDOW = sum(_PAGE_BOUNDS.values()) + 3 * 16
_APPLY = {
    fmt.REC_TYPE_PAGE_DATA: _ec.apply_page_data,
    fmt.REC_TYPE_NX_ZERO_RUNS: _ec.apply_zero_runs,
    fmt.REC_TYPE_NX_XBZRLE_PAGES: _ec.apply_xbzrle,
}


class Record:
    """One record as read: layer ('libxl'/'libxc'), type, offset, body."""

    __slots__ = ('layer', 'rtype', 'offset', 'length', 'body', 'info')

    def __init__(
        self, layer: str, rtype: int, offset: int, length: int, body: Any
    ):
        self.layer = layer
        self.rtype = rtype
        self.offset = offset
        self.length = length
        self.body = body
        self.info: Dict[str, Any] = {}

    @property
    def name(self) -> str:
        return fmt.rec_type_to_str(self.layer, self.rtype)

    @property
    def optional(self) -> bool:
        return bool(self.rtype & fmt.REC_TYPE_OPTIONAL)

    def __repr__(self) -> str:
        return '<Record %s %s @%d len=%d %s>' % (
            self.layer,
            self.name,
            self.offset,
            self.length,
            self.info,
        )


class RestoreResult:
    """What a stream carried besides guest memory, and what was applied."""

    def __init__(self) -> None:
        self.domain_type: Optional[int] = None
        self.xen_version: Optional[Tuple[int, int]] = None
        self.hvm_params: List[Tuple[int, int]] = []
        self.hvm_context: Optional[bytes] = None
        self.tsc_info: Optional[Tuple[int, int, int, int]] = None
        self.cpuid_policy = b''
        self.msr_policy = b''
        self.emulator_id: Optional[int] = None
        self.emulator_xenstore_data: Dict[str, str] = {}
        self.emulator_context: Optional[bytes] = None
        #: the NX_DOMAIN_INFO object, if the stream carries one
        self.domain_info: Optional[Dict[str, Any]] = None
        self.authenticated = False
        self.tags = 0
        self.bytes = 0
        self.stats: Dict[str, int] = dict(
            raw_pages=0, zero_pages=0, xbzrle_pages=0, records=0, crc_checked=0
        )

    @property
    def pages(self) -> int:
        s = self.stats
        return s['raw_pages'] + s['zero_pages'] + s['xbzrle_pages']


def _writable(mem: Any) -> memoryview:
    target = memoryview(mem)
    if target.readonly:
        raise ValueError('restore target memory must be writable')
    return target.cast('B')


class _BufferSource:
    """Zero-copy reads from a buffer; reads return memoryview slices."""

    def __init__(self, buf: Any):
        self.mv = memoryview(buf).cast('B')
        self.pos = 0

    def read(self, n: int, what: str) -> memoryview:
        if n > len(self.mv) - self.pos:
            raise StreamError(
                'stream truncated: %s needs %d bytes, %d left'
                % (what, n, len(self.mv) - self.pos),
                offset=self.pos,
            )
        out = self.mv[self.pos: self.pos + n]
        self.pos += n
        return out

    def at_end(self) -> bool:
        return self.pos == len(self.mv)


class _FileSource:
    """Reads from a binary file or socket file (short reads are retried).

    With *transient* and a source that has ``readinto`` (the migration
    socket), page records are read by :meth:`read_transient` into buffers
    this object keeps and lends again once :meth:`release_transient` says
    the batch they belong to is done with: a migration's gigabytes then
    pass through a few buffers instead of a fresh one per record (each a
    fresh allocation the kernel clears page by page).
    """

    #: page records of one batch with buffers of their own to reuse (a full
    #: stream's batch has at most three: zero runs, XBZRLE, raw pages)
    ARENA = 4
    #: buffer sizes are rounded up to this, so batches of different sizes
    #: find a buffer that fits
    ARENA_ROUND = 1 << 20

    def __init__(self, f: Any, transient: bool = False):
        self.f = f
        self.pos = 0
        self._readinto = getattr(f, 'readinto', None) if transient else None
        self._arena: List[bytearray] = []
        self._lent = 0

    def read(self, n: int, what: str) -> bytes:
        chunks = []
        got = 0
        while got < n:
            c = self.f.read(n - got)
            if not c:
                raise self._truncated(what, n, got)
            chunks.append(c)
            got += len(c)
        self.pos += n
        return chunks[0] if len(chunks) == 1 else b''.join(chunks)

    def read_transient(self, n: int, what: str) -> Any:
        """n bytes, valid until the next :meth:`release_transient`."""
        if self._readinto is None:
            return self.read(n, what)
        i = self._lent
        if i < len(self._arena) and len(self._arena[i]) >= n:
            buf = self._arena[i]
        else:
            buf = bytearray(-(-n // self.ARENA_ROUND) * self.ARENA_ROUND)
            if i < len(self._arena):
                self._arena[i] = buf
            elif i < self.ARENA:
                self._arena.append(buf)
        self._lent += 1
        view = memoryview(buf)[:n]
        got = 0
        while got < n:
            k = self._readinto(view[got:])
            if not k:
                raise self._truncated(what, n, got)
            got += k
        self.pos += n
        return view

    def release_transient(self) -> None:
        self._lent = 0

    def _truncated(self, what: str, n: int, got: int) -> StreamError:
        return StreamError(
            'stream truncated: %s needs %d bytes, got %d' % (what, n, got),
            offset=self.pos,
        )

    def at_end(self) -> bool:
        # A regular file must end with the stream; a socket may carry more
        # after END (the caller's protocol), which is not ours to read.
        seekable = getattr(self.f, 'seekable', None)
        try:
            if seekable is None or not seekable():
                return True
        except (OSError, ValueError):
            return True
        return not self.f.read(1)


def _is_buffer(source: Any) -> bool:
    if isinstance(source, mmap.mmap):
        # an mmap has read() too, but is a buffer (mmap.madvise, which
        # told them apart before, is 3.8+; dom0's Python is 3.6)
        return True
    if hasattr(source, 'read'):
        return False  # file-like
    try:
        memoryview(source)
        return True
    except TypeError:
        return False


class StreamReader:
    """Reads one stream from a buffer or a binary file-like object.

    key: the per-stream HMAC key.  With a key the stream must be
    authenticated and every tag must verify; without one an authenticated
    stream is refused (``allow_unverified=True`` only lists records).

    channel_integrity: the source is a channel that authenticates every
    byte itself (a TLS connection: AEAD ciphers), so the stream is expected
    to be an ``AUTH_ALG_CHANNEL`` one -- segment markers, no HMAC -- and its
    page records are applied as they arrive; any other stream is refused.
    Without it such a stream is refused: a file or a plain socket must not
    be trusted on the writer's word.

    allow_trailing: bytes after the libxl END are ignored instead of
    refused -- a stream stored on a fixed-size volume (a save image in a
    VDI) is followed by whatever the rest of the volume holds.  Nothing
    after END is covered by a tag, and none of it is read.
    """

    def __init__(
        self,
        source: Any,
        key: Optional[bytes] = None,
        max_segment_bytes: int = 256 << 20,
        max_record_bytes: int = 64 << 20,
        allow_trailing: bool = False,
        channel_integrity: bool = False,
    ):
        if channel_integrity and key is not None:
            raise ValueError('a channel-integrity stream carries no HMAC: '
                             'give no key')
        self._channel = channel_integrity
        self._allow_trailing = allow_trailing
        self._source = source
        self._buffered = _is_buffer(source)
        self._key = key
        self._max_segment = max_segment_bytes
        self._max_record = max_record_bytes
        self._lock = threading.Lock()
        self._used = False
        self._before_pages: Optional[Callable[[Record], None]] = None

    # ---- public -------------------------------------------------------------
    def restore(
        self,
        mem: Any = None,
        prepare: Optional[Callable[[RestoreResult], Any]] = None,
        on_segment: Optional[Callable[[int, RestoreResult], None]] = None,
        before_pages: Optional[Callable[[Record], None]] = None,
    ) -> RestoreResult:
        """Verify and apply the stream into mem (writable, the whole guest).

        prepare(result), if given, runs once before the first page is
        written: for a buffer source after the WHOLE stream verified (the
        result then holds everything but pages), for a file/socket source
        when the first tag verified (keyed) or before the first page record
        (no key) -- by then result.domain_info is known.  It may raise to
        refuse (nothing is written) and, for a file/socket source given no
        mem, returns the destination memory (live migration: the domain is
        created once its description arrived).

        on_segment(seq, result) runs after the pages a tag covers were
        written (seq: that AUTH_TAG's sequence number): a live migration
        receiver acknowledges what is in guest memory.

        before_pages(record), if given, runs before each verified page
        record is written (the destination gives the pages it names a frame
        first, as libxc's restore does: xg_sr_restore.c process_page_data,
        populate_pfns); it may raise to stop the restore.
        """
        self._before_pages = before_pages
        with self._lock:
            target = None if mem is None else _writable(mem)
            if self._buffered:
                if target is None:
                    raise ValueError('a buffer source restores into mem')
                # Pass 1 verifies everything, pass 2 only copies.
                result = self._run(len(target), None, check=True)
                if prepare is not None:
                    prepare(result)
                self._run(len(target), target, check=False,
                          on_segment=on_segment, result=result)
                return result
            self._claim()
            if target is None and prepare is None:
                raise ValueError('restore needs mem or prepare')
            return self._run(
                None if target is None else len(target), target, check=True,
                prepare=prepare, on_segment=on_segment,
            )

    def verify(self, mem_size: Optional[int] = None) -> RestoreResult:
        """Walk and check the whole stream without writing anything."""
        with self._lock:
            if not self._buffered:
                self._claim()
            return self._run(mem_size, None, check=True)

    def records(self, verify_tags: bool = True) -> Iterator[Record]:
        """Yield every record (inspection); tags checked given a key."""
        if not self._buffered:
            self._claim()
        yield from self._parse(
            None, check=True, require_auth=verify_tags, result=RestoreResult()
        )

    # ---- internals ---------------------------------------------------
    def _claim(self) -> None:
        if self._used:
            raise RuntimeError('a file/socket stream can be read only once')
        self._used = True

    def _run(
        self,
        mem_size: Optional[int],
        target: Optional[memoryview],
        check: bool,
        prepare: Optional[Callable[[RestoreResult], Any]] = None,
        on_segment: Optional[Callable[[int, RestoreResult], None]] = None,
        result: Optional[RestoreResult] = None,
    ) -> RestoreResult:
        # A second (copy) pass reports into the first pass's result; its own
        # tallies would count everything twice.
        out = result
        result = RestoreResult()
        staged: List[Record] = []
        staged_bytes = 0
        authenticated = self._key is not None
        # prepare() is due once (file/socket sources; see restore()).
        due = [prepare]

        def ready() -> Optional[memoryview]:
            if due[0] is not None:
                got = due[0](result)
                due[0] = None
                if target is None and got is not None:
                    return _writable(got)
            return target

        for rec in self._parse(
            mem_size, check=check, require_auth=check, result=result,
            # applied (or dropped) as it comes unless staged until its tag
            transient_pages=not (authenticated and check),
        ):
            if rec.rtype in _PAGE_RECORDS and rec.layer == 'libxc':
                if target is None and due[0] is None:
                    continue
                if authenticated and check:
                    staged.append(rec)
                    staged_bytes += rec.length
                    if staged_bytes > self._max_segment:
                        raise StreamError(
                            'authenticated segment exceeds %d bytes '
                            'without a tag'
                            % self._max_segment,
                            offset=rec.offset,
                            rtype=rec.rtype,
                            layer=rec.layer,
                        )
                else:
                    target = ready()
                    if target is None:
                        raise ValueError('prepare() returned no memory')
                    self._apply(rec, target)
            elif rec.rtype == fmt.REC_TYPE_NX_AUTH_TAG and (
                target is not None or due[0] is not None
            ):
                # _parse verified this tag: everything staged is authentic.
                target = ready()
                if target is None:
                    raise ValueError('prepare() returned no memory')
                for s in staged:
                    self._apply(s, target)
                staged.clear()
                staged_bytes = 0
                if on_segment is not None:
                    on_segment(rec.info['seq'], out or result)
        if staged:
            raise AuthenticationError(
                'stream ended with unauthenticated page records'
            )
        if due[0] is not None:
            ready()   # a stream without pages: prepare still runs once
        return result

    def _apply(self, rec: Record, target: memoryview) -> None:
        if self._before_pages is not None:
            self._before_pages(rec)
        try:
            _APPLY[rec.rtype](rec.body, target)
        except _ec.FormatError as exc:
            msg, off = exc.args
            raise RecordError(
                msg,
                offset=rec.offset + 8 + off,
                rtype=rec.rtype,
                layer=rec.layer,
            ) from None

    def _parse(
        self,
        mem_size: Optional[int],
        check: bool,
        require_auth: bool,
        result: RestoreResult,
        transient_pages: bool = False,
    ) -> Iterator[Record]:
        # transient_pages: the caller is done with a page record's body
        # before the batch's next non-page record (it applies it at once
        # and keeps nothing), so a socket source may reuse its buffer
        src = (
            _BufferSource(self._source)
            if self._buffered
            else _FileSource(self._source, transient=transient_pages)
        )
        mac = (
            hmac.new(self._key, digestmod='sha256')
            if (self._key and check)
            else None
        )
        state = _ParseState()
        src_release = getattr(src, 'release_transient', lambda: None)

        def take(n: int, what: str, authed: bool = True) -> Any:
            data = src.read(n, what)
            if mac is not None and authed:
                mac.update(data)
            return data

        ident, version, options = struct.unpack(
            fmt.LIBXL_HDR_FORMAT, take(16, 'libxl header')
        )
        if ident != fmt.LIBXL_HDR_IDENT:
            raise StreamError(
                'bad libxl header: expected ident 0x%x, got 0x%x'
                % (fmt.LIBXL_HDR_IDENT, ident),
                offset=0,
            )
        if version != fmt.LIBXL_HDR_VERSION:
            raise StreamError(
                'bad libxl header: expected version %d, got %d'
                % (fmt.LIBXL_HDR_VERSION, version),
                offset=8,
            )
        if options & (fmt.LIBXL_HDR_OPT_RESZ_MASK | fmt.LIBXL_HDR_OPT_BE):
            raise StreamError(
                'libxl header options 0x%x: reserved bits or big endian'
                % options,
                offset=12,
            )
        layer = 'libxl'
        first = True
        while True:
            offset = src.pos
            head = take(8, 'record header')
            rtype, length = _RH.unpack(head)
            bound = self._bound(rtype)
            if length > bound:
                raise StreamError(
                    'record length %d exceeds the bound %d' % (length, bound),
                    offset=offset,
                    rtype=rtype,
                    layer=layer,
                )
            if rtype == fmt.REC_TYPE_NX_AUTH_TAG:
                rec = self._read_tag(
                    take, offset, length, layer, mac, state, require_auth
                )
                result.tags += 1
                # a batch's CRC32C comes before its segment's tag, so none
                # covers bytes from before a tag: the page records so far
                # are done with (applied, or staged in memory of their own)
                state.take_batch()
                src_release()
                yield rec
                continue
            if state.final_tag and not (
                layer == 'libxl' and rtype == fmt.LIBXL_REC_TYPE_END
            ):
                raise AuthenticationError(
                    'record after the final tag',
                    offset=offset,
                    rtype=rtype,
                    layer=layer,
                )
            if layer == 'libxc' and rtype in _PAGE_RECORDS and \
                    not self._buffered:
                data = src.read_transient(fmt.padded(length), 'record body')
                if mac is not None:
                    mac.update(data)
            else:
                data = take(fmt.padded(length), 'record body')
            body = data[:length]
            if any(data[length:]):
                raise StreamError(
                    'record padding is not zero',
                    offset=offset + 8 + length,
                    rtype=rtype,
                    layer=layer,
                )
            rec = Record(layer, rtype, offset, length, body)
            result.stats['records'] += 1
            if first and layer == 'libxl':
                first = False
                if rtype == fmt.REC_TYPE_NX_AUTH_INIT:
                    state.alg = self._auth_init(rec)
                    state.auth = state.alg == fmt.AUTH_ALG_HMAC_SHA256
                    result.authenticated = state.auth
                if require_auth and self._channel and \
                        state.alg != fmt.AUTH_ALG_CHANNEL:
                    raise AuthenticationError(
                        'expected a stream relying on its channel\'s '
                        'integrity (AUTH_ALG_CHANNEL), got %s'
                        % ('an HMAC-authenticated one' if state.auth
                           else 'one without AUTH_INIT'),
                        offset=offset,
                        rtype=rtype,
                        layer=layer,
                    )
                if require_auth:
                    if state.auth and self._key is None:
                        raise AuthenticationError(
                            'stream is authenticated but no key was given',
                            offset=offset,
                            rtype=rtype,
                            layer=layer,
                        )
                    if self._key is not None and not state.auth:
                        raise AuthenticationError(
                            'a key was given but the stream is not '
                            'authenticated',
                            offset=offset,
                            rtype=rtype,
                            layer=layer,
                        )
                if rtype == fmt.REC_TYPE_NX_AUTH_INIT:
                    yield rec
                    continue
            if layer == 'libxc':
                self._libxc_record(
                    rec, head, data, mem_size, state, result, check
                )
                if rtype not in _PAGE_RECORDS:
                    # the batch's CRC (if any) is checked: its page
                    # records' buffers may be lent again
                    src_release()
                yield rec
                if rtype == fmt.REC_TYPE_END:
                    layer = 'libxl'
                continue
            self._libxl_record(rec, state, result)
            if rtype == fmt.LIBXL_REC_TYPE_LIBXC_CONTEXT:
                yield rec
                self._libxc_headers(take, src, result)
                layer = 'libxc'
                continue
            yield rec
            if rtype == fmt.LIBXL_REC_TYPE_END:
                if require_auth and state.alg and not state.final_tag:
                    raise AuthenticationError(
                        'stream ends without a final tag',
                        offset=offset,
                        rtype=rtype,
                        layer=layer,
                    )
                if not self._allow_trailing and not src.at_end():
                    raise StreamError(
                        'data after the libxl END record', offset=src.pos
                    )
                result.bytes = src.pos
                return

    def _bound(self, rtype: int) -> int:
        if rtype in _PAGE_BOUNDS:
            return _PAGE_BOUNDS[rtype]
        if rtype == fmt.REC_TYPE_NX_AUTH_TAG:
            return struct.calcsize(fmt.AUTH_TAG_FORMAT)
        return self._max_record

    def _auth_init(self, rec: Record) -> int:
        if rec.length != struct.calcsize(fmt.AUTH_INIT_FORMAT):
            raise RecordError(
                'AUTH_INIT length %d, expected 24' % rec.length,
                offset=rec.offset,
                rtype=rec.rtype,
                layer=rec.layer,
            )
        alg, flags, sid = struct.unpack(fmt.AUTH_INIT_FORMAT, rec.body)
        if alg == fmt.AUTH_ALG_CHANNEL and not flags:
            if not self._channel:
                # a file or plain socket: nothing vouches for these bytes
                raise AuthenticationError(
                    'stream relies on its channel for integrity '
                    '(AUTH_ALG_CHANNEL) but was not read from one',
                    offset=rec.offset,
                    rtype=rec.rtype,
                    layer=rec.layer,
                )
            rec.info['stream_id'] = bytes(sid).hex()
            return alg
        if alg != fmt.AUTH_ALG_HMAC_SHA256 or flags:
            raise RecordError(
                'AUTH_INIT algorithm %d flags 0x%x: '
                'expected 1 (HMAC-SHA256), 0'
                % (alg, flags),
                offset=rec.offset,
                rtype=rec.rtype,
                layer=rec.layer,
            )
        rec.info['stream_id'] = bytes(sid).hex()
        return alg

    def _read_tag(
        self,
        take: Any,
        offset: int,
        length: int,
        layer: str,
        mac: Any,
        state: '_ParseState',
        require_auth: bool,
    ) -> Record:
        rtype = fmt.REC_TYPE_NX_AUTH_TAG
        if length != struct.calcsize(fmt.AUTH_TAG_FORMAT):
            raise RecordError(
                'AUTH_TAG length %d, expected 40' % length,
                offset=offset,
                rtype=rtype,
                layer=layer,
            )
        if not state.alg:
            raise AuthenticationError(
                'AUTH_TAG in a stream without AUTH_INIT',
                offset=offset,
                rtype=rtype,
                layer=layer,
            )
        if state.final_tag:
            raise AuthenticationError(
                'tag after the final tag',
                offset=offset,
                rtype=rtype,
                layer=layer,
            )
        seq, flags = struct.unpack(
            fmt.AUTH_TAG_HEAD_FORMAT, take(8, 'tag head')
        )
        tag = bytes(take(32, 'tag', authed=False))
        rec = Record(layer, rtype, offset, length, tag)
        rec.info.update(seq=seq, final=bool(flags & fmt.AUTH_TAG_FLAG_FINAL))
        if flags & ~fmt.AUTH_TAG_FLAG_FINAL:
            raise RecordError(
                'AUTH_TAG flags 0x%x' % flags,
                offset=offset + 12,
                rtype=rtype,
                layer=layer,
            )
        if seq != state.seq:
            raise AuthenticationError(
                'AUTH_TAG sequence %d, expected %d' % (seq, state.seq),
                offset=offset + 8,
                rtype=rtype,
                layer=layer,
            )
        state.seq += 1
        if state.alg == fmt.AUTH_ALG_CHANNEL:
            # a segment marker: the channel vouched for the bytes
            if any(tag):
                raise RecordError(
                    'segment marker with non-zero tag bytes',
                    offset=offset + 16,
                    rtype=rtype,
                    layer=layer,
                )
        elif mac is not None:
            if not hmac.compare_digest(mac.copy().digest(), tag):
                raise AuthenticationError(
                    'authentication tag does not verify '
                    '(wrong key or modified stream)',
                    offset=offset,
                    rtype=rtype,
                    layer=layer,
                )
            rec.info['verified'] = True
        elif require_auth:
            raise AuthenticationError(
                'stream is authenticated but no key was given',
                offset=offset,
                rtype=rtype,
                layer=layer,
            )
        if flags & fmt.AUTH_TAG_FLAG_FINAL:
            state.final_tag = True
        return rec

    def _libxc_headers(
        self, take: Any, src: Any, result: RestoreResult
    ) -> None:
        off = src.pos
        marker, ident, version, options, res1, res2 = struct.unpack(
            fmt.IHDR_FORMAT, take(24, 'libxc image header')
        )
        if marker != fmt.IHDR_MARKER or ident != fmt.IHDR_IDENT:
            raise StreamError(
                'bad libxc image header: expected marker/ident '
                '0x%x/0x%x, got 0x%x/0x%x'
                % (fmt.IHDR_MARKER, fmt.IHDR_IDENT, marker, ident),
                offset=off,
            )
        if version != fmt.IHDR_VERSION:
            raise StreamError(
                'libxc image version %d, expected %d'
                % (version, fmt.IHDR_VERSION),
                offset=off + 12,
            )
        if options or res1 or res2:
            raise StreamError(
                'libxc image header options/reserved 0x%x/0x%x/0x%x: '
                'expected little endian, zero' % (options, res1, res2),
                offset=off + 16,
            )
        dtype, shift, dres, major, minor = struct.unpack(
            fmt.DHDR_FORMAT, take(16, 'libxc domain header')
        )
        if dtype != fmt.DHDR_TYPE_X86_HVM:
            raise StreamError(
                'domain type %d, only x86 HVM (2) is supported' % dtype,
                offset=off + 24,
            )
        if shift != 12 or dres:
            raise StreamError(
                'domain header page shift %d / reserved 0x%x, expected 12 / 0'
                % (shift, dres),
                offset=off + 28,
            )
        result.domain_type = dtype
        result.xen_version = (major, minor)

    def _libxc_record(
        self,
        rec: Record,
        head: Any,
        data: Any,
        mem_size: Optional[int],
        state: '_ParseState',
        result: RestoreResult,
        check: bool,
    ) -> None:
        rtype, body, n = rec.rtype, rec.body, rec.length

        def bad(msg: str, off: int = 0) -> RecordError:
            return RecordError(
                msg,
                offset=rec.offset + (8 + off if off else 0),
                rtype=rtype,
                layer='libxc',
            )

        if rtype in _PAGE_RECORDS:
            try:
                pages = _APPLY[rtype](body, mem_size, dry_run=True)
            except _ec.FormatError as exc:
                msg, off = exc.args
                raise RecordError(
                    msg,
                    offset=rec.offset + 8 + off,
                    rtype=rtype,
                    layer='libxc',
                ) from None
            if check:
                # Kept (views, no copies for buffers) and checksummed only
                # if a BATCH_CRC32C follows: compat streams pay nothing.
                state.keep_for_crc(head)
                state.keep_for_crc(data)
            key = {
                fmt.REC_TYPE_PAGE_DATA: 'raw_pages',
                fmt.REC_TYPE_NX_ZERO_RUNS: 'zero_pages',
                fmt.REC_TYPE_NX_XBZRLE_PAGES: 'xbzrle_pages',
            }[rtype]
            result.stats[key] += pages
            rec.info['pages'] = pages
            return
        batch, batch_len = state.take_batch()
        if rtype == fmt.REC_TYPE_NX_BATCH_CRC32C:
            if n != 8:
                raise bad('BATCH_CRC32C length %d, expected 8' % n)
            crc, covered = struct.unpack(fmt.BATCH_CRC32C_FORMAT, body)
            rec.info.update(crc='%08x' % crc, covered=covered)
            if check:
                if covered != batch_len:
                    raise bad(
                        'batch CRC32C covers %d bytes, the batch has %d'
                        % (covered, batch_len)
                    )
                got_crc = 0
                for part in batch:
                    got_crc = _ec.crc32c(part, got_crc)
                if crc != got_crc:
                    raise bad(
                        'batch CRC32C mismatch: record says %08x, '
                        'computed %08x over '
                        '%d bytes' % (crc, got_crc, batch_len)
                    )
                result.stats['crc_checked'] += 1
        elif rtype == fmt.REC_TYPE_END:
            if n:
                raise bad('libxc END with length %d, expected 0' % n)
        elif rtype in (fmt.REC_TYPE_STATIC_DATA_END,):
            if n:
                raise bad('STATIC_DATA_END with length %d, expected 0' % n)
        elif rtype == fmt.REC_TYPE_X86_CPUID_POLICY:
            if n == 0 or n % 24:
                raise bad(
                    'X86_CPUID_POLICY length %d, expected a multiple of 24' % n
                )
            result.cpuid_policy = bytes(body)
        elif rtype == fmt.REC_TYPE_X86_MSR_POLICY:
            if n == 0 or n % 16:
                raise bad(
                    'X86_MSR_POLICY length %d, expected a multiple of 16' % n
                )
            result.msr_policy = bytes(body)
        elif rtype == fmt.REC_TYPE_X86_TSC_INFO:
            if n != 24:
                raise bad('X86_TSC_INFO length %d, expected 24' % n)
            mode, khz, nsec, inc, res = struct.unpack(
                fmt.X86_TSC_INFO_FORMAT, body
            )
            if res:
                raise bad(
                    'X86_TSC_INFO reserved field 0x%x, expected 0' % res, 20
                )
            result.tsc_info = (mode, khz, nsec, inc)
        elif rtype == fmt.REC_TYPE_HVM_PARAMS:
            if n < 8:
                raise bad('HVM_PARAMS length %d, expected at least 8' % n)
            count, res = struct.unpack_from(fmt.HVM_PARAMS_FORMAT, body)
            if res:
                raise bad(
                    'HVM_PARAMS reserved field 0x%x, expected 0' % res, 4
                )
            if n != 8 + 16 * count:
                raise bad(
                    'HVM_PARAMS length %d, expected %d for %d entries'
                    % (n, 8 + 16 * count, count)
                )
            result.hvm_params.extend(
                struct.iter_unpack(fmt.HVM_PARAMS_ENTRY_FORMAT, body[8:])
            )
            rec.info['count'] = count
        elif rtype == fmt.REC_TYPE_HVM_CONTEXT:
            if n == 0:
                raise bad('HVM_CONTEXT with length 0')
            result.hvm_context = bytes(body)
        elif rtype == fmt.REC_TYPE_NX_DOMAIN_INFO:
            if result.domain_info is not None:
                raise bad('second NX_DOMAIN_INFO record')
            if n > fmt.DOMAIN_INFO_MAX:
                raise bad(
                    'NX_DOMAIN_INFO length %d exceeds %d'
                    % (n, fmt.DOMAIN_INFO_MAX)
                )
            try:
                info = json.loads(bytes(body).decode('utf-8'))
            except (UnicodeDecodeError, ValueError) as exc:
                raise bad('NX_DOMAIN_INFO is not JSON: %s' % exc) from None
            if not isinstance(info, dict):
                raise bad('NX_DOMAIN_INFO is not a JSON object')
            result.domain_info = info
            rec.info['keys'] = sorted(info)
        elif rtype & fmt.REC_TYPE_OPTIONAL:
            rec.info['skipped'] = (
                True  # unknown optional record: spec says ignore
            )
        elif rtype in (fmt.REC_TYPE_VERIFY,):
            if n:
                raise bad('VERIFY with length %d, expected 0' % n)
        else:
            raise StreamError(
                'libxc record %s is not valid in an x86 HVM stream'
                % fmt.rec_type_to_str('libxc', rtype),
                offset=rec.offset,
                rtype=rtype,
                layer='libxc',
            )

    def _libxl_record(
        self, rec: Record, state: '_ParseState', result: RestoreResult
    ) -> None:
        rtype, body, n = rec.rtype, rec.body, rec.length

        def bad(msg: str) -> RecordError:
            return RecordError(
                msg, offset=rec.offset, rtype=rtype, layer='libxl'
            )

        if rtype == fmt.LIBXL_REC_TYPE_LIBXC_CONTEXT:
            if n:
                raise bad('LIBXC_CONTEXT with length %d, expected 0' % n)
            if state.libxc_done:
                raise bad('second LIBXC_CONTEXT record')
            state.libxc_done = True
        elif rtype == fmt.LIBXL_REC_TYPE_END:
            if n:
                raise bad('libxl END with length %d, expected 0' % n)
            if not state.libxc_done:
                raise bad('libxl END before any LIBXC_CONTEXT')
        elif rtype in (
            fmt.LIBXL_REC_TYPE_EMULATOR_XENSTORE_DATA,
            fmt.LIBXL_REC_TYPE_EMULATOR_CONTEXT,
        ):
            if n < 8:
                raise bad('%s length %d, expected at least 8' % (rec.name, n))
            emu_id, index = struct.unpack_from(
                fmt.EMULATOR_HEADER_FORMAT, body
            )
            if emu_id not in (
                fmt.EMULATOR_ID_UNKNOWN,
                fmt.EMULATOR_ID_QEMU_TRAD,
                fmt.EMULATOR_ID_QEMU_UPSTREAM,
            ):
                raise bad('unknown emulator id %d' % emu_id)
            rec.info.update(emulator_id=emu_id, index=index)
            result.emulator_id = emu_id
            data = bytes(body[8:])
            if rtype == fmt.LIBXL_REC_TYPE_EMULATOR_CONTEXT:
                result.emulator_context = data
            elif data:
                if data[-1:] != b'\0':
                    raise bad('xenstore data not NUL terminated')
                parts = data[:-1].split(b'\0')
                if len(parts) % 2:
                    raise bad(
                        'xenstore data has an odd number (%d) of strings'
                        % len(parts)
                    )
                try:
                    result.emulator_xenstore_data.update(
                        (k.decode(), v.decode())
                        for k, v in zip(parts[::2], parts[1::2])
                    )
                except UnicodeDecodeError:
                    raise bad('xenstore data is not UTF-8') from None
                rec.info['keys'] = len(parts) // 2
        elif rtype & fmt.REC_TYPE_OPTIONAL:
            rec.info['skipped'] = True
        else:
            raise StreamError(
                'libxl record %s is not supported' % rec.name,
                offset=rec.offset,
                rtype=rtype,
                layer='libxl',
            )


class _ParseState:
    __slots__ = (
        'auth',
        'alg',
        'seq',
        'final_tag',
        'batch',
        'batch_len',
        'batch_kept',
        'libxc_done',
    )

    def __init__(self) -> None:
        self.auth = False
        #: AUTH_INIT algorithm (0: none)
        self.alg = 0
        self.seq = 0
        self.final_tag = False
        self.batch: Deque[Any] = collections.deque()
        self.batch_len = 0  # bytes of page records since the last other record
        self.batch_kept = 0  # of which still held in batch
        self.libxc_done = False

    def keep_for_crc(self, part: Any) -> None:
        """Hold a page record's bytes until we know whether a CRC covers them.

        At most one batch's worth is kept (compat streams have no CRC
        records and long runs of PAGE_DATA): a CRC record never covers
        more than one batch, so older bytes can go.
        """
        self.batch.append(part)
        self.batch_len += len(part)
        self.batch_kept += len(part)
        while self.batch_kept > _CRC_WINDOW:
            self.batch_kept -= len(self.batch.popleft())

    def take_batch(self) -> Tuple[List[Any], int]:
        """(parts, total length) of the batch; no parts if not all kept."""
        parts = list(self.batch) if self.batch_kept == self.batch_len else []
        out = (parts, self.batch_len)
        self.batch.clear()
        self.batch_len = self.batch_kept = 0
        return out
