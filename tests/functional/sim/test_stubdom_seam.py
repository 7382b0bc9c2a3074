"""The device-model seam: HVM guests whose QEMU runs in a stub domain.

Drives the simulator the way the driver does (two XAPI VMs, mirrored
devices, ``host.call_plugin`` into the real dom0 agent) and checks the
simulated hypervisor: who runs each device model, who holds which frontend,
what QEMU in the stub domain answers.
"""
import json
import socket

import XenAPI
import pytest

from nova_xen_stubdom.sim import devicemodel, introspect, testing


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def _vdi(x, size=8 << 20, name='disk'):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    # the guest and its stub domain both attach the disk (as the driver
    # does): it must be sharable
    return x.VDI.create({'name_label': name, 'name_description': '',
                         'SR': sr, 'virtual_size': str(size), 'type': 'user',
                         'sharable': name == 'disk', 'read_only': False,
                         'other_config': {}, 'xenstore_data': {},
                         'sm_config': {}, 'tags': []})


def _vbd(x, vm, vdi, userdevice):
    return x.VBD.create({'VM': vm, 'VDI': vdi, 'userdevice': userdevice,
                         'bootable': userdevice == '0', 'mode': 'RW',
                         'type': 'Disk', 'unpluggable': True, 'empty': False,
                         'other_config': {}, 'qos_algorithm_type': '',
                         'qos_algorithm_params': {}})


def _vif(x, vm, device, mac):
    net = x.network.get_all()[0]
    return x.VIF.create({'device': device, 'network': net, 'VM': vm,
                         'MAC': mac, 'MTU': '1500', 'other_config': {},
                         'qos_algorithm_type': '', 'qos_algorithm_params': {},
                         'locking_mode': 'network_default',
                         'ipv4_allowed': [], 'ipv6_allowed': []})


def _guest_and_stubdom(x):
    vdi = _vdi(x)
    guest = x.VM.create(testing.vm_record('guest', hvm=True))
    stub = x.VM.create(testing.vm_record('guest-dm', hvm=False,
                                         memory=128 << 20))
    _vbd(x, guest, vdi, '0')
    _vbd(x, stub, vdi, '0')
    _vif(x, guest, '0', '02:00:00:00:00:01')
    _vif(x, stub, '0', '02:00:00:00:00:01')
    host = x.host.get_all()[0]
    return vdi, guest, stub, host


def _plugin(x, host, fn, **args):
    return json.loads(x.host.call_plugin(host, 'nova_xen_stubdom', fn,
                                         {k: str(v) for k, v in args.items()}))


