"""The simulator's PCI model: what Xen enforces."""
import pytest

from nova_xen_stubdom.sim import pci as sim_pci


@pytest.fixture
def host():
    return sim_pci.PciHost(sim_pci.host_devices('sriov'))


def test_device_sets():
    gpu = {d.address for d in sim_pci.host_devices('gpu')}
    assert {'0000:81:00.0', '0000:81:00.1', '0000:01:00.0',
            '0000:00:17.0'} == gpu
    sriov = sim_pci.host_devices('sriov')
    vfs = [d for d in sriov if d.physfn]
    assert len(vfs) == 4
    assert all(v.physfn == '0000:3b:00.0' for v in vfs)
    with pytest.raises(ValueError):
        sim_pci.host_devices('tpu')


def test_duplicate_address_refused():
    with pytest.raises(ValueError, match='duplicate'):
        sim_pci.PciHost(sim_pci.gpu() + sim_pci.gpu())


def test_device_from_dict_parses_hex():
    dev = sim_pci.device_from_dict({
        'address': '0000:05:00.0', 'vendor_id': '1af4', 'device_id': '1041',
        'class_id': '020000', 'bars': [{'kind': 'mem', 'start': '0xf000000',
                                        'size': 4096}], 'irq': 11})
    assert dev.vendor_id == 0x1af4 and dev.bars[0].start == 0xf000000


def test_device_assigned_to_one_domain_only(host):
    host.assign_device(5, '0000:3c:00.0')
    host.assign_device(5, '0000:3c:00.0')    # same domain: no-op
    with pytest.raises(sim_pci.SimPciError) as exc:
        host.assign_device(7, '0000:3c:00.0')
    assert exc.value.code == 'DEVICE_ALREADY_ATTACHED'
    assert exc.value.params == ['0000:3c:00.0']
    with pytest.raises(sim_pci.SimPciError) as exc:
        host.check_guest_start(7, 8, ['0000:3c:00.0'])
    assert exc.value.code == 'DEVICE_ALREADY_ATTACHED'


def test_deassign_by_non_owner_refused(host):
    host.assign_device(5, '0000:3c:00.0')
    with pytest.raises(sim_pci.SimPciError) as exc:
        host.deassign_device(7, '0000:3c:00.0')
    assert exc.value.code == 'DEVICE_ALREADY_DETACHED'
    assert host.owner == {'0000:3c:00.0': 5}


def test_unknown_device_and_foreign_ranges_refused(host):
    with pytest.raises(sim_pci.SimPciError, match='does not exist'):
        host.assign_device(5, '0000:99:00.0')
    with pytest.raises(sim_pci.SimPciError, match='belongs to no PCI'):
        host.iomem_permission(5, 0x1, 1, True)
    with pytest.raises(sim_pci.SimPciError, match='belongs to no PCI'):
        host.ioport_permission(5, 0x60, 1, True)
    with pytest.raises(sim_pci.SimPciError, match='IRQ 3'):
        host.irq_permission(5, 3, True)
    assert host.is_clean()


def test_domain_destroy_drops_grants_and_devices(host):
    vf = host.devices['0000:3c:00.1']
    host.assign_device(5, vf.address)
    host.iomem_permission(6, vf.bars[0].start >> 12, 16, True)
    host.irq_permission(6, vf.irq, True)
    host.check_guest_start(5, 6, [vf.address])
    host.domain_destroyed(6)
    assert host.missing_grants(6, vf) == [
        'mem 0xe1010000-0xe101ffff', 'IRQ 66']
    host.domain_destroyed(5)
    assert host.is_clean()


def test_missing_device_on_start(host):
    host.remove_device('0000:3c:00.3')
    with pytest.raises(sim_pci.SimPciError, match='does not exist'):
        host.check_guest_start(5, 6, ['0000:3c:00.3'])


def test_fault_injection_counts_calls(host):
    vf = host.devices['0000:3c:00.1']
    host.inject_fault('irq_permission', after=2)
    host.irq_permission(5, vf.irq, True)
    with pytest.raises(sim_pci.SimPciError, match='injected'):
        host.irq_permission(6, vf.irq, True)
    host.irq_permission(6, vf.irq, True)     # one-shot
    assert host.snapshot()['grants'] == {
        '5': {'iomem': [], 'ioport': [], 'irq': [vf.irq]},
        '6': {'iomem': [], 'ioport': [], 'irq': [vf.irq]}}


def test_sysfs_rewrite_drops_removed_devices(host, tmp_path):
    host.write_sysfs(str(tmp_path))
    host.remove_device('0000:3c:00.3')
    host.write_sysfs(str(tmp_path))
    names = sorted(p.name for p in
                   (tmp_path / 'bus' / 'pci' / 'devices').iterdir())
    assert '0000:3c:00.3' not in names and '0000:3c:00.2' in names


def test_parse_other_config_pci():
    assert sim_pci.parse_other_config_pci(
        '0/0000:81:00.0,1/0000:3C:00.1') == ['0000:81:00.0', '0000:3c:00.1']
    assert sim_pci.parse_other_config_pci('') == []
