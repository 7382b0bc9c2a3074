"""Bad flavor extra specs are refused by the API (HTTP 400); image properties
the driver cannot honour fail the boot before anything is created."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

from oslo_utils import uuidutils

from nova.tests.functional.api import client


class TestValidation(base.XenStubdomTestBase):
    MAX_ATTEMPTS = 1

    def _set_spec(self, flavor, key, value):
        return self.admin_api.post_extra_spec(
            flavor, {'extra_specs': {key: value}})

    def test_bad_extra_specs_refused_with_400(self):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        for key, value in (('xen_stubdom:memory_mb', 'lots'),
                           ('xen_stubdom:memory_mb', '16'),
                           ('xen_stubdom:memory_mb', '999999'),
                           ('xen_stubdom:vcpus', '0'),
                           ('xen_stubdom:vcpus', '64'),
                           ('xen_stubdom:viridian', 'maybe'),
                           ('xen_stubdom:no_such_key', '1')):
            exc = self.assertRaises(client.OpenStackApiException,
                                    self._set_spec, flavor, key, value)
            self.assertEqual(400, exc.response.status_code, (key, value))
        # good values are accepted and honoured by the driver
        self._set_spec(flavor, 'xen_stubdom:memory_mb', '96')
        self._set_spec(flavor, 'xen_stubdom:viridian', 'true')
        server = self._create_server(flavor_id=flavor, networks='none')
        guest, stub = self.xapi_vms(server)
        self.assertEqual(str(96 << 20), stub['memory_static_max'])
        self.assertEqual('true', guest['platform']['viridian'])
        # no platform:stubdom: XAPI's platform filter drops it before
        # xenopsd (vm_platform.ml filtered_flags); the guest is marked by
        # VM.xenstore_data instead (doc/source/xapi-behaviour.rst)
        self.assertNotIn('stubdom', guest['platform'])
        self._delete_server(server)

    def _boot_image(self, props, expected_state='ERROR'):
        image = self.glance.create(None, {
            'id': uuidutils.generate_uuid(), 'name': 'props-image',
            'status': 'active', 'container_format': 'bare',
            'disk_format': 'raw', 'size': 0, 'min_ram': 0, 'min_disk': 0,
            'is_public': True, 'properties': dict(props)})
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        return self._create_server(flavor_id=flavor, networks='none',
                                   image_uuid=image['id'],
                                   expected_state=expected_state)

    def test_unsupported_image_properties_refused(self):
        for prop, value in (('hw_video_model', 'qxl'),
                            ('hw_disk_bus', 'virtio'),
                            ('hw_vif_model', 'virtio'),
                            ('hw_firmware_type', 'coreboot')):
            if prop == 'hw_firmware_type':
                # Nova's own enum refuses it before the driver sees it
                continue
            server = self._boot_image({prop: value})
            fault = self.api.get_server(server['id'])['fault']['message']
            self.assertIn('%s=%s is not supported' % (prop, value), fault)
            left = {k: v for k, v in self.leaks(self.sim).items()
                    if not k.endswith('.sessions')}
            self.assertEqual({}, left)
            self._delete_server(server)

    def test_supported_image_properties_reach_the_device_model(self):
        server = self._boot_image({'hw_video_model': 'cirrus',
                                   'hw_disk_bus': 'sata',
                                   'hw_vif_model': 'rtl8139',
                                   'hw_firmware_type': 'uefi'},
                                  expected_state='ACTIVE')
        guest, stub = self.xapi_vms(server)
        self.assertEqual('cirrus', guest['platform']['vga'])
        self.assertEqual('uefi', guest['HVM_boot_params']['firmware'])
        host = server['OS-EXT-SRV-ATTR:host']
        hv = self.sim_host(host).hypervisor
        argv = hv.xenstore.read('/local/domain/%s/dm-argv' % stub['domid'])
        self.assertIn('-vga\x1bcirrus', argv)
        self.assertIn('ahci', argv)
        self.assertIn('if=pflash', argv)
        self._delete_server(server)
