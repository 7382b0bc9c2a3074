"""PCI pass-through flavors through real Nova, the driver and the simulator.

host1 has a GPU-like device (VGA + HDMI audio functions), host2 an SR-IOV
NIC (PF + 4 VFs); both have a management NIC and a SATA controller that
must never be offered.  Every test ends with the base class's leak check,
which includes "no PCI grant and no device assigned" on every host.
"""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import dataclasses
import json
import os

import fixtures
from oslo_serialization import jsonutils

from nova import context as nova_context
from nova import objects
from nova.tests.functional.api import client

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.sim import pool as sim_pool
from tests import waiting

GPU = '0000:81:00.0'
GPU_AUDIO = '0000:81:00.1'
PF = '0000:3b:00.0'
VFS = ['0000:3c:00.0', '0000:3c:00.1', '0000:3c:00.2', '0000:3c:00.3']
MGMT_NIC = '0000:01:00.0'
SATA = '0000:00:17.0'


def _alias(name, vendor, product, dev_type, **extra):
    return jsonutils.dumps(dict(name=name, vendor_id=vendor,
                                product_id=product, device_type=dev_type,
                                **extra))


class PciTestBase(base.XenStubdomTestBase):
    HOST_CONFIGS = [sim_pool.HostConfig(pci_devices='gpu'),
                    sim_pool.HostConfig(pci_devices='sriov')]
    ALIASES = [_alias('xgpu', '10de', '1eb8', 'type-PCI'),
               _alias('xvf', '8086', '154c', 'type-VF'),
               _alias('xpf', '8086', '1572', 'type-PF')]
    # "all Intel functions": matches the management NIC and the SATA
    # controller too -- the driver must still never offer them
    DEVICE_SPECS = [jsonutils.dumps({'vendor_id': '10de',
                                     'product_id': '1eb8'}),
                    jsonutils.dumps({'vendor_id': '8086'})]
    REPORT_IN_PLACEMENT = False

    def setUp(self):
        # before the computes start (device_spec is read by the PCI
        # tracker) and before the API parses aliases
        self.flags(group='pci', alias=self.ALIASES,
                   device_spec=self.DEVICE_SPECS,
                   report_in_placement=self.REPORT_IN_PLACEMENT)
        self.flags(group='filter_scheduler', enabled_filters=[
            'ComputeFilter', 'ComputeCapabilitiesFilter',
            'ImagePropertiesFilter', 'PciPassthroughFilter'],
            pci_in_placement=self.REPORT_IN_PLACEMENT)
        super().setUp()

    # -- helpers ------------------------------------------------------------
    def _flavor(self, alias):
        return self._create_flavor(
            memory_mb=512, vcpu=1, disk=1, ephemeral=0,
            extra_spec={'pci_passthrough:alias': alias})

    def _nova_devs(self, host):
        ctxt = nova_context.get_admin_context()
        cn = objects.ComputeNode.get_by_host_and_nodename(ctxt, host, host)
        return {d.address: d for d in
                objects.PciDeviceList.get_by_compute_node(ctxt, cn.id)}

    def _status(self, host, *addrs):
        devs = self._nova_devs(host)
        return [devs[a].status for a in addrs]

    def _inst_devs(self, server):
        inst = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), server['id'],
            expected_attrs=['pci_devices'])
        return sorted(d.address for d in inst.pci_devices)

    def _pci(self, host):
        return self.sim_host(host).pci

    def _xs(self, host, path):
        return self.sim_host(host).hypervisor.xenstore.read(path)

    def _agent(self, host, fn, **args):
        return self.dom0_call(host, fn, **args)

    def _check_assigned(self, server, host, addrs):
        """XAPI, hypervisor and agent all agree *addrs* serve *server*."""
        guest, stub = self.xapi_vms(server)
        gdom, sdom = int(guest['domid']), int(stub['domid'])
        self.assertEqual(','.join('%d/%s' % (i, a)
                                  for i, a in enumerate(addrs)),
                         guest['other_config'][dc.OC_PCI])
        # never xenopsd's own key: it would assign the devices again
        # (sim/xenopsd_pci.py, doc/source/xapi-behaviour.rst)
        self.assertNotIn('pci', guest['other_config'])
        pci = self._pci(host)
        self.assertEqual({a: gdom for a in addrs}, pci.owner)
        for a in addrs:
            # the stub domain (QEMU's home) holds every BAR and the IRQ
            self.assertEqual([], pci.missing_grants(sdom, pci.devices[a]))
            self.assertEqual([], pci.missing_grants(gdom, pci.devices[a]))
        self.assertEqual({gdom, sdom}, set(pci.grants))
        # the agent's record and the pciback/pcifront wiring
        rec = self._agent(host, 'pci_grants', guest_vm_uuid=guest['uuid'])
        self.assertEqual((gdom, sdom), (rec['guest_domid'],
                                        rec['stub_domid']))
        self.assertEqual(sorted(addrs), sorted(rec['devices']))
        be = '/local/domain/0/backend/pci/%d/0' % sdom
        self.assertEqual(str(len(addrs)), self._xs(host, be + '/num_devs'))
        self.assertEqual(addrs, [self._xs(host, be + '/dev-%d' % i)
                                 for i in range(len(addrs))])
        self.assertEqual(be, self._xs(host, '/local/domain/%d/device/pci/0/'
                                            'backend' % sdom))
        argv = self._xs(host, '/local/domain/%d/dm-argv' % sdom).split(
            '\x1b')
        for i, a in enumerate(addrs):
            self.assertIn('xen-pci-passthrough,id=pci%d,hostaddr=%s'
                          % (i, a), argv)
        return guest, stub

    def _check_released(self, host, stub_domid=None):
        pci = self._pci(host)
        self.assertTrue(pci.is_clean(), pci.snapshot())
        if stub_domid is not None:
            self.assertIsNone(self._xs(
                host, '/local/domain/0/backend/pci/%d/0/num_devs'
                % stub_domid))