def test_guest_device_model_runs_in_stubdom(sim, session, x):
    vdi, guest, stub, host = _guest_and_stubdom(x)
    x.VM.start_on(stub, host, False, False)
    stub_domid = int(x.VM.get_domid(stub))
    config = {'memory_mb': 256, 'vcpus': 1, 'name': 'guest',
              'disks': [{'bus': 'ide', 'index': 0}],
              'nics': [{'mac': '02:00:00:00:00:01', 'model': 'e1000',
                        'index': 0}]}
    _plugin(x, host, 'link_stubdom', stubdom_domid=stub_domid,
            guest_vm_uuid=x.VM.get_uuid(guest), config=json.dumps(config))
    x.VM.start_on(guest, host, False, False)
    guest_domid = int(x.VM.get_domid(guest))
    h = sim.pools[0].host_by_ref(host)
    assert introspect.device_models(h) == {guest_domid: stub_domid}
    assert introspect.dom0_device_models(h) == []
    # the wrapper classified it by its link and started nothing in dom0
    run = introspect.dm_wrapper_runs(h)[guest_domid]
    assert run.ours == 'stub domain link of VM %s' % x.VM.get_uuid(guest)
    assert run.stock is None
    assert introspect.running_qemus(h) == {guest_domid: stub_domid}
    state = _plugin(x, host, 'dm_state', stubdom_domid=stub_domid,
                    guest_domid=guest_domid)
    assert state == {'state': 'running', 'error': None}
    # the guest's disk and NIC are also frontends of the stub domain
    assert sorted(introspect.frontends(h, stub_domid)) == [('vbd', 'xvda'),
                                                           ('vif', '0')]
    assert sorted(introspect.frontends(h, guest_domid)) == [('vbd', 'xvda'),
                                                            ('vif', '0')]
    # the VNC console is served by the stub domain's QEMU, reached through
    # XAPI's console proxy (CONNECT /console, ocaml/xapi/console.ml)
    console = x.VM.get_consoles(guest)[0]
    rec = x.console.get_record(console)
    assert rec['protocol'] == 'rfb' and rec['other_config'] == {}
    assert rec['location'] == 'https://%s/console?uuid=%s' % (
        h.address, rec['uuid'])
    with socket.create_connection((h.address, h.port), 5) as s:
        s.sendall(b'CONNECT /console?uuid=%s&session_id=%s HTTP/1.1\r\n\r\n'
                  % (rec['uuid'].encode(), session._session.encode()))
        data = b''
        while not data.endswith(b'RFB 003.008\n'):
            chunk = s.recv(64)
            assert chunk, data
            data += chunk
        assert data.startswith(b'HTTP/1.1 200')
    # save through a disk attached to the stub domain
    save_vdi = _vdi(x, 1 << 20, 'state')
    vbd = _vbd(x, stub, save_vdi, '3')
    x.VBD.plug(vbd)
    d = '/local/domain/%d/device-model/%d' % (stub_domid, guest_domid)
    xs = h.hypervisor.xenstore
    xs.write(d + '/state-disk', 'xvdd')
    xs.write(d + '/command', 'save')
    assert xs.read(d + '/state') == 'saved'
    assert xs.read(d + '/command') is None
    from nova_xen_stubdom.sim import storage
    with open(storage.vdi_path(sim.pools[0], x.VDI.get_uuid(save_vdi)),
              'rb') as f:
        image = f.read()
    assert image[:8] == b'NXSDSTAT'
    assert devicemodel.unpack_state_image(image) == \
        devicemodel.device_state(h.hypervisor, guest_domid)
    xs.write(d + '/command', 'continue')
    assert xs.read(d + '/state') == 'running'
    x.VBD.unplug(vbd)
    x.VBD.destroy(vbd)
    x.VDI.destroy(save_vdi)
    # the guest goes first, then its stub domain
    x.VM.hard_shutdown(guest)
    assert introspect.device_models(h) == {}
    x.VM.hard_shutdown(stub)
    for vm in (guest, stub):
        x.VM.destroy(vm)
    x.VDI.destroy(vdi)
    _plugin(x, host, 'unlink_stubdom', guest_vm_uuid='none')
    leaks = sim.leaks()
    assert leaks['host127.0.0.1']['domains'] == []
    assert leaks['host127.0.0.1']['memory_files'] == []
    assert leaks['pool0']['VM'] == [] and leaks['pool0']['VDI'] == []


def test_stubdom_without_guest_devices_reports_error(sim, x):
    vdi, guest, stub, host = _guest_and_stubdom(x)
    # take the mirrored disk away from the stub domain
    for vbd in x.VM.get_VBDs(stub):
        x.VBD.destroy(vbd)
    x.VM.start_on(stub, host, False, False)
    stub_domid = int(x.VM.get_domid(stub))
    config = {'memory_mb': 256, 'vcpus': 1,
              'disks': [{'bus': 'ide', 'index': 0}]}
    _plugin(x, host, 'link_stubdom', stubdom_domid=stub_domid,
            guest_vm_uuid=x.VM.get_uuid(guest), config=json.dumps(config))
    x.VM.start_on(guest, host, False, False)
    guest_domid = int(x.VM.get_domid(guest))
    state = _plugin(x, host, 'dm_state', stubdom_domid=stub_domid,
                    guest_domid=guest_domid)
    assert state['state'] == 'error'
    assert 'disk xvda' in state['error']
    for vm in (guest, stub):
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    x.VDI.destroy(vdi)


#: the guest marker the driver sets (VM.xenstore_data), which the dom0
#: device-model wrapper reads from /local/domain/<domid>/vm-data/
MARKER = {'vm-data/nova_xen_stubdom': 'instance-uuid'}


def _host_of(sim, x, vm):
    return sim.pools[0].host_by_ref(x.VM.get_resident_on(vm))


