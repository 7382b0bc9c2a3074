"""Host resources, consoles, power changes made outside Nova, and
concurrent operations -- through Nova and the simulator."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

from nova_xen_stubdom.driver import constants as dc


class TestHostAndEvents(base.XenStubdomTestBase):

    def test_resources_reported_to_nova_and_placement(self):
        hyps = {h['hypervisor_hostname']: h for h in self.admin_api.api_get(
            '/os-hypervisors/detail').body['hypervisors']}
        self.assertEqual({'host1', 'host2'}, set(hyps))
        for name, hyp in hyps.items():
            self.assertEqual('xen', hyp['hypervisor_type'])
            self.assertEqual(4017004, hyp['hypervisor_version'])
            self.assertIn('up', hyp['uptime'] or '')
            driver = self.computes_by_name[name].manager.driver
            self.assertEqual(self.sim_host(name).address,
                             driver.get_host_ip_addr())
            self.assertTrue(driver.node_is_available(name))
        rp = self._get_provider_uuid_by_host('host1')
        inv = self._get_provider_inventory(rp)
        driver1 = self.computes_by_name['host1'].manager.driver
        self.assertEqual(8, inv['VCPU']['total'])
        # 16 GiB host - 1 GiB dom0 (Xen's own overhead is 0 in the sim)
        self.assertEqual(15 * 1024, inv['MEMORY_MB']['total'])
        self.assertEqual(512, inv['DISK_GB']['total'])
        reserved_before = inv['MEMORY_MB']['reserved']

        flavor = self._create_flavor(memory_mb=512, vcpu=1, disk=1,
                                     ephemeral=0,
                                     extra_spec={'xen_stubdom:memory_mb':
                                                 '192'})
        server = self._create_server(flavor_id=flavor, networks='none',
                                     host='host1')
        # the stub domain's memory is reserved on the host's provider; the
        # periodic tasks read the event cache: no per-VM XAPI call
        seen = len(driver1._client.call_log.records)
        self._run_periodics()
        names = [r[0] for r in driver1._client.call_log.records[seen:]]
        self.assertEqual([], [n for n in names if n.startswith('VM')])
        inv = self._get_provider_inventory(rp)
        self.assertEqual(reserved_before + 192, inv['MEMORY_MB']['reserved'])
        self.assertFlavorMatchesAllocation(
            {'vcpus': 1, 'ram': 512, 'disk': 1, 'extra_specs': {}},
            server['id'], rp)
        # stopped, its VMs are resident nowhere (XAPI: resident_on NULL):
        # host1 keeps the reservation (affinity), host2 never takes it
        rp2 = self._get_provider_uuid_by_host('host2')
        reserved2 = self._get_provider_inventory(rp2)['MEMORY_MB'][
            'reserved']
        server = self._stop_server(server)
        self._run_periodics()
        self.assertEqual(reserved_before + 192, self._get_provider_inventory(
            rp)['MEMORY_MB']['reserved'])
        self.assertEqual(reserved2, self._get_provider_inventory(
            rp2)['MEMORY_MB']['reserved'])
        self._delete_server(server)
        self._run_periodics()
        inv = self._get_provider_inventory(rp)
        self.assertEqual(reserved_before, inv['MEMORY_MB']['reserved'])

    def test_consoles(self):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        server = self._create_server(flavor_id=flavor, networks='none')
        out = self.api.post_server_action(
            server['id'], {'os-getConsoleOutput': {}})['output']
        lines = out.splitlines()
        # the hypervisor's lines, then the guest's boot over its serial
        # line (firmware from the device model in the stub domain)
        self.assertIn('created', lines[0])
        self.assertIn('SeaBIOS (simulated)', lines)
        self.assertTrue(lines[-1].endswith(' login:'), lines)
        tail = self.api.post_server_action(
            server['id'], {'os-getConsoleOutput': {'length': 3}})['output']
        # Nova tails by '\n'-separated fields: the log ends with a newline
        self.assertEqual(out.split('\n')[-3:], tail.split('\n'))
        self.assertTrue(tail.endswith(' login:\n'), tail)
        # VNC: served by QEMU in the stub domain, reached through XAPI's
        # console proxy (tests/functional/driver/test_consoles.py)
        compute = self.computes_by_name[server['OS-EXT-SRV-ATTR:host']]
        from nova import context as nova_context
        from nova import objects
        inst = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), server['id'])
        console = compute.manager.driver.get_vnc_console(None, inst)
        hv = self.sim_host(server['OS-EXT-SRV-ATTR:host']).hypervisor
        guest, stub = self.xapi_vms(server)
        qemu = hv.qemus[int(guest['domid'])]
        self.assertEqual(int(stub['domid']), qemu.domid)
        self.assertEqual(self.sim_host(
            server['OS-EXT-SRV-ATTR:host']).address, console.host)
        self.assertTrue(console.internal_access_path.startswith(
            '/console?uuid='))
        diag = compute.manager.driver.get_diagnostics(inst)
        self.assertEqual((int(guest['domid']), int(stub['domid'])),
                         (diag['domid'], diag['stubdom_domid']))
        self.assertEqual(128, diag['stubdom_memory_mb'])
        # the host rebooted under a running guest: Nova asks to restore it
        compute.manager.driver.power_off(inst)
        g, s = self.xapi_vms(server)
        self.assertEqual(('Halted', 'Halted'),
                         (g['power_state'], s['power_state']))
        compute.manager.driver.resume_state_on_host_boot(None, inst, [],
                                                         None)
        g, s = self.xapi_vms(server)
        self.assertEqual(('Running', 'Running'),
                         (g['power_state'], s['power_state']))
        resp = self.api.api_post(
            '/servers/%s/remote-consoles' % server['id'],
            {'remote_console': {'protocol': 'vnc', 'type': 'novnc'}})
        self.assertIn('token', resp.body['remote_console']['url'])
        self._delete_server(server)

    def test_power_changes_outside_nova_reach_nova(self):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        server = self._create_server(flavor_id=flavor, networks='none')
        x = self.xapi()
        guest, stub = self.xapi_vms(server, x)
        # an admin halts the guest with xe: Nova hears it through the
        # driver's event.from lifecycle events and stops the server
        x.VM.hard_shutdown(guest['ref'])
        server = self._wait_for_state_change(server, 'SHUTOFF')
        # ... and the stub domain does not outlive its guest
        self.wait_for_xapi(
            lambda: x.VM.get_power_state(stub['ref']) == 'Halted',
            what='the stub domain to halt')
        server = self._start_server(server)
        g, s = self.xapi_vms(server, x)
        self.assertEqual(('Running', 'Running'),
                         (g['power_state'], s['power_state']))
        self._delete_server(server)

    def test_concurrent_boots_and_deletes(self):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        req = self._build_server(flavor_id=flavor, networks='none')
        req['min_count'] = 4
        self.api.post_server({'server': req})
        servers = self.api.get_servers(detail=True)
        self.assertEqual(4, len(servers))
        servers = [self._wait_for_state_change(s, 'ACTIVE') for s in servers]
        x = self.xapi()
        for s in servers:
            guest, stub = self.xapi_vms(s, x)
            self.assertEqual(stub['uuid'], guest['other_config'][
                dc.OC_STUBDOM])
        # stop two while deleting the other two
        for s in servers[:2]:
            self.api.post_server_action(s['id'], {'os-stop': None})
        for s in servers[2:]:
            self.api.delete_server(s['id'])
        for s in servers[:2]:
            self._wait_for_state_change(s, 'SHUTOFF')
        for s in servers[2:]:
            self._wait_until_deleted(s)
        for s in servers[:2]:
            self._delete_server(s)

    def test_no_device_model_in_dom0(self):
        """A Nova guest never gets its device model in dom0, even started
        behind Nova's back without its stub domain: the driver marks it
        (VM.xenstore_data vm-data/nova_xen_stubdom) and the dom0 wrapper
        refuses it.  An HVM VM Nova does not manage is the host's business:
        the wrapper hands it to the stock wrapper, a dom0 QEMU as XAPI runs
        for any HVM VM."""
        from nova_xen_stubdom.sim import introspect, testing
        x = self.xapi()
        server = self._create_server(networks='none')
        guest, stub = self.xapi_vms(server, x)
        self.assertEqual({dc.XS_MANAGED: server['id']},
                         guest['xenstore_data'])
        host = self.sim.pools[0].host_by_ref(guest['resident_on'])
        domid = int(guest['domid'])
        self.assertEqual(int(stub['domid']),
                         introspect.device_models(host)[domid])
        self.assertEqual(server['id'], host.hypervisor.xenstore.read(
            '/local/domain/%d/%s' % (domid, dc.XS_MANAGED)))
        # stopped through Nova: no stub domain, no link; started directly
        # through XAPI it is still ours and refused
        server = self._stop_server(server)
        try:
            x.VM.start(guest['ref'], False, False)
        except Exception as exc:        # XenAPI.Failure
            self.assertIn('allow_dom0_device_model', str(exc))
        else:
            self.fail('a Nova guest started with its QEMU in dom0')
        self.assertEqual('Halted', x.VM.get_power_state(guest['ref']))
        for h in self.sim.hosts:
            self.assertNotIn(0, h.hypervisor.device_models.values())
        # a VM made behind Nova's back is not ours: the stock device model
        vm = x.VM.create(testing.vm_record(name='theirs', hvm=True))
        self.addCleanup(x.VM.destroy, vm)
        x.VM.start(vm, False, False)
        self.addCleanup(x.VM.hard_shutdown, vm)
        theirs = int(x.VM.get_domid(vm))
        host = self.sim.pools[0].host_by_ref(x.VM.get_resident_on(vm))
        self.assertEqual([theirs], introspect.dom0_device_models(host))
        run = introspect.dm_wrapper_runs(host)[theirs]
        self.assertIsNone(run.ours)
        self.assertIsNotNone(run.stock)
        self._delete_server(server)
