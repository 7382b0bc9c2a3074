"""The stub domain's device-state disk: header format, pack, unpack, verify.

QEMU in the stub domain cannot hand its device state to dom0 through a file
(it lives in another domain), and libxl's console channels are not used here.
Instead dom0 attaches a small virtual disk to the stub domain for the length of
one save or restore; the disk holds one header sector followed by the state.

Layout (all integers little-endian; one 512-byte sector of header):

====== ====== ==========================================================
offset size   field
====== ====== ==========================================================
0      8      magic ``b"NXSDSTAT"``
8      4      version (``1``)
12     4      header size in bytes (``512``; the state starts there)
16     8      length of the state in bytes
24     32     sha256 of the state bytes
56     456    reserved, zero
====== ====== ==========================================================

The state bytes follow at offset 512; the disk is padded with zeros to a
whole number of 512-byte sectors.  ``doc/source/stubdom.rst`` describes the
same format; the stub domain's init (``init.sh``) writes and reads it with
busybox tools, and the unit tests check the two agree.
"""

import hashlib
import io
import os
import struct
from typing import BinaryIO, Union

from nova_xen_stubdom.dom0 import records

MAGIC = b"NXSDSTAT"
VERSION = 1
SECTOR = 512
HEADER_SIZE = 512
#: magic, version, header size, state length, sha256 of the state.
HEADER_FORMAT = "<8sIIQ32s"
HEADER_USED = struct.calcsize(HEADER_FORMAT)  # 56
#: Refuse absurd lengths early (a corrupt header must not make us read 2**64).
MAX_STATE_LENGTH = 1 << 34


class StateDiskError(ValueError):
    """The disk does not hold a valid, complete device state."""


@records.record(frozen=True)
class StateHeader:
    version: int
    header_size: int
    length: int
    sha256: bytes

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()


def pack_header(state: bytes) -> bytes:
    """Return the 512-byte header sector for ``state``."""
    head = struct.pack(HEADER_FORMAT, MAGIC, VERSION, HEADER_SIZE,
                       len(state), hashlib.sha256(state).digest())
    return head + bytes(HEADER_SIZE - len(head))


def image_size(length: int) -> int:
    """Bytes a state disk needs for ``length`` state bytes (whole sectors)."""
    total = HEADER_SIZE + length
    return -(-total // SECTOR) * SECTOR


def build_image(state: bytes) -> bytes:
    """Header, state and zero padding to a whole sector: the disk's content."""
    data = pack_header(state) + state
    return data + bytes(image_size(len(state)) - len(data))


def unpack_header(buf: bytes) -> StateHeader:
    """Parse and check a header sector; raise StateDiskError if invalid."""
    if len(buf) < HEADER_SIZE:
        raise StateDiskError("state disk header truncated: expected %d bytes,"
                             " got %d" % (HEADER_SIZE, len(buf)))
    magic, version, hsize, length, digest = struct.unpack_from(
        HEADER_FORMAT, buf)
    if magic != MAGIC:
        raise StateDiskError("bad state disk magic: expected %r, got %r"
                             % (MAGIC, magic))
    if version != VERSION:
        raise StateDiskError("unsupported state disk version: expected %d,"
                             " got %d" % (VERSION, version))
    if hsize != HEADER_SIZE:
        raise StateDiskError("bad state disk header size: expected %d, got %d"
                             % (HEADER_SIZE, hsize))
    if any(buf[HEADER_USED:HEADER_SIZE]):
        raise StateDiskError("state disk header reserved bytes are not zero")
    if length > MAX_STATE_LENGTH:
        raise StateDiskError("state length %d exceeds the limit %d"
                             % (length, MAX_STATE_LENGTH))
    return StateHeader(version, hsize, length, digest)


def read_state(f: BinaryIO) -> bytes:
    """Read header + state from a file/device positioned at its start.

    Verifies the length (the disk must hold all of it) and the sha256.
    """
    header = unpack_header(f.read(HEADER_SIZE))
    state = f.read(header.length)
    if len(state) != header.length:
        raise StateDiskError("state truncated: header says %d bytes, disk"
                             " holds %d" % (header.length, len(state)))
    got = hashlib.sha256(state).digest()
    if got != header.sha256:
        raise StateDiskError("state sha256 mismatch: header %s, data %s"
                             % (header.sha256.hex(), got.hex()))
    return state


def unpack_image(image: bytes) -> bytes:
    """Verify a whole disk image in memory and return the state bytes."""
    return read_state(io.BytesIO(image))


def write_state_file(path: Union[str, 'os.PathLike'], state: bytes) -> int:
    """Write a state disk image (a file dom0 then attaches as a disk).

    Returns the image size.  Written to a temporary name and renamed, so a
    crash never leaves a half-written image under ``path``.
    """
    data = build_image(state)
    tmp = "%s.tmp.%d" % (os.fspath(path), os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return len(data)


def read_state_file(path: Union[str, 'os.PathLike']) -> bytes:
    """Read and verify the state from a disk image file or block device."""
    with open(path, "rb") as f:
        return read_state(f)
