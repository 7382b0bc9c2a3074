"""Unit tests of the dom0 agent core: plugin registry, stubdom link,
device-model wrapper, console."""
import json

import pytest

from nova_xen_stubdom.dom0 import console  # noqa: F401 (registers)
from nova_xen_stubdom.dom0 import device_model as dm_wrapper
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import host
from nova_xen_stubdom.dom0 import registry as plugin
from nova_xen_stubdom.dom0 import stubdom_link as stubdom
from tests.unit.dom0 import fakes

GUEST_UUID = '11111111-2222-3333-4444-555555555555'
CONFIG = {'name': 'instance-00000001', 'memory_mb': 512, 'vcpus': 2,
          'vga': 'std', 'firmware': 'bios', 'boot': 'cd',
          'disks': [{'bus': 'ide', 'index': 0}],
          'nics': [{'mac': 'fa:16:3e:00:00:01', 'model': 'e1000',
                    'index': 0}]}


@pytest.fixture
def agent():
    return host.HostAgent(fakes.FakeBackend(), 'host-uuid')


def _link(agent, config=CONFIG):
    stub = agent.backend.add_domain('stub-vm', hvm=False)
    out = plugin.call(agent, plugin.PLUGIN, 'link_stubdom', {
        'stubdom_domid': str(stub), 'guest_vm_uuid': GUEST_UUID,
        'config': json.dumps(config)})
    return stub, json.loads(out)


# -- plugin registry ---------------------------------------------------------

def test_core_functions_registered():
    names = set(plugin.functions())
    assert {'link_stubdom', 'unlink_stubdom', 'dm_state', 'stubdom_wiring',
            'console_log'} <= names


def test_unknown_function(agent):
    with pytest.raises(errors.UnknownPluginFunction) as exc:
        plugin.call(agent, plugin.PLUGIN, 'no_such_fn', {})
    assert exc.value.code == 'UNKNOWN_FUNCTION'
    assert 'no_such_fn' in str(exc.value)


def test_unknown_plugin(agent):
    with pytest.raises(errors.UnknownPluginFunction):
        plugin.call(agent, 'other_plugin', 'link_stubdom', {})


def test_args_must_be_strings(agent):
    with pytest.raises(errors.InvalidArgument):
        plugin.call(agent, plugin.PLUGIN, 'dm_state',
                    {'stubdom_domid': 1, 'guest_domid': '2'})


def test_unexpected_exception_becomes_agent_error(agent, monkeypatch):
    @plugin.register('test_boom', plugin='test_plugin')
    def boom(agent, args):
        raise KeyError('nope')
    with pytest.raises(errors.AgentError) as exc:
        plugin.call(agent, 'test_plugin', 'test_boom', {})
    assert 'KeyError' in str(exc.value)


def test_non_string_result_refused(agent):
    @plugin.register('test_int', plugin='test_plugin')
    def bad(agent, args):
        return 5
    with pytest.raises(errors.AgentError, match='not a string'):
        plugin.call(agent, 'test_plugin', 'test_int', {})


def test_double_registration_refused():
    @plugin.register('test_dup', plugin='test_plugin')
    def one(agent, args):
        return ''

    def two(agent, args):
        return ''
    with pytest.raises(ValueError, match='registered twice'):
        plugin.register('test_dup', plugin='test_plugin')(two)


def test_missing_extension_module_is_skipped(monkeypatch):
    monkeypatch.setattr(plugin, '_loaded', False)
    monkeypatch.setattr(plugin, 'EXTENSION_MODULES',
                        plugin.EXTENSION_MODULES +
                        ('nova_xen_stubdom.dom0.not_written_yet',))
    assert 'link_stubdom' in plugin.functions()


