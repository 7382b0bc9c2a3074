"""Host resources from cached XAPI records (no XAPI calls)."""
import types

import pytest

from nova import exception

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import hostops
from nova_xen_stubdom.driver import sharedsr

GiB = 1 << 30
MiB = 1 << 20
SHARED_UUID = '5d1c3e0a-1b8e-4e55-9d4b-0a6f3c2b7e11'
NODE_UUID = 'c0ffee00-0000-4000-8000-000000000001'


class FakeCache:
    def __init__(self, tables):
        self.tables = tables

    def get(self, cls, ref):
        return self.tables.get(cls, {}).get(ref)

    def get_all(self, cls):
        return dict(self.tables.get(cls, {}))


def _ctx(sr_filter='default-sr:true', vms=None, default_sr='SR1',
         shared_sr_inventory='sharing-provider'):
    tables = {
        'host': {'H': {'name_label': 'host1', 'address': '10.0.0.5',
                       'metrics': 'M', 'memory_overhead': str(256 * MiB),
                       'control_domain': 'D0', 'enabled': True,
                       'cpu_info': {'cpu_count': '16', 'socket_count': '2',
                                    'vendor': 'GenuineIntel',
                                    'modelname': 'Xeon', 'flags': 'vmx pae'},
                       'software_version': {'xen': '4.17.4-5'},
                       'other_config': {}}},
        'host_metrics': {'M': {'memory_total': str(64 * GiB),
                               'memory_free': str(40 * GiB), 'live': True}},
        'VM': {'D0': {'memory_static_max': str(2 * GiB),
                      'other_config': {}}},
        'pool': {'P': {'default_SR': default_sr}},
        'SR': {'SR1': {'uuid': 'sr1-uuid', 'name_label': 'Local storage',
                       'other_config': {}, 'shared': False,
                       'physical_size': str(100 * GiB),
                       'physical_utilisation': str(10 * GiB + 1)},
               # another host's local SR: same name, sorts first
               'SR0': {'uuid': 'sr0-uuid', 'name_label': 'Local storage',
                       'other_config': {'nova': 'yes'}, 'shared': False,
                       'physical_size': str(GiB),
                       'physical_utilisation': '0'},
               'SR2': {'uuid': 'sr2-uuid', 'name_label': 'nfs',
                       'physical_size': str(GiB), 'shared': True,
                       'physical_utilisation': '0',
                       'other_config': {'nova': 'yes'}},
               'SRS': {'uuid': SHARED_UUID, 'name_label': 'Pool storage',
                       'physical_size': str(512 * GiB), 'shared': True,
                       'physical_utilisation': str(GiB),
                       'other_config': {}}},
        'PBD': {'P1': {'SR': 'SR1', 'host': 'H'},
                'P0': {'SR': 'SR0', 'host': 'H2'},
                'P2': {'SR': 'SR2', 'host': 'H'},
                'PS': {'SR': 'SRS', 'host': 'H'},
                'PS2': {'SR': 'SRS', 'host': 'H2'}},
    }
    tables['VM'].update(vms or {})
    conf = types.SimpleNamespace(xen_stubdom=types.SimpleNamespace(
        sr_matching_filter=sr_filter,
        shared_sr_inventory=shared_sr_inventory))
    return types.SimpleNamespace(cache=FakeCache(tables), host_ref='H',
                                 host_record=tables['host']['H'],
                                 host_name='host1', conf=conf)


def _nova_conf():
    return types.SimpleNamespace(reserved_host_memory_mb=512,
                                 reserved_host_cpus=0,
                                 reserved_host_disk_mb=0, my_ip='192.0.2.1')


@pytest.mark.parametrize('flt,expected', [
    ('default-sr:true', 'SR1'), ('name-label:nfs', 'SR2'),
    # only SRs this host has a PBD for: never another host's local SR
    ('other-config:nova=yes', 'SR2'), ('name-label:Local storage', 'SR1'),
    ('name-label:nope', None), ('bogus', None)])
def test_sr_matching_filter(flt, expected):
    assert hostops.HostOps(_ctx(flt), _nova_conf()).select_sr() == expected


RATIOS = {'VCPU': 4.0, 'MEMORY_MB': 1.0, 'DISK_GB': 1.0}


def _vm(role, mem_mb, host='H'):
    return {'memory_static_max': str(mem_mb * MiB), 'resident_on': host,
            'other_config': {dc.OC_ROLE: role}}


