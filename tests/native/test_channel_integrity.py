"""Streams that rely on their channel (TLS) for integrity: AUTH_ALG_CHANNEL
segment markers instead of HMAC tags; only a reader told its source is such
a channel accepts them, and it accepts nothing else."""
import io
import struct

import pytest

from nova_xen_stubdom import emucore
from nova_xen_stubdom.emucore import format as fmt
from tests.native.test_stream import make_mem, KEY


def _write(mem, **kw):
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode='full', **kw)
    w.write_header()
    w.write_static_data()
    w.write_pages(mem, range(len(mem) // 4096))
    w.end_round()
    w.write_pages(mem, range(0, len(mem) // 4096, 5))
    w.end_round()
    w.write_hvm_params([(2, 1)])
    w.write_hvm_context(b'ctx')
    w.end_libxc()
    w.write_emulator_xenstore_data({})
    w.write_emulator_context(b'QEVM')
    w.close()
    return out.getvalue(), w


def test_channel_stream_round_trip_with_segments():
    mem = make_mem(48)
    data, w = _write(mem, channel_integrity=True)
    assert w.stats['tags'] == 3           # two rounds + the final marker
    target = bytearray(len(mem))
    segments = []
    res = emucore.StreamReader(io.BytesIO(data), channel_integrity=True
                               ).restore(prepare=lambda r: target,
                                         on_segment=lambda s, r:
                                         segments.append(s))
    assert target == mem
    assert segments == [0, 1, 2]
    assert not res.authenticated          # no HMAC: the channel vouched


def _types(data, **kw):
    return [r.rtype for r in
            emucore.StreamReader(io.BytesIO(data), **kw).records()]


def test_channel_stream_is_the_hmac_stream_without_its_crcs():
    """Same records either way (the tags' bytes zero) but the batch CRC32Cs:
    the channel's AEAD checks every byte they would cover."""
    mem = make_mem(16)
    chan, _ = _write(mem, channel_integrity=True)
    hmac_, _ = _write(mem, key=KEY)
    crc = fmt.REC_TYPE_NX_BATCH_CRC32C
    with_crc = _types(hmac_, key=KEY)
    without = _types(chan, channel_integrity=True)
    assert crc in with_crc and crc not in without
    assert without == [t for t in with_crc if t != crc]
    crc_bytes = 8 + struct.calcsize(fmt.BATCH_CRC32C_FORMAT)
    assert len(chan) == len(hmac_) - with_crc.count(crc) * crc_bytes


def test_channel_stream_refused_from_a_file_or_plain_socket():
    data, _ = _write(make_mem(8), channel_integrity=True)
    with pytest.raises(emucore.AuthenticationError, match='channel'):
        emucore.StreamReader(io.BytesIO(data)).restore(
            prepare=lambda r: bytearray(8 * 4096))
    with pytest.raises(emucore.AuthenticationError, match='channel'):
        emucore.StreamReader(data).verify()


@pytest.mark.parametrize('kw', [{'key': KEY}, {}])
def test_channel_reader_refuses_other_streams(kw):
    """A TLS receiver takes only channel streams: an HMAC one (a downgrade
    or a confused sender) or an untagged one is refused."""
    data, _ = _write(make_mem(8), **kw)
    with pytest.raises(emucore.AuthenticationError,
                       match='AUTH_ALG_CHANNEL'):
        emucore.StreamReader(io.BytesIO(data), channel_integrity=True
                             ).restore(prepare=lambda r: bytearray(8 * 4096))


def test_nonzero_segment_marker_refused():
    data, _ = _write(make_mem(8), channel_integrity=True)
    at = data.index(fmt.REC_TYPE_NX_AUTH_TAG.to_bytes(4, 'little'))
    bad = bytearray(data)
    bad[at + 8 + 8] ^= 1                  # first tag byte
    with pytest.raises(emucore.RecordError, match='non-zero'):
        emucore.StreamReader(io.BytesIO(bytes(bad)), channel_integrity=True
                             ).restore(prepare=lambda r: bytearray(8 * 4096))


def test_bad_combinations_refused():
    with pytest.raises(ValueError):
        emucore.StreamWriter(io.BytesIO(), mode='full', key=KEY,
                             channel_integrity=True)
    with pytest.raises(ValueError):
        emucore.StreamWriter(io.BytesIO(), mode='compat',
                             channel_integrity=True)
    with pytest.raises(ValueError):
        emucore.StreamReader(io.BytesIO(), key=KEY, channel_integrity=True)
