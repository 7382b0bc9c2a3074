"""The driver never puts a key in host.call_plugin's arguments (XAPI runs
the plugin with them on its command line): it wraps it for the agent's
key offer first."""
import json

from nova_xen_stubdom.dom0 import keywrap
from nova_xen_stubdom.driver import common

KEY = bytes(range(32))


class FakeClient:
    def __init__(self):
        self.offers = keywrap.Offers()
        self.calls = []
        self.unwrapped = []

    def call(self, method, *args):
        assert method == 'host.call_plugin'
        _host, _plugin, fn, fn_args = args
        self.calls.append((fn, dict(fn_args)))
        if fn == 'key_offer':
            return json.dumps(self.offers.offer())
        if 'key_wrap' in fn_args:
            self.unwrapped.append(self.offers.unwrap(fn_args['key_wrap']))
        return json.dumps({'ok': True})


class FakeCache:
    def get(self, cls, ref):
        return {'uuid': 'host-uuid', 'name_label': 'h1', 'address': '10.0.0.1'}


def test_key_goes_wrapped_never_plain():
    client = FakeClient()
    ctx = common.DriverContext(client, FakeCache(), 'OpaqueRef:h', None)
    assert ctx.call_plugin('save_image', key=KEY.hex(), path='/x') == \
        {'ok': True}
    assert [fn for fn, _ in client.calls] == ['key_offer', 'save_image']
    for _fn, args in client.calls:
        assert 'key' not in args
        assert KEY.hex() not in json.dumps(args)
    assert client.unwrapped == [KEY]


def test_calls_without_a_key_make_no_offer():
    client = FakeClient()
    ctx = common.DriverContext(client, FakeCache(), 'OpaqueRef:h', None)
    ctx.call_plugin('dm_state', stubdom_domid=1)
    assert [fn for fn, _ in client.calls] == ['dm_state']