def test_resources_and_inventory():
    vms = {'G': _vm(dc.ROLE_GUEST, 1024), 'S': _vm(dc.ROLE_STUBDOM, 128),
           'OTHER': _vm(dc.ROLE_STUBDOM, 999, host='H2')}
    ops = hostops.HostOps(_ctx(vms=vms), _nova_conf())
    res = ops.get_available_resource('host1')
    # 64 GiB - 256 MiB Xen overhead - 2 GiB dom0
    assert res['memory_mb'] == 64 * 1024 - 256 - 2048
    assert res['vcpus'] == 16 and res['local_gb'] == 100
    assert res['local_gb_used'] == 11        # rounded up
    assert res['hypervisor_type'] == 'xen'
    assert res['hypervisor_version'] == 4017004
    assert res['supported_instances'] == [('x86_64', 'xen', 'hvm')]
    assert ops.host_ip() == '10.0.0.5'

    tree = _tree()
    ops.update_provider_tree(tree, 'host1', RATIOS)
    inv = tree.data('host1').inventory
    assert inv['MEMORY_MB']['total'] == 64 * 1024 - 256 - 2048
    # Nova's reserved + the stub domains of this host only
    assert inv['MEMORY_MB']['reserved'] == 512 + 128
    assert inv['VCPU']['allocation_ratio'] == 4.0
    assert inv['DISK_GB']['total'] == 100


def test_halted_vm_counts_where_its_affinity_is():
    # XAPI: a halted VM is resident nowhere (resident_on NULL); affinity
    # (set by the driver) says which compute it belongs to
    null = 'OpaqueRef:NULL'
    vms = {'S1': dict(_vm(dc.ROLE_STUBDOM, 128, host=null), affinity='H'),
           'S2': dict(_vm(dc.ROLE_STUBDOM, 64, host=null), affinity='H2'),
           'S3': _vm(dc.ROLE_STUBDOM, 32, host='H2')}
    mem = hostops.HostOps(_ctx(vms=vms), _nova_conf())._memory_mb()
    assert mem['stubdoms'] == 128


def _tree(disk_gb=None, aggregates=()):
    from nova.compute import provider_tree
    tree = provider_tree.ProviderTree()
    tree.new_root('host1', NODE_UUID)
    if disk_gb:
        tree.update_inventory('host1', {'DISK_GB': {'total': disk_gb}})
    tree.update_aggregates('host1', list(aggregates))
    return tree


def test_local_sr_is_the_compute_nodes_disk():
    tree = _tree(aggregates=['operator-agg'])
    ops = hostops.HostOps(_ctx(), _nova_conf())
    ops.update_provider_tree(tree, 'host1', RATIOS)
    assert tree.get_provider_uuids() == [NODE_UUID]
    assert tree.data('host1').inventory['DISK_GB']['total'] == 100
    assert tree.data('host1').aggregates == {'operator-agg'}


def test_shared_sr_is_one_sharing_provider():
    tree = _tree(aggregates=['operator-agg'])
    ops = hostops.HostOps(_ctx(default_sr='SRS'), _nova_conf())
    ops.update_provider_tree(tree, 'host1', RATIOS)
    agg = sharedsr.aggregate_uuid(SHARED_UUID)
    node = tree.data('host1')
    assert 'DISK_GB' not in node.inventory
    assert {'VCPU', 'MEMORY_MB'} == set(node.inventory)
    # the operator's aggregate stays; the node joins the SR's
    assert node.aggregates == {'operator-agg', agg}
    sr = tree.data(SHARED_UUID)
    assert sr.name == 'xen_stubdom_sr_' + SHARED_UUID
    assert sr.parent_uuid is None
    assert sr.inventory['DISK_GB']['total'] == 512
    assert sr.inventory['DISK_GB']['reserved'] == 0
    assert sr.traits == {'MISC_SHARES_VIA_AGGREGATE'}
    assert sr.aggregates == {agg}
    # the same again (the next periodic, or the pool's other compute)
    ops.update_provider_tree(tree, 'host1', RATIOS)
    assert not tree.has_inventory_changed(
        SHARED_UUID, {'DISK_GB': sr.inventory['DISK_GB']})

    # the operator points the node at a local SR: it leaves the
    # aggregate, and this node's disk allocations come back (reshape)
    ops = hostops.HostOps(_ctx(), _nova_conf())
    with pytest.raises(exception.ReshapeNeeded):
        ops.update_provider_tree(tree, 'host1', RATIOS)
    allocs = {
        'mine': {'allocations': {
            NODE_UUID: {'resources': {'VCPU': 1}},
            SHARED_UUID: {'resources': {'DISK_GB': 2}}}},
        'other-hosts': {'allocations': {
            'other-node': {'resources': {'VCPU': 1}},
            SHARED_UUID: {'resources': {'DISK_GB': 5}}}},
    }
    ops.update_provider_tree(tree, 'host1', RATIOS, allocations=allocs)
    assert allocs['mine']['allocations'] == {
        NODE_UUID: {'resources': {'VCPU': 1, 'DISK_GB': 2}}}
    assert allocs['other-hosts']['allocations'][SHARED_UUID] == {
        'resources': {'DISK_GB': 5}}
    assert tree.data('host1').aggregates == {'operator-agg'}
    assert tree.data('host1').inventory['DISK_GB']['total'] == 100


