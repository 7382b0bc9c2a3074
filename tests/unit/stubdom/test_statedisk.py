import hashlib
import io
import struct

import pytest

from nova_xen_stubdom.dom0 import statedisk as sd


def test_header_layout_matches_the_documented_offsets():
    state = b"device state" * 100
    head = sd.pack_header(state)
    assert len(head) == sd.HEADER_SIZE == 512
    assert sd.HEADER_USED == 56
    assert head[0:8] == b"NXSDSTAT"
    assert struct.unpack_from("<I", head, 8)[0] == 1
    assert struct.unpack_from("<I", head, 12)[0] == 512
    assert struct.unpack_from("<Q", head, 16)[0] == len(state)
    assert head[24:56] == hashlib.sha256(state).digest()
    assert head[56:] == bytes(456)


@pytest.mark.parametrize("length", [0, 1, 511, 512, 513, 4096, 100000])
def test_round_trip_and_sector_padding(length):
    state = bytes(i % 251 for i in range(length))
    image = sd.build_image(state)
    assert len(image) % 512 == 0
    assert len(image) == sd.image_size(length)
    assert len(image) >= 512 + length
    assert sd.unpack_image(image) == state


def test_file_round_trip(tmp_path):
    path = tmp_path / "disk.img"
    n = sd.write_state_file(path, b"abc" * 1000)
    assert n == path.stat().st_size == sd.image_size(3000)
    assert sd.read_state_file(path) == b"abc" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


def _corrupt(image, offset, value):
    b = bytearray(image)
    b[offset:offset + len(value)] = value
    return bytes(b)


@pytest.mark.parametrize("offset,value,message", [
    (0, b"XXXXXXXX", "bad state disk magic"),
    (8, struct.pack("<I", 2), "unsupported state disk version"),
    (12, struct.pack("<I", 1024), "header size"),
    (100, b"\x01", "reserved bytes"),
    (16, struct.pack("<Q", 1 << 40), "exceeds the limit"),
    (16, struct.pack("<Q", 5000), "state truncated"),
    (600, b"\xff", "sha256 mismatch"),
    (30, b"\x00\x00", "sha256 mismatch"),
])
def test_corruption_is_detected_with_a_clear_message(offset, value, message):
    image = sd.build_image(bytes(range(200)) * 2)
    with pytest.raises(sd.StateDiskError, match=message):
        sd.unpack_image(_corrupt(image, offset, value))


def test_truncated_header():
    with pytest.raises(sd.StateDiskError, match="truncated"):
        sd.read_state(io.BytesIO(b"NXSDSTAT"))