def test_unmanaged_hvm_vm_gets_the_stock_device_model(sim, x):
    """An HVM VM started directly through XAPI, neither linked nor marked,
    on a host where our wrapper is xenopsd's device-model wrapper: the
    wrapper hands xenopsd's argv unchanged to the host's stock wrapper,
    whose QEMU runs in dom0 -- what XAPI does for any HVM VM (xen-api
    ``ocaml/xenopsd/xc/device.ml`` ``Dm.__start``;
    ``ocaml/xenopsd/scripts/qemu-wrapper``)."""
    from nova_xen_stubdom.dom0 import dm_wrapper
    vm = x.VM.create(testing.vm_record('theirs', hvm=True,
                                       memory=256 << 20, vcpus=2))
    vdi = _vdi(x)
    _vbd(x, vm, vdi, '0')
    x.VM.start(vm, False, False)
    domid = int(x.VM.get_domid(vm))
    h = _host_of(sim, x, vm)
    assert introspect.device_models(h) == {domid: 0}
    assert introspect.dom0_device_models(h) == [domid]
    run = introspect.dm_wrapper_runs(h)[domid]
    assert run.ours is None
    assert run.stock == dm_wrapper.DEFAULT_STOCK_DM_WRAPPER
    # the stock wrapper's QEMU got exactly what xenopsd passed our wrapper
    assert introspect.running_qemus(h) == {domid: 0}
    assert h.hypervisor.qemus[domid].argv == run.argv
    assert run.argv[:2] == [str(domid), '--syslog']
    for opt, value in (('-xen-domid', str(domid)), ('-m', 'size=256'),
                       ('-smp', '2,maxcpus=2'), ('-boot', 'order=cd')):
        assert run.argv[run.argv.index(opt) + 1] == value
    assert '-qmp' in run.argv and run.argv[-2:] == ['-net', 'none']
    assert 'ide-hd,drive=ide0-hd0,bus=ide.0,unit=0' in run.argv
    # no stub domain, no link: nothing of ours in the guest's xenstore
    xs = h.hypervisor.xenstore
    assert xs.read('/local/domain/%d/image/device-model-domid'
                   % domid) == '0'
    assert xs.read('/local/domain/%d/vm-data/nova_xen_stubdom'
                   % domid) is None
    # xenopsd stops the stock wrapper's QEMU; our wrapper is not involved
    x.VM.hard_shutdown(vm)
    assert introspect.dom0_device_models(h) == []
    assert introspect.dm_wrapper_runs(h) == {}
    assert introspect.running_qemus(h) == {}
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_stock_wrapper_path_follows_agent_conf():
    """[agent] stock_dm_wrapper names the program the wrapper hands an
    unmanaged VM to."""
    from nova_xen_stubdom.dom0 import config as agent_config
    from nova_xen_stubdom.dom0.host import HostAgent
    from nova_xen_stubdom.sim.backend import SimBackend
    with testing.running_sim(hosts=1) as sim:
        h = sim.host(0)
        h.agent_factory = lambda host: HostAgent(
            backend=SimBackend(host), host_uuid=host.uuid,
            allow_dom0_device_model=False,
            config=agent_config.AgentConfig(
                stock_dm_wrapper='/opt/vendor/qemu-wrapper'))
        x = testing.login(sim).xenapi
        vm = x.VM.create(testing.vm_record('theirs', hvm=True))
        x.VM.start(vm, False, False)
        domid = int(x.VM.get_domid(vm))
        run = introspect.dm_wrapper_runs(h)[domid]
        assert run.stock == '/opt/vendor/qemu-wrapper'
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)


def test_marked_hvm_guest_without_stubdom_is_refused(sim, x):
    """The driver's marker (VM.xenstore_data ``vm-data/nova_xen_stubdom``,
    written to the guest's xenstore by xenopsd's ``Domain.make``) makes the
    VM ours even without a stub domain link: no dom0 QEMU for it, the start
    fails and nothing is left behind."""
    guest = x.VM.create(testing.vm_record('lonely', hvm=True,
                                          xenstore_data=MARKER))
    details = _fail(x.VM.start, guest, False, False)
    assert details[0] == 'INTERNAL_ERROR'
    assert 'DeviceModelRefused' in details[1]
    assert x.VM.get_power_state(guest) == 'Halted'
    for h in sim.hosts:
        assert introspect.domains(h)[1:] == []
        assert introspect.dm_wrapper_runs(h) == {}
        assert introspect.running_qemus(h) == {}
    x.VM.destroy(guest)


