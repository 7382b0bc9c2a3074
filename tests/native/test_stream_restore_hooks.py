"""NX_DOMAIN_INFO and the restore hooks (prepare, on_segment) that the
save/restore and live migration engine builds on."""

import io
import os
import re
import struct

import pytest

from nova_xen_stubdom import emucore
from nova_xen_stubdom.emucore import format as fmt

KEY = bytes(range(32))
INFO = {'vm_uuid': 'vm-1', 'max_pfn': 64, 'vcpus': 2, 'hvm': True}


def make_mem(npages, seed=7):
    rnd = __import__('random').Random(seed)
    mem = bytearray(npages * 4096)
    for p in range(0, npages, 2):
        mem[p * 4096: (p + 1) * 4096] = rnd.randbytes(4096)
    return mem


def live_stream(mem, key=KEY, info=INFO, rounds=2):
    """Like a live migration: description, a tagged preamble, a first
    pass and re-sent rounds, each closed by end_round()."""
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode='full', key=key,
                             xbzrle_cache=emucore.XbzrleCache(1 << 20))
    w.write_header()
    if info is not None:
        w.write_domain_info(info)
    w.write_static_data()
    w.end_round()
    w.write_pages(mem, range(len(mem) // 4096))
    w.end_round()
    for r in range(rounds - 1):
        pfns = list(range(r, len(mem) // 4096, 5))
        for p in pfns:
            mem[p * 4096 + 8] ^= 0xFF
        w.write_pages(mem, pfns)
        w.end_round()
    w.write_tsc_info()
    w.write_hvm_params([(2, 1)])
    w.write_hvm_context(b'ctx')
    w.end_libxc()
    w.write_emulator_xenstore_data({'physmap/1': 'f0'})
    w.write_emulator_context(b'QEVM')
    w.close()
    return out.getvalue(), w


def test_domain_info_round_trip_and_listed():
    data, _ = live_stream(make_mem(64))
    res = emucore.StreamReader(data, KEY).verify()
    assert res.domain_info == INFO
    recs = list(emucore.StreamReader(data, KEY).records())
    names = [r.name for r in recs]
    assert 'NX_DOMAIN_INFO' in names
    # before STATIC_DATA_END, in the libxc layer
    di = names.index('NX_DOMAIN_INFO')
    assert recs[di].layer == 'libxc'
    assert di < names.index('STATIC_DATA_END')


def test_domain_info_refused_in_compat_mode_and_twice():
    w = emucore.StreamWriter(io.BytesIO(), mode='compat')
    w.write_header()
    with pytest.raises(ValueError, match='compatible'):
        w.write_domain_info(INFO)
    w = emucore.StreamWriter(io.BytesIO(), mode='full')
    w.write_header()
    w.write_domain_info(INFO)
    with pytest.raises(RuntimeError, match='already'):
        w.write_domain_info(INFO)


def _stream_with_raw_info(bodies):
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode='full')
    w.write_header()
    for body in bodies:
        w._record(fmt.REC_TYPE_NX_DOMAIN_INFO, body)
    w.write_static_data()
    w.write_hvm_context(b'ctx')
    w.end_libxc()
    w.write_emulator_context(b'QEVM')
    w.close()
    return out.getvalue()


@pytest.mark.parametrize('bodies,match', [
    ([b'{not json'], 'not JSON'),
    ([b'[1, 2]'], 'not a JSON object'),
    ([b'\xff\xfe'], 'not JSON'),
    ([b'{}', b'{}'], 'second NX_DOMAIN_INFO'),
])
def test_bad_domain_info_is_refused(bodies, match):
    data = _stream_with_raw_info(bodies)
    with pytest.raises(emucore.RecordError, match=match) as ei:
        emucore.StreamReader(data).verify()
    assert ei.value.rtype == fmt.REC_TYPE_NX_DOMAIN_INFO
    assert ei.value.offset > 0


def test_domain_info_constant_matches_c_header():
    hdr = os.path.join(os.path.dirname(emucore.__file__), 'include',
                       'emucore_stream.h')
    text = open(hdr).read()
    m = re.search(r'#define EMU_REC_DOMAIN_INFO\s+(0x[0-9a-fA-F]+)', text)
    assert m and int(m.group(1), 16) == fmt.REC_TYPE_NX_DOMAIN_INFO
    m = re.search(r'#define EMU_DOMAIN_INFO_MAX\s+(\d+)', text)
    assert m and int(m.group(1)) == fmt.DOMAIN_INFO_MAX


def test_file_source_prepare_supplies_memory_and_segments_are_acked():
    """Live migration's receiver: memory is created once the description
    verified, and each tag is reported after its pages are in memory."""
    src = make_mem(64)
    data, w = live_stream(src)
    dst = bytearray(len(src))
    calls = []

    def prepare(res):
        assert res.domain_info == INFO
        assert not any(dst)        # no page written before prepare
        calls.append('prepare')
        return dst

    def on_segment(seq, res):
        calls.append(seq)
        if seq == 1:
            # the first pass is in memory when its tag is reported
            assert dst[4096 * 2: 4096 * 3] == make_mem(64)[4096 * 2:4096 * 3]

    res = emucore.StreamReader(io.BytesIO(data), KEY).restore(
        prepare=prepare, on_segment=on_segment)
    assert dst == src
    assert calls[0] == 'prepare'
    assert calls[1:] == list(range(w.stats['tags']))
    assert res.domain_info == INFO and res.emulator_context == b'QEVM'


def test_file_source_tampered_segment_is_not_applied_or_acked():
    src = make_mem(64)
    data, _ = live_stream(src, rounds=1)
    bad = bytearray(data)
    bad[len(data) // 2] ^= 1          # inside the first pass's pages
    dst = bytearray(len(src))
    acked = []
    with pytest.raises(emucore.StreamError):
        emucore.StreamReader(io.BytesIO(bytes(bad)), KEY).restore(
            prepare=lambda res: dst, on_segment=lambda s, r: acked.append(s))
    assert acked == [0]              # only the verified preamble
    assert not any(dst)


def test_file_source_needs_mem_or_prepare():
    data, _ = live_stream(make_mem(8))
    with pytest.raises(ValueError, match='mem or prepare'):
        emucore.StreamReader(io.BytesIO(data), KEY).restore()


def test_buffer_source_prepare_runs_after_full_verification():
    """A save image: prepare sees everything but pages and may refuse;
    a refusal writes nothing."""
    data, _ = live_stream(make_mem(64))
    dst = bytearray(64 * 4096)
    seen = {}

    def refuse(res):
        seen.update(ctx=res.hvm_context, dev=res.emulator_context,
                    info=res.domain_info)
        raise RuntimeError('belongs to another VM')

    with pytest.raises(RuntimeError, match='another VM'):
        emucore.StreamReader(data, KEY).restore(dst, prepare=refuse)
    assert seen == {'ctx': b'ctx', 'dev': b'QEVM', 'info': INFO}
    assert not any(dst)
    # and a tampered image never reaches prepare
    bad = bytearray(data)
    bad[-200] ^= 1
    with pytest.raises(emucore.StreamError):
        emucore.StreamReader(bytes(bad), KEY).restore(
            dst, prepare=lambda res: pytest.fail('prepare on a bad image'))
    assert not any(dst)


def test_buffer_source_on_segment_counts_tags_once():
    src = make_mem(64)
    data, w = live_stream(src)
    dst = bytearray(len(src))
    seqs = []
    res = emucore.StreamReader(data, KEY).restore(
        dst, on_segment=lambda s, r: seqs.append(s))
    assert dst == src
    assert seqs == list(range(w.stats['tags']))
    assert res.tags == w.stats['tags']
    assert struct.calcsize(fmt.AUTH_TAG_FORMAT) == 40


def test_allow_trailing_ignores_what_follows_end():
    """A stream stored on a fixed-size volume: refused by default, read
    up to END with allow_trailing (and tags still verified)."""
    src = make_mem(16)
    data, _ = live_stream(src)
    padded = data + b'\x00garbage' * 1000
    with pytest.raises(emucore.StreamError, match='after the libxl END'):
        emucore.StreamReader(padded, KEY).verify()
    dst = bytearray(len(src))
    res = emucore.StreamReader(padded, KEY, allow_trailing=True).restore(dst)
    assert dst == src and res.bytes == len(data)
    bad = bytearray(padded)
    bad[len(data) // 2] ^= 1
    with pytest.raises(emucore.StreamError):
        emucore.StreamReader(bytes(bad), KEY, allow_trailing=True).verify()


def test_before_pages_sees_every_page_record_before_it_is_written():
    """The hook the restore engine populates missing PFNs in
    (dom0/page_populate.py): each verified page record, before its pages
    land; the PFNs it names cover every page the stream carries."""
    from nova_xen_stubdom.dom0 import page_populate
    src = make_mem(64)
    data, _ = live_stream(src, rounds=1)
    dst = bytearray(len(src))
    seen = []

    def hook(rec):
        pfns = page_populate.record_pfns(rec.rtype, rec.body)
        assert all(not any(dst[p * 4096:(p + 1) * 4096]) for p in pfns
                   if p not in {q for r in seen for q in r})
        seen.append(pfns)
    emucore.StreamReader(data, KEY).restore(dst, before_pages=hook)
    assert dst == src
    assert sorted(p for r in seen for p in r) == list(range(64))


def test_before_pages_raising_stops_the_restore():
    data, _ = live_stream(make_mem(64), rounds=1)
    dst = bytearray(64 * 4096)

    def refuse(rec):
        raise RuntimeError('no frame')
    with pytest.raises(RuntimeError, match='no frame'):
        emucore.StreamReader(data, KEY).restore(dst, before_pages=refuse)
    assert not any(dst)