class TestPciInventory(PciTestBase):

    def test_devices_reported_to_nova(self):
        gpu_host = self._nova_devs('host1')
        self.assertEqual([GPU], sorted(gpu_host))
        dev = gpu_host[GPU]
        self.assertEqual(('10de', '1eb8', 'type-PCI', None, 1, 'available'),
                         (dev.vendor_id, dev.product_id, dev.dev_type,
                          dev.parent_addr, dev.numa_node, dev.status))
        nic_host = self._nova_devs('host2')
        # device_spec matches every Intel function, yet the management NIC
        # and the SATA controller are not offered
        self.assertEqual(sorted([PF] + VFS), sorted(nic_host))
        self.assertEqual(('type-PF', None, '1572', 0),
                         (nic_host[PF].dev_type, nic_host[PF].parent_addr,
                          nic_host[PF].product_id, nic_host[PF].numa_node))
        for vf in VFS:
            self.assertEqual(('type-VF', PF, '154c'),
                             (nic_host[vf].dev_type, nic_host[vf].parent_addr,
                              nic_host[vf].product_id))
        for host in ('host1', 'host2'):
            self.assertNotIn(MGMT_NIC, self._nova_devs(host))
            self.assertNotIn(SATA, self._nova_devs(host))


class TestPciCustomDevices(PciTestBase):
    """Devices defined as JSON-able dicts, as a simulator config holds
    them: a NIC on NUMA-less host with no IRQ line, and an NVMe drive that
    holds a dom0 disk (so it is never offered)."""
    HOST_CONFIGS = [
        sim_pool.HostConfig(pci_devices=[
            {'address': '0000:01:00.0', 'vendor_id': '8086',
             'device_id': '1521', 'class_id': '020000', 'driver': 'igb',
             'netdev': 'eth0', 'bars': [{'kind': 'mem',
                                         'start': '0xfb000000',
                                         'size': '0x100000'}], 'irq': 30},
            {'address': '0000:05:00.0', 'vendor_id': '1af4',
             'device_id': '1041', 'class_id': '020000',
             'subsystem_vendor_id': '1af4', 'subsystem_device_id': '1100',
             'bars': [{'kind': 'mem', 'start': '0xfd000000',
                       'size': '0x4000'},
                      {'kind': 'io', 'start': '0xc000', 'size': '0x20'}],
             'irq': 0},
            {'address': '0000:06:00.0', 'vendor_id': '144d',
             'device_id': 'a808', 'class_id': '010802', 'driver': 'nvme',
             'numa_node': 0, 'block_devices': ['nvme0n1'],
             'bars': [{'kind': 'mem', 'start': '0xfe000000',
                       'size': '0x4000'}], 'irq': 40}]),
        sim_pool.HostConfig(pci_devices='none')]
    ALIASES = [_alias('vnic', '1af4', '1041', 'type-PCI'),
               _alias('nvme', '144d', 'a808', 'type-PCI')]
    DEVICE_SPECS = [jsonutils.dumps({'vendor_id': '1af4'}),
                    jsonutils.dumps({'vendor_id': '144d'}),
                    jsonutils.dumps({'vendor_id': '8086'})]

    def test_dict_defined_devices(self):
        devs = self._nova_devs('host1')
        self.assertEqual(['0000:05:00.0'], sorted(devs))
        dev = devs['0000:05:00.0']
        self.assertEqual(('1af4', '1041', 'type-PCI', None),
                         (dev.vendor_id, dev.product_id, dev.dev_type,
                          dev.numa_node))
        self.assertEqual({}, self._nova_devs('host2'))
        # the dom0 disk's controller cannot be asked for
        failed = self._create_server(flavor_id=self._flavor('nvme:1'),
                                     networks='none', expected_state='ERROR')
        self.assertIn('No valid host', failed['fault']['message'])
        server = self._create_server(flavor_id=self._flavor('vnic:1'),
                                     networks='none')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        guest, stub = self._check_assigned(server, 'host1', ['0000:05:00.0'])
        # no IRQ line: memory + I/O grants only
        self.assertEqual({'iomem': [(0xfd000, 4)], 'ioport': [(0xc000, 32)],
                          'irq': set()},
                         {k: sorted(v) if k != 'irq' else v for k, v in
                          self._pci('host1').grants[int(stub['domid'])]
                          .items()})
        for s in (server, failed):
            self._delete_server(s)
        self._check_released('host1', int(stub['domid']))


