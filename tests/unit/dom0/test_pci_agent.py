"""The dom0 agent's PCI pass-through against the simulator's PCI host."""
import json
import types

import pytest

from nova_xen_stubdom.dom0 import errors as agent_errors
from nova_xen_stubdom.dom0 import registry as plugin

from nova_xen_stubdom.dom0 import pci_grants as agent_pci
from nova_xen_stubdom.sim import pci as sim_pci

GUEST, STUB, OTHER = 5, 6, 9


class XenstoreStub:
    """The xenstore part of a backend (a dict with permissions)."""

    def __init__(self):
        self.nodes = {}
        self.perms = {}
        #: what another xenstore client (pciback) could read after each
        #: visible change: (backend states, frontend states) present
        self.visible = []

    def xs_read(self, path):
        return self.nodes.get(path)

    def xs_write(self, path, value):
        # xenstored creates the missing parents (empty) and keeps them
        self._write(path, value)
        self._observe()

    def _write(self, path, value):
        parts = path.strip('/').split('/')
        for i in range(1, len(parts)):
            self.nodes.setdefault('/' + '/'.join(parts[:i]), '')
        self.nodes[path] = value

    def _observe(self):
        be = {p for p in self.nodes if '/backend/pci/' in p
              and p.endswith('/state')}
        fe = {p for p in self.nodes if '/device/pci/' in p
              and p.endswith('/state')}
        self.visible.append((bool(be), bool(fe)))

    def xs_write_all(self, nodes):
        """One transaction: the others see all of it or none."""
        for path, value, perms in nodes:
            self._write(path, value)
            if perms is not None:
                self.perms[path] = list(perms)
        self._observe()

    def xs_rm(self, path):
        for p in [p for p in self.nodes if p == path or
                  p.startswith(path + '/')]:
            del self.nodes[p]

    def xs_list(self, path):
        return sorted({p[len(path) + 1:].split('/')[0] for p in self.nodes
                       if p.startswith(path + '/')})

    def xs_set_perms(self, path, perms):
        self.perms[path] = list(perms)

    def xs_get_perms(self, path):
        return self.perms.get(path, ['n0'])


class Backend(XenstoreStub):
    """PCI calls go to a real sim PciHost (its enforcement included)."""

    def __init__(self, host, sysfs_root):
        super().__init__()
        self.host = host
        self.sysfs_root = sysfs_root
        #: live domains: domid -> vm uuid
        self.domains = {GUEST: 'vm-guest', STUB: 'vm-stub', OTHER: '',
                        OTHER + 1: ''}

    def domain_info(self, domid):
        if domid not in self.domains:
            raise KeyError(domid)
        return types.SimpleNamespace(domid=domid,
                                     vm_uuid=self.domains[domid])

    def destroy(self, domid):
        del self.domains[domid]
        self.host.domain_destroyed(domid)

    def __getattr__(self, name):
        if name in ('iomem_permission', 'ioport_permission',
                    'irq_permission', 'assign_device', 'deassign_device'):
            return getattr(self.host, name)
        raise AttributeError(name)


@pytest.fixture
def host(tmp_path):
    h = sim_pci.PciHost(sim_pci.host_devices('gpu') + sim_pci.sriov_nic())
    h.write_sysfs(str(tmp_path / 'sys'))
    return h


@pytest.fixture
def backend(host, tmp_path):
    return Backend(host, str(tmp_path / 'sys'))


def test_read_resources_matches_the_bars(backend):
    res = agent_pci.read_resources('0000:81:00.0', backend.sysfs_root)
    assert res.iomem == [(0xf4000, 0x1000), (0x104000, 0x10000)]
    assert res.ioports == [(0xe000, 0x80)]
    assert res.irq == 88


def test_read_resources_of_missing_device(backend):
    with pytest.raises(agent_pci.DeviceNotFound):
        agent_pci.read_resources('0000:99:00.0', backend.sysfs_root)


@pytest.mark.parametrize('bad', ['81:00.0.1', 'zz:00.0', '0000:81:00.8', ''])
def test_normalize_rejects_bad_addresses(bad):
    with pytest.raises(agent_pci.InvalidAddress):
        agent_pci.normalize_sbdf(bad)


def test_normalize_adds_segment():
    assert agent_pci.normalize_sbdf('81:00.0') == '0000:81:00.0'
    assert agent_pci.normalize_sbdf('0000:3B:00.0') == '0000:3b:00.0'


