"""InterfaceOps' decisions from XAPI's answers: the device number of a new
NIC and the port checks made before
anything is touched (the XAPI side is tested through Nova in
tests/functional/driver/test_interfaces.py)."""
from unittest import mock

import pytest

from nova_xen_stubdom.driver import vifops
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.xapi import constants as xc


class _Ctx:
    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def call(self, method, *args):
        self.calls.append((method,) + args)
        answer = self.answers[method]
        return answer(*args) if callable(answer) else answer


def _ops(answers, state=xc.POWER_STATE_RUNNING):
    vm = mock.Mock()
    vm.stopper.power_state.return_value = state
    return vifops.InterfaceOps(_Ctx(answers), vm)


def test_free_device_is_the_lowest_free_on_both_vms():
    allowed = {'guest': ['1', '2', '3'], 'stub': ['0', '2', '3']}
    ops = _ops({'VM.get_allowed_VIF_devices': lambda vm: allowed[vm]})
    built = vmbuild.Built(guest='guest', stubdom='stub')
    assert ops._free_device(built) == 2
    allowed['stub'] = ['0']
    assert ops._free_device(built) is None


@pytest.mark.parametrize('vif,expect', [
    ({'address': 'fa:16:3e:00:00:01'}, 'port id'),
    ({'id': 'p', 'address': 'fa:16:3e:zz:00:01'}, 'MAC_INVALID'),
    ({'id': 'p', 'address': ''}, 'MAC_INVALID'),
])
def test_bad_ports_are_refused_before_any_call(vif, expect):
    ops = _ops({})
    instance = mock.Mock(uuid='u')
    with pytest.raises(vifops.InterfaceOpRefused, match=expect):
        ops.attach_interface(instance, vif)
    assert ops._ctx.calls == []
