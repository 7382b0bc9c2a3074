"""The XAPI host plugin entry under a stand-in ``XenAPIPlugin`` module.

The stand-in follows dom0's plugin protocol: the XML-RPC call is argv[1],
``dispatch`` prints an XML-RPC response with ``Status``/``Value`` or
``ErrorDescription`` (a ``Failure``'s ``[code] + params``).  The installed
launcher file is run as XAPI would run it (``__main__``).
"""
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import types
import xmlrpc.client

import pytest

from nova_xen_stubdom.dom0 import config
from nova_xen_stubdom.dom0 import daemon
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import hypervisor
from nova_xen_stubdom.dom0 import xapi_plugin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
LAUNCHER = os.path.join(ROOT, 'devstack', 'files',
                        'nova_xen_stubdom.xapi-plugin')
HOST_UUID = '0b7ef0a6-6d0c-4a8e-9a55-0f3c1d8e2a11'


def _stand_in_xenapiplugin():
    mod = types.ModuleType('XenAPIPlugin')

    class Failure(Exception):
        def __init__(self, code, params):
            super().__init__(code, params)
            assert isinstance(params, list)
            self.params = [code] + params

    def dispatch(table):
        params, method = xmlrpc.client.loads(sys.argv[1])
        session, args = params
        if method not in table:
            out = {'Status': 'Failure',
                   'ErrorDescription': ['UNKNOWN_XENAPI_PLUGIN_FUNCTION',
                                        method]}
        else:
            try:
                out = {'Status': 'Success',
                       'Value': table[method](session, args)}
            except Failure as e:
                out = {'Status': 'Failure', 'ErrorDescription': e.params}
        print(xmlrpc.client.dumps((out,), '', True))

    mod.Failure = Failure
    mod.dispatch = dispatch
    return mod


@pytest.fixture
def dom0(tmp_path, monkeypatch):
    inv = tmp_path / 'xensource-inventory'
    inv.write_text("PRIMARY_DISK='/dev/sda'\nINSTALLATION_UUID='%s'\n"
                   % HOST_UUID)
    # AF_UNIX paths are short (108 bytes): not under pytest's tmp_path
    run = tempfile.mkdtemp(prefix='nxs-')
    sock = os.path.join(run, 'agent.sock')
    conf = tmp_path / 'agent.conf'
    conf.write_text('[agent]\nbackend = fake\nsocket_path = %s\n'
                    'state_dir = %s\n' % (sock, tmp_path / 'state'))
    # an in-memory backend (stdlib only: these tests run on Python 3.6)
    monkeypatch.setitem(hypervisor.BACKENDS, 'fake',
                        'tests.unit.dom0.fakes:FakeBackend')
    monkeypatch.setattr(xapi_plugin, 'INVENTORY', str(inv))
    monkeypatch.setattr(xapi_plugin, 'AGENT_CONF', str(conf))
    monkeypatch.setitem(sys.modules, 'XenAPIPlugin',
                        _stand_in_xenapiplugin())
    monkeypatch.setattr(sys, 'argv', list(sys.argv))
    d = daemon.build(config.load(str(conf)), str(inv))
    d.start()
    try:
        yield conf
    finally:
        d.stop()
        shutil.rmtree(run, ignore_errors=True)


def _run(fn, args, launcher=False):
    call = xmlrpc.client.dumps(('OpaqueRef:session', args), fn)
    out = io.StringIO()
    saved = sys.stdout
    sys.stdout = out
    try:
        if launcher:
            sys.argv[:] = [LAUNCHER, call]
            with pytest.raises(SystemExit) as exc:
                runpy.run_path(LAUNCHER, run_name='__main__')
            assert exc.value.code == 0
        else:
            assert xapi_plugin.main([call]) == 0
    finally:
        sys.stdout = saved
    (response,), _ = xmlrpc.client.loads(out.getvalue())
    return response


def test_launcher_file_dispatches_to_the_agent(dom0):
    resp = _run('stubdom_wiring', {'stubdom_domid': '3'}, launcher=True)
    assert resp['Status'] == 'Success'
    assert json.loads(resp['Value'])['stubdom_domid'] == 3


def test_agent_error_is_xapi_plugin_failure_with_code(dom0):
    resp = _run('dm_state', {'stubdom_domid': 'x', 'guest_domid': '1'})
    assert resp['Status'] == 'Failure'
    desc = resp['ErrorDescription']
    assert desc[:3] == ['XENAPI_PLUGIN_FAILURE', 'INVALID_ARGUMENT', '']
    assert 'stubdom_domid' in desc[3]


def test_unknown_function(dom0):
    resp = _run('no_such_fn', {})
    assert resp['ErrorDescription'] == ['UNKNOWN_XENAPI_PLUGIN_FUNCTION',
                                        'no_such_fn']


