"""blkback disks, raw VDI paths and console rings of the xen backend."""
import os
import struct

import pytest

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import xen_devices as xd
from tests.unit.dom0 import fakes


def test_devnum_as_libxl_computes_it():
    assert xd.disk_devnum('xvda') == 51712
    assert xd.disk_devnum('xvdb') == 51728
    assert xd.disk_devnum('xvdp') == (202 << 8) | (15 << 4)
    assert xd.disk_devnum('xvdq') == (1 << 28) | (16 << 8)
    assert xd.disk_devnum('xvdz') == (1 << 28) | (25 << 8)
    with pytest.raises(errors.InvalidArgument):
        xd.disk_devnum('hda')


@pytest.fixture
def disks(tmp_path):
    be = fakes.FakeBackend()
    loops = []

    def setup(path):
        loops.append(('setup', path))
        return '/dev/null'          # a device node stat() can read

    def teardown(dev):
        loops.append(('teardown', dev))
    d = xd.XenDisks(be, loop_setup=setup, loop_teardown=teardown,
                    sr_mount_root=str(tmp_path / 'sr-mount'),
                    dev_root=str(tmp_path / 'dev'))
    d.loops = loops
    return d


def test_every_node_is_readable_or_writable_by_the_right_end(disks,
                                                             tmp_path):
    """The frontend domain reads the backend's nodes and writes its own
    (blkfront's state): each child must carry its directory's permissions,
    which xenstored gives a node only when it is created after them.  The
    stub's blkfront never connected on real Xen until it did."""
    img = tmp_path / 'disk.img'
    img.write_bytes(b'\0' * 4096)
    disks.attach(7, str(img), 'xvda')
    be_path, fe_path, _num = xd.XenDisks.paths(7, 'xvda')
    xs = disks.xs
    for node in [k for k in xs.xs if k.startswith(be_path + '/')]:
        assert xs.xs_get_perms(node) == ['n0', 'r7'], node
    for node in [k for k in xs.xs if k.startswith(fe_path + '/')]:
        assert xs.xs_get_perms(node) == ['n7', 'r0'], node


class _Blkback(fakes.FakeBackend):
    """What dom0's xen-blkback sees of a new disk, checked after every
    change another xenstore client could observe (each write outside a
    transaction, each committed xs_write_all): once the backend has a
    ``state`` the kernel probes it and reads the frontend's ``state`` --
    missing, it takes the frontend for gone and unregisters the device
    for good (Linux xen-blkback xenbus.c ``frontend_changed``,
    ``XenbusStateUnknown``)."""

    def __init__(self, be_path, fe_path):
        super().__init__()
        self.be_path, self.fe_path = be_path, fe_path
        self.seen = []

    def _observe(self):
        if self.xs.get(self.be_path + '/state') is not None:
            self.seen.append(self.xs.get(self.fe_path + '/state'))

    def xs_write(self, path, value):
        super().xs_write(path, value)
        self._observe()

    def xs_write_all(self, nodes):
        for path, value, perms in nodes:
            fakes.FakeBackend.xs_write(self, path, value)
            if perms is not None:
                self.xs_set_perms(path, perms)
        self._observe()


def test_blkback_never_sees_a_backend_without_its_frontend_state(tmp_path):
    """The realxen finding: written node by node, blkback could probe
    the backend between the frontend's directory and its state, and the
    re-created stub's disk stayed Initialised against InitWait."""
    be_path, fe_path, _num = xd.XenDisks.paths(7, 'xvdz')
    kernel = _Blkback(be_path, fe_path)
    img = tmp_path / 'disk.img'
    img.write_bytes(b'\0' * 4096)
    xd.XenDisks(kernel, loop_setup=lambda p: '/dev/null',
                loop_teardown=lambda d: None).attach(7, str(img), 'xvdz')
    assert kernel.seen and None not in kernel.seen, kernel.seen
    assert kernel.xs[be_path + '/physical-device']


