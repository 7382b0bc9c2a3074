"""Disks and consoles of domains on a real Xen host (the ``xen`` backend).

**State disk (design decision).**  The device state of a stub domain's
QEMU travels on a small raw VDI.  dom0 attaches it to the stub domain
itself, through blkback, the way libxl attaches a ``phy`` disk -- not
through XAPI: the stub domain's XAPI VM is running and XAPI would have to
hot-plug a VBD into it, which needs a round trip through the driver in
the middle of a save.  The xenstore protocol written here is libxl's
(``tools/libs/light/libxl_disk.c`` ``device_disk_add``, with the generic
parts of ``libxl_device.c`` ``libxl__device_generic_add``): a backend
directory ``/local/domain/0/backend/vbd/<domid>/<devnum>`` owned by dom0
and readable by the domain, a frontend directory
``/local/domain/<domid>/device/vbd/<devnum>`` owned by the domain and
readable by dom0, both in state 1 (Initialising).  libxl's hotplug script
(``tools/hotplug/Linux/block``) then writes ``physical-device``; we write it
ourselves: a block device's ``major:minor`` in hex, and for a regular file
the loop device ``losetup`` gives it (what the script does for files).

**VDI paths.**  Only raw VDIs can be handed to blkback.  The storage
manager (xapi-project/sm) keeps a raw VDI of a file-based SR as
``/var/run/sr-mount/<sr>/<vdi>.raw`` (``drivers/vhdutil.py`` FILE_EXTN) and
one of an LVM SR as the logical volume ``LV-<vdi>`` of volume group
``VG_XenStorage-<sr>`` (``drivers/lvhdutil.py`` LV_PREFIX, VG_PREFIX).

**Consoles.**  A PV console ring is one page (``xen/include/public/io/
console.h`` ``struct xencons_interface``: ``in[1024]``, ``out[2048]``, then
the four 32-bit indexes).  xenconsoled consumes the output, but the bytes
stay in the ring until overwritten, so the last ``out_prod`` bytes (up to
2 KiB) are the tail of the console.  The page is ``console/ring-ref`` in
the domain's xenstore directory (an MFN for PV domains, a GFN for HVM
ones -- ``xenforeignmemory_map`` takes either).
"""
import glob
import os
import re
import stat
import struct
import subprocess
from typing import Callable, List, Optional

from nova_xen_stubdom.dom0 import errors

#: xenbus states (xen/include/public/io/xenbus.h)
XENBUS_INITIALISING = 1
XENBUS_CLOSING = 5
XENBUS_CLOSED = 6

SR_MOUNT_ROOT = '/var/run/sr-mount'
DEV_ROOT = '/dev'

CONSOLE_IN_BYTES = 1024
CONSOLE_OUT_BYTES = 2048
#: in_cons, in_prod, out_cons, out_prod after the two buffers
CONSOLE_INDEXES = struct.Struct('<4I')

_UUID = re.compile(r'^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$')
_XVD = re.compile(r'^xvd([a-z]+)$')


def disk_devnum(devid: str) -> int:
    """``xvdX`` -> the virtual device number libxl computes
    (``libxl_device.c`` ``libxl__device_disk_dev_number``)."""
    m = _XVD.match(devid)
    if not m:
        raise errors.InvalidArgument(name='devid', value=devid,
                                     reason='only xvd[a-z]+ names')
    index = 0
    for ch in m.group(1):
        index = index * 26 + (ord(ch) - ord('a') + 1)
    index -= 1
    if index < 16:
        return (202 << 8) | (index << 4)
    return (1 << 28) | (index << 8)