def test_inventory_reports_ids_numa_sriov_and_dom0_use(backend):
    inv = {d['address']: d for d in
           agent_pci.read_inventory(backend.sysfs_root)}
    gpu = inv['0000:81:00.0']
    assert (gpu['vendor_id'], gpu['product_id'], gpu['class_id']) == (
        '10de', '1eb8', '030200')
    assert gpu['subsystem_device_id'] == '12a2'
    assert gpu['numa_node'] == 1 and gpu['driver'] == 'pciback'
    pf = inv['0000:3b:00.0']
    assert pf['sriov_totalvfs'] == 4 and pf['driver'] == 'i40e'
    assert pf['virtfns'] == ['0000:3c:00.0', '0000:3c:00.1',
                             '0000:3c:00.2', '0000:3c:00.3']
    assert inv['0000:3c:00.2']['physfn'] == '0000:3b:00.0'
    assert inv['0000:3c:00.2']['product_id'] == '154c'
    assert inv['0000:00:17.0']['block_devices'] == ['sda']
    assert inv['0000:01:00.0']['netdevs'] == ['eth0']
    assert inv['0000:3b:00.0']['netdevs'] == ['eth1']


def test_inventory_numa_minus_one_is_none(tmp_path):
    h = sim_pci.PciHost(sim_pci.gpu(numa_node=None, with_audio=False))
    h.write_sysfs(str(tmp_path))
    (dev,) = agent_pci.read_inventory(str(tmp_path))
    assert dev['numa_node'] is None


def test_grant_plan_per_device():
    res = agent_pci.DeviceResources('0000:81:00.0', [(1, 2), (8, 1)],
                                    [(0xe000, 0x80)], 88)
    plan = agent_pci.grant_plan(res, GUEST, STUB)
    assert plan[0] == ('assign_device', (GUEST, '0000:81:00.0'))
    # 2 iomem + 1 ioport + 1 irq for the stubdom, then the same for the guest
    assert [op for op, _ in plan[1:5]] == [
        'iomem_permission', 'iomem_permission', 'ioport_permission',
        'irq_permission']
    assert all(args[0] == STUB for _, args in plan[1:5])
    assert all(args[0] == GUEST for _, args in plan[5:])
    assert len(plan) == 9


def test_attach_grants_stubdom_and_satisfies_xen(backend, host):
    out = agent_pci.attach_devices(backend, GUEST, STUB,
                                   ['0000:81:00.0', '0000:81:00.1'],
                                   backend.sysfs_root)
    host.check_guest_start(GUEST, STUB, ['0000:81:00.0', '0000:81:00.1'])
    assert host.owner == {'0000:81:00.0': GUEST, '0000:81:00.1': GUEST}
    assert host.missing_grants(STUB, host.devices['0000:81:00.0']) == []
    # VGA: 1 assign + 2*(2 mem + 1 io + 1 irq); audio: 1 + 2*(1 + 1)
    assert out['calls'] == 9 + 5
    assert out['qemu_args'] == [
        '-device', 'xen-pci-passthrough,id=pci0,hostaddr=0000:81:00.0',
        '-device', 'xen-pci-passthrough,id=pci1,hostaddr=0000:81:00.1']
    be = '/local/domain/0/backend/pci/%d/0' % STUB
    assert backend.nodes[be + '/num_devs'] == '2'
    assert backend.nodes[be + '/dev-1'] == '0000:81:00.1'
    assert backend.nodes[be + '/frontend'] == '/local/domain/6/device/pci/0'
    assert backend.perms[be] == ['n0', 'r6']
    assert backend.nodes['/local/domain/6/device/pci/0/backend'] == be
    assert backend.perms['/local/domain/6/device/pci/0'] == ['n6', 'r0']


def test_pciback_never_sees_a_backend_without_its_frontend_state(
        backend, host):
    """Both ends in one transaction (libxl_device.c
    libxl__device_generic_add): pciback, like blkback, probes a backend
    once its state appears and unregisters it for good if the frontend's
    state is missing then (xen-pciback xen_pcibk_frontend_changed,
    XenbusStateUnknown) -- the race realxen scenario 3 showed for disks."""
    agent_pci.attach_devices(backend, GUEST, STUB, ['0000:81:00.0'],
                             backend.sysfs_root)
    assert (True, True) in backend.visible
    assert (True, False) not in backend.visible, backend.visible


