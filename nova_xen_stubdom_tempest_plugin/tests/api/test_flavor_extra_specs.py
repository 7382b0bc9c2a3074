"""The driver's flavor extra specs: accepted when valid, HTTP 400 when not.

Nova validates extra specs from microversion 2.86 on, per namespace, through
the ``nova.api.extra_spec_validators`` entry point that the project
registers for ``xen_stubdom:``.
"""
from tempest.lib import decorators
from tempest.lib import exceptions as lib_exc

from nova_xen_stubdom_tempest_plugin.tests import base


class FlavorExtraSpecsTest(base.XenStubdomBaseTest):

    min_microversion = '2.86'

    def _flavor(self):
        return self.create_flavor(ram=512, vcpus=1, disk=1)

    @decorators.idempotent_id('0f0a3c52-8a49-4f4b-9d55-3a1b1bde0a01')
    def test_valid_extra_specs_accepted(self):
        flavor = self._flavor()
        specs = {'xen_stubdom:memory_mb': '256', 'xen_stubdom:vcpus': '2',
                 'xen_stubdom:viridian': 'true'}
        self.admin_flavors_client.set_flavor_extra_spec(flavor['id'],
                                                        **specs)
        got = self.admin_flavors_client.list_flavor_extra_specs(
            flavor['id'])['extra_specs']
        self.assertEqual(specs, got)

    @decorators.idempotent_id('0f0a3c52-8a49-4f4b-9d55-3a1b1bde0a02')
    def test_bad_extra_specs_refused(self):
        flavor = self._flavor()
        bad = [
            {'xen_stubdom:memory_mb': 'lots'},      # not an integer
            {'xen_stubdom:memory_mb': '1'},         # below the minimum
            {'xen_stubdom:memory_mb': '99999999'},  # above the maximum
            {'xen_stubdom:vcpus': '0'},
            {'xen_stubdom:viridian': 'perhaps'},    # not a boolean
            {'xen_stubdom:no_such_key': '1'},       # unknown in namespace
        ]
        for spec in bad:
            self.assertRaises(lib_exc.BadRequest,
                              self.admin_flavors_client.set_flavor_extra_spec,
                              flavor['id'], **spec)
        # a refusal changes nothing
        self.assertEqual({}, self.admin_flavors_client.list_flavor_extra_specs(
            flavor['id'])['extra_specs'])

    @decorators.idempotent_id('0f0a3c52-8a49-4f4b-9d55-3a1b1bde0a03')
    def test_bad_extra_spec_refused_at_flavor_update(self):
        flavor = self._flavor()
        self.admin_flavors_client.set_flavor_extra_spec(
            flavor['id'], **{'xen_stubdom:memory_mb': '192'})
        self.assertRaises(
            lib_exc.BadRequest,
            self.admin_flavors_client.update_flavor_extra_spec,
            flavor['id'], 'xen_stubdom:memory_mb',
            **{'xen_stubdom:memory_mb': 'x'})
        self.assertEqual(
            {'xen_stubdom:memory_mb': '192'},
            self.admin_flavors_client.list_flavor_extra_specs(
                flavor['id'])['extra_specs'])
