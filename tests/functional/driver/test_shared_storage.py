"""The pool's shared SR in placement.

``[xen_stubdom] shared_sr_inventory = sharing-provider``: one sharing
provider for the pool, not ``DISK_GB`` on every compute, and Nova places,
moves and deletes instances with their disks allocated from it -- except
requests that name a host: placement leaves sharing providers out of
``in_tree`` requests, the reason ``compute-node`` stays the default.
Switching between the two moves existing allocations at nova-compute
start-up (a reshape)."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)


from nova_xen_stubdom.driver import sharedsr


class TestSharedStorage(base.XenStubdomTestBase):

    def setUp(self):
        self.flags(group='xen_stubdom', shared_sr_inventory='sharing-provider')
        super().setUp()

    def _shared_sr_uuid(self):
        x = self.xapi()
        pool = list(x.pool.get_all_records().values())[0]
        return x.SR.get_uuid(pool['default_SR'])

    def _disk_providers(self):
        """``{provider uuid: DISK_GB total}`` over all of placement."""
        out = {}
        for rp in self._get_all_providers():
            inv = self._get_provider_inventory(rp['uuid'])
            if 'DISK_GB' in inv:
                out[rp['uuid']] = inv['DISK_GB']['total']
        return out

    def _disk_usage(self, rp):
        return self._get_provider_usages(rp).get('DISK_GB', 0)

    def test_shared_sr_counted_once_and_instances_use_it(self):
        sr = self._shared_sr_uuid()
        nodes = [self._get_provider_uuid_by_host(h) for h in self.COMPUTES]
        # the 512 GiB NFS SR once for the pool, not once per compute
        self.assertEqual({sr: 512}, self._disk_providers())
        self.assertIn('MISC_SHARES_VIA_AGGREGATE',
                      self._get_provider_traits(sr))
        agg = sharedsr.aggregate_uuid(sr)
        self.assertEqual([agg], self._get_provider_aggregates(sr))
        for node in nodes:
            self.assertEqual([agg], self._get_provider_aggregates(node))
            self.assertNotIn('DISK_GB', self._get_provider_inventory(node))

        small = self._create_flavor(memory_mb=128, vcpu=1, disk=1,
                                    ephemeral=0)
        big = self._create_flavor(memory_mb=256, vcpu=1, disk=2,
                                  ephemeral=0)
        s1 = self._create_server(flavor_id=small, networks='none')
        s2 = self._create_server(flavor_id=small, networks='none')
        for server in (s1, s2):
            node = self._get_provider_uuid_by_host(
                server['OS-EXT-SRV-ATTR:host'])
            allocs = self._get_allocations_by_server_uuid(server['id'])
            self.assertEqual({'DISK_GB': 1}, allocs[sr]['resources'])
            self.assertEqual({'VCPU': 1, 'MEMORY_MB': 128},
                             allocs[node]['resources'])
        self.assertEqual(2, self._disk_usage(sr))

        # a resize moves the instance to the pool's other host: the old
        # flavor's disk stays held by the migration until confirm
        self.api.post_server_action(s1['id'],
                                    {'resize': {'flavorRef': big}})
        src = s1['OS-EXT-SRV-ATTR:host']
        s1 = self._wait_state(s1, 'VERIFY_RESIZE')
        self.assertNotEqual(src, s1['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(1 + 2 + 1, self._disk_usage(sr))
        self.api.post_server_action(s1['id'], {'confirmResize': None})
        s1 = self._wait_state(s1, 'ACTIVE')
        self.assertEqual(2 + 1, self._disk_usage(sr))
        self._run_periodics()
        self.assertEqual({sr: 512}, self._disk_providers())

        for server in (s1, s2):
            self._delete_server(server)
        self.assertEqual(0, self._disk_usage(sr))

    def test_requests_naming_a_host_find_none(self):
        # Nova turns a named host into placement's in_tree, and placement
        # then leaves sharing providers out (placement
        # objects/research_context.py get_trees_matching_all: "We must
        # skip this process if tree_root_id is provided")
        flavor = self._create_flavor(memory_mb=128, vcpu=1, disk=1,
                                     ephemeral=0)
        server = self._create_server(flavor_id=flavor, networks='none',
                                     host='host1', expected_state='ERROR')
        self.assertIn('No valid host', server['fault']['message'])
        self._delete_server(server)

    def _restart_computes(self, mode):
        self.flags(group='xen_stubdom', shared_sr_inventory=mode)
        for name, compute in list(self.computes_by_name.items()):
            self.computes_by_name[name] = self.restart_compute_service(
                compute)

    def test_switching_moves_allocations_at_start(self):
        """compute-node -> sharing-provider -> compute-node: each restart
        moves the instances' disk allocations with the inventory."""
        sr = self._shared_sr_uuid()
        self._restart_computes('compute-node')
        node = self._get_provider_uuid_by_host('host1')
        self.assertEqual(512, self._get_provider_inventory(node)[
            'DISK_GB']['total'])
        flavor = self._create_flavor(memory_mb=128, vcpu=1, disk=1,
                                     ephemeral=0)
        server = self._create_server(flavor_id=flavor, networks='none',
                                     host='host1')
        allocs = self._get_allocations_by_server_uuid(server['id'])
        self.assertEqual({node: {'VCPU': 1, 'MEMORY_MB': 128, 'DISK_GB': 1}},
                         {rp: a['resources'] for rp, a in allocs.items()})

        self._restart_computes('sharing-provider')
        allocs = self._get_allocations_by_server_uuid(server['id'])
        self.assertEqual({node: {'VCPU': 1, 'MEMORY_MB': 128},
                          sr: {'DISK_GB': 1}},
                         {rp: a['resources'] for rp, a in allocs.items()})
        self.assertEqual({sr: 512}, self._disk_providers())

        self._restart_computes('compute-node')
        allocs = self._get_allocations_by_server_uuid(server['id'])
        self.assertEqual({node: {'VCPU': 1, 'MEMORY_MB': 128, 'DISK_GB': 1}},
                         {rp: a['resources'] for rp, a in allocs.items()})
        self.assertEqual([], self._get_provider_aggregates(node))
        self.assertEqual(0, self._disk_usage(sr))
        self._delete_server(server)