def test_every_registered_function_is_dispatched(dom0, monkeypatch):
    seen = {}

    def dispatch(table):
        seen.update(table)
    monkeypatch.setattr(sys.modules['XenAPIPlugin'], 'dispatch', dispatch)
    assert xapi_plugin.main(['ignored']) == 0
    from nova_xen_stubdom.dom0 import registry as plugin
    assert set(seen) == set(plugin.functions())
    assert {'link_stubdom', 'dm_state', 'save_image'} <= set(seen)


def test_xen_backend_off_xen_reports_xen_unavailable(tmp_path):
    conf = tmp_path / 'agent.conf'
    conf.write_text('[agent]\nbackend = xen\n')
    with pytest.raises(errors.XenUnavailable,
                       match='only works in a Xen dom0'):
        daemon.build(config.load(str(conf)))


def test_daemon_down_is_daemon_unavailable(dom0):
    dom0.write_text('[agent]\nsocket_path = /nonexistent/agent.sock\n')
    resp = _run('stubdom_wiring', {'stubdom_domid': '3'})
    desc = resp['ErrorDescription']
    assert desc[:3] == ['XENAPI_PLUGIN_FAILURE', 'DAEMON_UNAVAILABLE', '']
    assert '/nonexistent/agent.sock' in desc[3]


def test_plugin_process_imports_no_engine():
    """The forwarder stays thin: what XAPI forks per call loads neither
    the registry nor the engine (checked in a fresh interpreter)."""
    code = ('import sys; from nova_xen_stubdom.dom0 import xapi_plugin; '
            'bad = [m for m in sys.modules if m.startswith('
            '"nova_xen_stubdom.") and m.split(".")[-1] in ("registry", '
            '"host", "live_migration", "saverestore", "emucore", '
            '"xen_backend")]; print(bad); sys.exit(1 if bad else 0)')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_plugin_call_path_imports_stay_lean():
    """XAPI forks the plugin per call: what a successful call imports
    (the module, agent.conf, the socket protocol) loads neither typing nor
    logging -- each costs the process more than the call itself (figures
    in doc/source/simulator.rst).  No site: it would import them itself."""
    code = ('import sys; sys.path.insert(0, sys.argv[1]); '
            'from nova_xen_stubdom.dom0 import xapi_plugin, config, '
            'daemon_protocol; '
            'bad = sorted(m for m in ("typing", "logging", "xmlrpc.client", '
            '"http.client") if m in sys.modules); print(bad); '
            'sys.exit(1 if bad else 0)')
    out = subprocess.run([sys.executable, '-S', '-c', code, ROOT],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_plugin_function_list_is_the_registry():
    from nova_xen_stubdom.dom0 import constants
    from nova_xen_stubdom.dom0 import registry as plugin
    assert sorted(constants.PLUGIN_FUNCTIONS) == sorted(plugin.functions())


def test_agent_config_and_inventory(tmp_path):
    conf = tmp_path / 'a.conf'
    cfg = config.load(str(conf))
    assert cfg == config.AgentConfig()
    assert (cfg.backend, cfg.allow_dom0_device_model, cfg.dom0_qemu,
            cfg.dm_start_timeout) == ('xen', False, '', 60.0)
    conf.write_text('[agent]\nallow_dom0_device_model = yes\n'
                    'agent_port_min = 40000\n')
    cfg = config.load(str(conf))
    assert cfg.allow_dom0_device_model is True
    assert cfg.agent_port_min == 40000
    conf.write_text('[agent]\nallow_dom0_device_model = perhaps\n')
    with pytest.raises(errors.AgentError):
        config.load(str(conf))
    conf.write_text('[agent]\nno_such_key = 1\n')
    with pytest.raises(errors.AgentError, match='no_such_key'):
        config.load(str(conf))
    inv = tmp_path / 'inv'
    inv.write_text('INSTALLATION_UUID="abc"\n')
    assert xapi_plugin.host_uuid(str(inv)) == 'abc'
    inv.write_text('OTHER=1\n')
    with pytest.raises(errors.AgentError):
        xapi_plugin.host_uuid(str(inv))
    with pytest.raises(errors.AgentError):
        xapi_plugin.host_uuid(str(tmp_path / 'missing'))


def test_agent_built_with_host_policy(dom0):
    dom0.write_text('[agent]\nbackend = fake\n'
                    'allow_dom0_device_model = true\n')
    agent = xapi_plugin.make_agent()
    try:
        assert agent.host_uuid == HOST_UUID
        assert agent.allow_dom0_device_model is True
    finally:
        agent.backend.close()


def test_main_without_xenapiplugin(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'XenAPIPlugin', None)
    monkeypatch.setattr(sys, 'argv', list(sys.argv))
    assert xapi_plugin.main([]) == 2
    assert 'XenAPIPlugin' in capsys.readouterr().err
