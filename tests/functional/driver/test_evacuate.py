"""Evacuate through Nova: a pool member dies (the simulator's crash: its
domains gone, XAPI keeps its VMs Running on it), its compute service is
forced down, and the instance comes back on the other host with the very
same VMs and disk (the pool's shared SR); the dead host's compute, back,
destroys nothing."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

from nova_xen_stubdom.sim import storage
from tests import waiting

MARKER = b'evacuated with its own disk\n'
MARKER_OFFSET = 256 * 1024 * 1024


class TestEvacuate(base.XenStubdomTestBase):

    def _root_path(self, x, guest):
        for vbd in guest['VBDs']:
            rec = x.VBD.get_record(vbd)
            if rec['userdevice'] == '0':
                return storage.vdi_path(self.sim.pools[0],
                                        x.VDI.get_uuid(rec['VDI']))
        self.fail('no root disk')

    def _boot_on_member(self):
        # host1 is the pool master (it stays up); host2 is a member
        server = self._create_server(networks='none', host='host2')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        return server

    def _host_down(self, name):
        self.sim.crash_host(self.sim_host(name))
        self.computes_by_name[name].stop()
        service = self.admin_api.get_services(
            host=name, binary='nova-compute')[0]
        self.admin_api.put_service_force_down(service['id'], True)
        return service

    def test_evacuate_takes_over_the_same_vms_and_disk(self):
        server = self._boot_on_member()
        x = self.xapi()
        guest, stub = self.xapi_vms(server, x)
        with open(self._root_path(x, guest), 'r+b') as f:
            f.seek(MARKER_OFFSET)
            f.write(MARKER)
        service = self._host_down('host2')

        # since API 2.95 Nova stops an evacuated server on its new host
        server = self._evacuate_server(server, expected_host='host1')
        for rec in self.xapi_vms(server, x):
            self.assertEqual('Halted', rec['power_state'])
        server = self._start_server(server)
        after_guest, after_stub = self.xapi_vms(server, x)
        self.assertEqual((guest['ref'], stub['ref']),
                         (after_guest['ref'], after_stub['ref']))
        host1 = self.sim_host('host1').ref
        for rec in (after_guest, after_stub):
            self.assertEqual('Running', rec['power_state'])
            self.assertEqual(host1, rec['resident_on'])
            self.assertEqual(host1, rec['affinity'])
        with open(self._root_path(x, after_guest), 'rb') as f:
            f.seek(MARKER_OFFSET)
            self.assertEqual(MARKER, f.read(len(MARKER)))

        # the dead host reboots and its compute comes back: it finds
        # nothing of the instance on its host and destroys nothing
        self.sim.host_comes_back(self.sim_host('host2'))
        self.computes_by_name['host2'] = self.restart_compute_service(
            self.computes_by_name['host2'], keep_hypervisor_state=False)
        self.admin_api.put_service_force_down(service['id'], False)
        guest_now, _stub = self.xapi_vms(server, x)
        self.assertEqual('Running', guest_now['power_state'])
        self._delete_server(server)

    def test_evacuate_refused_while_xapi_hears_the_old_host(self):
        server = self._boot_on_member()
        x = self.xapi()
        guest, _stub = self.xapi_vms(server, x)
        # the compute service is down, but XAPI still hears the host:
        # its copy may run, so no second copy is started
        self.computes_by_name['host2'].stop()
        service = self.admin_api.get_services(
            host='host2', binary='nova-compute')[0]
        self.admin_api.put_service_force_down(service['id'], True)
        self.admin_api.post_server_action(server['id'], {'evacuate': {}})
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertIn('HOST_IS_LIVE', server['fault']['message'])
        guest_now, _stub = self.xapi_vms(server, x)
        self.assertEqual('Running', guest_now['power_state'])
        self.assertEqual(self.sim_host('host2').ref,
                         guest_now['resident_on'])
        # the operator brings the compute back and cleans up
        self.admin_api.put_service_force_down(service['id'], False)
        self.computes_by_name['host2'] = self.restart_compute_service(
            self.computes_by_name['host2'], keep_hypervisor_state=False)
        waiting.wait_until(
            lambda: self.admin_api.get_services(
                host='host2', binary='nova-compute')[0]['state'] == 'up',
            'the compute service on host2 to report up')
        self.admin_api.post_server_action(
            server['id'], {'os-resetState': {'state': 'active'}})
        self._delete_server(server)
