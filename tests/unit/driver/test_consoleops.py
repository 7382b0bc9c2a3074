"""Console connection info from XAPI's console records
(``driver/consoleops.py``)."""
import types

import pytest

from nova import exception

from nova_xen_stubdom.driver import consoleops
from nova_xen_stubdom.driver import exceptions as dexc

LOCATION = 'https://10.0.0.5/console?uuid=c0ffee00-0000-0000-0000-000000000001'


class FakeClient:
    url = 'https://10.0.0.1'

    def __init__(self):
        self.logins, self.logouts = [], []

    def login(self, originator=None, username=None, password=None):
        sess = types.SimpleNamespace(ref='OpaqueRef:s%d' % len(self.logins))
        self.logins.append((originator, username, sess))
        return sess

    def logout(self, sess):
        self.logouts.append(sess)


class FakeCtx:
    def __init__(self, consoles, state='Running', port=None,
                 plugin_error=None):
        self.client = FakeClient()
        self.consoles = consoles
        self.state = state
        self.plugin_error = plugin_error
        self.conf = types.SimpleNamespace(
            xen_stubdom=types.SimpleNamespace(console_port=port,
                                              console_username='op',
                                              console_password='pw'),
            consoleauth=types.SimpleNamespace(token_ttl=600))

    def call(self, method, *args):
        if method == 'VM.get_power_state':
            return self.state
        if method == 'VM.get_consoles':
            return list(self.consoles)
        if method == 'console.get_record':
            return self.consoles[args[0]]
        if method == 'VM.get_domid':
            return '-1' if self.state == 'Halted' else '5'
        raise AssertionError(method)

    def call_plugin(self, fn, **args):
        if self.plugin_error:
            raise self.plugin_error
        return {'log': 'boot ok\n'}


def _ops(consoles, **kw):
    ctx = FakeCtx(consoles, **kw)
    vmops = types.SimpleNamespace(_require=lambda inst: types.SimpleNamespace(
        guest='OpaqueRef:guest'))
    return ctx, consoleops.ConsoleOps(ctx, vmops)


INST = types.SimpleNamespace(uuid='0e8c3c3e-1f7b-4a9e-9d59-6f1d2c1b7a10')


def test_vnc_goes_through_xapis_proxy_with_a_console_session():
    ctx, ops = _ops({'C': {'uuid': 'c', 'protocol': 'rfb',
                           'location': LOCATION}})
    console = ops.get_vnc_console(INST)
    assert (console.host, console.port) == ('10.0.0.5', 80)
    assert console.internal_access_path == (
        '/console?uuid=c0ffee00-0000-0000-0000-000000000001'
        '&session_id=OpaqueRef%3As0')
    assert ctx.client.logins[0][:2] == (consoleops.ORIGINATOR, 'op')
    ops.expire(everything=True)
    assert len(ctx.client.logouts) == 1


def test_port_from_config_or_an_http_connection_url():
    ctx, ops = _ops({'C': {'protocol': 'rfb', 'location': LOCATION}},
                    port=8080)
    assert ops.get_vnc_console(INST).port == 8080
    ctx, ops = _ops({'C': {'protocol': 'rfb', 'location': LOCATION}})
    ctx.client.url = 'http://10.0.0.1:8888'
    assert ops.get_vnc_console(INST).port == 8888


def test_expired_sessions_are_logged_out_at_the_next_console():
    ctx, ops = _ops({'C': {'protocol': 'rfb', 'location': LOCATION}})
    ops.get_vnc_console(INST)
    ctx.conf.consoleauth.token_ttl = -1
    ops.get_vnc_console(INST)
    assert [s.ref for s in ctx.client.logouts] == ['OpaqueRef:s0']


def test_clear_errors_and_no_session_left():
    ctx, ops = _ops({})
    with pytest.raises(exception.ConsoleTypeUnavailable):
        ops.get_vnc_console(INST)
    with pytest.raises(exception.ConsoleTypeUnavailable):
        ops.get_serial_console(INST)
    ctx, ops = _ops({'C': {'protocol': 'rfb', 'location': LOCATION}},
                    state='Halted')
    with pytest.raises(exception.InstanceNotReady):
        ops.get_vnc_console(INST)
    ctx, ops = _ops({'C': {'protocol': 'rfb', 'uuid': 'c',
                           'location': 'vnc://somewhere:5900'}})
    with pytest.raises(dexc.XenStubdomDriverError,
                       match='unusable location'):
        ops.get_vnc_console(INST)
    assert ctx.client.logins == []


def test_serial_from_a_vt100_record():
    ctx, ops = _ops({'C': {'protocol': 'vt100', 'location': LOCATION}})
    console = ops.get_serial_console(INST)
    assert console.host == '10.0.0.5'
    assert console.internal_access_path.startswith('/console?uuid=')


def test_console_output():
    ctx, ops = _ops({})
    assert ops.get_console_output(INST) == b'boot ok\n'
    ctx, ops = _ops({}, state='Halted')
    assert ops.get_console_output(INST) == b''
    ctx, ops = _ops({}, plugin_error=dexc.AgentCallFailed(
        fn='console_log', host='h', reason='no console access'))
    with pytest.raises(exception.ConsoleNotAvailable):
        ops.get_console_output(INST)