def test_platform_stubdom_alone_does_not_mark_a_vm(sim, x):
    """platform:stubdom never reaches xenstore on a pool with XAPI's
    platform filter (``Vm_platform.sanity_check ~filter_out_unknowns``;
    the simulated pool always filters): such a VM is not recognised as
    ours, which is why the driver sets the vm-data marker."""
    vm = x.VM.create(testing.vm_record(
        'platform-only', hvm=True,
        platform={'stubdom': 'some-uuid', 'acpi': '1'}))
    x.VM.start(vm, False, False)
    domid = int(x.VM.get_domid(vm))
    h = _host_of(sim, x, vm)
    xs = h.hypervisor.xenstore
    assert xs.read('/local/domain/%d/platform/acpi' % domid) == '1'
    assert xs.read('/local/domain/%d/platform/stubdom' % domid) is None
    assert introspect.dm_wrapper_runs(h)[domid].ours is None
    assert introspect.dom0_device_models(h) == [domid]
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_only_vm_data_and_fist_xenstore_data_reach_the_domain(sim, x):
    """xenopsd ``Domain.make`` writes ``filtered_xsdata``: keys under
    ``vm-data/`` or ``FIST/`` only (xen-api ``ocaml/xenopsd/xc/domain.ml``
    ``allowed_xsdata_prefixes``)."""
    vm = x.VM.create(testing.vm_record('xsdata', hvm=False, xenstore_data={
        'vm-data/a': '1', 'FIST/b': '2', 'vm-datax/c': '3', 'other/d': '4',
        'vm-data': '5'}))
    x.VM.start(vm, False, False)
    domid = int(x.VM.get_domid(vm))
    xs = _host_of(sim, x, vm).hypervisor.xenstore
    base = '/local/domain/%d/' % domid
    assert xs.read(base + 'vm-data/a') == '1'
    assert xs.read(base + 'FIST/b') == '2'
    for key in ('vm-datax/c', 'other/d'):
        assert xs.read(base + key) is None
    assert xs.read(base + 'vm-data') in (None, '')
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_dom0_device_model_follows_each_hosts_config():
    """HostConfig.allow_dom0_dm reaches the real device-model wrapper of
    that host only, whatever [xen_stubdom] allow_dom0_device_model of this
    process says (the agent's fallback when it is not told): one of ours
    without a stub domain is refused on a strict host and handed to the
    stock wrapper (a dom0 QEMU) where the host allows it."""
    from nova_xen_stubdom import conf
    from nova_xen_stubdom.sim.pool import HostConfig
    conf.CONF.set_override('allow_dom0_device_model', True, 'xen_stubdom')
    try:
        with testing.running_sim(hosts=2, host_configs=[
                HostConfig(allow_dom0_dm=True),
                HostConfig(allow_dom0_dm=False)]) as sim:
            allowed, strict = sim.host(0), sim.host(1)
            assert allowed.agent().allow_dom0_device_model is True
            assert strict.agent().allow_dom0_device_model is False
            x = testing.login(sim).xenapi
            guest = x.VM.create(testing.vm_record('dom0dm', hvm=True,
                                                  xenstore_data=MARKER))
            details = _fail(x.VM.start_on, guest, strict.ref, False, False)
            assert details[0] == 'INTERNAL_ERROR'
            assert 'DeviceModelRefused' in details[1]
            assert introspect.domains(strict)[1:] == []
            x.VM.start_on(guest, allowed.ref, False, False)
            domid = int(x.VM.get_domid(guest))
            # no stub domain: the device model is recorded as dom0's
            assert allowed.hypervisor.device_models[domid] == 0
            assert introspect.dom0_device_models(allowed) == [domid]
            run = introspect.dm_wrapper_runs(allowed)[domid]
            assert run.ours == ('xenstore /local/domain/%d/vm-data/'
                                'nova_xen_stubdom' % domid)
            assert run.stock is not None
            assert [d['domid'] for d in introspect.domains(allowed)] == \
                [0, domid]
            x.VM.hard_shutdown(guest)
            assert introspect.dom0_device_models(allowed) == []
            x.VM.destroy(guest)
    finally:
        conf.CONF.clear_override('allow_dom0_device_model', 'xen_stubdom')


def test_call_plugin_failure(x):
    host = x.host.get_all()[0]
    details = _fail(x.host.call_plugin, host, 'nova_xen_stubdom',
                    'no_such_fn', {})
    assert details[:3] == ['XENAPI_PLUGIN_FAILURE', 'UNKNOWN_FUNCTION', '']
    assert 'no_such_fn' in details[3]


