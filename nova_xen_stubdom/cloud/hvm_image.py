"""The one image the test cloud boots: a small raw HVM disk.

``cloud up`` uploads it through Glance's API (``glance.upload_image``); the
glance stand-in serves the same bytes and properties when real Glance
cannot be installed.
"""
import struct
from typing import Dict

NAME = 'hvm-test-image'
SIZE = 1 << 20     # 1 MiB raw disk: enough for the simulator's VDI
SECTOR = 512
# What an HVM image says about itself; the driver reads hw_firmware_type
# and img_hv_type (driver/guest_config.py), the scheduler's
# ImagePropertiesFilter img_hv_type and vm_mode.
PROPERTIES: Dict[str, str] = {
    'hw_firmware_type': 'bios',
    'img_hv_type': 'xen',
    'vm_mode': 'hvm',
}
DISK_FORMAT = 'raw'
CONTAINER_FORMAT = 'bare'


def disk_bytes() -> bytes:
    """An MBR disk with one Linux partition over the rest of the disk.

    A partition entry, not just the boot signature: Glance inspects every
    upload (oslo.utils' format_inspector), takes a boot signature for an
    MBR/GPT disk and refuses one that defines no partition ("GPT MBR has no
    partitions defined", its ``mbr`` safety check).
    """
    disk = bytearray(SIZE)
    sectors = SIZE // SECTOR
    # boot flag, CHS start (LBA-only marker), type 0x83 (Linux), CHS end,
    # first LBA, sector count
    disk[446:462] = struct.pack('<B3BB3BII', 0x80, 0xFE, 0xFF, 0xFF, 0x83,
                                0xFE, 0xFF, 0xFF, 1, sectors - 1)
    disk[510:512] = b'\x55\xaa'
    return bytes(disk)
