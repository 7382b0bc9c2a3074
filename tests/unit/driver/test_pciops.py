"""Inventory, exclusion and assignment of pciops, against XAPI-shaped
records built from the simulator's device definitions."""
import json
import types

import pytest

from nova_xen_stubdom.dom0 import image_manifest
from nova_xen_stubdom.dom0 import pci_grants as agent_pci
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import pciops
from nova_xen_stubdom.sim import pci as sim_pci

HOST = 'OpaqueRef:host1'
NULL = 'OpaqueRef:NULL'


class FakeCtx:
    """XAPI records in dicts; ``call`` serves the messages pciops uses."""

    def __init__(self, devices, tmp_path):
        self.host_ref = HOST
        self.host_name = 'host1'
        self.pci_host = sim_pci.PciHost(devices)
        self.sysfs = str(tmp_path / 'sys')
        self.pci_host.write_sysfs(self.sysfs)
        self.records = {'PCI': {}, 'PIF': {}, 'VM': {}, 'VLAN': {},
                        'Bond': {}, 'network_sriov': {}}
        ref_of = {}
        for i, dev in enumerate(devices):
            ref = 'OpaqueRef:pci%d' % i
            ref_of[dev.address] = ref
            self.records['PCI'][ref] = dict(dev.xapi_fields(), host=HOST)
        for addr, ref in ref_of.items():
            dev = self.pci_host.devices[addr]
            self.records['PCI'][ref]['dependencies'] = [
                ref_of[d] for d in dev.dependencies]
            if dev.netdev:
                self.records['PIF']['OpaqueRef:pif-' + dev.netdev] = {
                    'host': HOST, 'device': dev.netdev, 'physical': True,
                    'management': dev.netdev == 'eth0', 'PCI': ref,
                    'ip_configuration_mode': 'DHCP'
                    if dev.netdev == 'eth0' else 'None',
                    'VLAN_master_of': NULL, 'bond_master_of': [],
                    'sriov_logical_PIF_of': [], 'disallow_unplug': False}
        self.calls = []
        self.plugin_calls = []
        # the agent's stubdom_image reads this (absent: nothing lacking)
        self.manifest = str(tmp_path / 'nova-xen-stubdom-manifest.json')

    def call(self, method, *args):
        self.calls.append((method,) + args)
        cls, _, msg = method.partition('.')
        table = self.records[cls]
        if msg == 'get_all_records':
            return {r: dict(v) for r, v in table.items()}
        if msg == 'get_record':
            return dict(table[args[0]])
        if msg == 'get_other_config':
            return dict(table[args[0]]['other_config'])
        if msg == 'add_to_other_config':
            oc = table[args[0]]['other_config']
            if args[1] in oc:
                raise RuntimeError('MAP_DUPLICATE_KEY')
            oc[args[1]] = args[2]
            return ''
        if msg == 'remove_from_other_config':
            table[args[0]]['other_config'].pop(args[1], None)
            return ''
        raise AssertionError('unexpected call %s' % method)

    def call_plugin(self, fn, **args):
        self.plugin_calls.append((fn, args))
        agent = types.SimpleNamespace(backend=types.SimpleNamespace(
            sysfs_root=self.sysfs))
        if fn == 'pci_inventory':
            return json.loads(agent_pci.plugin_pci_inventory(agent, {}))
        if fn == 'pci_detach':
            return {'released': [], 'errors': []}
        if fn == 'stubdom_image':
            agent.config = types.SimpleNamespace(
                stubdom_manifest=self.manifest)
            return json.loads(image_manifest.plugin_stubdom_image(agent, {}))
        raise AssertionError(fn)

    def add_vm(self, ref, power_state='Halted', pci='', resident_on=HOST,
               domid=-1, key=dc.OC_PCI, attached=()):
        self.records['VM'][ref] = {
            'name_label': ref.split(':')[1], 'power_state': power_state,
            'resident_on': resident_on if power_state != 'Halted' else NULL,
            'is_a_template': False, 'domid': str(domid),
            'uuid': 'uuid-' + ref.split(':')[1],
            'other_config': {key: pci} if pci else {},
            'attached_PCIs': list(attached)}


def _devices(ctx):
    return json.loads(pciops.PciOps(ctx).get_pci_passthrough_devices())


