"""The C kernels on every accelerator this host has, against the reference.

Each test runs once per accelerator set: the ``accel`` fixture walks the
module's preference tables with the ``_test_next_accel`` hook (as QEMU's
test-bufferiszero does), so AVX2, SSE2/SSE4.2 and the portable C are all
covered where the CPU has them.
"""

import array
import mmap
import random
import threading

import pytest
from hypothesis import given, settings, strategies as st

from nova_xen_stubdom import _emucore as ec
from nova_xen_stubdom.emucore import bitmap
from nova_xen_stubdom.emucore import reference as ref


def _accel_sets():
    ec._accel_reset()
    sets = [ec.accels()]
    while ec._test_next_accel():
        sets.append(ec.accels())
    ec._accel_reset()
    return sets


ACCEL_SETS = _accel_sets()


@pytest.fixture(
    params=range(len(ACCEL_SETS)),
    ids=['+'.join(sorted(set(s.values()))) for s in ACCEL_SETS],
)
def accel(request):
    ec._accel_reset()
    for _ in range(request.param):
        ec._test_next_accel()
    assert ec.accels() == ACCEL_SETS[request.param]
    yield ec.accels()
    ec._accel_reset()


def test_portable_paths_always_present():
    last = ACCEL_SETS[-1]
    assert last == {'zero': 'int', 'crc32c': 'table', 'xbzrle': 'int'}


def test_best_accel_matches_cpu():
    flags = open('/proc/cpuinfo').read().split()
    best = ACCEL_SETS[0]
    if 'avx2' in flags:
        assert best['zero'] == 'avx2'
    if 'avx2' in flags:
        # no AVX-512 entry: measured never faster than AVX2 (xbzrle.c)
        assert best['xbzrle'] == 'avx2'
    if 'sse4_2' in flags:
        assert best['crc32c'] == 'sse4.2'


# ---- zero detection ------------------------------------------------------


