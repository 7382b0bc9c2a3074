"""VM lifecycle through the PyPI XenAPI SDK over real HTTP."""
import XenAPI
import pytest

from nova_xen_stubdom.sim import testing


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def test_login_and_read_pool(session, x, sim):
    pools = x.pool.get_all()
    assert len(pools) == 1
    master = x.pool.get_master(pools[0])
    assert x.host.get_address(master) == '127.0.0.1'
    assert len(x.host.get_all()) == 2
    assert session.API_version == '2.21'


def test_vm_power_cycle(x, sim):
    vm = x.VM.create(testing.vm_record('pv', hvm=False))
    assert x.VM.get_power_state(vm) == 'Halted'
    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec['power_state'] == 'Running'
    assert int(rec['domid']) > 0
    host = sim.pools[0].host_by_ref(rec['resident_on'])
    assert int(rec['domid']) in host.hypervisor.domains
    assert _fail(x.VM.start, vm, False, False) == [
        'VM_BAD_POWER_STATE', vm, 'halted', 'running']
    x.VM.pause(vm)
    assert x.VM.get_power_state(vm) == 'Paused'
    assert host.hypervisor.domain(int(rec['domid'])).paused
    x.VM.unpause(vm)
    x.VM.clean_reboot(vm)
    assert x.VM.get_power_state(vm) == 'Running'
    new_domid = int(x.VM.get_domid(vm))
    assert new_domid != int(rec['domid'])
    x.VM.suspend(vm)
    assert x.VM.get_power_state(vm) == 'Suspended'
    assert x.VM.get_suspend_VDI(vm) != 'OpaqueRef:NULL'
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == 'Running'
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == 'Halted'
    assert x.VM.get_domid(vm) == '-1'
    assert _fail(x.VM.clean_shutdown, vm) == [
        'VM_BAD_POWER_STATE', vm, 'running', 'halted']
    x.VM.destroy(vm)
    leaks = sim.leaks()
    assert leaks['pool0']['VM'] == [] and leaks['pool0']['VDI'] == []
    for h in sim.hosts:
        assert leaks['host%s' % h.address]['domains'] == []
        assert leaks['host%s' % h.address]['memory_files'] == []


def test_async_start_task(session, x):
    vm = x.VM.create(testing.vm_record('a', hvm=False))
    task = x.Async.VM.start(vm, False, False)
    rec = testing.wait_task(session, task)
    assert rec['status'] == 'success'
    assert rec['result'] == ''
    task = x.Async.VM.start(vm, False, False)
    rec = testing.wait_task(session, task)
    assert rec['status'] == 'failure'
    assert rec['error_info'] == ['VM_BAD_POWER_STATE', vm, 'halted',
                                 'running']
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_not_enough_memory(x, sim):
    vm = x.VM.create(testing.vm_record('big', hvm=False,
                                       memory=64 << 30))
    host = x.host.get_all()[0]
    details = _fail(x.VM.start_on, vm, host, False, False)
    assert details[0] == 'HOST_NOT_ENOUGH_FREE_MEMORY'
    assert int(details[1]) == 64 << 30
    assert int(details[2]) == int(x.host.compute_free_memory(host))
    assert _fail(x.VM.start, vm, False, False) == ['NO_HOSTS_AVAILABLE']
    x.VM.destroy(vm)


