"""XAPI power states → Nova power states."""
import subprocess
import sys

import pytest
from nova.compute import power_state

from nova_xen_stubdom.xapi import constants
from nova_xen_stubdom.xapi import power


@pytest.mark.parametrize('xapi_state,nova_state', [
    (constants.POWER_STATE_HALTED, power_state.SHUTDOWN),
    (constants.POWER_STATE_RUNNING, power_state.RUNNING),
    (constants.POWER_STATE_PAUSED, power_state.PAUSED),
    (constants.POWER_STATE_SUSPENDED, power_state.SUSPENDED),
    ('Crashed', power_state.CRASHED),
    ('running', power_state.RUNNING),
    ('Migrating', power_state.NOSTATE),
    (None, power_state.NOSTATE),
])
def test_mapping_with_fallback(xapi_state, nova_state):
    assert power.to_nova_power_state(xapi_state) == nova_state


def test_every_datamodel_power_state_is_mapped():
    from nova_xen_stubdom.datamodel import schema
    for state in schema.load().enums['vm_power_state']:
        assert power.to_nova_power_state(state) != power_state.NOSTATE
    assert set(constants.POWER_STATES) == set(
        schema.load().enums['vm_power_state'])


def test_layer_imports_without_nova():
    code = ('import sys; sys.modules["nova"] = None\n'
            'import nova_xen_stubdom.xapi.client, '
            'nova_xen_stubdom.xapi.cache, nova_xen_stubdom.xapi.power\n'
            'print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == 'ok', out.stderr