class TestPciBoot(PciTestBase):

    def test_gpu_alias_lands_on_gpu_host_and_is_released(self):
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual([GPU], self._inst_devs(server))
        self.assertEqual(['allocated'], self._status('host1', GPU))
        _, stub = self._check_assigned(server, 'host1', [GPU])
        self.assertTrue(self._pci('host2').is_clean())
        self._delete_server(server)
        self._check_released('host1', int(stub['domid']))
        self.assertEqual(['available'], self._status('host1', GPU))

    def test_two_vfs_land_on_sriov_host(self):
        server = self._create_server(flavor_id=self._flavor('xvf:2'),
                                     networks='none')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        addrs = self._inst_devs(server)
        self.assertEqual(2, len(addrs))
        self.assertTrue(set(addrs) <= set(VFS))
        self._check_assigned(server, 'host2', addrs)
        # Nova keeps the PF away while its VFs are in use
        self.assertEqual(['unavailable'], self._status('host2', PF))
        self._delete_server(server)
        self._check_released('host2')
        self.assertEqual(['available'] * 5, self._status('host2', PF, *VFS))

    def test_pf_alias(self):
        server = self._create_server(flavor_id=self._flavor('xpf:1'),
                                     networks='none')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual([PF], self._inst_devs(server))
        self._check_assigned(server, 'host2', [PF])
        self.assertEqual(['unavailable'] * 4, self._status('host2', *VFS))
        self._delete_server(server)
        self._check_released('host2')

    def test_capacity_exhaustion_is_no_valid_host(self):
        flavor = self._flavor('xgpu:1')
        first = self._create_server(flavor_id=flavor, networks='none')
        second = self._create_server(flavor_id=flavor, networks='none',
                                     expected_state='ERROR')
        self.assertIn('No valid host', second['fault']['message'])
        # five VFs do not exist anywhere
        third = self._create_server(flavor_id=self._flavor('xvf:5'),
                                    networks='none', expected_state='ERROR')
        self.assertIn('No valid host', third['fault']['message'])
        self._check_assigned(first, 'host1', [GPU])
        self.assertTrue(self._pci('host2').is_clean())
        for s in (first, second, third):
            self._delete_server(s)
        self._check_released('host1')

    def test_stop_start_hard_reboot_release_and_reassign(self):
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none')
        guest, stub = self._check_assigned(server, 'host1', [GPU])

        server = self._stop_server(server)
        self._check_released('host1', int(stub['domid']))
        guest, _ = self.xapi_vms(server)
        self.assertNotIn(dc.OC_PCI, guest['other_config'])

        server = self._start_server(server)
        guest2, stub2 = self._check_assigned(server, 'host1', [GPU])
        self.assertNotEqual(guest['domid'], guest2['domid'])

        self._reboot_server(server, hard=True)
        guest3, stub3 = self._check_assigned(server, 'host1', [GPU])
        self.assertNotEqual(stub2['domid'], stub3['domid'])
        # nothing left granted to the domains of before the reboot
        self.assertNotIn(int(stub2['domid']), self._pci('host1').grants)
        self.assertNotIn(int(guest2['domid']), self._pci('host1').grants)

        self._delete_server(server)
        self._check_released('host1', int(stub3['domid']))