def test_stubdom_init_channel_save(sim, x):
    """The stub domain init's save protocol (stubdom.channel) is served."""
    from nova_xen_stubdom.stubdom import channel
    from nova_xen_stubdom.dom0 import statedisk
    vdi, guest, stub, host = _guest_and_stubdom(x)
    x.VM.start_on(stub, host, False, False)
    stub_domid = int(x.VM.get_domid(stub))
    _plugin(x, host, 'link_stubdom', stubdom_domid=stub_domid,
            guest_vm_uuid=x.VM.get_uuid(guest),
            config=json.dumps({'memory_mb': 256, 'vcpus': 1,
                               'disks': [{'bus': 'ide', 'index': 0}]}))
    x.VM.start_on(guest, host, False, False)
    guest_domid = int(x.VM.get_domid(guest))
    h = sim.pools[0].host_by_ref(host)
    backend = h.agent().backend
    import os
    import tempfile
    fd, path = tempfile.mkstemp()
    os.ftruncate(fd, 1 << 20)
    os.close(fd)
    try:
        backend.attach_disk(stub_domid, path, 'xvdz')
        result = channel.request_save(backend, stub_domid, 'xvdz',
                                      timeout=5, poll=0.01)
        state = statedisk.read_state_file(path)
        assert result.length == len(state)
        assert state == devicemodel.device_state(h.hypervisor, guest_domid)
        channel.request_cont(backend, stub_domid, timeout=5, poll=0.01)
        with pytest.raises(channel.StubdomChannelError):
            channel.request_save(backend, stub_domid, 'xvdy', timeout=5,
                                 poll=0.01)
        backend.detach_disk(stub_domid, 'xvdz')
    finally:
        os.unlink(path)
    for vm in (guest, stub):
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_reboot_cannot_relink_the_same_stubdom(sim, x):
    """Xen gives a domain one target for life (xen/common/domctl.c
    XEN_DOMCTL_set_target: -EINVAL once d->target is set), so a stub
    domain cannot serve its guest's next domain: XAPI's own reboot of a
    linked guest fails to start the device model.  The driver never asks
    that: each guest start gets a fresh stub domain (guest reboots halt,
    actions_after_reboot = destroy)."""
    vdi, guest, stub, host = _guest_and_stubdom(x)
    x.VM.start_on(stub, host, False, False)
    stub_domid = int(x.VM.get_domid(stub))
    _plugin(x, host, 'link_stubdom', stubdom_domid=stub_domid,
            guest_vm_uuid=x.VM.get_uuid(guest),
            config=json.dumps({'memory_mb': 256, 'vcpus': 1,
                               'disks': [{'bus': 'ide', 'index': 0}]}))
    x.VM.start_on(guest, host, False, False)
    first = int(x.VM.get_domid(guest))
    h = sim.pools[0].host_by_ref(host)
    assert introspect.running_qemus(h) == {first: stub_domid}
    details = _fail(x.VM.hard_reboot, guest)
    assert details[0] == 'INTERNAL_ERROR'
    assert 'xc_domain_set_target' in details[1] and 'errno 22' in details[1]
    assert introspect.running_qemus(h) == {}
    for vm in (guest, stub):
        if x.VM.get_power_state(vm) != 'Halted':
            x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_non_sharable_vdi_attached_twice_is_refused(sim, x):
    disk = _vdi(x, name='private')
    a = x.VM.create(testing.vm_record('a', hvm=False))
    b = x.VM.create(testing.vm_record('b', hvm=False))
    _vbd(x, a, disk, '0')
    _vbd(x, b, disk, '0')
    x.VM.start(a, False, False)
    assert _fail(x.VM.start, b, False, False) == ['VDI_IN_USE', disk,
                                                  'attach']
    assert x.VM.get_power_state(b) == 'Halted'
    for h in sim.hosts:
        assert len(h.hypervisor.domains) == 1 + (
            1 if x.VM.get_resident_on(a) == h.ref else 0)
    x.VM.hard_shutdown(a)
    x.VM.start(b, False, False)
    x.VM.hard_shutdown(b)
    for vm in (a, b):
        x.VM.destroy(vm)
    x.VDI.destroy(disk)
