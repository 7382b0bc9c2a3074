"""inspect-stream: lists records, says why a stream is refused."""

import io
import json

from nova_xen_stubdom import emucore
from nova_xen_stubdom.cmd import main as cli

KEY = bytes(range(32))


def _image(tmp_path, key=KEY, tamper=None):
    mem = bytearray(40 * 4096)
    mem[4096:8192] = b'\x42' * 4096
    out = io.BytesIO()
    w = emucore.StreamWriter(
        out, mode='full', key=key, xbzrle_cache=emucore.XbzrleCache(1 << 20)
    )
    w.write_header()
    w.write_static_data()
    w.write_pages(mem, range(40))
    w.end_round()
    mem[4096 + 9] = 1
    w.write_pages(mem, [1])
    w.end_libxc()
    w.write_emulator_xenstore_data()
    w.write_emulator_context(b'dm')
    w.close()
    data = bytearray(out.getvalue())
    if tamper is not None:
        data[tamper] ^= 0x10
    p = tmp_path / 'image'
    p.write_bytes(bytes(data))
    return str(p)


def test_lists_records_and_verifies_tags(tmp_path, capsys):
    path = _image(tmp_path)
    assert cli.main(['inspect-stream', path, '--key', KEY.hex()]) == 0
    out = capsys.readouterr().out
    for name in (
        'NX_AUTH_INIT',
        'LIBXC_CONTEXT',
        'PAGE_DATA',
        'NX_ZERO_RUNS',
        'NX_XBZRLE_PAGES',
        'NX_BATCH_CRC32C',
        'NX_AUTH_TAG',
        'EMULATOR_CONTEXT',
    ):
        assert name in out
    assert 'pages: 1 raw, 39 zero, 1 xbzrle' in out
    assert 'tags 2/2 verified' in out and 'verdict: ok' in out


def test_wrong_key_is_refused_with_offset(tmp_path, capsys):
    path = _image(tmp_path)
    assert (
        cli.main(['inspect-stream', path, '--key', '11' * 32, '--json']) == 1
    )
    out = json.loads(capsys.readouterr().out)
    assert out['verdict'] == 'refused'
    assert out['error']['kind'] == 'AuthenticationError'
    assert out['error']['type'] == 'NX_AUTH_TAG' and out['error']['offset'] > 0


def test_truncated_and_no_key(tmp_path, capsys):
    path = _image(tmp_path)
    data = open(path, 'rb').read()
    short = tmp_path / 'short'
    short.write_bytes(data[: len(data) // 2])
    assert cli.main(['inspect-stream', str(short)]) == 1
    assert 'REFUSED: StreamError: stream truncated' in capsys.readouterr().out
    assert cli.main(['inspect-stream', path]) == 0
    assert 'tags not checked' in capsys.readouterr().out


def test_tampered_names_record(tmp_path, capsys):
    path = _image(tmp_path, tamper=200)
    assert cli.main(['inspect-stream', path, '--key', KEY.hex()]) == 1
    out = capsys.readouterr().out
    assert 'REFUSED' in out and 'byte offset' in out
