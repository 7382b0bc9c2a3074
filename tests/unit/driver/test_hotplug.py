"""The driver's reading of XAPI's hot-plug rule (driver/hotplug.py) for
VBDs and VIFs alike: plug only where ``plug`` is allowed on a running
guest; the reason an unplug would be refused (the XAPI side is tested in
tests/functional/sim/test_devices.py, and through Nova in
tests/functional/driver/test_volumes.py and test_interfaces.py)."""
import pytest

from nova_xen_stubdom.driver import hotplug
from nova_xen_stubdom.xapi import constants as xc


def _call(answers):
    def call(method, *args):
        return answers[method]
    return call


@pytest.mark.parametrize('cls', ['VBD', 'VIF'])
@pytest.mark.parametrize('allowed,state,expect', [
    (['plug'], xc.POWER_STATE_RUNNING, True),
    ([], xc.POWER_STATE_RUNNING, False),
    (['plug'], xc.POWER_STATE_PAUSED, False),
    (['plug'], xc.POWER_STATE_HALTED, False),
])
def test_can_plug(cls, allowed, state, expect):
    call = _call({'%s.get_allowed_operations' % cls: allowed})
    assert hotplug.can_plug(call, cls, 'ref', state) is expect


@pytest.mark.parametrize('cls,noun', [('VBD', 'disk'), ('VIF', 'NIC')])
@pytest.mark.parametrize('rec,state,expect', [
    ({'currently_attached': False, 'allowed_operations': []},
     xc.POWER_STATE_RUNNING, None),
    ({'currently_attached': True, 'allowed_operations': ['unplug']},
     xc.POWER_STATE_RUNNING, None),
    ({'currently_attached': True, 'allowed_operations': []},
     xc.POWER_STATE_RUNNING, 'PV drivers'),
    ({'currently_attached': True, 'allowed_operations': []},
     xc.POWER_STATE_PAUSED, 'paused'),
])
def test_unplug_refusal(cls, noun, rec, state, expect):
    call = _call({'%s.get_record' % cls: dict(rec, VM='guest')})
    reason = hotplug.unplug_refusal(call, lambda vm: state, cls, 'ref')
    if expect is None:
        assert reason is None
    else:
        assert expect in reason
        if state == xc.POWER_STATE_RUNNING:
            assert noun in reason and \
                'can_use_hotplug_%s' % cls.lower() in reason