class TestPciSpawnFailures(PciTestBase):
    # one attempt: the fault is the driver's, not "retries exhausted"
    MAX_ATTEMPTS = 1

    def _unplug(self, host, address):
        """The device vanishes from the host (hot-unplug): hypervisor,
        dom0 sysfs and XAPI's PCI class -- but Nova has not noticed yet."""
        h = self.sim_host(host)
        h.pci.remove_device(address)
        h.pci.write_sysfs(h.sysfs_root)
        db = h.pool.db
        for ref in db.all_refs('PCI'):
            rec = db.get('PCI', ref)
            if rec['pci_id'] == address and rec['host'] == h.ref:
                db.unlink('host', h.ref, 'PCIs', ref)
                db.destroy('PCI', ref)

    def _assert_failed_cleanly(self, server, host, addresses, text):
        # Nova keeps 255 characters of the message; the whole exception
        # text is in the admin's fault details
        fault = server['fault']
        self.assertIn(text, fault['message'] + fault.get('details', ''))
        self.assertEqual([], self._inst_devs(server))
        guest, stub = self.xapi_vms(server)
        self.assertIsNone(guest)
        self.assertIsNone(stub)
        self._check_released(host)
        # the claim is released at once, not by a periodic task
        self.assertEqual(['available'] * len(addresses),
                         self._status(host, *addresses))

    def test_device_vanished_between_claim_and_spawn(self):
        self._unplug('host1', GPU)
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none', expected_state='ERROR')
        self._assert_failed_cleanly(server, 'host1', [GPU],
                                    'no longer present')
        self._delete_server(server)
        # the next periodic task drops the device from Nova
        # Nova 34 reads a host's PCI inventory when its resource tracker
        # is set up (service start), not in the periodic task: the driver
        # reports the device gone at once, Nova drops it at the restart
        self.assertNotIn(GPU, [d['address'] for d in json.loads(
            self.computes['host1'].manager.driver.get_available_resource(
                'host1')['pci_passthrough_devices'])])
        self._run_periodics()
        self.assertEqual(['available'], self._status('host1', GPU))
        self.restart_compute_service(self.computes['host1'])
        self.assertNotIn(GPU, self._nova_devs('host1'))

    def test_device_held_by_another_xapi_vm(self):
        plain = self._create_server(
            flavor_id=self._create_flavor(memory_mb=512, vcpu=1, disk=1,
                                          ephemeral=0),
            networks='none', host='host1')
        x = self.xapi()
        guest, _ = self.xapi_vms(plain, x)
        # an operator attached the GPU to that VM behind Nova's back
        x.VM.add_to_other_config(guest['ref'], 'pci', '0/' + GPU)
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none', expected_state='ERROR')
        self._assert_failed_cleanly(server, 'host1', [GPU],
                                    'holds it')
        x.VM.remove_from_other_config(guest['ref'], 'pci')
        self._delete_server(server)
        self._delete_server(plain)

    def test_device_owned_by_another_domain(self):
        # something outside XAPI (xl pci-attach) gave the VF to a domain
        hv = self.sim_host('host2').hypervisor
        intruder = hv.create_domain('', False, 1 << 20, 1, 'intruder')
        self.addCleanup(hv.destroy_domain, intruder.domid)
        for vf in VFS:
            self._pci('host2').assign_device(intruder.domid, vf)
        server = self._create_server(flavor_id=self._flavor('xvf:1'),
                                     networks='none', expected_state='ERROR')
        fault = server['fault']
        self.assertIn('DEVICE_ALREADY_ATTACHED',
                      fault['message'] + fault.get('details', ''))
        self.assertEqual([], self._inst_devs(server))
        self.assertEqual((None, None), self.xapi_vms(server))
        # the intruder keeps its devices; nothing of ours remains
        self.assertEqual({vf: intruder.domid for vf in VFS},
                         self._pci('host2').owner)
        self.assertEqual([], list(self._pci('host2').grants))
        hv.destroy_domain(intruder.domid)
        self._check_released('host2')
        self._delete_server(server)

    def test_device_used_without_grants_is_refused_by_xen(self):
        # an agent bug: the device is wired to the stub domain's pcifront
        # but the stub domain was not granted its resources; the simulated
        # Xen refuses QEMU's mappings, so the guest cannot start
        from nova_xen_stubdom.dom0 import pci_grants as agent_pci
        real = agent_pci.grant_plan

        def guest_only(res, guest_domid, stub_domid):
            return [(op, args) for op, args in
                    real(res, guest_domid, stub_domid)
                    if args[0] != stub_domid]
        self.stub_out('nova_xen_stubdom.dom0.pci_grants.grant_plan',
                      guest_only)
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none', expected_state='ERROR')
        self._assert_failed_cleanly(server, 'host1', [GPU], 'lacks')
        self._delete_server(server)

    def test_fault_injected_mid_assignment(self):
        for op, after in (('iomem_permission', 3), ('irq_permission', 2),
                          ('assign_device', 1)):
            self._pci('host1').inject_fault(op, after)
            server = self._create_server(
                flavor_id=self._flavor('xgpu:1'), networks='none',
                expected_state='ERROR')
            self._assert_failed_cleanly(server, 'host1', [GPU],
                                        'injected fault')
            self._delete_server(server)
        # and the host still works afterwards
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none')
        self._check_assigned(server, 'host1', [GPU])
        self._delete_server(server)
        self._check_released('host1')