def test_is_zero_alignment_and_size_sweep(accel):
    backing = bytearray(64 + 1100)
    mv = memoryview(backing)
    sizes = list(range(1, 140)) + [255, 256, 257, 511, 512, 513, 1000, 1023]
    for align in range(64):
        for size in sizes:
            buf = mv[align: align + size]
            assert ec.is_zero(buf), (align, size)
            # Markers away from the pre-check's sampled bytes (0, mid, last)
            # so the accelerated loop itself must find them.
            for pos in {
                1,
                2,
                size // 3,
                size - 2,
                size - 3,
                (size * 3) // 4,
            } - {0, size // 2, size - 1}:
                if 0 <= pos < size:
                    buf[pos] = 0x80
                    assert not ec.is_zero(buf), (align, size, pos)
                    buf[pos] = 0


def test_is_zero_every_position(accel):
    for align in (0, 1, 7, 31, 33):
        for size in (200, 1023, 4096):
            buf = bytearray(align + size)
            view = memoryview(buf)[align:]
            for pos in range(size):
                view[pos] = 1
                assert not ec.is_zero(view), (align, size, pos)
                view[pos] = 0


def test_zero_page_flags(accel):
    mem = bytearray(16 * 4096)
    for p in (1, 5, 15):
        mem[p * 4096 + 2049] = 7
    assert list(ec.zero_page_flags(mem)) == [
        0 if p in (1, 5, 15) else 1 for p in range(16)
    ]
    pfns = array.array('Q', [15, 0, 5])
    assert list(ec.zero_page_flags(mem, pfns)) == [0, 1, 0]
    with pytest.raises(ValueError):
        ec.zero_page_flags(mem, array.array('Q', [16]))


# ---- CRC32C ---------------------------------------------------------------

# RFC 3720 appendix B.4 vectors and the usual check value.
CRC_VECTORS = [
    (b'123456789', 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b'\xff' * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b'', 0),
]


@pytest.mark.parametrize('data,crc', CRC_VECTORS)
def test_crc32c_vectors(accel, data, crc):
    assert ec.crc32c(data) == crc
    assert ref.crc32c(data) == crc


def test_crc32c_matches_reference_any_alignment(accel):
    rnd = random.Random(3)
    blob = rnd.randbytes(3000)
    for _ in range(200):
        a = rnd.randrange(0, 64)
        n = rnd.randrange(0, 2900)
        data = memoryview(blob)[a: a + n]
        assert ec.crc32c(data) == ref.crc32c(data)
        cut = rnd.randrange(0, n + 1)
        assert ec.crc32c(data[cut:], ec.crc32c(data[:cut])) == ref.crc32c(data)


def test_crc32c_large_releases_gil_path():
    data = random.Random(4).randbytes(1 << 20)
    assert ec.crc32c(data) == ec.crc32c(
        data[1 << 19:], ec.crc32c(data[: 1 << 19])
    )


# ---- XBZRLE ---------------------------------------------------------------

ZERO = bytes(4096)


def _page(changes):
    p = bytearray(4096)
    for off, data in changes:
        p[off: off + len(data)] = data
    return bytes(p)


# Worked out by hand from QEMU's docs/xbzrle.txt: page = (zrun nzrun)*,
# zrun = ULEB128 length of equal bytes, nzrun = ULEB128 length + new bytes,
# trailing zrun omitted.
GOLDEN = [
    ('identical', ZERO, ZERO, 4096, b''),
    ('first byte', ZERO, _page([(0, b'\x01')]), 4096, b'\x00\x01\x01'),
    ('middle', ZERO, _page([(10, b'abc')]), 4096, b'\x0a\x03abc'),
    (
        'two-byte zrun',
        ZERO,
        _page([(200, b'\xff')]),
        4096,
        b'\xc8\x01\x01\xff',
    ),
    (
        'two runs',
        ZERO,
        _page([(0, b'XY'), (4095, b'Z')]),
        4096,
        b'\x00\x02XY\xfd\x1f\x01Z',
    ),
    (
        'long nzrun',
        ZERO,
        _page([(0, b'\x07' * 130)]),
        4096,
        b'\x00\x82\x01' + b'\x07' * 130,
    ),
    (
        'one-byte gap',
        ZERO,
        _page([(5, b'a'), (7, b'b')]),
        4096,
        b'\x05\x01a\x01\x01b',
    ),
    (
        'whole page',
        ZERO,
        b'\xff' * 4096,
        5000,
        b'\x00\x80\x20' + b'\xff' * 4096,
    ),
    (
        'alternating',
        ZERO,
        bytes([i & 1 for i in range(4096)]),
        8192,
        b'\x01\x01\x01' * 2048,
    ),
    (
        'old nonzero',
        b'\x11' * 4096,
        _page([(4000, b'\x11' * 96)]),
        4096,
        b'\x00\xa0\x1f' + b'\x00' * 4000,
    ),  # 4000 = 31 * 128 + 32
]


@pytest.mark.parametrize(
    'name,old,new,limit,expected', GOLDEN, ids=[g[0] for g in GOLDEN]
)
def test_xbzrle_golden(accel, name, old, new, limit, expected):
    assert ref.xbzrle_encode(old, new, limit) == expected
    assert ec.xbzrle_encode(old, new, limit) == expected
    page = bytearray(old)
    ec.xbzrle_decode(expected, page)
    assert page == new
    assert ref.xbzrle_decode(expected, old) == new


@pytest.mark.parametrize(
    'new,limit',
    [
        (b'\xff' * 4096, 4096),
        (bytes([i & 1 for i in range(4096)]), 4096),
        (_page([(0, b'\x01' * 100)]), 50),
    ],
)
def test_xbzrle_overflow_is_none(accel, new, limit):
    assert ec.xbzrle_encode(ZERO, new, limit) is None
    assert ref.xbzrle_encode(ZERO, new, limit) is None


@pytest.mark.parametrize(
    'delta',
    [
        b'\x00\x01a\x00\x01b',  # empty zrun after the start
        b'\x05\x00',  # empty nzrun
        b'\x80\x80\x01\x01a',  # 3-byte ULEB128
        b'\xff\x1f\x02ab',  # nzrun past the end of the page
        b'\x00\x05ab',  # nzrun longer than the input
        b'\x05',  # zrun without nzrun
        b'\x80',  # truncated ULEB128
        b'\x80\x21\x01a',  # zrun 4224 past the page
    ],
)
def test_xbzrle_decode_rejects(delta):
    page = bytearray(b'\x33' * 4096)
    with pytest.raises(ec.FormatError):
        ec.xbzrle_decode(delta, page)
    assert page == b'\x33' * 4096, 'a refused delta must not touch the page'
    with pytest.raises(ValueError):
        ref.xbzrle_decode(delta, bytes(page))


@st.composite
def page_pairs(draw):
    # odd sizes reach every kernel's tail and run ends on word edges
    size = draw(st.sampled_from([1, 7, 63, 64, 65, 127, 1000, 4095, 4096]))
    old = bytearray(draw(st.binary(min_size=size, max_size=size)))
    new = bytearray(old)
    for _ in range(draw(st.integers(0, 12))):
        off = draw(st.integers(0, size - 1))
        data = draw(st.binary(min_size=1, max_size=80))
        new[off: off + len(data)] = data
        del new[size:]
    # and scattered single bytes, as in a page with 5% or 30% changed
    per_mille = draw(st.sampled_from([0, 50, 300]))
    rnd = random.Random(draw(st.integers(0, 1 << 30)))
    for i in range(size):
        if rnd.randrange(1000) < per_mille:
            new[i] ^= rnd.randrange(1, 256)
    return bytes(old), bytes(new)


@settings(max_examples=300, deadline=None)
@given(page_pairs(), st.integers(0, len(ACCEL_SETS) - 1))
def test_xbzrle_round_trip_property(pair, which):
    old, new = pair
    ec._accel_reset()
    for _ in range(which):
        ec._test_next_accel()
    try:
        roomy = len(new) * 2 + 8       # fits even a 1-byte page's runs
        enc = ec.xbzrle_encode(old, new, roomy)
        assert enc == ref.xbzrle_encode(old, new, roomy)
        page = bytearray(old)
        ec.xbzrle_decode(enc, page)
        assert page == new
        assert ref.xbzrle_decode(enc, old) == new
        tight = ec.xbzrle_encode(old, new, len(enc))
        assert tight == enc
        if enc:
            assert ec.xbzrle_encode(old, new, len(enc) - 1) is None
    finally:
        ec._accel_reset()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_xbzrle_decode_agrees_with_reference(delta):
    old = bytes(range(256)) * 16
    page = bytearray(old)
    try:
        expect = ref.xbzrle_decode(delta, old)
    except ValueError:
        with pytest.raises(ec.FormatError):
            ec.xbzrle_decode(delta, page)
        assert page == old
    else:
        ec.xbzrle_decode(delta, page)
        assert page == expect


def test_xbzrle_cache_bounded_and_counts():
    c = ec.XbzrleCache(64 * 1024 + 100)
    s = c.stats()
    assert (
        s['slots'] == 16 and s['capacity_bytes'] == 64 * 1024 and len(c) == 0
    )
    mem = bytearray(random.Random(5).randbytes(64 * 4096))
    out = bytearray(ec.encode_bound(1024))
    pfns = array.array('Q', range(64))
    ec.encode_batch(mem, pfns, out, ec.ENC_XBZRLE, c)
    assert 0 < len(c) <= 16
    s = c.stats()
    assert s['misses'] == 64 and s['hits'] == 0
    c.invalidate(0)
    c.clear()
    assert len(c) == 0
    with pytest.raises(ValueError):
        ec.XbzrleCache(100)


# ---- dirty bitmaps --------------------------------------------------------


@pytest.mark.parametrize('npages', [1, 7, 8, 63, 64, 65, 1000, 4097])
def test_bitmap_ops_match_reference(npages):
    rnd = random.Random(npages)
    bm = bytearray(rnd.randbytes(bitmap.bitmap_bytes(npages)))
    assert bitmap.count(bm, npages) == ref.bitmap_count(bm, npages)
    for start in {0, 1, npages // 2, npages - 1, npages}:
        for max_count in (1, 3, 64, 1024):
            got, nxt = bitmap.pfns(bm, start, max_count, npages)
            want, wnxt = ref.bitmap_pfns(bm, npages, start, max_count)
            assert (list(got), nxt) == (want, wnxt), (start, max_count)
    walked = [p for b in bitmap.iter_batches(bm, 5, npages) for p in b]
    assert walked == ref.bitmap_pfns(bm, npages, 0, 1 << 30)[0]
    other = bytearray(rnd.randbytes(len(bm)))
    merged = bytearray(bm)
    bitmap.merge(merged, other, npages)
    for p in range(npages):
        bit = lambda b: b[p // 8] >> (p % 8) & 1  # noqa: E731
        assert bit(merged) == bit(bm) | bit(other)
    # Bits past npages are left alone by merge and clear.
    tail = bytes(merged[npages // 8 + 1:])
    bitmap.clear(merged, npages)
    assert bitmap.count(merged, npages) == 0
    assert bytes(merged[npages // 8 + 1:]) == tail


def test_bitmap_1tib_guest():
    npages = 1 << 28
    bm = bitmap.new_bitmap(npages)
    assert len(bm) == 32 << 20
    dirty = [0, 63, 64, 1 << 20, (1 << 27) + 5, npages - 1]
    for p in dirty:
        bm[p // 8] |= 1 << (p % 8)
    assert bitmap.count(bm) == len(dirty)
    assert [p for b in bitmap.iter_batches(bm, 4) for p in b] == dirty
    src = bitmap.new_bitmap(npages)
    src[-1] = 0x40
    bitmap.merge(bm, src)
    assert bitmap.count(bm) == len(dirty) + 1
    bitmap.clear(bm)
    assert bitmap.count(bm) == 0


def test_bitmap_npages_bound():
    with pytest.raises(ValueError):
        bitmap.count(bytearray(8), 65)


# ---- buffer types, non-contiguous, threads --------------------------------


@pytest.mark.parametrize(
    'make',
    [
        bytes,
        bytearray,
        lambda b: memoryview(bytearray(b)),
        lambda b: array.array('B', b),
    ],
    ids=['bytes', 'bytearray', 'memoryview', 'array'],
)
def test_buffer_types(make):
    data = make(b'\x00' * 100 + b'123456789')
    assert not ec.is_zero(data)
    assert ec.crc32c(make(b'123456789')) == 0xE3069283


def test_mmap_buffer():
    m = mmap.mmap(-1, 8 * 4096)
    m[4096 * 3 + 10] = 1
    assert list(ec.zero_page_flags(m)) == [1, 1, 1, 0, 1, 1, 1, 1]
    m.close()


def test_non_contiguous_buffer_rejected():
    mv = memoryview(bytearray(64))[::2]
    with pytest.raises((BufferError, TypeError, ValueError)):
        ec.is_zero(mv)


def test_threads_share_cache_safely():
    cache = ec.XbzrleCache(1 << 20)
    mem = bytearray(random.Random(6).randbytes(256 * 4096))
    errors = []

    def work(seed):
        try:
            rnd = random.Random(seed)
            out = bytearray(ec.encode_bound(1024))
            for _ in range(30):
                pfns = array.array('Q', sorted(rnd.sample(range(256), 64)))
                ec.encode_batch(
                    mem,
                    pfns,
                    out,
                    ec.ENC_ZERO | ec.ENC_XBZRLE | ec.ENC_CRC,
                    cache,
                )
                cache.stats()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = cache.stats()
    assert s['hits'] + s['misses'] > 0


def _xbzrle_record(pages):
    """An XBZRLE_PAGES body: count, reserved, pfns, lengths, pad, data."""
    import struct
    head = struct.pack('<II', len(pages), 0)
    head += b''.join(struct.pack('<Q', pfn) for pfn, _ in pages)
    head += b''.join(struct.pack('<H', len(d)) for _, d in pages)
    head += b'\0' * (-len(head) % 8)
    return head + b''.join(d for _, d in pages), len(head)


@pytest.mark.parametrize('count', [1, 2, 5, 8])
@pytest.mark.parametrize('bad_at', [None, 0, 'middle', 'last'])
def test_apply_xbzrle_record_pages_in_pairs(count, bad_at):
    """The record's pages are validated two walks at a time, then applied
    two at a time: an odd count, a bad page anywhere (first or second of
    a pair) -- every page applies, or none does, and the error names the
    page and the byte of the body."""
    rnd = random.Random(count)
    old = bytearray(rnd.randbytes(4096 * count))
    new = bytearray(old)
    pages = []
    for p in range(count):
        for i in range(4096 * p, 4096 * (p + 1)):
            if rnd.randrange(1000) < 20 + 30 * p:
                new[i] ^= rnd.randrange(1, 256)
        enc = ec.xbzrle_encode(bytes(old[4096 * p:4096 * (p + 1)]),
                               bytes(new[4096 * p:4096 * (p + 1)]), 4095)
        assert enc
        pages.append((p, enc))
    bad = {None: None, 0: 0, 'middle': count // 2, 'last': count - 1}[bad_at]
    if bad is not None:
        # an nzrun running past the end of the page, after a valid prefix
        pages[bad] = (bad, pages[bad][1] + b'\x00\x7f' + b'x' * 10)
    body, head = _xbzrle_record(pages)
    mem = bytearray(old)
    if bad is None:
        assert ec.apply_xbzrle(body, mem) == count
        assert mem == new
        return
    with pytest.raises(ec.FormatError) as err:
        ec.apply_xbzrle(body, mem)
    assert mem == old, 'a refused record must not touch guest memory'
    assert 'page %d is malformed' % bad in str(err.value)
    start = head + sum(len(d) for _, d in pages[:bad])
    # the bad zrun (an empty one mid-page) is where the valid prefix ends
    assert err.value.args[1] == start + len(pages[bad][1]) - 12
