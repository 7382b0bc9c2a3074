"""Config drive through Nova (``config_drive: true``): Nova's
ConfigDriveBuilder writes the image with ``[DEFAULT] mkisofs_cmd``, the
driver imports it into a VDI and attaches it as the guest's read-only CD
(userdevice 3) and as a read-only disk of its stub domain, whose QEMU
emulates the CD-ROM.  A missing tool is refused before anything exists; a
fault at each step leaves nothing behind (the base class's leak check
covers VDIs and VBDs after every test).

Most tests run Nova's builder against a stand-in ``mkisofs_cmd`` written
here (it records the metadata files it is given behind an ISO9660 volume
descriptor), so the driver's path is tested where genisoimage is not
installed; ``test_real_genisoimage_writes_an_iso9660_config_2`` needs
genisoimage (tools/apt-packages.txt) and says so when it skips."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import json
import os
import shutil
import stat
import sys

import fixtures

from nova_xen_stubdom.driver import configdrive
from nova_xen_stubdom.sim import storage

#: where an ISO9660 primary volume descriptor starts (sector 16)
PVD = 16 * 2048

_STAND_IN = '''#!%(python)s
"""Stand-in for genisoimage: -o PATH ... DIR -> a primary volume
descriptor (type 1, "CD001", volume id) then the files of DIR as JSON."""
import json, os, sys
args = sys.argv[1:]
if os.path.exists(%(fail)r):
    sys.exit('stand-in mkisofs: told to fail')
out = args[args.index('-o') + 1]
label = args[args.index('-V') + 1]
top = args[-1]
files = {}
for root, _dirs, names in os.walk(top):
    for name in names:
        path = os.path.join(root, name)
        with open(path, 'rb') as f:
            files[os.path.relpath(path, top)] = f.read().decode('utf-8',
                                                                'replace')
pvd = b'\\x01CD001\\x01\\x00' + b' ' * 32 + label.encode().ljust(32)
with open(out, 'wb') as f:
    f.write(b'\\x00' * %(pvd)d + pvd.ljust(2048, b'\\x00'))
    f.write(json.dumps(files).encode())
'''


class TestConfigDrive(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)
    MAX_ATTEMPTS = 1

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.fail_marker = os.path.join(tmp, 'fail')
        tool = os.path.join(tmp, 'mkisofs')
        with open(tool, 'w') as f:
            f.write(_STAND_IN % {'python': sys.executable,
                                 'fail': self.fail_marker, 'pvd': PVD})
        os.chmod(tool, stat.S_IRWXU)
        self.flags(mkisofs_cmd=tool)

    # -- helpers ------------------------------------------------------------
    def _boot(self, expected='ACTIVE'):
        server = self._build_server(networks=[
            {'port': self.neutron.port_1['id']}])
        server['config_drive'] = True
        server = self.api.post_server({'server': server})
        return self._wait_for_state_change(server, expected)

    def _drive(self, server, x):
        """(guest CD VBD, stub-domain mirror VBD, VDI record)."""
        guest, stub = self.xapi_vms(server, x)
        cds = {}
        for role, vm in (('guest', guest), ('stubdom', stub)):
            for vbd in vm['VBDs']:
                rec = x.VBD.get_record(vbd)
                if rec['userdevice'] == str(configdrive.USERDEVICE):
                    cds[role] = rec
        return cds['guest'], cds['stubdom'], x.VDI.get_record(
            cds['guest']['VDI'])

    def _assert_nothing_left(self, server, x):
        self.assertEqual((None, None), self.xapi_vms(server, x))
        self.assertEqual([], x.VDI.get_all())
        self.assertEqual([], x.VBD.get_all())

    # -- success ------------------------------------------------------------
    def test_boot_with_a_config_drive(self):
        server = self._boot()
        x = self.xapi()
        cd, mirror, vdi = self._drive(server, x)
        self.assertEqual(('CD', 'RO', False), (cd['type'], cd['mode'],
                                               cd['empty']))
        self.assertEqual(('Disk', 'RO'), (mirror['type'], mirror['mode']))
        self.assertEqual(cd['uuid'], mirror['other_config'][
            'nova_xen_stubdom_mirror_of'])
        self.assertTrue(vdi['name_label'].endswith('-configdrive'))
        # what Nova's builder wrote, byte for byte in the VDI
        path = storage.vdi_path(self.sim.pools[0], vdi['uuid'])
        with open(path, 'rb') as f:
            head = f.read(PVD + 2048)
            files = json.loads(f.read().rstrip(b'\x00').decode())
        self.assertEqual(b'\x01CD001', head[PVD:PVD + 6])
        self.assertEqual(b'config-2', head[PVD + 40:PVD + 48])
        meta = json.loads(files['openstack/latest/meta_data.json'])
        self.assertEqual(server['id'], meta['uuid'])
        self.assertIn('openstack/latest/network_data.json', files)
        # both domains hold the drive: QEMU in the stub domain emulates
        # the CD-ROM from its mirror
        hv = self.sim.hosts[0].hypervisor
        guest, stub = self.xapi_vms(server, x)
        for vm in (guest, stub):
            self.assertIn(path, [f.target for f in hv.frontends
                                 if f.domid == int(vm['domid'])])
        self._delete_server(server)
        self.assertEqual([], x.VDI.get_all())

    def test_a_reboot_keeps_the_drive(self):
        server = self._boot()
        x = self.xapi()
        before = self._drive(server, x)[2]['uuid']
        self.api.post_server_action(server['id'],
                                    {'reboot': {'type': 'HARD'}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(before, self._drive(server, x)[2]['uuid'])
        self._delete_server(server)

    def _dm_argv(self, server, x):
        """QEMU's arguments in the stub domain, but the guest's domid."""
        guest, stub = self.xapi_vms(server, x)
        argv = self.sim.hosts[0].hypervisor.xenstore.read(
            '/local/domain/%s/dm-argv' % stub['domid'])
        return argv.replace('-xen-domid\x1b%s\x1b' % guest['domid'], '')

    def test_resume_gives_qemu_the_drive_again(self):
        """The saved device state is QEMU's with the CD-ROM: the resumed
        guest's QEMU must have the same devices (it was started with the
        flavor's disks and Nova's NICs only, not what XAPI has on the
        guest: no CD-ROM)."""
        server = self._boot()
        x = self.xapi()
        before = self._dm_argv(server, x)
        self.assertIn('media=cdrom', before)
        self.api.post_server_action(server['id'], {'suspend': {}})
        server = self._wait_for_state_change(server, 'SUSPENDED')
        self.api.post_server_action(server['id'], {'resume': {}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(before, self._dm_argv(server, x))
        self._delete_server(server)

    def test_rebuild_builds_a_new_drive_and_keeps_the_port(self):
        server = self._boot()
        x = self.xapi()
        old_vdi = self._drive(server, x)[2]['uuid']
        guest, _stub = self.xapi_vms(server, x)
        vifs = [x.VIF.get_record(v) for v in guest['VIFs']]
        self.api.post_server_action(server['id'], {'rebuild': {
            'imageRef': server['image']['id'], 'adminPass': 'n3w-pass'}})
        self.notifier.wait_for_versioned_notifications(
            'instance.rebuild.end')
        server = self._wait_for_state_change(server, 'ACTIVE')
        cd, mirror, vdi = self._drive(server, x)
        self.assertNotEqual(old_vdi, vdi['uuid'])
        self.assertEqual(cd['uuid'], mirror['other_config'][
            'nova_xen_stubdom_mirror_of'])
        self.assertNotIn(old_vdi, [r['uuid'] for r in
                                   x.VDI.get_all_records().values()])
        # the rebuild's admin password is on the new drive
        path = storage.vdi_path(self.sim.pools[0], vdi['uuid'])
        with open(path, 'rb') as f:
            f.seek(PVD + 2048)
            files = json.loads(f.read().rstrip(b'\x00').decode())
        meta = json.loads(files['openstack/latest/meta_data.json'])
        self.assertEqual('n3w-pass', meta['admin_pass'])
        # the same guest VM with the same NIC (the port's MAC)
        after, _stub = self.xapi_vms(server, x)
        self.assertEqual(guest['ref'], after['ref'])
        self.assertEqual([(v['MAC'], v['device']) for v in vifs],
                         [(r['MAC'], r['device']) for r in (
                             x.VIF.get_record(v) for v in after['VIFs'])])
        self._delete_server(server)

    # -- bad input / environment ---------------------------------------------
    def test_missing_tool_is_refused_before_anything_exists(self):
        self.flags(mkisofs_cmd='/nonexistent/genisoimage')
        server = self._boot(expected='ERROR')
        self.assertIn('mkisofs_cmd', server['fault']['message'])
        self._assert_nothing_left(server, self.xapi())
        self._delete_server(server)

    def test_vfat_format_is_refused_before_anything_exists(self):
        self.flags(config_drive_format='vfat')
        server = self._boot(expected='ERROR')
        self.assertIn('iso9660', server['fault']['message'])
        self._assert_nothing_left(server, self.xapi())
        self._delete_server(server)

    # -- faults -------------------------------------------------------------
    def test_fault_at_each_step_leaves_nothing(self):
        x = self.xapi()
        # VDI.create 2 and VBD.create 3/4: the drive's (root and its mirror
        # come first); the tool failing; the stub domain's start after
        steps = [('VDI.create', 2), ('VBD.create', 3), ('VBD.get_uuid', 2),
                 ('VBD.create', 4), ('VM.start_on', 1), ('tool', 0)]
        for method, nth in steps:
            with self.subTest(step=method, nth=nth):
                if method == 'tool':
                    open(self.fail_marker, 'w').close()
                else:
                    self._fail_nth(method, nth)
                try:
                    server = self._boot(expected='ERROR')
                finally:
                    self.sim.faults.check_fail = self._orig_check
                    if os.path.exists(self.fail_marker):
                        os.unlink(self.fail_marker)
                self._assert_nothing_left(server, x)
                self._delete_server(server)

    def test_real_genisoimage_writes_an_iso9660_config_2(self):
        tool = shutil.which('genisoimage')
        if tool is None:
            self.skipTest('genisoimage is not installed (Debian package '
                          'genisoimage, tools/apt-packages.txt): the real '
                          'ISO9660 writer is not exercised')
        self.flags(mkisofs_cmd=tool)
        server = self._boot()
        x = self.xapi()
        vdi = self._drive(server, x)[2]
        with open(storage.vdi_path(self.sim.pools[0], vdi['uuid']),
                  'rb') as f:
            f.seek(PVD)
            pvd = f.read(2048)
        self.assertEqual(b'\x01CD001', pvd[:6])
        self.assertEqual(b'config-2', pvd[40:48])
        self._delete_server(server)


class TestConfigDriveStaysPut(TestConfigDrive):
    """No migration path carries the drive yet: a move is refused before
    anything changes."""
    SIM_HOSTS = 2
    COMPUTES = ('host1', 'host2')

    # the single-host tests run in the class above
    test_boot_with_a_config_drive = None
    test_a_reboot_keeps_the_drive = None
    test_resume_gives_qemu_the_drive_again = None
    test_missing_tool_is_refused_before_anything_exists = None
    test_vfat_format_is_refused_before_anything_exists = None
    test_fault_at_each_step_leaves_nothing = None
    test_real_genisoimage_writes_an_iso9660_config_2 = None

    def test_migrate_is_refused(self):
        server = self._build_server(
            networks=[{'port': self.neutron.port_1['id']}], host='host1')
        server['config_drive'] = True
        server = self.api.post_server({'server': server})
        server = self._wait_for_state_change(server, 'ACTIVE')
        x = self.xapi()
        before = self._drive(server, x)[2]['uuid']
        server = self._cold_migration_is_refused(server)
        self.assertEqual(before, self._drive(server, x)[2]['uuid'])
        self._delete_server(server)