class TestPciReportInPlacement(PciTestBase):
    REPORT_IN_PLACEMENT = True
    # placement mode: a PF and its VFs may not both match device_spec
    DEVICE_SPECS = [jsonutils.dumps({'vendor_id': '10de',
                                     'product_id': '1eb8'}),
                    jsonutils.dumps({'vendor_id': '8086',
                                     'product_id': '154c'}),
                    jsonutils.dumps({'vendor_id': '8086',
                                     'product_id': '1521'}),
                    jsonutils.dumps({'vendor_id': '8086',
                                     'product_id': 'a352'})]

    def _pci_rps(self, host):
        root = self._get_provider_uuid_by_host(host)
        rps = self.placement.get(
            '/resource_providers?in_tree=%s' % root,
            version='1.14').body['resource_providers']
        out = {}
        for rp in rps:
            if rp['uuid'] == root:
                continue
            inv = self._get_provider_inventory(rp['uuid'])
            out[rp['name']] = (rp['uuid'], {
                rc: v['total'] for rc, v in inv.items()})
        return out

    def test_devices_are_placement_providers_and_allocated(self):
        gpu_rps = self._pci_rps('host1')
        self.assertEqual({'host1_%s' % GPU.upper()},
                         set(gpu_rps))
        self.assertEqual({'CUSTOM_PCI_10DE_1EB8': 1},
                         list(gpu_rps.values())[0][1])
        nic_rps = self._pci_rps('host2')
        # VFs are grouped under their PF's provider; no NIC/SATA provider
        self.assertEqual({'host2_%s' % PF.upper()}, set(nic_rps))
        self.assertEqual({'CUSTOM_PCI_8086_154C': 4},
                         list(nic_rps.values())[0][1])

        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        allocs = self._get_allocations_by_server_uuid(server['id'])
        gpu_rp = list(gpu_rps.values())[0][0]
        self.assertEqual({'CUSTOM_PCI_10DE_1EB8': 1},
                         allocs[gpu_rp]['resources'])
        self._check_assigned(server, 'host1', [GPU])

        vf_server = self._create_server(flavor_id=self._flavor('xvf:3'),
                                        networks='none')
        self.assertEqual('host2', vf_server['OS-EXT-SRV-ATTR:host'])
        self._check_assigned(vf_server, 'host2', self._inst_devs(vf_server))
        too_many = self._create_server(flavor_id=self._flavor('xvf:2'),
                                       networks='none',
                                       expected_state='ERROR')
        self.assertIn('No valid host', too_many['fault']['message'])

        for s in (server, vf_server, too_many):
            self._delete_server(s)
        self._check_released('host1')
        self._check_released('host2')
        self.assertEqual({}, self._get_allocations_by_server_uuid(
            server['id']))


