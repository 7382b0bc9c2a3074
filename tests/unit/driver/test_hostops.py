"""Host resources from cached XAPI records (no XAPI calls)."""
import types

import pytest

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import hostops

GiB = 1 << 30
MiB = 1 << 20


class FakeCache:
    def __init__(self, tables):
        self.tables = tables

    def get(self, cls, ref):
        return self.tables.get(cls, {}).get(ref)

    def get_all(self, cls):
        return dict(self.tables.get(cls, {}))


def _ctx(sr_filter='default-sr:true', vms=None):
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
        'pool': {'P': {'default_SR': 'SR1'}},
        'SR': {'SR1': {'name_label': 'Local storage', 'other_config': {},
                       'physical_size': str(100 * GiB),
                       'physical_utilisation': str(10 * GiB + 1)},
               'SR2': {'name_label': 'nfs', 'physical_size': str(GiB),
                       'physical_utilisation': '0',
                       'other_config': {'nova': 'yes'}}},
    }
    tables['VM'].update(vms or {})
    conf = types.SimpleNamespace(xen_stubdom=types.SimpleNamespace(
        sr_matching_filter=sr_filter))
    return types.SimpleNamespace(cache=FakeCache(tables), host_ref='H',
                                 host_record=tables['host']['H'],
                                 host_name='host1', conf=conf)


def _nova_conf():
    return types.SimpleNamespace(reserved_host_memory_mb=512,
                                 reserved_host_cpus=0,
                                 reserved_host_disk_mb=0, my_ip='192.0.2.1')


@pytest.mark.parametrize('flt,expected', [
    ('default-sr:true', 'SR1'), ('name-label:nfs', 'SR2'),
    ('other-config:nova=yes', 'SR2'), ('name-label:nope', None),
    ('bogus', None)])
def test_sr_matching_filter(flt, expected):
    assert hostops.HostOps(_ctx(flt), _nova_conf()).select_sr() == expected


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

    class Tree:
        def update_inventory(self, node, inv):
            self.node, self.inv = node, inv
    tree = Tree()
    ratios = {'VCPU': 4.0, 'MEMORY_MB': 1.0, 'DISK_GB': 1.0}
    ops.update_provider_tree(tree, 'host1', ratios)
    assert tree.inv['MEMORY_MB']['total'] == 64 * 1024 - 256 - 2048
    # Nova's reserved + the stub domains of this host only
    assert tree.inv['MEMORY_MB']['reserved'] == 512 + 128
    assert tree.inv['VCPU']['allocation_ratio'] == 4.0
    assert tree.inv['DISK_GB']['total'] == 100


def test_uptime_from_boot_time(monkeypatch):
    ctx = _ctx()
    ctx.host_record['other_config']['boot_time'] = '1000'
    monkeypatch.setattr(hostops.time, 'time', lambda: 1000 + 2 * 86400 +
                        3 * 3600 + 4 * 60)
    assert 'up 2 days,  3:04' in hostops.HostOps(ctx, _nova_conf()).uptime()
