"""nova-compute restarts with this driver: Nova's node identity file.

Red before (seen first in the integration cloud, ``cloud install-checks``:
host1's nova-compute restarted): the second start of nova-compute died
with "No local node identity found, but this is not our first startup on
this host" -- the driver names its node by the XAPI host uuid, so Nova
never wrote ``compute_id``.  Nova's functional harness mocks that check
away (``ComputeNodeIdFixture``), so only a restart of a real process, or
Nova's own check called here, shows it.
"""
import types
from unittest import mock

import pytest

from nova.compute import manager
from nova import exception
from nova.objects import service as service_obj
from nova.virt import node

from nova_xen_stubdom.driver import nodeidentity

HOST_UUID = '6a1d3e34-4b1c-4d1b-9a7e-2f5b0f0c1a01'


@pytest.fixture
def state_path(tmp_path):
    # what nova/virt/node.py reads of the configuration (the files'
    # directories are searched too: none here)
    conf = types.SimpleNamespace(state_path=str(tmp_path), config_file=[])
    with mock.patch.object(node, 'CONF', conf):
        # Nova's check is skipped for ironic only: name ours
        manager.CONF.set_override('compute_driver',
                                  'xen_stubdom.XenStubdomDriver')
        try:
            yield tmp_path
        finally:
            manager.CONF.clear_override('compute_driver')


def _nova_checks_identity():
    """Nova's start-up check, as on any start after the first."""
    ref = mock.Mock(version=service_obj.SERVICE_VERSION)
    fake_manager = mock.Mock(spec=[])
    manager.ComputeManager._ensure_existing_node_identity(fake_manager, ref)


def test_nova_refuses_a_restart_without_the_file(state_path):
    with pytest.raises(exception.InvalidConfiguration,
                       match='No local node identity found'):
        _nova_checks_identity()


def test_driver_writes_the_xapi_host_uuid_then_nova_starts(state_path):
    nodeidentity.ensure(HOST_UUID)
    assert (state_path / node.COMPUTE_ID_FILE).read_text() == HOST_UUID
    assert node.read_local_node_uuid() == HOST_UUID
    _nova_checks_identity()
    # the next start finds it and writes nothing (Nova refuses to overwrite)
    nodeidentity.ensure(HOST_UUID)
    _nova_checks_identity()


def test_another_identity_is_left_alone(state_path, caplog):
    other = '0c5a3f5e-9d7e-4c55-8f0b-7e6a3c1d2b00'
    (state_path / node.COMPUTE_ID_FILE).write_text(other)
    nodeidentity.ensure(HOST_UUID)
    assert (state_path / node.COMPUTE_ID_FILE).read_text() == other
    assert 'not this XAPI host\'s uuid %s' % HOST_UUID in caplog.text


def test_init_host_ensures_the_identity():
    """The driver's init_host, which Nova runs just before its check,
    is what writes it."""
    import inspect
    from nova_xen_stubdom.driver import driver
    src = inspect.getsource(driver.XenStubdomDriver.init_host)
    assert 'nodeidentity.ensure(ctx.host_uuid)' in src