def test_memory_and_vcpu_settings(x):
    vm = x.VM.create(testing.vm_record('m', hvm=False))
    mib = 1 << 20
    x.VM.set_memory_limits(vm, str(64 * mib), str(512 * mib),
                           str(256 * mib), str(512 * mib))
    rec = x.VM.get_record(vm)
    assert (rec['memory_static_min'], rec['memory_static_max'],
            rec['memory_dynamic_min'], rec['memory_dynamic_max']) == (
        str(64 * mib), str(512 * mib), str(256 * mib), str(512 * mib))
    assert _fail(x.VM.set_memory_limits, vm, str(mib), str(2 * mib),
                 str(4 * mib), str(4 * mib))[0] == \
        'MEMORY_CONSTRAINT_VIOLATION'
    x.VM.set_VCPUs_max(vm, '4')
    x.VM.set_VCPUs_at_startup(vm, '2')
    assert _fail(x.VM.set_VCPUs_at_startup, vm, '8') == [
        'VALUE_NOT_SUPPORTED', 'VCPUs_at_startup', '8',
        'must be >= 1 and <= VCPUs_max']
    # explicit setters of constructor fields work generically
    x.VM.set_PV_args(vm, 'console=hvc0')
    assert x.VM.get_PV_args(vm) == 'console=hvc0'
    x.VM.start(vm, False, False)
    assert _fail(x.VM.set_VCPUs_max, vm, '2')[0] == 'VM_BAD_POWER_STATE'
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_pool_migrate_moves_the_domain(x, sim):
    vm = x.VM.create(testing.vm_record('mig', hvm=False))
    h0, h1 = x.host.get_all()
    x.VM.start_on(vm, h0, False, False)
    src = sim.pools[0].host_by_ref(h0)
    dom = src.hypervisor.domain(int(x.VM.get_domid(vm)))
    mem = dom.memory()
    mem[4096:4100] = b'mark'
    mem.release()
    x.VM.pool_migrate(vm, h1, {'live': 'true'})
    assert x.VM.get_resident_on(vm) == h1
    dst = sim.pools[0].host_by_ref(h1)
    new = dst.hypervisor.domain(int(x.VM.get_domid(vm)))
    mem = new.memory()
    assert bytes(mem[4096:4100]) == b'mark'
    mem.release()
    assert [d for d in src.hypervisor.domains if d] == []
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_pool_migrate_refuses_pci(x, sim):
    vm = x.VM.create(testing.vm_record('pci', hvm=False,
                                       other_config={'pci': '0/0000:01:00.0'}))
    h0, h1 = x.host.get_all()
    x.VM.start_on(vm, h0, False, False)
    assert _fail(x.VM.pool_migrate, vm, h1, {}) == ['VM_HAS_PCI_ATTACHED',
                                                    vm]
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_clone_copy_snapshot(x, sim):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({'name_label': 'root', 'name_description': '',
                        'SR': sr, 'virtual_size': str(1 << 20),
                        'type': 'user', 'sharable': False,
                        'read_only': False, 'other_config': {},
                        'xenstore_data': {}, 'sm_config': {}, 'tags': []})
    vm = x.VM.create(testing.vm_record('orig', hvm=False))
    x.VBD.create({'VM': vm, 'VDI': vdi, 'userdevice': '0', 'bootable': True,
                  'mode': 'RW', 'type': 'Disk', 'unpluggable': True,
                  'empty': False, 'other_config': {},
                  'qos_algorithm_type': '', 'qos_algorithm_params': {}})
    assert x.VM.get_allowed_VBD_devices(vm)[:2] == ['1', '2']
    x.VM.start(vm, False, False)
    assert _fail(x.VM.clone, vm, 'c')[0] == 'VM_BAD_POWER_STATE'
    snap = x.VM.snapshot(vm, 'snap', [])
    rec = x.VM.get_record(snap)
    assert rec['is_a_snapshot'] and rec['snapshot_of'] == vm
    snap_vdi = x.VBD.get_VDI(rec['VBDs'][0])
    assert snap_vdi != vdi and x.VDI.get_snapshot_of(snap_vdi) == vdi
    x.VM.hard_shutdown(vm)
    clone = x.VM.clone(vm, 'clone')
    assert x.VM.get_name_label(clone) == 'clone'
    assert x.VM.get_memory_static_max(clone) == \
        x.VM.get_memory_static_max(vm)
    copy = x.VM.copy(vm, 'copy', sr)
    for v in (snap, clone, copy, vm):
        vdis = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(v)]
        x.VM.destroy(v)
        for d in vdis:
            x.VDI.destroy(d)
    leaks = sim.leaks()['pool0']
    assert leaks['VM'] == [] and leaks['VDI'] == [] and leaks['VBD'] == []


@pytest.mark.parametrize('kernel', [
    '/usr/lib/xen/boot/nova-xen-stubdom-kernel',  # the driver's old default
    '/boot/guest/vmlinuz',          # accepted only up to XAPI v24.19
    '/var/lib/xcp/guest/../../../boot/xen.gz',
    'vmlinuz',
])
def test_direct_boot_kernel_outside_allowed_dir_refused(x, kernel):
    """xen-api ocaml/xapi/xapi_xenops.ml, builder_of_vm ->
    make_direct_boot_record -> kernel_path: a direct-boot kernel must
    resolve under /var/lib/xcp/guest/, else INVALID_VALUE and no domain."""
    rec = testing.vm_record('pvk', hvm=False)
    rec['PV_kernel'] = kernel
    vm = x.VM.create(rec)
    details = _fail(x.VM.start, vm, False, False)
    assert details[:3] == ['INVALID_VALUE', 'kernel', kernel]
    assert 'allowed kernel directories' in details[3] or \
        details[3] == 'File does not exist'
    assert x.VM.get_power_state(vm) == 'Halted'
    x.VM.destroy(vm)


