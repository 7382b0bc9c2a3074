"""xl's save-file header, write_page_data and rewrite_stream (interchange).

The last test rewrites the real ``xl save`` stream the Xen testbed ships
(../shared/xen-testbed/streams) and runs Xen's verify-stream-v2 from the
testbed on the result; both are skipped, with the reason, when the testbed
is not beside the checkout.
"""

import io
import lzma
import os
import struct
import subprocess
import sys

import pytest

from nova_xen_stubdom import emucore
from nova_xen_stubdom.emucore import format as fmt
from nova_xen_stubdom.emucore import rewrite
from nova_xen_stubdom.emucore import xlsave

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
TESTBED = os.environ.get(
    'XEN_TESTBED', os.path.join(ROOT, '..', 'shared', 'xen-testbed')
)
XL_HVM_STREAM = os.path.join(TESTBED, 'streams', 'hvm-guest-64M.xl-save.xz')
KEY = bytes(range(32))
NOTAB = 0
XTAB = 0xF << 60


def xl_like_stream(npages=8, holes=4):
    """A stream laid out as xl writes HVM saves: NOTAB pages interleaved
    with XTAB (unpopulated, no data) words, CPUID/MSR policies, params,
    context and QEMU state.  Returns (stream, memory of the data pages)."""
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode='compat')
    w.write_header()
    w.write_static_data(cpuid_policy=b'\1' * 24, msr_policy=b'\2' * 16)
    words, data = [], bytearray()
    for p in range(npages + holes):
        if p % 3 == 2 and holes:
            words.append(XTAB | p)
            holes -= 1
        else:
            words.append(NOTAB | p)
            data += bytes([p & 0xFF]) * 4096
    w.write_page_data(words, data)
    w.write_tsc_info(mode=1, khz=2000000, nsec=7, incarnation=3)
    w.write_hvm_params([(2, 0xFEFFC), (5, 1)])
    w.write_hvm_context(b'hvm-context')
    w.end_libxc()
    w.write_emulator_context(b'QEVM state')
    w.close()
    return out.getvalue(), words, data


def test_header_round_trip():
    cfg = b'{"c_info": {"type": "hvm", "name": "g"}}'
    hdr = xlsave.build_header(cfg)
    magic, order, mand, opt, optlen = struct.unpack_from(
        xlsave.HEADER_FORMAT, hdr
    )
    assert magic == b'Xen saved domain, xl format\n \0 \r'
    assert (order, mand, opt) == (0x01020304, 3, 0)
    assert optlen == 4 + len(cfg) + 1 == len(hdr) - 48
    assert struct.unpack_from('<I', hdr, 48)[0] == len(cfg) + 1
    assert hdr.endswith(cfg + b'\0')
    parsed = xlsave.parse_header(hdr + b'LibxlFmt')
    assert parsed.length == len(hdr)
    assert parsed.config == cfg and parsed.json
    assert parsed.config_json()['c_info']['name'] == 'g'


def test_header_xl_config_text():
    hdr = xlsave.build_header(b'name="g"\n', config_is_json=False)
    parsed = xlsave.parse_header(hdr)
    assert parsed.mandatory_flags == xlsave.FLAG_STREAMV2
    assert parsed.config == b'name="g"\n'
    with pytest.raises(ValueError):
        parsed.config_json()


@pytest.mark.parametrize(
    'mutate,msg',
    [
        (lambda h: b'Y' + h[1:], 'wrong magic'),
        (lambda h: h[:32] + b'\1\2\3\4' + h[36:], 'byte order'),
        (lambda h: h[:36] + b'\7\0\0\0' + h[40:], 'unknown mandatory'),
        (lambda h: h[:36] + b'\1\0\0\0' + h[40:], 'legacy'),
        (lambda h: h[:-3], 'truncated'),
        (lambda h: h[:20], 'not an xl save file'),
        (lambda h: h[:48] + b'\xff\0\0\0' + h[52:], 'config length'),
        (lambda h: h[:-1] + b'}', 'NUL-terminated'),
    ],
)
def test_header_refused(mutate, msg):
    hdr = xlsave.build_header(b'{"a": 1}')
    with pytest.raises(emucore.StreamError, match=msg):
        xlsave.parse_header(mutate(hdr))


def test_build_header_refuses_bad_config():
    with pytest.raises(ValueError, match='not JSON'):
        xlsave.build_header(b'name="g"')
    with pytest.raises(ValueError, match='NUL'):
        xlsave.build_header(b'{}\0{}')
    with pytest.raises(TypeError):
        xlsave.build_header('{}')