def test_gpu_host_inventory(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    devs = {d['address']: d for d in _devices(ctx)}
    assert sorted(devs) == ['0000:81:00.0', '0000:81:00.1']
    gpu = devs['0000:81:00.0']
    assert gpu == {'address': '0000:81:00.0', 'vendor_id': '10de',
                   'product_id': '1eb8', 'dev_type': 'type-PCI',
                   'parent_addr': None, 'numa_node': 1,
                   'label': 'label_10de_1eb8'}


def test_sriov_host_inventory(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('sriov'), tmp_path)
    devs = {d['address']: d for d in _devices(ctx)}
    pf = devs['0000:3b:00.0']
    assert (pf['dev_type'], pf['parent_addr'], pf['product_id']) == (
        'type-PF', None, '1572')
    vfs = [d for d in devs.values() if d['dev_type'] == 'type-VF']
    assert len(vfs) == 4
    assert {v['parent_addr'] for v in vfs} == {'0000:3b:00.0'}
    assert {v['product_id'] for v in vfs} == {'154c'}
    assert {v['numa_node'] for v in vfs} == {0}


def test_host_devices_never_offered(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('sriov'), tmp_path)
    pcis = ctx.records['PCI']
    details = {d['address']: d for d in json.loads(
        agent_pci.plugin_pci_inventory(types.SimpleNamespace(
            backend=types.SimpleNamespace(sysfs_root=ctx.sysfs)), {}))}
    needed = pciops.host_needed_devices(pcis, ctx.records['PIF'], details)
    assert needed == {
        '0000:01:00.0': 'NIC of PIF eth0 (management interface)',
        '0000:00:17.0': 'dom0 storage controller (sda)'}
    addrs = {d['address'] for d in _devices(ctx)}
    assert '0000:01:00.0' not in addrs and '0000:00:17.0' not in addrs


def test_management_through_vlan_on_bond(tmp_path):
    devs = sim_pci.host_devices('none') + [
        sim_pci.management_nic('0000:02:00.0', netdev='eth2', irq=31)]
    ctx = FakeCtx(devs, tmp_path)
    pifs = ctx.records['PIF']
    # eth0 and eth2 are bonded into bond0; VLAN 10 on it carries management
    for ref in ('OpaqueRef:pif-eth0', 'OpaqueRef:pif-eth2'):
        pifs[ref].update(management=False, ip_configuration_mode='None')
    pifs['OpaqueRef:bond0'] = {
        'host': HOST, 'device': 'bond0', 'physical': False,
        'management': False, 'PCI': NULL, 'bond_master_of': ['b1'],
        'VLAN_master_of': NULL, 'sriov_logical_PIF_of': []}
    pifs['OpaqueRef:vlan10'] = {
        'host': HOST, 'device': 'bond0', 'physical': False,
        'management': True, 'PCI': NULL, 'bond_master_of': [],
        'VLAN_master_of': 'v10', 'sriov_logical_PIF_of': []}
    needed = pciops.host_needed_devices(
        ctx.records['PCI'], pifs, {},
        vlans={'v10': {'tagged_PIF': 'OpaqueRef:bond0'}},
        bonds={'b1': {'slaves': ['OpaqueRef:pif-eth0',
                                 'OpaqueRef:pif-eth2']}})
    assert sorted(needed) == ['0000:01:00.0', '0000:02:00.0']


def test_pif_without_pci_link_found_by_netdev(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('none'), tmp_path)
    ctx.records['PIF']['OpaqueRef:pif-eth0']['PCI'] = NULL
    assert '0000:01:00.0' not in {d['address'] for d in _devices(ctx)}
    # and the inventory is otherwise empty: only the host's own devices
    assert _devices(ctx) == []


def test_dependencies_and_parent_pf_excluded():
    pcis = {'r0': {'pci_id': '0000:81:00.0', 'dependencies': ['r1']},
            'r1': {'pci_id': '0000:81:00.1', 'dependencies': ['r0']},
            'r2': {'pci_id': '0000:3c:00.0', 'dependencies': []},
            'r3': {'pci_id': '0000:3b:00.0', 'dependencies': []}}
    details = {'0000:81:00.0': {'block_devices': ['nvme0n1']},
               '0000:3c:00.0': {'netdevs': ['eth5'],
                                'physfn': '0000:3b:00.0'}}
    pifs = {'p': {'device': 'eth5', 'physical': True, 'disallow_unplug': True,
                  'PCI': NULL}}
    needed = pciops.host_needed_devices(pcis, pifs, details)
    assert needed == {
        '0000:81:00.0': 'dom0 storage controller (nvme0n1)',
        '0000:81:00.1': 'depends on 0000:81:00.0',
        '0000:3c:00.0': 'NIC of PIF eth5 (dom0 network (disallow_unplug))',
        '0000:3b:00.0': 'parent PF of 0000:3c:00.0'}


def test_device_unknown_to_agent_not_offered():
    out = pciops.build_devices(
        {'r': {'pci_id': '0000:05:00.0'}}, {}, {})
    assert out == []


def test_other_config_format_round_trip():
    v = pciops.format_other_config(['0000:81:00.0', '3c:00.1'])
    assert v == '0/0000:81:00.0,1/0000:3c:00.1'
    assert pciops.parse_other_config(v) == ['0000:81:00.0', '0000:3c:00.1']
    assert pciops.parse_other_config('') == []
    assert pciops.parse_other_config(None) == []


def _instance(*addrs, alias=None):
    return types.SimpleNamespace(
        uuid='inst-1',
        pci_devices=[types.SimpleNamespace(address=a) for a in addrs],
        flavor=types.SimpleNamespace(extra_specs={
            'pci_passthrough:alias': alias} if alias else {}))


def test_assign_writes_exactly_the_claimed_devices(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('sriov'), tmp_path)
    ctx.add_vm('OpaqueRef:guest')
    ops = pciops.PciOps(ctx)
    got = ops.assign(_instance('0000:3c:00.2', '0000:3c:00.0'),
                     'OpaqueRef:guest')
    assert got == ['0000:3c:00.0', '0000:3c:00.2']
    assert ctx.records['VM']['OpaqueRef:guest']['other_config'] == {
        dc.OC_PCI: '0/0000:3c:00.0,1/0000:3c:00.2'}
    # re-assign (hard reboot) replaces, never duplicates
    ops.assign(_instance('0000:3c:00.1'), 'OpaqueRef:guest')
    assert ctx.records['VM']['OpaqueRef:guest']['other_config'] == {
        dc.OC_PCI: '0/0000:3c:00.1'}


def test_never_xenopsd_key_and_legacy_key_removed(tmp_path):
    """other_config:pci is xenopsd's own pass-through (xen-api
    ocaml/xapi/xapi_xenops.ml pcis_of_vm): never written; an older
    version's value on our guest is removed."""
    assert dc.OC_PCI != 'pci'
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    ctx.add_vm('OpaqueRef:guest', pci='0/0000:81:00.0', key='pci')
    pciops.PciOps(ctx).assign(_instance('0000:81:00.0'), 'OpaqueRef:guest')
    assert ctx.records['VM']['OpaqueRef:guest']['other_config'] == {
        dc.OC_PCI: '0/0000:81:00.0'}


@pytest.mark.parametrize('how', ['xenopsd-key', 'attached_PCIs'])
def test_device_held_through_xenopsd_is_refused(tmp_path, how):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    ctx.add_vm('OpaqueRef:guest')
    if how == 'xenopsd-key':
        ctx.add_vm('OpaqueRef:other', 'Running', pci='0/0000:81:00.0',
                   key='pci')
    else:
        ref = [r for r, p in ctx.records['PCI'].items()
               if p['pci_id'] == '0000:81:00.0'][0]
        ctx.add_vm('OpaqueRef:other', 'Running', attached=[ref])
    with pytest.raises(pciops.PciPassthroughUnavailable,
                       match='VM other .Running. holds it'):
        pciops.PciOps(ctx).assign(_instance('0000:81:00.0'),
                                  'OpaqueRef:guest')


def test_assign_refuses_vanished_device(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('sriov'), tmp_path)
    ctx.add_vm('OpaqueRef:guest')
    ref = [r for r, p in ctx.records['PCI'].items()
           if p['pci_id'] == '0000:3c:00.3'][0]
    del ctx.records['PCI'][ref]
    with pytest.raises(pciops.PciPassthroughUnavailable,
                       match='no longer present'):
        pciops.PciOps(ctx).assign(_instance('0000:3c:00.3'),
                                  'OpaqueRef:guest')
    assert ctx.records['VM']['OpaqueRef:guest']['other_config'] == {}


def test_assign_refuses_device_held_by_running_vm(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    ctx.add_vm('OpaqueRef:guest')
    ctx.add_vm('OpaqueRef:other', 'Running', pci='0/0000:81:00.0')
    ctx.add_vm('OpaqueRef:halted', 'Halted', pci='0/0000:81:00.1')
    ops = pciops.PciOps(ctx)
    with pytest.raises(pciops.PciPassthroughUnavailable) as exc:
        ops.assign(_instance('0000:81:00.0'), 'OpaqueRef:guest')
    assert 'VM other (Running) holds it' in str(exc.value)
    # a halted VM's leftover other_config does not hold the device
    assert ops.assign(_instance('0000:81:00.1'), 'OpaqueRef:guest') == [
        '0000:81:00.1']


def test_assign_without_devices_clears_leftovers(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('none'), tmp_path)
    ctx.add_vm('OpaqueRef:guest', pci='0/0000:81:00.0')
    assert pciops.PciOps(ctx).assign(_instance(), 'OpaqueRef:guest') == []
    assert ctx.records['VM']['OpaqueRef:guest']['other_config'] == {}


def test_release_is_idempotent_and_revokes_live_domain(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    ctx.add_vm('OpaqueRef:guest', 'Running', pci='0/0000:81:00.0', domid=7)
    ops = pciops.PciOps(ctx)
    ops.release(_instance('0000:81:00.0'), 'OpaqueRef:guest')
    assert ctx.plugin_calls[-1] == ('pci_detach',
                                    {'guest_vm_uuid': 'uuid-guest'})
    assert ctx.records['VM']['OpaqueRef:guest']['other_config'] == {}
    ops.release(_instance('0000:81:00.0'), 'OpaqueRef:guest')
    ops.release(_instance(), None)
    # a VM that never had devices costs no agent call
    n = len(ctx.plugin_calls)
    ctx.add_vm('OpaqueRef:plain', 'Running')
    ops.release(_instance(), 'OpaqueRef:plain')
    assert len(ctx.plugin_calls) == n


def test_release_of_vanished_vm(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('none'), tmp_path)

    def gone(method, *args):
        raise RuntimeError('HANDLE_INVALID VM %s' % args[0])
    ctx.call = gone
    pciops.PciOps(ctx).release(_instance('0000:81:00.0'), 'OpaqueRef:x')


def test_passthrough_detection():
    assert pciops.instance_has_passthrough(_instance('0000:81:00.0'))
    assert pciops.instance_has_passthrough(_instance(alias='xgpu:1'))
    inst = _instance()
    assert not pciops.instance_has_passthrough(inst)
    inst.pci_requests = types.SimpleNamespace(requests=['xgpu'])
    assert pciops.instance_has_passthrough(inst)
    assert pciops.describe_passthrough(_instance('0000:81:00.0')) == \
        '0000:81:00.0'
    assert 'flavor' in pciops.describe_passthrough(_instance(alias='a:1'))


def _write_manifest(ctx, **fields):
    # the builder's shape (stubdom/builder.py: "device_model" holds "lacks")
    with open(ctx.manifest, 'w') as f:
        json.dump({'device_model': dict({'source': 'testbed'}, **fields)}, f)


def test_image_without_passthrough_offers_nothing(tmp_path, caplog):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    assert _devices(ctx)            # the Debian-QEMU case: offered
    _write_manifest(ctx, lacks=['xen-pci-passthrough'])
    assert _devices(ctx) == []
    text = caplog.text
    assert 'offers none of its' in text and ctx.manifest in text
    assert 'lacks xen-pci-passthrough' in text


def test_image_warning_is_logged_once_per_change(tmp_path, caplog):
    """The resource tracker asks every minute: the same answer is logged
    once, a changed one again."""
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    ops = pciops.PciOps(ctx)
    _write_manifest(ctx, lacks=['xen-pci-passthrough'])
    for _ in range(3):
        assert json.loads(ops.get_pci_passthrough_devices()) == []
    assert caplog.text.count('offers none of its') == 1
    _write_manifest(ctx, lacks=[])
    assert json.loads(ops.get_pci_passthrough_devices())
    _write_manifest(ctx, lacks=['xen-pci-passthrough'])
    assert json.loads(ops.get_pci_passthrough_devices()) == []
    assert caplog.text.count('offers none of its') == 2


def test_image_lacking_other_things_still_offers(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    _write_manifest(ctx, lacks=['something-else'])
    assert _devices(ctx)


def test_check_image_refuses_pci_guest_and_names_image(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    ops = pciops.PciOps(ctx)
    ops.check_image(_instance('0000:81:00.0'))      # no manifest: fine
    _write_manifest(ctx, lacks=['xen-pci-passthrough'])
    ops.check_image(_instance())                    # no PCI: fine
    for inst in (_instance('0000:81:00.0'), _instance(alias='xgpu:1')):
        with pytest.raises(pciops.PciImageUnsupported) as ei:
            ops.check_image(inst)
        msg = str(ei.value)
        assert 'inst-1' in msg and 'host1' in msg and ctx.manifest in msg
        assert 'lacks xen-pci-passthrough' in msg and 'testbed' in msg
    # only the agent was asked: no XAPI call, nothing created
    assert ctx.calls == []


def test_check_image_refuses_on_unusable_manifest(tmp_path):
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    with open(ctx.manifest, 'w') as f:
        f.write('{not json')
    with pytest.raises(pciops.PciImageUnsupported) as ei:
        pciops.PciOps(ctx).check_image(_instance('0000:81:00.0'))
    assert 'manifest is unusable' in str(ei.value)
    assert ctx.manifest in str(ei.value)


def test_agent_without_stubdom_image_assumes_capable(tmp_path, caplog):
    from nova_xen_stubdom.driver import exceptions as dexc
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)

    def old_agent(fn, **args):
        raise dexc.AgentCallFailed(fn=fn, host='host1',
                                   reason='unknown function')
    ctx.call_plugin = old_agent
    assert pciops.PciOps(ctx).image_pci_problem() is None
    assert 'assuming PCI pass-through works' in caplog.text


def test_live_migration_refusal_uses_the_same_test():
    from nova import exception
    from nova_xen_stubdom.driver import migrationutils
    migrationutils.refuse_pci(_instance())
    for inst in (_instance('0000:81:00.0'), _instance(alias='xgpu:1')):
        with pytest.raises(exception.MigrationPreCheckError) as ei:
            migrationutils.refuse_pci(inst)
        msg = str(ei.value)
        assert 'inst-1' in msg and 'live migration' in msg
        assert pciops.describe_passthrough(inst) in msg


def test_spawn_and_cold_migration_destination_refuse_first(tmp_path):
    """Nothing is asked of XAPI (no VM, VDI or grant) before the refusal;
    finish_migration refuses before its cleanup could touch the disks the
    source still holds."""
    from nova_xen_stubdom.driver import coldmigrationops, spawnops
    ctx = FakeCtx(sim_pci.host_devices('gpu'), tmp_path)
    _write_manifest(ctx, lacks=['xen-pci-passthrough'])

    def no_operation(*args, **kwargs):
        raise AssertionError('an operation started')
    vmops = types.SimpleNamespace(_pciops=pciops.PciOps(ctx),
                                  _operation=no_operation)
    inst = _instance('0000:81:00.0')
    with pytest.raises(pciops.PciImageUnsupported):
        spawnops.SpawnOps(ctx, vmops).spawn(None, inst, None, [])
    with pytest.raises(pciops.PciImageUnsupported):
        coldmigrationops.ColdMigrationOps(ctx, vmops).finish_migration(
            None, None, inst, '{"vdis": {"u": "root"}}', [], None, False,
            None)
    assert ctx.calls == []
    assert [fn for fn, _ in ctx.plugin_calls] == ['stubdom_image'] * 2


def test_the_builder_records_what_the_driver_checks():
    """An image built on the testbed's QEMU says it lacks exactly the
    device model the driver looks for."""
    from nova_xen_stubdom.stubdom import offline
    assert pciops.PASSTHROUGH_DEVICE_MODEL in offline.TESTBED_LACKS
