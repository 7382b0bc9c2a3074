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
import sys
import types
import xmlrpc.client

import pytest

from nova_xen_stubdom.dom0 import errors
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
    conf = tmp_path / 'agent.conf'
    conf.write_text('[agent]\nbackend = sim\n')
    monkeypatch.setattr(xapi_plugin, 'INVENTORY', str(inv))
    monkeypatch.setattr(xapi_plugin, 'AGENT_CONF', str(conf))
    monkeypatch.setitem(sys.modules, 'XenAPIPlugin',
                        _stand_in_xenapiplugin())
    monkeypatch.setattr(sys, 'argv', list(sys.argv))
    return conf


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


def test_xen_backend_off_xen_reports_xen_unavailable(dom0):
    dom0.write_text('[agent]\nallow_dom0_device_model = false\n')
    resp = _run('stubdom_wiring', {'stubdom_domid': '3'})
    desc = resp['ErrorDescription']
    assert desc[:2] == ['XENAPI_PLUGIN_FAILURE', 'XEN_UNAVAILABLE']
    assert 'only works in a Xen dom0' in desc[3]


def test_agent_config_and_inventory(tmp_path):
    conf = tmp_path / 'a.conf'
    assert xapi_plugin.agent_config(str(conf)) == {
        'allow_dom0_device_model': False, 'backend': 'xen',
        'dom0_qemu': '', 'dm_start_timeout': 60.0}
    conf.write_text('[agent]\nallow_dom0_device_model = yes\n')
    assert xapi_plugin.agent_config(str(conf))['allow_dom0_device_model']
    conf.write_text('[agent]\nallow_dom0_device_model = perhaps\n')
    with pytest.raises(errors.AgentError):
        xapi_plugin.agent_config(str(conf))
    inv = tmp_path / 'inv'
    inv.write_text('INSTALLATION_UUID="abc"\n')
    assert xapi_plugin.host_uuid(str(inv)) == 'abc'
    inv.write_text('OTHER=1\n')
    with pytest.raises(errors.AgentError):
        xapi_plugin.host_uuid(str(inv))
    with pytest.raises(errors.AgentError):
        xapi_plugin.host_uuid(str(tmp_path / 'missing'))


def test_agent_built_with_host_policy(dom0):
    dom0.write_text('[agent]\nbackend = sim\n'
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
