"""Stream writer/reader round trips, refusal of bad streams, record formats."""

import io
import os
import struct

import pytest

from nova_xen_stubdom import emucore
from nova_xen_stubdom.emucore import format as fmt

KEY = bytes(range(32))


def make_mem(npages, seed=1):
    """Guest memory: a third random, some text-like, the rest zero."""
    rnd = __import__('random').Random(seed)
    mem = bytearray(npages * 4096)
    for p in range(npages):
        kind = p % 3
        if kind == 0:
            mem[p * 4096: (p + 1) * 4096] = rnd.randbytes(4096)
        elif kind == 1 and p % 2:
            line = b'line %d of page %d: the quick brown fox\n' % (p, p)
            mem[p * 4096: (p + 1) * 4096] = (line * 200)[:4096]
    return mem


def write_stream(mem, mode='compat', key=None, cache=None, rounds=(), xs=None):
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode=mode, key=key, xbzrle_cache=cache)
    w.write_header()
    w.write_static_data()
    w.write_pages(mem, range(len(mem) // 4096))
    w.end_round()
    for change in rounds:
        pfns = change(mem)
        w.write_pages(mem, pfns)
        w.end_round()
    w.write_tsc_info(mode=1, khz=2000000, nsec=5, incarnation=1)
    w.write_hvm_params([(2, 0xFEFF), (5, 1)])
    w.write_hvm_context(b'hvm-context-blob')
    w.end_libxc()
    w.write_emulator_xenstore_data(xs)
    w.write_emulator_context(b'QEVM device state')
    w.close()
    return out.getvalue(), w


def dirty_some(mem):
    """Change a few bytes in every 4th page; return the changed pfns."""
    pfns = list(range(0, len(mem) // 4096, 4))
    for p in pfns:
        mem[p * 4096 + 100] ^= 0x5A
        mem[p * 4096 + 3000: p * 4096 + 3004] = b'abcd'
    return pfns


@pytest.mark.parametrize(
    'mode,key,use_cache',
    [
        ('compat', None, False),
        ('full', None, False),
        ('full', None, True),
        ('full', KEY, False),
        ('full', KEY, True),
    ],
)
@pytest.mark.parametrize('as_file', [False, True])
def test_round_trip(mode, key, use_cache, as_file):
    mem = make_mem(200)
    cache = emucore.XbzrleCache(1 << 20) if use_cache else None
    data, w = write_stream(
        mem, mode, key, cache, rounds=[dirty_some, dirty_some]
    )
    dst = bytearray(len(mem))
    src = io.BytesIO(data) if as_file else data
    res = emucore.StreamReader(src, key=key).restore(dst)
    assert dst == mem
    assert res.hvm_params == [(2, 0xFEFF), (5, 1)]
    assert res.hvm_context == b'hvm-context-blob'
    assert res.tsc_info == (1, 2000000, 5, 1)
    assert res.emulator_context == b'QEVM device state'
    assert res.emulator_id == fmt.EMULATOR_ID_QEMU_UPSTREAM
    assert res.authenticated == (key is not None)
    assert res.bytes == len(data)
    if mode == 'full':
        assert w.stats['zero_pages'] > 0
        assert res.stats['crc_checked'] > 0
    if use_cache:
        assert w.stats['xbzrle_pages'] > 0
        assert (
            res.stats['xbzrle_pages']
            == w.stats['xbzrle_pages'] + w.stats['unchanged_pages']
        )


def test_full_mode_is_smaller():
    mem = make_mem(120)
    compat, _ = write_stream(bytearray(mem), 'compat')
    full, _ = write_stream(
        bytearray(mem),
        'full',
        cache=emucore.XbzrleCache(1 << 20),
        rounds=[dirty_some],
    )
    compat2, _ = write_stream(bytearray(mem), 'compat', rounds=[dirty_some])
    assert len(full) < len(compat2)
    assert len(compat) < len(compat2)


def test_buffer_sources_mmap_memoryview(tmp_path):
    import mmap

    mem = make_mem(64)
    data, _ = write_stream(mem, 'full', KEY)
    p = tmp_path / 'img'
    p.write_bytes(data)
    with (
        open(p, 'rb') as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm,
    ):
        dst = mmap.mmap(-1, len(mem))
        emucore.StreamReader(mm, key=KEY).restore(dst)
        assert dst[:] == bytes(mem)
        dst.close()
    dst = bytearray(len(mem))
    emucore.StreamReader(memoryview(data), key=KEY).restore(memoryview(dst))
    assert dst == mem


def _restore_refused(data, key, exc=emucore.StreamError, as_file=False):
    dst = bytearray(64 * 4096)
    src = io.BytesIO(data) if as_file else data
    with pytest.raises(exc) as info:
        emucore.StreamReader(src, key=key).restore(dst)
    return dst, info.value


def test_wrong_key_refused_before_any_write():
    data, _ = write_stream(make_mem(64), 'full', KEY)
    for as_file in (False, True):
        dst, err = _restore_refused(
            data, b'x' * 32, emucore.AuthenticationError, as_file
        )
        assert not any(dst)
        assert err.rtype == fmt.REC_TYPE_NX_AUTH_TAG and err.offset > 0


def test_tampered_byte_refused_before_any_write():
    data, _ = write_stream(make_mem(64), 'full', KEY)
    for pos in (40, len(data) // 3, len(data) // 2, len(data) - 100):
        bad = bytearray(data)
        bad[pos] ^= 1
        dst, _ = _restore_refused(bytes(bad), KEY)
        assert not any(dst), pos


@pytest.mark.parametrize(
    'mode,key', [('compat', None), ('full', None), ('full', KEY)]
)
def test_truncated_refused_before_any_write(mode, key):
    data, _ = write_stream(make_mem(64), mode, key)
    for cut in (5, 16, 100, len(data) // 2, len(data) - 8, len(data) - 1):
        dst, err = _restore_refused(data[:cut], key)
        assert not any(dst), cut
        assert err.offset is not None


def test_key_mismatch_modes():
    plain, _ = write_stream(make_mem(16), 'compat')
    authed, _ = write_stream(make_mem(16), 'full', KEY)
    _restore_refused(plain, KEY, emucore.AuthenticationError)
    _restore_refused(authed, None, emucore.AuthenticationError)


def test_stripped_final_tag_refused():
    data, _ = write_stream(make_mem(16), 'full', KEY)
    tag_len = 8 + 40
    end = data[-8:]
    stripped = data[: -8 - tag_len] + end
    _restore_refused(stripped, KEY, emucore.AuthenticationError)


def test_compat_mode_has_no_optional_records():
    data, _ = write_stream(make_mem(32), 'compat')
    recs = list(emucore.StreamReader(data).records())
    assert not [r for r in recs if r.optional]
    names = [(r.layer, r.name) for r in recs]
    assert names[0] == ('libxl', 'LIBXC_CONTEXT')
    assert ('libxc', 'STATIC_DATA_END') in names
    assert names[-3:] == [
        ('libxl', 'EMULATOR_XENSTORE_DATA'),
        ('libxl', 'EMULATOR_CONTEXT'),
        ('libxl', 'END'),
    ]


def test_compat_refuses_xenstore_pairs_unless_spec():
    with pytest.raises(ValueError, match='verify-stream-v2'):
        write_stream(make_mem(4), 'compat', xs={'physmap/1/size': '1000'})
    data, _ = write_stream(
        make_mem(4), 'full', xs={'physmap/1/size': '1000', 'a': 'b'}
    )
    res = emucore.StreamReader(data).verify()
    assert res.emulator_xenstore_data == {'physmap/1/size': '1000', 'a': 'b'}


def test_format_sizes_match_spec():
    for name, size in fmt.SPEC_SIZES.items():
        assert struct.calcsize(getattr(fmt, name)) == size, name


def test_header_constants_match_c_header():
    hdr = os.path.join(
        os.path.dirname(emucore.__file__), 'include', 'emucore_stream.h'
    )
    text = open(hdr).read()
    pairs = {
        'EMU_REC_ZERO_RUNS': fmt.REC_TYPE_NX_ZERO_RUNS,
        'EMU_REC_XBZRLE_PAGES': fmt.REC_TYPE_NX_XBZRLE_PAGES,
        'EMU_REC_BATCH_CRC32C': fmt.REC_TYPE_NX_BATCH_CRC32C,
        'EMU_REC_AUTH_INIT': fmt.REC_TYPE_NX_AUTH_INIT,
        'EMU_REC_AUTH_TAG': fmt.REC_TYPE_NX_AUTH_TAG,
        'EMU_LIBXC_REC_PAGE_DATA': fmt.REC_TYPE_PAGE_DATA,
        'EMU_LIBXC_REC_STATIC_DATA_END': fmt.REC_TYPE_STATIC_DATA_END,
        'EMU_LIBXC_REC_X86_CPUID_POLICY': fmt.REC_TYPE_X86_CPUID_POLICY,
        'EMU_LIBXC_REC_X86_MSR_POLICY': fmt.REC_TYPE_X86_MSR_POLICY,
        'EMU_LIBXC_REC_X86_TSC_INFO': fmt.REC_TYPE_X86_TSC_INFO,
        'EMU_CPUID_NO_SUBLEAF': 0xFFFFFFFF,
        'EMU_LIBXL_REC_EMULATOR_CONTEXT': fmt.LIBXL_REC_TYPE_EMULATOR_CONTEXT,
        'EMU_LIBXC_IDENT': fmt.IHDR_IDENT,
        'EMU_LIBXL_IDENT': fmt.LIBXL_HDR_IDENT,
    }
    import re

    for name, value in pairs.items():
        m = re.search(r'#define %s\s+(0x[0-9a-fA-F]+)' % name, text)
        assert m, name
        assert int(m.group(1), 16) == value, name


def test_errors_name_record_and_offset():
    data, _ = write_stream(make_mem(8), 'compat')
    recs = list(emucore.StreamReader(data).records())
    pd = [
        r
        for r in recs
        if r.layer == 'libxc' and r.rtype == fmt.REC_TYPE_PAGE_DATA
    ][0]
    bad = bytearray(data)
    # Reserved field of the PAGE_DATA body.
    bad[pd.offset + 8 + 4] = 1
    _, err = _restore_refused(bytes(bad), None, emucore.RecordError)
    assert err.rtype == fmt.REC_TYPE_PAGE_DATA
    assert err.offset == pd.offset + 8 + 4
    assert 'PAGE_DATA' in str(err) and str(pd.offset + 12) in str(err)


def test_pfn_beyond_target_refused_before_write():
    mem = make_mem(64)
    data, _ = write_stream(mem, 'compat')
    dst = bytearray(32 * 4096)
    with pytest.raises(emucore.RecordError, match='beyond guest memory'):
        emucore.StreamReader(data).restore(dst)
    assert not any(dst)


def test_readonly_target_rejected():
    data, _ = write_stream(make_mem(4), 'compat')
    with pytest.raises(ValueError):
        emucore.StreamReader(data).restore(bytes(4 * 4096))


def test_writer_state_machine():
    w = emucore.StreamWriter(io.BytesIO())
    with pytest.raises(RuntimeError):
        w.write_pages(bytearray(4096), [0])
    with pytest.raises(ValueError):
        emucore.StreamWriter(io.BytesIO(), mode='compat', key=KEY)
    with pytest.raises(ValueError):
        emucore.StreamWriter(io.BytesIO(), mode='full', key=b'short')


# ---- property: random pages and dirty patterns over several rounds -------

from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def migration_rounds(draw):
    npages = draw(st.integers(1, 48))
    rounds = []
    for _ in range(draw(st.integers(0, 4))):
        dirty = draw(st.lists(st.integers(0, npages - 1), max_size=npages))
        writes = []
        for p in dirty:
            kind = draw(st.sampled_from(['small', 'zero', 'random', 'same']))
            off = draw(st.integers(0, 4095))
            writes.append(
                (p, kind, off, draw(st.binary(min_size=1, max_size=64)))
            )
        rounds.append((dirty, writes))
    return npages, rounds


def _apply_write(mem, rnd, p, kind, off, data):
    base = p * 4096
    if kind == 'small':
        mem[base + off: base + min(4096, off + len(data))] = data[
            : 4096 - off
        ]
    elif kind == 'zero':
        mem[base: base + 4096] = bytes(4096)
    elif kind == 'random':
        mem[base: base + 4096] = rnd.randbytes(4096)


@settings(max_examples=60, deadline=None)
@given(
    migration_rounds(),
    st.sampled_from(
        [
            ('compat', None, False),
            ('full', None, True),
            ('full', KEY, True),
            ('full', KEY, False),
        ]
    ),
    st.integers(1, 1 << 20),
    st.booleans(),
)
def test_round_trip_property(case, mode, cache_bytes, as_file):
    npages, rounds = case
    mode_name, key, use_cache = mode
    rnd = __import__('random').Random(npages)
    mem = make_mem(npages, seed=npages)
    cache = emucore.XbzrleCache(max(4096, cache_bytes)) if use_cache else None
    out = io.BytesIO()
    w = emucore.StreamWriter(
        out,
        mode=mode_name,
        key=key,
        xbzrle_cache=cache,
        segment_bytes=rnd.choice([4096, 1 << 20]),
    )
    w.write_header()
    w.write_static_data()
    w.write_pages(mem, range(npages))
    for dirty, writes in rounds:
        for p, kind, off, data in writes:
            _apply_write(mem, rnd, p, kind, off, data)
        w.write_pages(mem, dirty)  # unsorted, duplicates allowed
        w.end_round()
    w.end_libxc()
    w.write_emulator_xenstore_data()
    w.write_emulator_context(b'dm')
    w.close()
    dst = bytearray(len(mem))
    data = out.getvalue()
    emucore.StreamReader(
        io.BytesIO(data) if as_file else data, key=key
    ).restore(dst)
    assert dst == mem


def test_crc_catches_corruption_without_key():
    data, _ = write_stream(make_mem(32), 'full')
    recs = list(emucore.StreamReader(data).records())
    pd = [
        r
        for r in recs
        if r.layer == 'libxc' and r.rtype == fmt.REC_TYPE_PAGE_DATA
    ][0]
    bad = bytearray(data)
    bad[pd.offset + pd.length - 5] ^= (
        0xFF  # inside the last page of the record
    )
    dst, err = _restore_refused(bytes(bad), None, emucore.RecordError)
    assert err.rtype == fmt.REC_TYPE_NX_BATCH_CRC32C
    assert not any(dst)


def test_socket_stream_applies_verified_segments_only():
    """Live migration: segments are applied once their tag verifies; a bad
    second round is refused before any of its pages is written."""
    import socket
    import threading

    round1 = make_mem(64)
    mem = bytearray(round1)
    data, _ = write_stream(mem, 'full', KEY, rounds=[dirty_some])
    assert mem != round1
    recs = list(emucore.StreamReader(data, key=KEY).records())
    first_tag = [r for r in recs if r.rtype == fmt.REC_TYPE_NX_AUTH_TAG][0]
    second = [
        r
        for r in recs
        if r.layer == 'libxc'
        and r.rtype == fmt.REC_TYPE_PAGE_DATA
        and r.offset > first_tag.offset
    ][0]
    bad = bytearray(data)
    bad[second.offset + 8 + second.length - 1] ^= 1   # last byte of a page
    a, b = socket.socketpair()
    sender = threading.Thread(target=lambda: (a.sendall(bytes(bad)),
                                              a.close()))
    sender.start()
    dst = bytearray(len(mem))
    try:
        with b, b.makefile('rb') as f:
            reader = emucore.StreamReader(f, key=KEY)
            try:
                reader.restore(dst)
            except emucore.StreamError as exc:
                err = exc
            else:
                raise AssertionError('tampered stream accepted')
    finally:
        sender.join()
    assert err.offset > first_tag.offset
    assert dst == round1


def test_trailing_data_after_end_refused_for_files():
    data, _ = write_stream(make_mem(8), 'full', KEY)
    for src in (data + b'\0', io.BytesIO(data + b'\0')):
        with pytest.raises(emucore.StreamError, match='after the libxl END'):
            emucore.StreamReader(src, key=KEY).restore(bytearray(8 * 4096))