def test_guest_start_without_grants_is_refused(host):
    host.assign_device(GUEST, '0000:81:00.0')
    with pytest.raises(sim_pci.SimPciError) as exc:
        host.check_guest_start(GUEST, STUB, ['0000:81:00.0'])
    assert 'stub domain 6 lacks' in str(exc.value)
    assert 'IRQ 88' in str(exc.value)


def test_guest_start_with_unassigned_device_is_refused(host):
    with pytest.raises(sim_pci.SimPciError, match='not assigned'):
        host.check_guest_start(GUEST, STUB, ['0000:81:00.0'])


def _left(backend):
    """What a detach left in xenstore, besides the domains' own homes and
    the parents every host has (a real host's dom0 home is never empty)."""
    return {p for p in backend.nodes if p not in (
        '/local', '/local/domain', '/local/domain/0') and not p.startswith(
        ('/local/domain/%d' % STUB, '/local/domain/%d' % GUEST))}


def test_detach_releases_everything(backend, host):
    agent_pci.attach_devices(backend, GUEST, STUB, ['0000:3c:00.1'],
                             backend.sysfs_root)
    backend.xs_write('/local/domain/0/error/backend/pci/%d/0/error' % STUB,
                     "22 Couldn't locate PCI device (0000:3c:00.1)!")
    assert not host.is_clean()
    assert '/local/domain/0/nova-xen-stubdom/pci/vm-guest' in backend.nodes
    out = agent_pci.detach_devices(backend, GUEST,
                                   sysfs_root=backend.sysfs_root)
    assert out == {'released': ['0000:3c:00.1'], 'errors': []}
    assert host.is_clean(), host.snapshot()
    # nothing left: no empty parents (the realxen tier found them), and
    # not the error node dom0's pciback writes for a device it cannot
    # export (as it did for the outer QEMU's VGA on real Xen)
    assert _left(backend) == set()
    # idempotent
    assert agent_pci.detach_devices(backend, GUEST) == {
        'released': [], 'errors': []}


def test_detach_uses_the_grant_record_when_device_vanished(
        backend, host, tmp_path):
    agent_pci.attach_devices(backend, GUEST, STUB, ['0000:81:00.0'],
                             backend.sysfs_root)
    host.domain_destroyed(999)   # unrelated domain: no effect
    # the device disappears from sysfs (hot-unplug) but grants remain
    import shutil
    shutil.rmtree(tmp_path / 'sys' / 'bus' / 'pci' / 'devices' /
                  '0000:81:00.0')
    out = agent_pci.detach_devices(backend, GUEST,
                                   sysfs_root=backend.sysfs_root)
    assert out['released'] == ['0000:81:00.0']
    assert host.is_clean()


@pytest.mark.parametrize('op,after', [
    ('assign_device', 2), ('iomem_permission', 1), ('iomem_permission', 3),
    ('ioport_permission', 2), ('irq_permission', 2), ('irq_permission', 4)])
def test_fault_mid_assignment_rolls_back(backend, host, op, after):
    host.inject_fault(op, after)
    with pytest.raises(agent_pci.AttachFailed) as exc:
        agent_pci.attach_devices(backend, GUEST, STUB,
                                 ['0000:81:00.0', '0000:81:00.1'],
                                 backend.sysfs_root)
    assert 'injected fault' in str(exc.value)
    assert 'everything granted was revoked' in str(exc.value)
    assert host.is_clean(), host.snapshot()
    assert _left(backend) == set()


def test_device_owned_by_another_domain(backend, host):
    agent_pci.attach_devices(backend, OTHER, OTHER + 1, ['0000:3c:00.0'],
                             backend.sysfs_root)
    before = host.snapshot()
    with pytest.raises(agent_pci.AttachFailed,
                       match='DEVICE_ALREADY_ATTACHED'):
        agent_pci.attach_devices(backend, GUEST, STUB,
                                 ['0000:3c:00.1', '0000:3c:00.0'],
                                 backend.sysfs_root)
    # the other guest keeps its device and grants; ours are gone
    assert host.snapshot() == before
    assert host.owner == {'0000:3c:00.0': OTHER}


def test_duplicate_address_refused(backend, host):
    with pytest.raises(agent_pci.DuplicateAddress):
        agent_pci.attach_devices(backend, GUEST, STUB,
                                 ['0000:81:00.0', '81:00.0'],
                                 backend.sysfs_root)
    assert host.is_clean()


