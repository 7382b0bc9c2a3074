"""Suspend saves the guest with its stub domain's device state; resume
brings both back.

The image lives in a VDI of the instance that the guest VM's
``other_config:nova_xen_stubdom_suspend_image`` names; XAPI shows the guest
Halted (its own Suspended state would need xenopsd's image, and
``VM.set_suspend_VDI`` accepts no other: doc/source/xapi-behaviour.rst).
The stub domain is halted meanwhile: a stub domain never outlives the
running guest it serves.
"""
from tempest.common import waiters
from tempest import config
from tempest.lib import decorators

from nova_xen_stubdom_tempest_plugin.tests import base

CONF = config.CONF
NULL = 'OpaqueRef:NULL'
OC_SUSPEND_IMAGE = 'nova_xen_stubdom_suspend_image'


class StubdomSuspendResumeTest(base.XenStubdomXAPITest):

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.compute_feature_enabled.suspend:
            raise cls.skipException('suspend is not enabled')

    @decorators.idempotent_id('2fde1ba2-8020-404e-bd43-c8712f7e7595')
    def test_suspend_into_an_image_vdi_then_resume(self):
        server = self.boot()
        sid = server['id']
        (g_ref, before), (s_ref, _) = self.guest_and_stubdom(sid)

        self.servers_client.suspend_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'SUSPENDED')
        (_, guest), _ = self.guest_and_stubdom(sid, 'Halted')
        self.assertEqual(NULL, guest['suspend_VDI'])
        image = guest['other_config'][OC_SUSPEND_IMAGE]
        self.assertIn(image, [v['uuid'] for v in self.xapi.vdis_of(sid)])
        self.wait_stubdom_halted(s_ref)

        self.servers_client.resume_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'ACTIVE')
        self.assert_served_by_stubdom(server)
        (_, guest), _ = self.guest_and_stubdom(sid)
        # the same VM, on the same host; the image is gone with the resume
        self.assertEqual(before['uuid'], guest['uuid'])
        self.assertEqual(before['resident_on'], guest['resident_on'])
        self.assertNotIn(OC_SUSPEND_IMAGE, guest['other_config'])
        self.assertNotIn(image, [v['uuid'] for v in self.xapi.vdis_of(sid)])
