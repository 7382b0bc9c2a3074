"""Suspend saves the guest with its stub domain's device state; resume
brings both back.

The image lives in the guest VM's ``suspend_VDI`` (XAPI shows it
Suspended); the stub domain is halted meanwhile: a stub domain never
outlives the running guest it serves.
"""
from tempest.common import waiters
from tempest import config
from tempest.lib import decorators

from nova_xen_stubdom_tempest_plugin.tests import base

CONF = config.CONF
NULL = 'OpaqueRef:NULL'


class StubdomSuspendResumeTest(base.XenStubdomXAPITest):

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.compute_feature_enabled.suspend:
            raise cls.skipException('suspend is not enabled')

    @decorators.idempotent_id('7e1f9b52-2a4d-4c61-8d0e-3b5a6c7d8e01')
    def test_suspend_into_the_suspend_vdi_then_resume(self):
        server = self.boot()
        sid = server['id']
        (g_ref, before), (s_ref, _) = self.guest_and_stubdom(sid)

        self.servers_client.suspend_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'SUSPENDED')
        (_, guest), _ = self.guest_and_stubdom(sid, 'Suspended')
        image = guest['suspend_VDI']
        self.assertNotEqual(NULL, image)
        self.assertIn(image, [self.xapi.call('VDI.get_by_uuid', v['uuid'])
                              for v in self.xapi.vdis_of(sid)])
        self.wait_stubdom_halted(s_ref)

        self.servers_client.resume_server(sid)
        waiters.wait_for_server_status(self.servers_client, sid, 'ACTIVE')
        self.assert_served_by_stubdom(server)
        (_, guest), _ = self.guest_and_stubdom(sid)
        # the same VM, on the same host; the image is gone with the resume
        self.assertEqual(before['uuid'], guest['uuid'])
        self.assertEqual(before['resident_on'], guest['resident_on'])
        self.assertEqual(NULL, guest['suspend_VDI'])
        self.assertNotIn(image, [self.xapi.call('VDI.get_by_uuid', v['uuid'])
                                 for v in self.xapi.vdis_of(sid)])