def test_plugin_functions_through_the_registry(backend, host):
    agent = types.SimpleNamespace(backend=backend)

    def call(fn, **args):
        return json.loads(plugin.call(agent, plugin.PLUGIN, fn, args))

    assert len(call('pci_inventory')) == len(host.devices)
    out = call('pci_attach', guest_domid=str(GUEST), stub_domid=str(STUB),
               devices='0000:3c:00.3')
    assert out['calls'] == 1 + 2 * 2
    grants = call('pci_grants', guest_vm_uuid='vm-guest')
    assert (grants['stub_domid'], grants['guest_domid']) == (STUB, GUEST)
    assert list(grants['devices']) == ['0000:3c:00.3']
    out = call('pci_detach', guest_vm_uuid='vm-guest')
    assert out['released'] == ['0000:3c:00.3']
    assert host.is_clean()
    assert call('pci_grants', guest_domid=str(GUEST)) == {}


def test_plugin_errors_carry_codes(backend):
    agent = types.SimpleNamespace(backend=backend)
    with pytest.raises(agent_errors.InvalidArgument):
        plugin.call(agent, plugin.PLUGIN, 'pci_attach',
                    {'guest_domid': 'x', 'stub_domid': '1'})
    with pytest.raises(agent_pci.InvalidAddress) as exc:
        plugin.call(agent, plugin.PLUGIN, 'pci_attach',
                    {'guest_domid': '1', 'stub_domid': '2',
                     'devices': 'nonsense'})
    assert exc.value.code == 'PCI_INVALID_ADDRESS'


def test_dm_hooks(backend, host):
    agent = types.SimpleNamespace(backend=backend)
    assert agent_pci.on_dm_launch(agent, GUEST, STUB, {}) == []
    args = agent_pci.on_dm_launch(agent, GUEST, STUB,
                                  {'pci': ['0000:81:00.1']})
    assert args == ['-device',
                    'xen-pci-passthrough,id=pci0,hostaddr=0000:81:00.1']
    host.check_guest_start(GUEST, STUB, ['0000:81:00.1'])
    assert agent_pci.on_dm_stop(agent, GUEST)['released'] == [
        '0000:81:00.1']
    assert host.is_clean()


def test_release_after_guest_domain_is_gone(backend, host):
    """The driver releases after the guest halted: Xen dropped the guest's
    grants with the domain; the stub domain's must be revoked by uuid."""
    agent_pci.attach_devices(backend, GUEST, STUB, ['0000:81:00.0'],
                             backend.sysfs_root)
    backend.destroy(GUEST)
    assert list(host.grants) == [STUB]
    n = len(host.calls)
    out = agent_pci.detach_devices(backend, guest_vm_uuid='vm-guest')
    assert out == {'released': ['0000:81:00.0'], 'errors': []}
    assert host.is_clean()
    # only the stub domain's 4 grants were revoked (no calls on a dead
    # domain, no deassign of a device Xen already took back)
    assert [(c[0], c[1]) for c in host.calls[n:]] == [
        ('irq_permission', STUB), ('ioport_permission', STUB),
        ('iomem_permission', STUB), ('iomem_permission', STUB)]
    assert _left(backend) == set()


def test_second_attach_replaces_the_first(backend, host):
    agent_pci.attach_devices(backend, GUEST, STUB, ['0000:81:00.0'],
                             backend.sysfs_root)
    agent_pci.attach_devices(backend, GUEST, STUB, ['0000:3c:00.0'],
                             backend.sysfs_root)
    assert host.owner == {'0000:3c:00.0': GUEST}
    agent_pci.detach_devices(backend, GUEST)
    assert host.is_clean()


def test_detach_needs_a_guest(backend):
    with pytest.raises(agent_errors.InvalidArgument):
        agent_pci.detach_devices(backend)


def test_dm_stop_after_the_guest_domain_is_gone(backend, host):
    agent = types.SimpleNamespace(backend=backend)
    agent_pci.on_dm_launch(agent, GUEST, STUB, {'pci': ['0000:3c:00.2']})
    backend.destroy(GUEST)
    out = agent_pci.on_dm_stop(agent, GUEST)
    assert out['released'] == ['0000:3c:00.2']
    assert host.is_clean()
    assert _left(backend) == set()
