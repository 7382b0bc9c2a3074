"""Every record the simulator serves matches the datamodel; generic
accessors work for every class."""
import subprocess
import sys

import XenAPI

from nova_xen_stubdom.datamodel import schema
from nova_xen_stubdom.sim import fidelity, testing


def _populate(x):
    vm = x.VM.create(testing.vm_record('f', hvm=False))
    x.VM.start(vm, False, False)
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({'name_label': 'd', 'name_description': '', 'SR': sr,
                        'virtual_size': str(1 << 20), 'type': 'user',
                        'sharable': False, 'read_only': False,
                        'other_config': {}, 'xenstore_data': {},
                        'sm_config': {}, 'tags': []})
    return vm, vdi


def test_every_record_matches_the_datamodel():
    from nova_xen_stubdom.sim.pool import HostConfig
    with testing.running_sim(hosts=2, host_configs=[
            HostConfig(pci_devices='sriov'), HostConfig(pci_devices='gpu')]
            ) as sim:
        x = testing.login(sim).xenapi
        vm, vdi = _populate(x)
        s = schema.load()
        checked = 0
        for cls, c in s.classes.items():
            if 'get_all_records' not in c.messages or \
                    c.messages['get_all_records'].state == 'removed':
                continue
            records = getattr(x, cls).get_all_records()
            for ref, rec in records.items():
                assert fidelity.check_record(cls, rec) == [], (cls, ref)
                checked += 1
        assert checked > 50
        pcis = x.PCI.get_all_records()
        assert any(r['dependencies'] for r in pcis.values())
        assert any(r['other_config'].get('physfn') for r in pcis.values())
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
        x.VDI.destroy(vdi)


def test_generic_getters_answer_their_declared_type(sim, x):
    """Call every live get_<field> of every class that has objects."""
    vm, vdi = _populate(x)
    s = schema.load()
    calls = 0
    for cls, c in s.classes.items():
        getall = c.messages.get('get_all')
        if getall is None or getall.state == 'removed':
            continue
        refs = getattr(x, cls).get_all()
        if not refs:
            continue
        ref = refs[0]
        for m in c.messages.values():
            if not (m.implicit and m.state != 'removed'
                    and m.name.startswith('get_') and len(m.params) == 2
                    and m.params[1][0].kind == 'ref'):
                continue
            value = getattr(getattr(x, cls), m.name)(ref)
            assert fidelity.wire_type_problem(m.result, value,
                                              m.wire_name) == []
            calls += 1
    assert calls > 350
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_generic_create_destroy_and_setters(x):
    net = x.network.create({'name_label': 'n', 'name_description': '',
                            'MTU': '1500', 'other_config': {},
                            'bridge': '', 'managed': True, 'tags': []})
    assert x.network.get_by_name_label('n') == [net]
    x.network.set_name_description(net, 'desc')
    x.network.add_to_other_config(net, 'a', 'b')
    rec = x.network.get_record(net)
    assert rec['name_description'] == 'desc'
    assert rec['other_config'] == {'a': 'b'}
    assert fidelity.check_record('network', rec) == []
    uuid = rec['uuid']
    assert x.network.get_by_uuid(uuid) == net
    x.network.destroy(net)
    try:
        x.network.get_record(net)
        raise AssertionError('destroyed network still answers')
    except XenAPI.Failure as e:
        assert e.details == ['HANDLE_INVALID', 'network', net]


def test_cli_prints_url_first(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, '-m', 'nova_xen_stubdom.cmd.main', 'sim',
         '--hosts', '2', '--username', 'u', '--password', 'p',
         '--read-only-user', 'ro:rp'],
        stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith('http://127.0.0.1:')
        s = testing.login(url, 'u', 'p')
        assert len(s.xenapi.host.get_all()) == 2
        s.xenapi.session.logout()
        ro = testing.login(url, 'ro', 'rp')
        ro.xenapi.session.logout()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_pci_devices_per_host():
    from nova_xen_stubdom.sim.pool import HostConfig
    with testing.running_sim(hosts=2, host_configs=[
            HostConfig(pci_devices='sriov'), HostConfig(pci_devices='gpu')]
            ) as sim:
        x = testing.login(sim).xenapi
        h0, h1 = x.host.get_all()
        pcis = {(r['host'], r['pci_id']): (ref, r) for ref, r in
                x.PCI.get_all_records().items()}
        on0 = {p for (h, p) in pcis if h == h0}
        on1 = {p for (h, p) in pcis if h == h1}
        assert '0000:3b:00.0' in on0 and '0000:3b:00.0' not in on1
        assert len(on0) == 2 + 1 + 4      # mgmt NIC, SATA, PF, 4 VFs
        # GPU and its audio function depend on each other
        gpu_deps = [d for p in on1 for d in pcis[(h1, p)][1]['dependencies']]
        assert gpu_deps
        assert sorted(x.host.get_PCIs(h0)) == sorted(pcis[(h0, p)][0]
                                                     for p in on0)
        vf = pcis[(h0, '0000:3c:00.0')][1]
        assert vf['other_config']['physfn'] == '0000:3b:00.0'
        # the PF's PIF carries an SR-IOV network
        sriov = x.network_sriov.get_all_records()
        assert len(sriov) == 1
        phys = x.PIF.get_record(list(sriov.values())[0]['physical_PIF'])
        assert phys['device'] == 'eth1' and phys['host'] == h0
        assert x.PCI.get_pci_id(phys['PCI']) == '0000:3b:00.0'
        mgmt = [r for r in x.PIF.get_all_records().values()
                if r['management'] and r['host'] == h0][0]
        assert x.PCI.get_pci_id(mgmt['PCI']) == '0000:01:00.0'
