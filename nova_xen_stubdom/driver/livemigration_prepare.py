"""Live migration, destination side: the incoming VMs and the receiver.

The destination builds the guest's VMs on the source's disks (the pool's
SR) with ``other_config`` roles ``incoming-*``, so that neither host's
lookups take them for the instance's until the switch-over is confirmed
(livemigration_finish), starts the stub domain and the guest paused, and
has its agent listen with a fresh per-migration key.
"""
from oslo_log import log as logging
from oslo_utils import excutils

from nova import exception

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import migrationutils as mu
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices
from nova_xen_stubdom.driver import vmlookup
from nova_xen_stubdom.objects import migrate_data as md_obj

LOG = logging.getLogger(__name__)


class LiveMigrationPrepare(common.InstanceOps):
    """Nova's pre_live_migration, on the destination."""

    def pre_live_migration(self, context, instance, block_device_info,
                           network_info, disk_info, migrate_data=None
                           ) -> md_obj.XenStubdomLiveMigrateData:
        """Build the guest's VMs here (guest paused, stub domain running)
        and start the agent's receiver with a fresh per-migration key."""
        if migrate_data is None:
            migrate_data = md_obj.XenStubdomLiveMigrateData()
        source = vmlookup.guest_record(self._ctx, instance)
        if source is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        built = vmbuild.Built()
        with self._vmops._operation(instance):
            try:
                guest_uuid = self._build_incoming(instance, network_info,
                                                  source[1], built)
                key = mu.new_key()
                recv = self._ctx.call_plugin(
                    'migrate_receive', guest_vm_uuid=guest_uuid,
                    key=key.hex(),
                    # routable from the source: the host's management
                    # address unless configured (the agent refuses
                    # loopback and 0.0.0.0 unless it allows them)
                    listen_address=(self._conf.agent_listen_address or
                                    self._ctx.host_record.get('address',
                                                              '')),
                    port_min=self._conf.agent_port_min,
                    port_max=self._conf.agent_port_max,
                    accept_timeout=self._conf.live_migration_connect_timeout,
                    confirm_timeout=self._conf.live_migration_confirm_timeout,
                    device_state_timeout=self._conf.device_state_timeout)
                self._call('VM.add_to_other_config', built.guest,
                           mu.OC_RECEIVE_JOB, recv['id'])
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('pre_live_migration failed; removing the '
                              'incoming VMs', instance=instance)
                    self._vmops.stopper.teardown(instance, built,
                                                 raise_first=False)
        migrate_data.dest_address = recv['address']
        migrate_data.dest_port = int(recv['port'])
        migrate_data.migration_key = key.hex()
        migrate_data.dest_host_uuid = self._ctx.host_uuid
        LOG.info('ready to receive on %(a)s:%(p)s', {
            'a': recv['address'], 'p': recv['port']}, instance=instance)
        return migrate_data

    def _build_incoming(self, instance, network_info, source_rec: dict,
                        built) -> str:
        """Guest + stub-domain VMs on this host for the incoming guest,
        on the source's disks; the guest started paused."""
        cfg = guest_config.resolve(instance.flavor, None)
        host = self._ctx.host_ref
        grec = vmbuild.guest_record(instance, cfg, host)
        grec['other_config'][dc.OC_ROLE] = mu.ROLE_INCOMING_GUEST
        guest = self._call('VM.create', grec)
        built.guest = guest
        built.guest_uuid = guest_uuid = self._call('VM.get_uuid', guest)
        srec = vmbuild.stubdom_record(instance, cfg, host, guest_uuid,
                                      self._conf.stubdom_kernel,
                                      self._conf.stubdom_ramdisk)
        srec['other_config'][dc.OC_ROLE] = mu.ROLE_INCOMING_STUBDOM
        stub = self._call('VM.create', srec)
        built.stubdom = stub
        stub_uuid = self._call('VM.get_uuid', stub)
        self._call('VM.add_to_other_config', guest, dc.OC_STUBDOM, stub_uuid)
        # the same disks as the source guest (the pool's SR)
        for vbd in source_rec.get('VBDs') or []:
            vrec = self._call('VBD.get_record', vbd)
            if vrec.get('type') != 'Disk' or vrec.get('empty'):
                continue
            disk = self._call('VDI.get_other_config', vrec['VDI']).get(
                dc.OC_DISK, 'disk')
            vmdevices.attach_disk(self._ctx, built, vrec['VDI'], disk,
                                  int(vrec['userdevice']))
        vifs = []
        for index, vif in enumerate(network_info or []):
            net_ref = vmdevices.network_ref(self._ctx, vif)
            vifs.append((vif, net_ref))
            vmdevices.attach_nic(self._ctx, built, vif, net_ref, index)
        self._vmops.starter.start(instance, built, cfg, vifs, paused=True)
        return guest_uuid