def test_direct_boot_ramdisk_checked_too(x):
    rec = testing.vm_record('pvr', hvm=False)
    rec['PV_ramdisk'] = '/boot/initrd.img'
    vm = x.VM.create(rec)
    assert _fail(x.VM.start, vm, False, False)[:3] == [
        'INVALID_VALUE', 'ramdisk', '/boot/initrd.img']
    rec = testing.vm_record('pvr2', hvm=False)
    rec['PV_ramdisk'] = '/var/lib/xcp/guest/initrd.img'
    ok = x.VM.create(rec)
    x.VM.start(ok, False, False)
    assert x.VM.get_power_state(ok) == 'Running'
    x.VM.hard_shutdown(ok)
    for v in (vm, ok):
        x.VM.destroy(v)


def test_set_suspend_vdi_only_identical_content(x, sim):
    """xen-api ocaml/xapi/xapi_vm.ml set_suspend_VDI: Suspended VMs only;
    the replacement must have the same checksum as the current image."""
    vm = x.VM.create(testing.vm_record('susp', hvm=False))
    x.VM.start(vm, False, False)
    sr = x.pool.get_suspend_image_SR(x.pool.get_all()[0])
    other = x.VDI.create({
        'name_label': 'ours', 'name_description': '', 'SR': sr,
        'virtual_size': str(4 << 20), 'type': 'user', 'sharable': False,
        'read_only': False, 'other_config': {}, 'xenstore_data': {},
        'sm_config': {}, 'tags': []})
    assert _fail(x.VM.set_suspend_VDI, vm, other) == [
        'VM_BAD_POWER_STATE', vm, 'suspended', 'running']
    x.VM.suspend(vm)
    own = x.VM.get_suspend_VDI(vm)
    details = _fail(x.VM.set_suspend_VDI, vm, other)
    assert details[0] == 'SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL'
    assert details[1].startswith(x.VDI.get_uuid(own) + ' : ')
    assert details[2].startswith(x.VDI.get_uuid(other) + ' : ')
    assert x.VM.get_suspend_VDI(vm) == own
    # an identical copy is accepted
    copy = x.VDI.copy(own, sr, 'OpaqueRef:NULL', 'OpaqueRef:NULL')
    x.VM.set_suspend_VDI(vm, copy)
    assert x.VM.get_suspend_VDI(vm) == copy
    x.VM.resume(vm, False, False)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    for v in (own, other):
        x.VDI.destroy(v)


def test_session_gc_per_originator(sim):
    """xen-api ocaml/xapi/db_gc_util.ml timeout_sessions: at most 500
    sessions per originator (root logins); the least recently active go
    and answer SESSION_INVALID; other originators are counted apart."""
    import xmlrpc.client
    from nova_xen_stubdom.sim import sessions
    proxy = xmlrpc.client.ServerProxy(sim.url)

    def login(orig):
        r = proxy.session.login_with_password(
            testing.USERNAME, testing.PASSWORD, '2.0', orig)
        assert r['Status'] == 'Success'
        return r['Value']
    other = login('someone-else')
    first = login('gc-test')
    refs = [login('gc-test') for _ in range(sessions.MAX_PER_ORIGINATOR)]
    r = proxy.VM.get_all(first)
    assert r['ErrorDescription'] == ['SESSION_INVALID', first]
    for ref in (refs[0], refs[-1], other):
        assert proxy.VM.get_all(ref)['Status'] == 'Success'
    for ref in refs + [other]:
        proxy.session.logout(ref)


def test_clean_shutdown_needs_pv_drivers_or_a_feature(x, sim):
    """xen-api ocaml/xapi/xapi_vm_lifecycle.ml check_op_for_feature: an
    HVM guest without PV drivers that advertises neither feature-shutdown
    nor feature-poweroff/-reboot cannot be shut down or rebooted cleanly
    (VM_LACKS_FEATURE), and allowed_operations says so; PV guests can."""
    # not Nova's: the stock device-model wrapper runs it (sim/xenopsd_dm.py)
    hvm = x.VM.create(testing.vm_record('hvm', hvm=True))
    x.VM.start(hvm, False, False)
    assert 'clean_shutdown' not in x.VM.get_allowed_operations(hvm)
    assert 'hard_shutdown' in x.VM.get_allowed_operations(hvm)
    assert _fail(x.VM.clean_shutdown, hvm) == ['VM_LACKS_FEATURE', hvm]
    assert _fail(x.VM.clean_reboot, hvm) == ['VM_LACKS_FEATURE', hvm]
    gm = x.VM.get_guest_metrics(hvm)
    sim.pools[0].db.get('VM_guest_metrics', gm)['other'] = {
        'feature-poweroff': '1'}
    x.VM.clean_shutdown(hvm)
    pv = x.VM.create(testing.vm_record('pv', hvm=False))
    x.VM.start(pv, False, False)
    x.VM.clean_shutdown(pv)
    for v in (hvm, pv):
        x.VM.destroy(v)
