"""Suspend/resume and migrations: not implemented yet (owned by `migration`).

Every entry refuses with a NotImplementedError subclass naming the
operation, so Nova fails the request cleanly and nothing on the host
changes.  The support matrix says the same.
"""
from nova.i18n import _


class OperationNotSupportedYet(NotImplementedError):
    def __init__(self, operation: str):
        super().__init__(
            _('%s is not implemented yet by the Xen stub-domain driver '
              '(nova-xen-stubdom): guests whose device model runs in a '
              'stub domain cannot be suspended or moved by this version')
            % operation)


class MigrationOps:
    def __init__(self, ctx, vmops) -> None:
        self._ctx = ctx
        self._vmops = vmops

    def suspend(self, context, instance):
        raise OperationNotSupportedYet('suspend')

    def resume(self, context, instance, network_info,
               block_device_info=None, share_info=None):
        raise OperationNotSupportedYet('resume')

    def migrate_disk_and_power_off(self, context, instance, dest, flavor,
                                   network_info, block_device_info=None,
                                   timeout=0, retry_interval=0):
        raise OperationNotSupportedYet('cold migration / resize')

    def finish_migration(self, *args, **kwargs):
        raise OperationNotSupportedYet('cold migration / resize')

    def confirm_migration(self, *args, **kwargs):
        raise OperationNotSupportedYet('cold migration / resize')

    def finish_revert_migration(self, *args, **kwargs):
        raise OperationNotSupportedYet('cold migration / resize')

    def check_can_live_migrate_destination(self, *args, **kwargs):
        raise OperationNotSupportedYet('live migration')

    def check_can_live_migrate_source(self, *args, **kwargs):
        raise OperationNotSupportedYet('live migration')

    def live_migration(self, *args, **kwargs):
        raise OperationNotSupportedYet('live migration')
