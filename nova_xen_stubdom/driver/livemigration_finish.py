"""Live migration's end on both hosts: switch-over confirmed, or rolled back.

After the switch-over the destination's ``incoming-*`` VMs take the
instance's roles and the source's VMs go (never the disks: both hosts use
the same VDIs on the pool's SR).  On failure the incoming VMs go, wherever
they are in the pool: Nova does not call the destination's rollback for
drivers like this one, so the source removes them.
"""
from oslo_log import log as logging

from nova.i18n import _

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import migrationutils as mu
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.xapi import constants as xc

LOG = logging.getLogger(__name__)


class LiveMigrationFinish(common.InstanceOps):
    """Nova's post_live_migration* and rollback_live_migration_*."""

    def post_live_migration(self, context, instance, block_device_info,
                            migrate_data=None) -> None:
        """The destination runs the guest: remove its VMs here (the
        disks stay, the destination uses them)."""
        built = vmbuild.Built()
        vms = mu.find_vms(self._ctx, instance,
                          (dc.ROLE_GUEST, dc.ROLE_STUBDOM))
        guest = vms.get(dc.ROLE_GUEST)
        stub = vms.get(dc.ROLE_STUBDOM)
        if guest is not None and guest[1].get('resident_on') == \
                self._ctx.host_ref:
            built.guest, built.guest_uuid = guest[0], guest[1]['uuid']
        if stub is not None and stub[1].get('resident_on') == \
                self._ctx.host_ref:
            built.stubdom = stub[0]
        with self._vmops._operation(instance):
            self._vmops.stopper.teardown(instance, built, raise_first=False)
        LOG.info('source VMs removed after live migration',
                 instance=instance)

    def post_live_migration_at_source(self, context, instance,
                                      network_info) -> None:
        pass

    def rollback_live_migration_at_source(self, context, instance,
                                          migrate_data) -> None:
        """The agent already left the guest running here; remove what the
        destination prepared."""
        self._remove_incoming(instance)

    def post_live_migration_at_destination(self, context, instance,
                                           network_info,
                                           block_migration=False,
                                           block_device_info=None) -> None:
        """The guest runs here: its VMs become the instance's."""
        vms = mu.find_vms(self._ctx, instance, (mu.ROLE_INCOMING_GUEST,
                                                mu.ROLE_INCOMING_STUBDOM))
        guest = vms.get(mu.ROLE_INCOMING_GUEST)
        stub = vms.get(mu.ROLE_INCOMING_STUBDOM)
        if guest is None or stub is None:
            raise dexc.XenStubdomDriverError(reason=_(
                'the incoming VMs of instance %s are gone') % instance.uuid)
        job = (guest[1].get('other_config') or {}).get(mu.OC_RECEIVE_JOB)
        left_paused = False
        if job:
            left_paused = bool(self._ctx.call_plugin(
                'migrate_receive_status', id=job).get('paused'))
            self._ctx.call_plugin('migrate_forget', id=job)
            self._call('VM.remove_from_other_config', guest[0],
                       mu.OC_RECEIVE_JOB)
        self._call('VM.remove_from_other_config', guest[0], dc.OC_ROLE)
        self._call('VM.add_to_other_config', guest[0], dc.OC_ROLE,
                   dc.ROLE_GUEST)
        self._call('VM.remove_from_other_config', stub[0], dc.OC_ROLE)
        self._call('VM.add_to_other_config', stub[0], dc.OC_ROLE,
                   dc.ROLE_STUBDOM)
        # the agent let the domain run at the switch-over (unless it was
        # paused on the source); XAPI's record still says Paused (it was
        # started paused)
        if not left_paused and self._call(
                'VM.get_power_state', guest[0]) == xc.POWER_STATE_PAUSED:
            self._call('VM.unpause', guest[0])
        LOG.info('live migration finished here', instance=instance)

    def rollback_live_migration_at_destination(self, context, instance,
                                               network_info,
                                               block_device_info,
                                               destroy_disks=True,
                                               migrate_data=None) -> None:
        """Remove the incoming VMs (never the disks: they are the
        source's)."""
        self._remove_incoming(instance)

    def _remove_incoming(self, instance) -> None:
        """Cancel the receiver and remove the incoming VMs, wherever they
        are in the pool (Nova does not call the destination's rollback
        for drivers like this one: the source does it)."""
        vms = mu.find_vms(self._ctx, instance, (mu.ROLE_INCOMING_GUEST,
                                                mu.ROLE_INCOMING_STUBDOM))
        built = vmbuild.Built()
        if mu.ROLE_INCOMING_GUEST in vms:
            built.guest, rec = vms[mu.ROLE_INCOMING_GUEST]
            built.guest_uuid = rec['uuid']
            job = (rec.get('other_config') or {}).get(mu.OC_RECEIVE_JOB)
            host = rec.get('resident_on')
            if job and host and host != 'OpaqueRef:NULL':
                try:
                    self._call('host.call_plugin', host, dc.AGENT_PLUGIN,
                               'migrate_receive_cancel', {'id': job})
                except Exception as exc:
                    LOG.warning('cancelling the receiver failed: %s', exc,
                                instance=instance)
        if mu.ROLE_INCOMING_STUBDOM in vms:
            built.stubdom = vms[mu.ROLE_INCOMING_STUBDOM][0]
        if built.guest or built.stubdom:
            with self._vmops._operation(instance):
                self._vmops.stopper.teardown(instance, built, raise_first=True)
            LOG.info('incoming VMs of the failed live migration removed',
                     instance=instance)
