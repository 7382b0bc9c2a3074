"""LiveMigrationSender's bookkeeping of the send in flight: abort and
force-complete reach the agent's job of this instance, or say there is
none (the migration itself runs through Nova in
tests/functional/migration/test_live_migration.py)."""
from unittest import mock

import pytest

from nova import exception

from nova_xen_stubdom.driver import livemigration_send


def _sender():
    ctx = mock.Mock()
    return livemigration_send.LiveMigrationSender(ctx, mock.Mock()), ctx


@pytest.mark.parametrize('method,plugin', [
    ('live_migration_abort', 'migrate_abort'),
    ('live_migration_force_complete', 'migrate_force_complete'),
])
def test_acts_on_the_job_of_this_instance(method, plugin):
    sender, ctx = _sender()
    sender._sending.update({'a': 'job-a', 'b': 'job-b'})
    getattr(sender, method)(mock.Mock(uuid='b'))
    ctx.call_plugin.assert_called_once_with(plugin, id='job-b')


@pytest.mark.parametrize('method', ['live_migration_abort',
                                    'live_migration_force_complete'])
def test_no_migration_in_flight_is_said(method):
    sender, ctx = _sender()
    with pytest.raises(exception.NoActiveMigrationForInstance):
        getattr(sender, method)(mock.Mock(uuid='a'))
    ctx.call_plugin.assert_not_called()
