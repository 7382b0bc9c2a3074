"""Live migration pre-checks, on both hosts, before anything is touched.

The destination checks room, CPU vendor, PCI devices and block migration
and answers its HVM maximum CPU policy; the source checks the guest's state
and pool membership and compares the guest's CPU policy with the
destination's (XAPI: Cpuid_helpers.assert_vm_is_compatible).
"""
import json
from typing import Optional

from oslo_log import log as logging

from nova import exception
from nova.i18n import _

from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import migrationutils as mu
from nova_xen_stubdom.driver import pv_guests
from nova_xen_stubdom.driver import vmlookup
from nova_xen_stubdom.objects import migrate_data as md_obj
from nova_xen_stubdom.xapi import constants as xc

LOG = logging.getLogger(__name__)


class LiveMigrationChecks(common.InstanceOps):
    """Nova's check_can_live_migrate_* on either host."""

    def check_can_live_migrate_destination(
            self, context, instance, src_compute_info, dst_compute_info,
            block_migration=False, disk_over_commit=False
    ) -> md_obj.XenStubdomLiveMigrateData:
        """On the destination: room, CPU vendor, no PCI, no block copy;
        answers this host's HVM maximum CPU policy for the source's
        check."""
        if block_migration:
            raise exception.MigrationPreCheckError(reason=_(
                'block migration is not supported: live migration keeps the '
                'disks on the pool\'s SR; retry without --block-migrate'))
        mu.refuse_pci(instance)
        cfg = guest_config.resolve(instance.flavor, None)
        need = (cfg.memory_mb + cfg.stubdom_memory_mb) * dc.MiB
        free = int(self._call('host.compute_free_memory',
                              self._ctx.host_ref))
        if free < need:
            raise exception.MigrationPreCheckError(reason=_(
                'destination host %(host)s has %(free)d MiB free, the guest '
                'and its stub domain need %(need)d MiB')
                % {'host': self._ctx.host_name, 'free': free // dc.MiB,
                   'need': need // dc.MiB})
        src_vendor = _cpu_vendor(src_compute_info)
        dst_vendor = _cpu_vendor(dst_compute_info)
        if src_vendor and dst_vendor and src_vendor != dst_vendor:
            raise exception.MigrationPreCheckError(reason=_(
                'CPU vendors differ (source %(s)s, destination %(d)s): the '
                'guest\'s CPU state cannot move') % {'s': src_vendor,
                                                     'd': dst_vendor})
        # the most this host can offer an HVM guest; the source compares
        # its guest's policy with it before anything is touched
        host_policy = self._ctx.call_plugin('host_cpu_policy')
        data = md_obj.XenStubdomLiveMigrateData(
            dest_host_uuid=self._ctx.host_uuid,
            dest_free_memory=free, guest_memory=cfg.memory_mb * dc.MiB,
            dest_cpu_info=json.dumps(host_policy), block_migration=False)
        return data

    def cleanup_live_migration_destination_check(self, context,
                                                 dest_check_data) -> None:
        pass

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None
                                      ) -> md_obj.XenStubdomLiveMigrateData:
        """On the source: the guest runs (or is paused) here, same pool,
        no PCI."""
        mu.refuse_pci(instance)
        if not isinstance(dest_check_data,
                          md_obj.XenStubdomLiveMigrateData):
            raise exception.MigrationPreCheckError(reason=_(
                'the destination is not a Xen stub-domain host'))
        mu.host_by_uuid(self._ctx, dest_check_data.dest_host_uuid)
        found = vmlookup.guest_record(self._ctx, instance)
        state = found[1].get('power_state') if found else None
        if state not in (xc.POWER_STATE_RUNNING, xc.POWER_STATE_PAUSED):
            raise exception.MigrationPreCheckError(reason=_(
                'instance %(uuid)s is %(state)s, only a running or paused '
                'guest is live-migrated') % {'uuid': instance.uuid,
                                             'state': state})
        self._check_cpu_policy(instance, found[1], dest_check_data)
        pv_guests.check_live_migration(self._ctx, instance, found[1]['uuid'])
        return dest_check_data

    def _check_cpu_policy(self, instance, guest_rec: dict,
                          dest_check_data) -> None:
        """The destination must offer every CPU feature the guest sees
        (XAPI: Cpuid_helpers.assert_vm_is_compatible; Xen:
        x86_cpu_policies_are_compatible), or the move is refused here,
        before the source is touched."""
        try:
            dest = json.loads(dest_check_data.dest_cpu_info or '')
            host = cpu_policy.CpuPolicy.parse(bytes.fromhex(dest['cpuid']),
                                              bytes.fromhex(dest['msrs']))
        except (ValueError, TypeError, KeyError,
                cpu_policy.PolicyError) as e:
            raise exception.MigrationPreCheckError(reason=_(
                'the destination sent no usable CPU policy (%s): it may run '
                'an older driver; upgrade it first') % e)
        got = self._ctx.call_plugin('guest_cpu_policy',
                                    guest_vm_uuid=guest_rec['uuid'])
        guest = cpu_policy.CpuPolicy.parse(bytes.fromhex(got['cpuid']),
                                           bytes.fromhex(got['msrs']))
        why = cpu_policy.incompatibilities(guest, host)
        if why:
            raise exception.MigrationPreCheckError(reason=_(
                'destination host %(host)s cannot offer the CPU instance '
                '%(uuid)s sees: %(why)s; the guest stays on %(src)s') % {
                    'host': dest_check_data.dest_host_uuid,
                    'uuid': instance.uuid, 'why': '; '.join(why),
                    'src': self._ctx.host_name})


def _cpu_vendor(compute_info) -> Optional[str]:
    if not compute_info:
        return None
    info = compute_info.get('cpu_info') if isinstance(compute_info, dict) \
        else getattr(compute_info, 'cpu_info', None)
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            return None
    return (info or {}).get('vendor') if isinstance(info, dict) else None