def losetup(path: str) -> str:
    """A loop device over the regular file *path* (``losetup --find``)."""
    out = subprocess.run(['losetup', '--find', '--show', path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    if out.returncode != 0:
        raise errors.AgentError('losetup %s failed: %s'
                                % (path, out.stderr.strip()))
    return out.stdout.strip()


def loop_detach(device: str) -> None:
    subprocess.run(['losetup', '--detach', device],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   timeout=60)


class XenDisks:
    """blkback disks over a backend's xenstore methods.

    :param xs: the backend (``xs_read``/``xs_write``/``xs_rm``/
        ``xs_set_perms``).
    :param loop_setup, loop_teardown: file -> loop device and back
        (tests pass stand-ins).
    """

    def __init__(self, xs, *,
                 loop_setup: Callable[[str], str] = losetup,
                 loop_teardown: Callable[[str], None] = loop_detach,
                 sr_mount_root: str = SR_MOUNT_ROOT,
                 dev_root: str = DEV_ROOT) -> None:
        self.xs = xs
        self.loop_setup = loop_setup
        self.loop_teardown = loop_teardown
        self.sr_mount_root = sr_mount_root
        self.dev_root = dev_root

    @staticmethod
    def paths(domid: int, devid: str):
        num = disk_devnum(devid)
        return ('/local/domain/0/backend/vbd/%d/%d' % (domid, num),
                '/local/domain/%d/device/vbd/%d' % (domid, num), num)

    def attach(self, domid: int, path: str, devid: str) -> None:
        be, fe, num = self.paths(domid, devid)
        if self.xs.xs_read(be + '/frontend') is not None:
            raise errors.InvalidArgument(
                name='devid', value=devid,
                reason='domain %d already has this disk' % domid)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise errors.InvalidArgument(name='path', value=path,
                                         reason=str(exc))
        loop = None
        if stat.S_ISREG(st.st_mode):
            loop = self.loop_setup(path)
            st = os.stat(loop)
        elif not stat.S_ISBLK(st.st_mode):
            raise errors.InvalidArgument(
                name='path', value=path,
                reason='neither a regular file nor a block device')
        try:
            self._write(domid, be, fe, num, devid, path, loop,
                        os.major(st.st_rdev), os.minor(st.st_rdev))
        except BaseException:
            self._remove(be, fe)
            if loop:
                self.loop_teardown(loop)
            raise

    def _write(self, domid: int, be: str, fe: str, num: int, devid: str,
               path: str, loop: Optional[str], major: int,
               minor: int) -> None:
        # Each directory with its permissions before its children: xenstored
        # gives a new node its parent's permissions (xenstored_core.c
        # construct_node), so children written first stay dom0-only and the
        # stub's blkfront can neither read the backend nor write its state.
        # And all of it in ONE transaction, as libxl_device.c
        # libxl__device_generic_add and xen-api device.ml
        # Generic.add_device write it: dom0's blkback probes the backend as
        # soon as its state node appears and at once reads the frontend's
        # state; written one by one, a frontend directory without its state
        # yet reads as XenbusStateUnknown, which blkback's frontend_changed
        # takes for a frontend gone: it unregisters the device, which stays
        # in InitWait with no driver and no message, and the frontend's
        # Initialised is never answered (realxen scenario 3 with our stub,
        # 1 attach in a few; doc/source/realxen.rst).
        fe_perms = ['n%d' % domid, 'r0']
        nodes = [
            (fe, '', fe_perms),
            (fe + '/backend', be, None),
            (fe + '/backend-id', '0', None),
            (fe + '/virtual-device', str(num), None),
            (fe + '/device-type', 'disk', None),
            (fe + '/state', str(XENBUS_INITIALISING), None),
            (be, '', ['n0', 'r%d' % domid]),
            (be + '/frontend', fe, None),
            (be + '/frontend-id', str(domid), None),
            (be + '/params', path, None),
            (be + '/type', 'phy', None),
            (be + '/mode', 'w', None),
            (be + '/device-type', 'disk', None),
            (be + '/dev', devid, None),
            (be + '/removable', '0', None),
            (be + '/online', '1', None),
            (be + '/state', str(XENBUS_INITIALISING), None),
        ]
        if loop:
            # our own record of the loop device, for detach
            nodes.append((be + '/nova-xen-stubdom-loop', loop, None))
        self.xs.xs_write_all(nodes)
        # what the hotplug script writes once the transaction is in (libxl
        # runs it after the backend reached InitWait,
        # libxl__wait_device_connection); blkback opens the device then,
        # whichever comes first
        self.xs.xs_write(be + '/physical-device', '%x:%x' % (major, minor))

    def _remove(self, be: str, fe: str) -> None:
        for node in (fe, be):
            try:
                self.xs.xs_rm(node)
            except errors.AgentError:
                pass
        # and the directories above them once empty, as libxl does
        # (libxl_xshelp.c libxl__xs_path_cleanup): otherwise
        # /local/domain/0/backend/vbd/<domid> outlives the domain
        self._prune(be.rsplit('/', 1)[0], '/local/domain/0')
        self._prune(fe.rsplit('/', 1)[0], fe.split('/device/', 1)[0])

    def _prune(self, path: str, stop: str) -> None:
        """Remove *path* and its parents while empty, up to *stop*."""
        try:
            while path.startswith(stop + '/') and \
                    not self.xs.xs_list(path):
                self.xs.xs_rm(path)
                path = path.rsplit('/', 1)[0]
        except errors.AgentError:
            pass    # another writer, or the domain is going away

    def detach(self, domid: int, devid: str) -> None:
        be, fe, _ = self.paths(domid, devid)
        if self.xs.xs_read(be + '/frontend') is None:
            raise errors.InvalidArgument(
                name='devid', value=devid,
                reason='domain %d has no such disk' % domid)
        loop = self.xs.xs_read(be + '/nova-xen-stubdom-loop')
        # libxl's force removal: offline + Closing, then the nodes go
        self.xs.xs_write(be + '/online', '0')
        self.xs.xs_write(be + '/state', str(XENBUS_CLOSING))
        self._remove(be, fe)
        if loop:
            self.loop_teardown(loop)

    def vdi_path(self, vdi_uuid: str) -> str:
        if not _UUID.match(vdi_uuid or ''):
            raise errors.InvalidArgument(name='vdi_uuid', value=vdi_uuid,
                                         reason='not a uuid')
        candidates: List[str] = glob.glob(os.path.join(
            self.sr_mount_root, '*', vdi_uuid + '.raw'))
        candidates += glob.glob(os.path.join(
            self.dev_root, 'VG_XenStorage-*', 'LV-' + vdi_uuid))
        for path in candidates:
            if os.path.exists(path):
                return path
        raise KeyError('no raw VDI %s under %s or %s (a VHD VDI cannot be '
                       'handed to blkback; an LVM VDI must be active)'
                       % (vdi_uuid, self.sr_mount_root, self.dev_root))


def console_tail(page: bytes) -> str:
    """The output still in a PV console ring page, oldest byte first."""
    base = CONSOLE_IN_BYTES + CONSOLE_OUT_BYTES
    if len(page) < base + CONSOLE_INDEXES.size:
        raise ValueError('console ring page too short')
    _, _, _, out_prod = CONSOLE_INDEXES.unpack_from(page, base)
    out = page[CONSOLE_IN_BYTES:base]
    count = min(out_prod, CONSOLE_OUT_BYTES)
    start = (out_prod - count) % CONSOLE_OUT_BYTES
    data = bytes(out[start:start + count])
    if len(data) < count:
        data += bytes(out[:count - len(data)])
    return data.decode('utf-8', 'replace')
