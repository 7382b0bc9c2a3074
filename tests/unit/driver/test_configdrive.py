"""When a config drive can be written here: the checks spawn makes before
anything exists (the drive itself is tested through Nova in
tests/functional/driver/test_configdrive.py)."""
import sys
from unittest import mock

import pytest

from nova_xen_stubdom.driver import configdrive


@pytest.fixture
def conf():
    overrides = []

    def set_(name, value):
        configdrive.CONF.set_override(name, value)
        overrides.append(name)
    yield set_
    for name in overrides:
        configdrive.CONF.clear_override(name)


def test_tool_present_and_iso9660(conf):
    conf('mkisofs_cmd', sys.executable)
    assert configdrive.tool_problem() is None


def test_missing_tool_is_named(conf):
    conf('mkisofs_cmd', '/nonexistent/genisoimage')
    assert 'genisoimage' in configdrive.tool_problem()


def test_vfat_is_refused(conf):
    conf('mkisofs_cmd', sys.executable)
    conf('config_drive_format', 'vfat')
    assert 'iso9660' in configdrive.tool_problem()


def test_check_only_for_instances_that_need_a_drive(conf):
    conf('mkisofs_cmd', '/nonexistent/genisoimage')
    instance = mock.Mock(uuid='u', config_drive=False)
    with mock.patch.object(configdrive, 'required_by', return_value=False):
        configdrive.check(instance)
    with mock.patch.object(configdrive, 'required_by', return_value=True):
        with pytest.raises(configdrive.ConfigDriveUnavailable,
                           match='mkisofs_cmd'):
            configdrive.check(instance)


def test_moves_refused_only_with_a_drive():
    configdrive.refuse_moves(mock.Mock(config_drive=''), 'migrate')
    with pytest.raises(Exception, match='config drive'):
        configdrive.refuse_moves(mock.Mock(config_drive='True'), 'migrate')