def test_broken_extension_module_raises(monkeypatch, tmp_path):
    pkg = tmp_path / 'broken_ext_mod.py'
    pkg.write_text('import module_that_does_not_exist_anywhere\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugin, '_loaded', False)
    monkeypatch.setattr(plugin, 'EXTENSION_MODULES', ('broken_ext_mod',))
    with pytest.raises(ModuleNotFoundError):
        plugin.functions()


# -- link ------------------------------------------------------------------

def test_link_records_pending_link(agent):
    stub, out = _link(agent)
    assert out == {'stubdom_domid': stub, 'guest_vm_uuid': GUEST_UUID}
    link = stubdom.pending_link(agent, GUEST_UUID)
    assert link['stubdom_domid'] == stub
    assert link['config'] == CONFIG
    assert agent.backend.xs_get_perms(
        '/nova-xen-stubdom/links/' + GUEST_UUID) == ['n0']


def test_link_refuses_hvm_stubdom(agent):
    dom = agent.backend.add_domain('x', hvm=True)
    with pytest.raises(errors.StubdomLinkError, match='PV domain'):
        stubdom.link(agent, dom, GUEST_UUID, CONFIG)


def test_link_refuses_missing_domain(agent):
    with pytest.raises(errors.StubdomLinkError, match='no such domain'):
        stubdom.link(agent, 42, GUEST_UUID, CONFIG)


def test_link_refuses_stubdom_already_targeting(agent):
    stub = agent.backend.add_domain('s', hvm=False)
    agent.backend.domains[stub].target = 7
    with pytest.raises(errors.StubdomLinkError, match='already targets'):
        stubdom.link(agent, stub, GUEST_UUID, CONFIG)


def test_link_refuses_second_stubdom_for_guest(agent):
    _link(agent)
    other = agent.backend.add_domain('s2', hvm=False)
    with pytest.raises(errors.StubdomLinkError, match='is linked to'):
        stubdom.link(agent, other, GUEST_UUID, CONFIG)


def test_link_validates_config(agent):
    stub = agent.backend.add_domain('s', hvm=False)
    with pytest.raises(errors.InvalidArgument):
        plugin.call(agent, plugin.PLUGIN, 'link_stubdom', {
            'stubdom_domid': str(stub), 'guest_vm_uuid': GUEST_UUID,
            'config': json.dumps({'vcpus': 1})})
    bad = dict(CONFIG, vga='matrox')
    with pytest.raises(errors.InvalidArgument, match='video'):
        stubdom.link(agent, stub, GUEST_UUID, bad)
    assert stubdom.pending_link(agent, GUEST_UUID) is None


def test_unlink_is_idempotent(agent):
    _link(agent)
    plugin.call(agent, plugin.PLUGIN, 'unlink_stubdom',
                {'guest_vm_uuid': GUEST_UUID})
    plugin.call(agent, plugin.PLUGIN, 'unlink_stubdom',
                {'guest_vm_uuid': GUEST_UUID})
    assert stubdom.pending_link(agent, GUEST_UUID) is None


# -- dm-argv ---------------------------------------------------------------

def test_dm_argv_from_devices():
    argv = stubdom.build_dm_argv(5, CONFIG)
    joined = ' '.join(argv)
    assert argv[argv.index('-xen-domid') + 1] == '5'
    assert argv[argv.index('-m') + 1] == '512'
    assert '-vga std' in joined
    # VNC on a unix socket in the stub domain: no TCP listener at all
    assert argv[argv.index('-vnc') + 1] == 'unix:/run/qemu-vnc.sock'
    assert 'file=/dev/xvda,if=ide,index=0' in joined
    assert 'e1000,id=nic0,netdev=net0,mac=fa:16:3e:00:00:01' in joined
    assert 'ifname=eth0' in joined


def test_dm_argv_pv_devices_not_emulated():
    cfg = dict(CONFIG, disks=[{'bus': 'xen', 'index': 0}],
               nics=[{'mac': 'fa:16:3e:00:00:01', 'model': 'netfront',
                      'index': 0}], vga='none')
    joined = ' '.join(stubdom.build_dm_argv(5, cfg))
    assert '/dev/xvda' not in joined and 'e1000' not in joined
    assert '-vnc' not in joined


def test_dm_argv_serial_on_the_stub_console():
    assert '-serial' not in stubdom.build_dm_argv(5, CONFIG)
    argv = stubdom.build_dm_argv(5, dict(CONFIG, serial='console'))
    assert argv[argv.index('-serial') + 1] == '/dev/hvc0'
    with pytest.raises(errors.InvalidArgument, match='serial'):
        stubdom.build_dm_argv(5, dict(CONFIG, serial='tcp:0:4444'))


def test_dm_argv_ahci_and_uefi():
    cfg = dict(CONFIG, disks=[{'bus': 'sata', 'index': 0}],
               firmware='uefi', nics=[])
    argv = stubdom.build_dm_argv(5, cfg)
    joined = ' '.join(argv)
    assert 'ahci,id=ahci0' in joined and 'ide-hd,bus=ahci0.0' in joined
    assert 'if=pflash' in joined
    assert argv[-2:] == ['-net', 'none']


def test_dm_argv_cdrom_is_a_read_only_ide_cdrom():
    # the config drive: the stub domain's read-only mirror disk xvdd
    argv = stubdom.build_dm_argv(5, dict(CONFIG, cdroms=[{'index': 3}]))
    assert ('file=/dev/xvdd,if=ide,index=3,media=cdrom,format=raw,'
            'readonly=on') in argv
    with pytest.raises(errors.InvalidArgument, match='IDE'):
        stubdom.build_dm_argv(5, dict(CONFIG, cdroms=[{'index': 4}]))


# -- device-model wrapper ---------------------------------------------------

def test_wrapper_refuses_dom0_device_model(agent):
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    with pytest.raises(errors.DeviceModelRefused) as exc:
        dm_wrapper.launch(agent, guest, GUEST_UUID)
    assert exc.value.code == 'DOM0_DEVICE_MODEL_REFUSED'
    assert not agent.backend.calls


def test_wrapper_allows_dom0_when_host_allows():
    agent = host.HostAgent(fakes.FakeBackend(), 'h',
                           allow_dom0_device_model=True)
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    assert dm_wrapper.launch(agent, guest, GUEST_UUID) == {'mode': 'dom0'}


def test_wrapper_attaches_linked_stubdom(agent):
    stub, _ = _link(agent)
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    out = dm_wrapper.launch(agent, guest, GUEST_UUID)
    assert out['mode'] == 'stubdom' and out['stubdom_domid'] == stub
    be = agent.backend
    assert be.calls == [('set_target', stub, guest),
                        ('xs_set_target', stub, guest)]
    assert be.xs['/local/domain/%d/target' % stub] == str(guest)
    assert be.xs['/local/domain/%d/image/device-model-domid'
                 % guest] == str(stub)
    argv = be.xs['/local/domain/%d/dm-argv' % stub].split('\x1b')
    assert argv[argv.index('-xen-domid') + 1] == str(guest)
    # QEMU inside the stub domain owns its state node
    assert be.perms['/local/domain/%d/device-model/%d/state'
                    % (stub, guest)] == ['n%d' % stub]
    assert be.perms['/local/domain/%d/dm-argv' % stub] == [
        'n0', 'r%d' % stub]
    wiring = json.loads(plugin.call(agent, plugin.PLUGIN, 'stubdom_wiring',
                                    {'stubdom_domid': str(stub)}))
    assert wiring['target'] == guest
    assert wiring['device_model_domid'] == str(stub)
    state = json.loads(plugin.call(agent, plugin.PLUGIN, 'dm_state', {
        'stubdom_domid': str(stub), 'guest_domid': str(guest)}))
    assert state == {'state': 'starting', 'error': None}


def test_wrapper_stub_gone(agent):
    stub, _ = _link(agent)
    del agent.backend.domains[stub]
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    with pytest.raises(errors.StubdomLinkError, match='gone'):
        dm_wrapper.launch(agent, guest, GUEST_UUID)


def test_wrapper_stop_cleans_guest_wiring(agent):
    stub, _ = _link(agent)
    guest = agent.backend.add_domain(GUEST_UUID, hvm=True)
    dm_wrapper.launch(agent, guest, GUEST_UUID)
    dm_wrapper.stop(agent, guest, GUEST_UUID)
    dm_wrapper.stop(agent, guest, GUEST_UUID)     # idempotent
    be = agent.backend
    assert '/local/domain/%d/target' % stub not in be.xs
    assert '/local/domain/%d/dm-argv' % stub not in be.xs
    assert '/local/domain/%d/image/device-model-domid' % guest not in be.xs
    # the link stays for the next guest domain (reboot)
    assert stubdom.pending_link(agent, GUEST_UUID) is not None


# -- console -----------------------------------------------------------------

def test_console_log(agent):
    dom = agent.backend.add_domain(GUEST_UUID, hvm=True)
    agent.backend.consoles[dom] = 'x' * 10 + 'boot ok'
    out = json.loads(plugin.call(agent, plugin.PLUGIN, 'console_log',
                                 {'domid': str(dom)}))
    assert out['log'].endswith('boot ok')
    with pytest.raises(errors.DomainNotFound):
        plugin.call(agent, plugin.PLUGIN, 'console_log', {'domid': '99'})


def test_agent_errors_format():
    e = errors.DeviceModelRefused(domid=3, vm_uuid='u')
    assert 'domain 3' in str(e) and 'allow_dom0_device_model' in str(e)
    # a wrong kwarg does not hide the failure
    assert 'STUBDOM' not in str(errors.StubdomLinkError(bad=1))