def test_write_page_data_records_and_restore():
    stream, words, data = xl_like_stream(npages=1500, holes=300)
    recs = [
        r for r in emucore.StreamReader(stream).records()
        if r.layer == 'libxc' and r.rtype == fmt.REC_TYPE_PAGE_DATA
    ]
    # 1800 words: one full record of 1024, one of 776; XTAB words carried.
    assert [struct.unpack_from('<I', r.body)[0] for r in recs] == [1024, 776]
    mem = bytearray(1800 * 4096)
    res = emucore.StreamReader(stream).restore(mem)
    assert res.pages == 1500
    for w in words:
        p = w & fmt.PAGE_DATA_PFN_MASK
        page = mem[p * 4096: (p + 1) * 4096]
        if w >> 60 == 0:
            assert page == bytes([p & 0xFF]) * 4096
        else:
            assert not any(page)


@pytest.mark.parametrize(
    'words,data,msg',
    [
        ([0, 1], b'\0' * 4096, 'data of 4096 bytes for 2'),
        ([5 << 60], b'\0' * 4096, 'invalid type'),
        ([1 << 52], b'\0' * 4096, 'reserved bits'),
        ([1 << 56], b'\0' * 4096, 'reserved bits'),
        ([XTAB], b'\0' * 4096, 'data of 4096 bytes for 0'),
    ],
)
def test_write_page_data_refuses(words, data, msg):
    w = emucore.StreamWriter(io.BytesIO(), mode='compat')
    w.write_header()
    w.write_static_data()
    before = w.offset
    with pytest.raises(ValueError, match=msg):
        w.write_page_data(words, data)
    assert w.offset == before


def test_write_page_data_refused_with_xbzrle_cache():
    w = emucore.StreamWriter(
        io.BytesIO(), mode='full', xbzrle_cache=emucore.XbzrleCache(1 << 20)
    )
    w.write_header()
    w.write_static_data()
    with pytest.raises(ValueError, match='XBZRLE'):
        w.write_page_data([0], b'\0' * 4096)


def test_rewrite_compat_is_identical():
    stream, _, _ = xl_like_stream()
    out = io.BytesIO()
    info = rewrite.rewrite_stream(stream, out)
    assert out.getvalue() == stream
    assert info.hvm_context == b'hvm-context'
    assert info.cpuid_policy == b'\1' * 24


def test_rewrite_to_full_and_back():
    stream, _, _ = xl_like_stream(npages=40, holes=10)
    full = io.BytesIO()
    rewrite.rewrite_stream(stream, full, mode='full', key=KEY)
    res_full = emucore.StreamReader(full.getvalue(), key=KEY).verify()
    assert res_full.authenticated and res_full.tags >= 1
    back = io.BytesIO()
    rewrite.rewrite_stream(full.getvalue(), back, source_key=KEY)
    assert back.getvalue() == stream


def test_rewrite_refuses_bad_source_without_writing():
    stream, _, _ = xl_like_stream()
    bad = bytearray(stream)
    bad[-9] ^= 1  # inside the libxl END record's header
    out = io.BytesIO()
    with pytest.raises(emucore.StreamError):
        rewrite.rewrite_stream(bytes(bad), out)
    assert out.getvalue() == b''
    with pytest.raises(ValueError, match='buffer'):
        rewrite.rewrite_stream(io.BytesIO(stream), out)


def test_rewrite_refuses_memory_dependent_records():
    mem = bytearray(16 * 4096)  # all zero: NX_ZERO_RUNS in full mode
    src = io.BytesIO()
    w = emucore.StreamWriter(src, mode='full')
    w.write_header()
    w.write_static_data()
    w.write_pages(mem, range(16))
    w.write_hvm_context(b'x')
    w.end_libxc()
    w.close()
    out = io.BytesIO()
    with pytest.raises(ValueError, match='NX_ZERO_RUNS'):
        rewrite.rewrite_stream(src.getvalue(), out)
    assert out.getvalue() == b''


def _verifier():
    exe = os.path.join(TESTBED, 'verifier', 'verify-stream-v2')
    if not os.path.exists(exe):
        pytest.skip('Xen testbed verifier not found at %s' % exe)
    return exe


@pytest.mark.skipif(
    not os.path.exists(XL_HVM_STREAM),
    reason='xen-testbed xl save stream not found at %s' % XL_HVM_STREAM,
)
def test_rewrite_real_xl_save_stream(tmp_path):
    data = lzma.open(XL_HVM_STREAM).read()
    hdr = xlsave.parse_header(data)
    assert hdr.config_json()['c_info']['type'] == 'hvm'
    out = io.BytesIO()
    out.write(xlsave.build_header(hdr.config))
    info = rewrite.rewrite_stream(memoryview(data)[hdr.length:], out)
    assert info.emulator_context and info.hvm_context
    assert info.pages == 16380
    # Our writer reproduces xl's file byte for byte.
    assert out.getvalue() == data
    path = tmp_path / 'ours.save'
    path.write_bytes(out.getvalue())
    exe = _verifier()
    py = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else (
        sys.executable)
    proc = subprocess.run(
        [py, exe, '-f', 'xl', '-i', str(path)],
        env=dict(os.environ, PYTHONPATH=os.path.dirname(exe)),
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
