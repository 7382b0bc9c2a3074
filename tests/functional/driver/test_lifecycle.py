"""Guest lifecycle through real Nova: boot, inspect XAPI, power ops, delete."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import struct

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.sim import storage

GiB = 1 << 30
MiB = 1 << 20


class TestLifecycle(base.XenStubdomTestBase):

    def _flavor(self, **extra):
        return self._create_flavor(memory_mb=512, vcpu=2, disk=2,
                                   ephemeral=1, swap=64,
                                   extra_spec=extra or None)

    def _wiring(self, host, stub_domid):
        return self.dom0_call(host, 'stubdom_wiring', stubdom_domid=stub_domid)

    def _check_built(self, server, flavor_disk_gb=2, macs=()):
        x = self.xapi()
        guest, stub = self.xapi_vms(server, x)
        self.assertIsNotNone(guest, 'no guest VM in XAPI')
        self.assertIsNotNone(stub, 'no stub domain VM in XAPI')
        host = server['OS-EXT-SRV-ATTR:host']
        host_ref = self.sim_host(host).ref
        # the HVM guest
        self.assertEqual('Running', guest['power_state'])
        self.assertEqual('BIOS order', guest['HVM_boot_policy'])
        self.assertEqual('', guest['PV_kernel'])
        self.assertEqual(str(512 * MiB), guest['memory_static_max'])
        self.assertEqual('2', guest['VCPUs_max'])
        self.assertEqual(server['id'], guest['other_config']['nova_uuid'])
        self.assertEqual(stub['uuid'],
                         guest['other_config'][dc.OC_STUBDOM])
        self.assertEqual(host_ref, guest['resident_on'])
        # its PV stub domain: kernel + rootfs from conf, 1 vCPU, 128 MiB
        self.assertEqual('Running', stub['power_state'])
        self.assertEqual('', stub['HVM_boot_policy'])
        self.assertTrue(stub['PV_kernel'].endswith('nova-xen-stubdom-kernel'))
        self.assertTrue(stub['PV_ramdisk'].endswith('.cpio.gz'))
        self.assertEqual('1', stub['VCPUs_max'])
        self.assertEqual(str(128 * MiB), stub['memory_static_max'])
        self.assertEqual(guest['uuid'], stub['other_config'][dc.OC_TARGET])
        # xenstore wiring (libxl's conventions) as the agent sees it
        wiring = self._wiring(host, int(stub['domid']))
        self.assertEqual(int(guest['domid']), wiring['target'])
        self.assertEqual(stub['domid'], wiring['device_model_domid'])
        self.assertEqual('running', wiring['state'])
        argv = wiring['dm_argv']
        self.assertEqual(guest['domid'], argv[argv.index('-xen-domid') + 1])
        # no device model in dom0: QEMU runs in the stub domain
        hv = self.sim_host(host).hypervisor
        self.assertEqual(int(stub['domid']),
                         hv.device_models[int(guest['domid'])])
        # disks: root, ephemeral and swap VDIs sized as the flavor,
        # attached to both domains (the stub domain's QEMU emulates them)
        vbds = sorted((x.VBD.get_record(r) for r in guest['VBDs']),
                      key=lambda v: v['userdevice'])
        self.assertEqual(['0', '1', '2'], [v['userdevice'] for v in vbds])
        sizes = [x.VDI.get_record(v['VDI'])['virtual_size'] for v in vbds]
        self.assertEqual([str(flavor_disk_gb * GiB), str(1 * GiB),
                          str(64 * MiB)], sizes)
        stub_vbds = sorted((x.VBD.get_record(r) for r in stub['VBDs']),
                           key=lambda v: v['userdevice'])
        self.assertEqual([v['VDI'] for v in vbds],
                         [v['VDI'] for v in stub_vbds])
        for i in range(3):
            self.assertIn('file=/dev/xvd%s,if=ide,index=%d' % ('abc'[i], i),
                          ' '.join(argv))
        # the swap disk carries mkswap's signature: swapon works at once
        swap = x.VDI.get_record(vbds[2]['VDI'])
        self.assertEqual('%s-swap' % guest['name_label'],
                         swap['name_label'])
        with open(storage.vdi_path(self.sim.pools[0], swap['uuid']),
                  'rb') as f:
            page = f.read(4096)
        self.assertEqual(b'SWAPSPACE2', page[-10:])
        self.assertEqual((1, 64 * MiB // 4096 - 1),
                         struct.unpack_from('<II', page, 1024))
        # NICs: one per Nova vif with its MAC, mirrored on the stub domain
        vifs = [x.VIF.get_record(r) for r in guest['VIFs']]
        self.assertEqual(sorted(macs), sorted(v['MAC'] for v in vifs))
        stub_vifs = [x.VIF.get_record(r) for r in stub['VIFs']]
        self.assertEqual(sorted(macs), sorted(v['MAC'] for v in stub_vifs))
        return guest, stub

    def test_boot_inspect_power_ops_delete(self):
        flavor = self._flavor()
        server = self._create_server(flavor_id=flavor, networks='none')
        self.assertEqual('ACTIVE', server['status'])
        guest, stub = self._check_built(server)

        # stop / start: both domains go down, come back with new domids
        server = self._stop_server(server)
        g2, s2 = self.xapi_vms(server)
        self.assertEqual('Halted', g2['power_state'])
        self.assertEqual('Halted', s2['power_state'])
        # an HVM guest without PV drivers cannot be asked to shut down
        # (xapi_vm_lifecycle.ml check_op_for_feature): the driver reads
        # allowed_operations instead of provoking VM_LACKS_FEATURE
        self.assertNotIn('VM_LACKS_FEATURE',
                         [d[0] for p in self.sim.pools
                          for _m, d in p.error_log])
        server = self._start_server(server)
        self._check_built(server)

        # reboot soft and hard
        for kind in ('SOFT', 'HARD'):
            before, _ = self.xapi_vms(server)
            server = self._reboot_server(server, hard=(kind == 'HARD'))
            after, _ = self._check_built(server)
            self.assertNotEqual(before['domid'], after['domid'])

        # pause / unpause
        self.api.post_server_action(server['id'], {'pause': None})
        server = self._wait_for_state_change(server, 'PAUSED')
        g, s = self.xapi_vms(server)
        self.assertEqual('Paused', g['power_state'])
        self.assertEqual('Running', s['power_state'])
        self.api.post_server_action(server['id'], {'unpause': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self._check_built(server)

        self._delete_server(server)
        self.assertEqual((None, None), self.xapi_vms(server))

    def test_boot_with_neutron_port(self):
        flavor = self._flavor()
        port = self.neutron.port_1
        server = self._create_server(
            flavor_id=flavor, networks=[{'port': port['id']}])
        self.assertEqual('ACTIVE', server['status'])
        self._check_built(server, macs=[port['mac_address']])
        self._delete_server(server)