class TestPciTwoGpuHosts(PciTestBase):
    # host1 has more free memory: Nova's RAM weigher tries it first
    HOST_CONFIGS = [sim_pool.HostConfig(memory=64 << 30, pci_devices='gpu'),
                    sim_pool.HostConfig(pci_devices='gpu')]
    ALIASES = [_alias('xgpu', '10de', '1eb8', 'type-PCI'),
               _alias('lmgpu', '10de', '1eb8', 'type-PCI',
                      live_migratable='yes')]
    DEVICE_SPECS = [jsonutils.dumps({'vendor_id': '10de',
                                     'product_id': '1eb8',
                                     'live_migratable': 'yes'})]

    def _events(self, server):
        out = []
        for action in self.api.get_instance_actions(server['id']):
            detail = self.api.get_instance_action_details(
                server['id'], action['request_id'])
            # 'details' (microversion 2.84) carries the exception message
            out += [(e['event'], e['result'], e.get('host'),
                     (e.get('details') or '') + (e.get('traceback') or ''))
                    for e in detail['events']]
        return out

    def test_vanished_device_reschedules_to_another_host(self):
        TestPciSpawnFailures._unplug(self, 'host1', GPU)
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none')
        # tried on host1 first, failed cleanly there, rescheduled
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        # (Nova reuses one action event for both attempts: read the log)
        self.assertIn('cannot be passed through on host host1: the device '
                      'is no longer present', self.stdlog.logger.output)
        self.assertEqual(['available'], self._status('host1', GPU))
        self._check_released('host1')
        self._check_assigned(server, 'host2', [GPU])
        self._delete_server(server)
        self._check_released('host2')

    def test_live_migration_refused_at_the_check(self):
        server = self._create_server(flavor_id=self._flavor('lmgpu:1'),
                                     networks='none')
        src = server['OS-EXT-SRV-ATTR:host']
        dst = {'host1': 'host2', 'host2': 'host1'}[src]
        _, stub = self._check_assigned(server, src, [GPU])
        self.api.post_server_action(server['id'], {'os-migrateLive': {
            'host': dst, 'block_migration': 'auto'}})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(src, server['OS-EXT-SRV-ATTR:host'])
        details = ' '.join(tb for _, _, _, tb in self._events(server))
        self.assertIn('has PCI pass-through devices', details)
        self.assertIn('live migration', details)
        # nothing moved, nothing released, nothing granted on the target
        _, stub2 = self._check_assigned(server, src, [GPU])
        self.assertEqual(stub['domid'], stub2['domid'])
        self.assertTrue(self._pci(dst).is_clean())
        self._delete_server(server)
        self._check_released(src)

    # -- cold migration: the destination's claim is granted there, the
    # source's released at once and re-claimed on revert
    def _cold_migrate_gpu_server(self):
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        _, stub = self._check_assigned(server, 'host1', [GPU])
        server = self._migrate_server(server, api=self.admin_api)
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        # the destination's device serves the guest; the source's domains
        # are gone and hold no grant while the move awaits confirmation
        self._check_assigned(server, 'host2', [GPU])
        self._check_released('host1', int(stub['domid']))
        # Nova holds both claims until confirm or revert: the source's
        # device stays allocated to the instance for a revert
        self.assertEqual([GPU, GPU], self._inst_devs(server))
        self.assertEqual(['allocated'], self._status('host1', GPU))
        self.assertEqual(['allocated'], self._status('host2', GPU))
        return server

    def test_cold_migration_moves_the_device_then_confirm(self):
        server = self._cold_migrate_gpu_server()
        server = self._confirm_resize(server)
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self._check_assigned(server, 'host2', [GPU])
        self._check_released('host1')
        self.assertEqual([GPU], self._inst_devs(server))
        # Nova frees the source's claim in memory and writes it back at its
        # next resource periodic (the device on the host is free already)
        self._run_periodics()
        self.assertEqual(['available'], self._status('host1', GPU))
        self._delete_server(server)
        self._check_released('host2')
        self.assertEqual(['available'], self._status('host2', GPU))

    def test_cold_migration_revert_reclaims_the_source_device(self):
        server = self._cold_migrate_gpu_server()
        _, dest_stub = self.xapi_vms(server)
        self.api.post_server_action(server['id'], {'revertResize': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self._wait_for_migration_status(server, ['reverted'])
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        self._check_assigned(server, 'host1', [GPU])
        self._check_released('host2', int(dest_stub['domid']))
        self.assertEqual([GPU], self._inst_devs(server))
        self.assertEqual(['available'], self._status('host2', GPU))
        self._delete_server(server)
        self._check_released('host1')


class PciImageTestBase(PciTestBase):
    """One host's stub-domain image is described by a manifest the test
    rewrites (agent.conf ``stubdom_manifest``).  It starts capable, so that
    Nova has the host's devices when the image is replaced underneath it
    (Nova reads the inventory at service start); :meth:`_lose_passthrough`
    puts in an image built on the testbed's QEMU (manifest ``"lacks":
    ["xen-pci-passthrough"]``)."""
    MAX_ATTEMPTS = 1
    #: the host (index into HOST_CONFIGS) whose image the test replaces
    IMAGE_HOST = 0

    def setUp(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        self.manifest = os.path.join(tmp, 'nova-xen-stubdom-manifest.json')
        self._write_manifest([])
        configs = list(self.HOST_CONFIGS)
        configs[self.IMAGE_HOST] = dataclasses.replace(
            configs[self.IMAGE_HOST], stubdom_manifest=self.manifest)
        self.HOST_CONFIGS = configs
        super().setUp()

    def _write_manifest(self, lacks):
        with open(self.manifest, 'w') as f:
            # the builder's shape (stubdom/builder.py)
            json.dump({'device_model': {'source': 'testbed',
                                        'lacks': lacks}}, f)

    def _lose_passthrough(self):
        self._write_manifest(['xen-pci-passthrough'])

    def _assert_refusal(self, server):
        """*server*'s fault is the image refusal, naming the manifest."""
        fault = server['fault']
        text = fault['message'] + fault.get('details', '')
        self.assertIn('lacks xen-pci-passthrough', text)
        self.assertIn(self.manifest, text)


class TestPciImageWithoutPassthrough(PciImageTestBase):
    """A host whose stub-domain image cannot pass devices through offers
    no devices and refuses a guest with one before creating anything."""
    HOST_CONFIGS = [sim_pool.HostConfig(pci_devices='gpu')]

    def test_refused_before_anything_exists_then_not_offered(self):
        self.assertIn(GPU, self._nova_devs('host1'))
        db = self.sim_host('host1').pool.db
        vdis = sorted(db.all_refs('VDI'))
        self._lose_passthrough()
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none', expected_state='ERROR')
        # no guest, no stub domain, no grant; the claim released at once
        TestPciSpawnFailures._assert_failed_cleanly(
            self, server, 'host1', [GPU], 'lacks xen-pci-passthrough')
        self._assert_refusal(server)
        # no VDI was made either
        self.assertEqual(vdis, sorted(db.all_refs('VDI')))
        self._delete_server(server)
        # the driver now offers none of the host's functions, with a
        # warning naming the manifest and why
        self.assertEqual([], json.loads(
            self.computes['host1'].manager.driver.get_available_resource(
                'host1')['pci_passthrough_devices']))
        self.assertIn('offers none of its', self.stdlog.logger.output)
        self.restart_compute_service(self.computes['host1'])
        self.assertNotIn(GPU, self._nova_devs('host1'))
        # so a GPU guest finds no host at all
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none', expected_state='ERROR')
        self.assertIn('No valid host', server['fault']['message'])
        self._delete_server(server)


class TestPciColdMigrationToImageWithoutPassthrough(PciImageTestBase):
    """A GPU guest cold-migrated to a host whose image lost pass-through
    after its service started (Nova still offers that host's GPU, so the
    scheduler and the claim let the move through): the destination's
    finish_migration refuses before it creates anything there."""
    HOST_CONFIGS = [sim_pool.HostConfig(pci_devices='gpu'),
                    sim_pool.HostConfig(pci_devices='gpu')]
    IMAGE_HOST = 1

    def _instance_objects(self, server):
        """``{VM name_label: (role, power state)}`` and the VDI names of
        *server*, wherever they are in the pool."""
        db = self.sim_host('host1').pool.db
        vms, vdis = {}, []
        for ref in db.all_refs('VM'):
            rec = db.get('VM', ref)
            if rec['other_config'].get(dc.OC_NOVA_UUID) == server['id']:
                vms[rec['name_label']] = (rec['other_config'][dc.OC_ROLE],
                                          rec['power_state'])
        for ref in db.all_refs('VDI'):
            rec = db.get('VDI', ref)
            if rec['other_config'].get(dc.OC_NOVA_UUID) == server['id']:
                vdis.append(rec['name_label'])
        return vms, sorted(vdis)

    def test_refused_before_anything_exists_server_in_error(self):
        server = self._create_server(flavor_id=self._flavor('xgpu:1'),
                                     networks='none', host='host1')
        guest, stub = self._check_assigned(server, 'host1', [GPU])
        name = guest['name_label']
        db = self.sim_host('host2').pool.db
        vms, vdis = sorted(db.all_refs('VM')), sorted(db.all_refs('VDI'))
        self._lose_passthrough()
        self.api.post_server_action(server['id'], {'migrate': None})
        # 'finished' is what a destination that does not refuse reaches
        migration = waiting.wait_until(
            lambda: [m for m in self.api.get_migrations()
                     if m['instance_uuid'] == server['id'] and
                     m['status'] in ('error', 'finished')],
            'the migration to end', timeout=120)[0]
        self.assertEqual(('error', 'host1', 'host2'),
                         (migration['status'], migration['source_compute'],
                          migration['dest_compute']))
        # Nova's finish_resize: the source had moved the server to the
        # destination before casting it there; a failure leaves it in ERROR
        # on the destination
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self._assert_refusal(server)
        self.assertIn('host host2 cannot pass devices through',
                      server['fault']['message'])
        # nothing was created: no VM or VDI anywhere in the pool, no domain
        # or grant on the destination
        self.assertEqual((vms, vdis), (sorted(db.all_refs('VM')),
                                       sorted(db.all_refs('VDI'))))
        self.assertEqual([0], list(self.sim_host('host2').hypervisor.domains))
        self._check_released('host2')
        # the source halted its VMs, released the device and set VMs and
        # disk aside for a revert...
        self._check_released('host1', int(stub['domid']))
        aside = ({name: ('resize-source-guest', 'Halted'),
                  name + dc.STUBDOM_SUFFIX: ('resize-source-stubdom',
                                             'Halted')},
                 [name + '-root.resize-source'])
        self.assertEqual(aside, self._instance_objects(server))
        # ...that Nova refuses: it reverts a finished migration only
        exc = self.assertRaises(
            client.OpenStackApiException, self.api.post_server_action,
            server['id'], {'revertResize': None})
        self.assertEqual(409, exc.response.status_code)
        self.assertIn('vm_state error', str(exc))

        # delete: Nova destroys on the destination, which leaves the
        # source's set-aside objects alone (a revert's destroy is the same
        # call); Nova's periodic retry of deleted instances' files on their
        # host removes them (the pool's XAPI reaches the source's objects)
        self._delete_server(server)
        self.assertEqual(aside, self._instance_objects(server))
        # (the task reads CONF.host: the harness set it per service start)
        self.flags(host='host2')
        self.computes['host2'].manager._run_pending_deletes(
            nova_context.get_admin_context())
        self.assertEqual(({}, []), self._instance_objects(server))
        self._check_released('host1')
        self._run_periodics()
        self.assertEqual(['available'], self._status('host1', GPU))
        self.assertEqual(['available'], self._status('host2', GPU))