def test_shared_sr_on_the_compute_node_by_default():
    tree = _tree()
    ops = hostops.HostOps(_ctx(default_sr='SRS',
                               shared_sr_inventory='compute-node'),
                          _nova_conf())
    ops.update_provider_tree(tree, 'host1', RATIOS)
    assert tree.get_provider_uuids() == [NODE_UUID]
    assert tree.data('host1').inventory['DISK_GB']['total'] == 512


def test_default_counts_the_shared_sr_on_every_compute_as_documented():
    """operations.rst "Disk space of a shared SR in placement": by default
    every compute of the pool offers the whole SR, each compute's
    reserved_host_disk_mb and disk_allocation_ratio apply to its copy --
    so a ratio of 1/N over N computes keeps placement within the SR."""
    conf = _nova_conf()
    conf.reserved_host_disk_mb = 10 * 1024 + 1       # rounded up: 11 GiB
    ops = hostops.HostOps(_ctx(default_sr='SRS',
                               shared_sr_inventory='compute-node'), conf)
    tree = _tree()
    ops.update_provider_tree(tree, 'host1', dict(RATIOS, DISK_GB=0.5))
    disk = tree.data('host1').inventory['DISK_GB']
    assert (disk['total'], disk['reserved'], disk['allocation_ratio'],
            disk['max_unit']) == (512, 11, 0.5, 512)
    # what placement lets each of two computes allocate: half the SR
    # (less its reservation); both together stay within the 512 GiB
    assert (disk['total'] - disk['reserved']) * disk['allocation_ratio'] \
        == 250.5
    # os-hypervisors' local_gb is the SR as this host sees it, in any mode
    assert ops.get_available_resource('host1')['local_gb'] == 512


def test_disk_on_the_node_moves_to_the_shared_sr_by_reshape():
    ops = hostops.HostOps(_ctx(default_sr='SRS'), _nova_conf())
    tree = _tree(disk_gb=512)
    with pytest.raises(exception.ReshapeNeeded):
        ops.update_provider_tree(tree, 'host1', RATIOS)
    allocs = {
        'inst1': {'allocations': {NODE_UUID: {'resources': {
            'VCPU': 1, 'MEMORY_MB': 512, 'DISK_GB': 2}}}},
        'inst2': {'allocations': {NODE_UUID: {'resources': {'DISK_GB': 3}},
                                  SHARED_UUID: {'resources': {
                                      'DISK_GB': 1}}}},
        'inst3': {'allocations': {NODE_UUID: {'resources': {'VCPU': 1}}}},
    }
    ops.update_provider_tree(tree, 'host1', RATIOS, allocations=allocs)
    assert allocs['inst1']['allocations'] == {
        NODE_UUID: {'resources': {'VCPU': 1, 'MEMORY_MB': 512}},
        SHARED_UUID: {'resources': {'DISK_GB': 2}}}
    assert allocs['inst2']['allocations'] == {
        SHARED_UUID: {'resources': {'DISK_GB': 4}}}
    assert allocs['inst3']['allocations'] == {
        NODE_UUID: {'resources': {'VCPU': 1}}}
    assert 'DISK_GB' not in tree.data('host1').inventory


def test_uptime_from_boot_time(monkeypatch):
    ctx = _ctx()
    ctx.host_record['other_config']['boot_time'] = '1000'
    monkeypatch.setattr(hostops.time, 'time', lambda: 1000 + 2 * 86400 +
                        3 * 3600 + 4 * 60)
    assert 'up 2 days,  3:04' in hostops.HostOps(ctx, _nova_conf()).uptime()
