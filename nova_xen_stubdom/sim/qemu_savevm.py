"""QEMU's device state as the Xen machine (xenfv) saves it.

``xen-save-devices-state`` (QEMU ``migration/savevm.c``
``qemu_save_device_state``) writes the savevm stream without RAM: the
magic ``QEVM`` and version 3 (big endian), then one ``QEMU_VM_SECTION_FULL``
section per device (byte 0x04, section id, idstr length and idstr,
instance id, version id, the device's vmstate fields; no section footers on
this path) and ``QEMU_VM_EOF`` (0x00).

:data:`XENFV_SECTIONS` is the layout QEMU 8.0.3 (qemu-xen of the testbed,
``../shared/xen-testbed``) wrote for an HVM guest with the default xenfv
devices: the EMULATOR_CONTEXT of ``streams/hvm-guest-64M.xl-save`` holds
6645 bytes of it (``tests/unit/sim/test_qemu_savevm.py`` walks that real
state with this table where the testbed is present).  :func:`device_state`
writes a state of exactly that size and shape with bodies that depend on a
seed, so a restore can be checked byte for byte.
"""
import hashlib
import struct
from typing import List, Tuple

QEMU_VM_FILE_MAGIC = b'QEVM'
QEMU_VM_FILE_VERSION = 3
QEMU_VM_EOF = 0x00
QEMU_VM_SECTION_FULL = 0x04

#: (section id, idstr, instance id, version id, body bytes), in order
XENFV_SECTIONS: Tuple[Tuple[int, str, int, int, int], ...] = (
    (0, 'timer', 0, 2, 24),
    (3, 'cpu_common', 0, 1, 8),
    (4, 'cpu', 0, 12, 1347),
    (5, 'apic', 0, 3, 181),
    (7, 'PCIBUS', 0, 1, 516),
    (8, '0000:00:00.0/I440FX', 0, 3, 277),
    (9, 'dma', 0, 1, 75),
    (10, 'dma', 1, 1, 75),
    (11, '0000:00:01.0/PIIX3', 0, 3, 292),
    (12, 'ioapic', 0, 3, 206),
    (13, 'hpet', 0, 2, 151),
    (14, 'mc146818rtc', 0, 3, 245),
    (15, 'serial', 0, 3, 11),
    (16, 'fdc', 0, 2, 593),
    (17, 'ps2kbd', 0, 3, 284),
    (18, 'ps2mouse', 0, 2, 291),
    (19, 'pckbd', 0, 3, 4),
    (20, 'port92', 0, 1, 1),
    (21, '0000:00:01.1/ide', 0, 3, 942),
    (22, 'i2c_bus', 0, 1, 1),
    (23, '0000:00:01.3/piix4_pm', 0, 3, 336),
    (32, '0000:00:02.0/platform', 0, 4, 277),
)


def _body(seed: bytes, section_id: int, size: int) -> bytes:
    out = b''.join(hashlib.sha256(seed + struct.pack('<II', section_id, i))
                   .digest() for i in range((size + 31) // 32))
    return out[:size]


def _section_head(section_id: int, name: str, instance: int,
                  version: int) -> bytes:
    raw = name.encode('ascii')
    return (struct.pack('>BIB', QEMU_VM_SECTION_FULL, section_id, len(raw))
            + raw + struct.pack('>II', instance, version))


def device_state(seed: bytes, sections=XENFV_SECTIONS) -> bytes:
    """A device state shaped as QEMU's xenfv one, bodies derived from
    *seed*."""
    out = [QEMU_VM_FILE_MAGIC, struct.pack('>I', QEMU_VM_FILE_VERSION)]
    for sid, name, instance, version, size in sections:
        out.append(_section_head(sid, name, instance, version))
        out.append(_body(seed, sid, size))
    out.append(bytes([QEMU_VM_EOF]))
    return b''.join(out)


def walk(blob: bytes, sections=XENFV_SECTIONS) -> List[Tuple[str, int]]:
    """[(idstr, body size)] of a state laid out as *sections*; ValueError
    naming the first place it differs."""
    if blob[:8] != QEMU_VM_FILE_MAGIC + struct.pack(
            '>I', QEMU_VM_FILE_VERSION):
        raise ValueError('not a QEMU savevm stream version 3')
    off, out = 8, []
    for sid, name, instance, version, size in sections:
        head = _section_head(sid, name, instance, version)
        if blob[off:off + len(head)] != head:
            raise ValueError('at %d: expected section %d %r'
                             % (off, sid, name))
        off += len(head) + size
        out.append((name, size))
    if blob[off:] != bytes([QEMU_VM_EOF]):
        raise ValueError('at %d: expected QEMU_VM_EOF and the end' % off)
    return out