def test_attach_file_writes_libxl_nodes_then_detach_cleans(disks, tmp_path):
    img = tmp_path / 'state.img'
    img.write_bytes(b'\0' * 4096)
    disks.attach(7, str(img), 'xvdz')
    be_path = '/local/domain/0/backend/vbd/7/%d' % xd.disk_devnum('xvdz')
    fe_path = '/local/domain/7/device/vbd/%d' % xd.disk_devnum('xvdz')
    xs = disks.xs.xs
    assert xs[be_path + '/frontend'] == fe_path
    assert xs[be_path + '/type'] == 'phy'
    assert xs[be_path + '/state'] == '1'
    assert xs[fe_path + '/backend'] == be_path
    assert xs[fe_path + '/virtual-device'] == str(xd.disk_devnum('xvdz'))
    null = os.stat('/dev/null').st_rdev
    assert xs[be_path + '/physical-device'] == '%x:%x' % (
        os.major(null), os.minor(null))
    assert disks.xs.perms[be_path] == ['n0', 'r7']
    assert disks.xs.perms[fe_path] == ['n7', 'r0']
    assert disks.loops == [('setup', str(img))]
    with pytest.raises(errors.InvalidArgument):
        disks.attach(7, str(img), 'xvdz')           # already there
    disks.detach(7, 'xvdz')
    assert not [k for k in xs if k.startswith((be_path, fe_path))]
    assert disks.loops[-1] == ('teardown', '/dev/null')
    with pytest.raises(errors.InvalidArgument):
        disks.detach(7, 'xvdz')


def test_attach_refuses_what_blkback_cannot_take(disks, tmp_path):
    with pytest.raises(errors.InvalidArgument):
        disks.attach(7, str(tmp_path / 'missing'), 'xvdz')
    with pytest.raises(errors.InvalidArgument):
        disks.attach(7, str(tmp_path), 'xvdz')      # a directory
    assert disks.xs.xs == {} and disks.loops == []


def test_vdi_path_file_and_lvm_sr(disks, tmp_path):
    uuid = '0b7ef0a6-6d0c-4a8e-9a55-0f3c1d8e2a11'
    with pytest.raises(KeyError):
        disks.vdi_path(uuid)
    with pytest.raises(errors.InvalidArgument):
        disks.vdi_path('../etc/passwd')
    sr = tmp_path / 'sr-mount' / 'sr1'
    sr.mkdir(parents=True)
    (sr / (uuid + '.vhd')).write_bytes(b'')         # VHD: not usable
    with pytest.raises(KeyError):
        disks.vdi_path(uuid)
    (sr / (uuid + '.raw')).write_bytes(b'')
    assert disks.vdi_path(uuid) == str(sr / (uuid + '.raw'))
    os.remove(str(sr / (uuid + '.raw')))
    vg = tmp_path / 'dev' / 'VG_XenStorage-sr2'
    vg.mkdir(parents=True)
    (vg / ('LV-' + uuid)).write_bytes(b'')
    assert disks.vdi_path(uuid) == str(vg / ('LV-' + uuid))


def _ring(out: bytes, out_prod: int) -> bytes:
    page = bytearray(4096)
    for i, b in enumerate(out):
        page[1024 + ((out_prod - len(out) + i) % 2048)] = b
    struct.pack_into('<4I', page, 3072, 0, 0, out_prod, out_prod)
    return bytes(page)


def test_console_tail_in_order_across_the_wrap():
    assert xd.console_tail(_ring(b'hello\n', 6)) == 'hello\n'
    text = bytes(range(65, 91)) * 100           # 2600 bytes
    page = _ring(text[-2048:], 2600)
    assert xd.console_tail(page) == text[-2048:].decode()
    with pytest.raises(ValueError):
        xd.console_tail(b'\0' * 100)


def test_detach_removes_the_directories_it_emptied(disks, tmp_path):
    """As libxl's libxl__xs_path_cleanup: on real Xen an empty
    /local/domain/0/backend/vbd/<domid> otherwise outlives the domain."""
    removed = []
    rm = disks.xs.xs_rm

    def xs_rm(path):
        removed.append(path)
        rm(path)
    disks.xs.xs_rm = xs_rm
    img = tmp_path / 'state.img'
    img.write_bytes(b'\0' * 4096)
    disks.xs.xs_write('/local/domain/0/backend/vif/3/0/state', '4')
    disks.attach(7, str(img), 'xvdz')
    disks.detach(7, 'xvdz')
    assert '/local/domain/0/backend/vbd/7' in removed
    assert '/local/domain/0/backend/vbd' in removed
    assert '/local/domain/7/device/vbd' in removed
    assert '/local/domain/7/device' in removed
    # not what still holds something, nor the domains' own directories
    for kept in ('/local/domain/0/backend', '/local/domain/0',
                 '/local/domain/7'):
        assert kept not in removed
    assert disks.xs.xs_read('/local/domain/0/backend/vif/3/0/state') == '4'
