"""XenStubdomDriver: Nova compute driver for Xen/XAPI with Linux stub domains.

A façade (compute-hyperv's shape): every public method delegates to one ops
object -- ``HostOps`` (resources), ``SpawnOps`` (spawn), ``VMOps`` (guest
lifecycle), ``SuspendOps`` (suspend/resume), ``ColdMigrationOps`` (cold
migration/resize), the live migration's ``LiveMigrationChecks``,
``LiveMigrationPrepare`` (destination), ``LiveMigrationSender`` (source) and
``LiveMigrationFinish`` (post/rollback), ``SnapshotOps`` (images),
``RescueOps`` (rescue/unrescue), ``RebuildOps`` (rebuild),
``EvacuateOps`` (evacuate),
``VolumeOps`` (Cinder volumes), ``InterfaceOps`` (interface hot-plug),
``PciOps`` (pass-through) --
and one class decorator translates XAPI/agent failures into Nova exceptions.

Operators set ``compute_driver = xen_stubdom.XenStubdomDriver``.
"""
import threading

from oslo_log import log as logging

from nova import conf as nova_conf
from nova.compute import task_states
from nova.compute import vm_states
from nova import exception
from nova.i18n import _
from nova.virt import driver
from nova.virt import hardware

from nova_xen_stubdom import conf as xconf  # noqa: F401 (registers opts)
from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import configdrive
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import coldmigrationops
from nova_xen_stubdom.driver import consoleops
from nova_xen_stubdom.driver import evacuateops
from nova_xen_stubdom.driver import events
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import hostops
from nova_xen_stubdom.driver import livemigration_checks
from nova_xen_stubdom.driver import livemigration_finish
from nova_xen_stubdom.driver import livemigration_prepare
from nova_xen_stubdom.driver import livemigration_send
from nova_xen_stubdom.driver import nodeidentity
from nova_xen_stubdom.driver import pciops
from nova_xen_stubdom.driver import rebuildops
from nova_xen_stubdom.driver import rescueops
from nova_xen_stubdom.driver import snapshotops
from nova_xen_stubdom.driver import spawnops
from nova_xen_stubdom.driver import suspendops
from nova_xen_stubdom.driver import vifops
from nova_xen_stubdom.driver import vmops
from nova_xen_stubdom.driver import volumeops
from nova_xen_stubdom.stubdom import image as stubdom_image
from nova_xen_stubdom.xapi import client as xapi_client
from nova_xen_stubdom.xapi import power as xpower

LOG = logging.getLogger(__name__)
CONF = nova_conf.CONF

CACHE_READY_TIMEOUT = 60


@dexc.translating
class XenStubdomDriver(driver.ComputeDriver):
    """HVM guests whose device model (QEMU) runs in a Linux stub domain."""

    capabilities = dict(driver.ComputeDriver.capabilities, **{
        'has_imagecache': False,
        'supports_evacuate': True,
        'supports_migrate_to_same_host': False,
        # NOTE(driver): the guest sees a hot-attached NIC at once only with
        # PV drivers; else from its next start (vifops)
        'supports_attach_interface': True,
        'supports_device_tagging': False,
        'supports_multiattach': False,
        'supports_trusted_certs': False,
        'supports_pcpus': False,
        'supports_accelerators': False,
        'supports_image_type_raw': True,
        # NOTE(driver): volumes are attached (iSCSI, volumeops); extend,
        # multi-attach and tagged attach are not offered
        'supports_extend_volume': False,
        'supports_tagged_attach_volume': False,
        'supports_bfv_rescue': False,
    })

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self._client = None
        self._ctx = None
        self._hostops = None
        self._vmops = None
        self._spawnops = None
        self._pciops = None
        self._suspendops = None
        self._coldmigrationops = None
        #: live migration (lm) in four parts: pre-checks, the
        #: destination's preparation, the source's send, post/rollback
        self._lm_checks = None
        self._lm_prepare = None
        self._lm_sender = None
        self._lm_finish = None
        self._snapshotops = None
        self._rescueops = None
        self._evacuateops = None
        self._rebuildops = None
        self._volumeops = None
        self._vifops = None
        self._consoleops = None
        self._events = None
        self._init_lock = threading.Lock()

    # -- host ------------------------------------------------------------
    def init_host(self, host):
        """Connect to XAPI, find this host, start the event cache."""
        group = CONF.xen_stubdom
        if not group.connection_url:
            raise exception.InvalidConfiguration(
                _('[xen_stubdom] connection_url is not set'))
        for opt in ('stubdom_kernel', 'stubdom_ramdisk'):
            problem = stubdom_image.boot_path_problem(group[opt])
            if problem:
                raise exception.InvalidConfiguration(
                    _('[xen_stubdom] %(opt)s: %(problem)s')
                    % {'opt': opt, 'problem': problem})
        client = xapi_client.XAPIClient.from_conf(CONF)
        try:
            name = group.host_name or host
            refs = client.call('host.get_by_name_label', name)
            if len(refs) != 1:
                known = sorted(r['name_label'] for r in client.call(
                    'host.get_all_records').values())
                raise exception.InvalidConfiguration(
                    _('XAPI pool at %(url)s has %(n)d hosts named %(name)r '
                      '(hosts: %(known)s); set [xen_stubdom] host_name')
                    % {'url': client.url, 'n': len(refs), 'name': name,
                       'known': ', '.join(known)})
            cache = client.start_cache(classes=dc.CACHED_CLASSES)
            if not cache.wait_ready(CACHE_READY_TIMEOUT):
                raise exception.HypervisorUnavailable(host=client.url)
            ctx = common.DriverContext(client, cache, refs[0], CONF)
        except Exception:
            client.close()
            raise
        self._client = client
        self._ctx = ctx
        # before Nova's own check of it, which follows this method
        nodeidentity.ensure(ctx.host_uuid)
        self._hostops = hostops.HostOps(ctx, CONF)
        self._pciops = self._load_pciops(ctx)
        self._vmops = vmops.VMOps(ctx, self._hostops, self._pciops)
        self._spawnops = spawnops.SpawnOps(ctx, self._vmops)
        self._suspendops = suspendops.SuspendOps(ctx, self._vmops)
        self._coldmigrationops = coldmigrationops.ColdMigrationOps(
            ctx, self._vmops)
        self._lm_checks = livemigration_checks.LiveMigrationChecks(
            ctx, self._vmops)
        self._lm_prepare = livemigration_prepare.LiveMigrationPrepare(
            ctx, self._vmops)
        self._lm_sender = livemigration_send.LiveMigrationSender(
            ctx, self._vmops)
        self._lm_finish = livemigration_finish.LiveMigrationFinish(
            ctx, self._vmops)
        self._snapshotops = snapshotops.SnapshotOps(ctx, self._vmops)
        self._rescueops = rescueops.RescueOps(ctx, self._vmops,
                                              self._snapshotops)
        self._evacuateops = evacuateops.EvacuateOps(ctx, self._vmops)
        self._rebuildops = rebuildops.RebuildOps(ctx, self._vmops)
        self._volumeops = volumeops.VolumeOps(ctx, self._vmops)
        self._vifops = vifops.InterfaceOps(ctx, self._vmops)
        self._consoleops = consoleops.ConsoleOps(ctx, self._vmops)
        self._events = events.LifecycleEvents(ctx, self._vmops,
                                              self._emit_async)
        self._events.start()
        LOG.info('managing XAPI host %(name)s (%(uuid)s) at %(url)s',
                 {'name': ctx.host_name, 'uuid': ctx.host_uuid,
                  'url': client.url})

    @staticmethod
    def _load_pciops(ctx):
        # a plain import: an instance with claimed PCI devices must never
        # boot without them because this module failed to import
        return pciops.PciOps(ctx)

    def _emit_async(self, event):
        # the cache's watcher thread must not wait for Nova's handling
        threading.Thread(target=self.emit_event, args=(event,),
                         daemon=True).start()

    def cleanup_host(self, host):
        if self._events is not None:
            self._events.stop()
        if self._consoleops is not None:
            self._consoleops.expire(everything=True)
        if self._client is not None:
            self._client.close()

    def get_available_resource(self, nodename):
        res = self._hostops.get_available_resource(nodename)
        res['uuid'] = self._ctx.host_uuid    # see get_nodenames_by_uuid
        if self._pciops is not None:
            res['pci_passthrough_devices'] = \
                self._pciops.get_pci_passthrough_devices()
        return res

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        inventory = provider_tree.data(nodename).inventory
        ratios = self._get_allocation_ratios(inventory)
        self._hostops.update_provider_tree(provider_tree, nodename, ratios,
                                           allocations)

    def get_available_nodes(self, refresh=False):
        return [self._hostops.nodename()]

    def get_nodenames_by_uuid(self, refresh=False):
        # NOTE(driver): the XAPI host uuid is the compute node uuid: stable
        # across reinstalls of nova-compute, unique in the pool (as ironic
        # does with node uuids) -- and several computes in one process (the
        # functional harness) do not share Nova's local node uuid file.
        return {self._ctx.host_uuid: self._hostops.nodename()}

    def node_is_available(self, nodename):
        return (nodename in self.get_available_nodes() and
                self._hostops.node_available())

    def get_host_ip_addr(self):
        return self._hostops.host_ip()

    def get_host_uptime(self):
        return self._hostops.uptime()

    # -- lifecycle -------------------------------------------------------
    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        self._spawnops.spawn(context, instance, image_meta, network_info,
                             power_on=power_on,
                             block_device_info=block_device_info,
                             injected_files=injected_files,
                             admin_password=admin_password)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        # a rescue pair first: it holds the instance's root disk
        self._rescueops.destroy(instance)
        self._vmops.destroy(instance)
        # the VMs' volume SRs went with their VBDs; an SR left by an
        # earlier, interrupted delete goes now
        self._volumeops.forget_unused(block_device_info)

    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True,
                destroy_secrets=True):
        # destroy() already removed everything; nothing is kept in dom0
        pass

    def reboot(self, context, instance, network_info, reboot_type,
               block_device_info=None, bad_volumes_callback=None,
               accel_info=None, share_info=None):
        self._vmops.reboot(instance, network_info, reboot_type)

    def power_off(self, instance, timeout=0, retry_interval=0):
        self._vmops.power_off(instance, timeout)

    def power_on(self, context, instance, network_info,
                 block_device_info=None, accel_info=None, share_info=None):
        self._vmops.power_on(instance, network_info)

    def pause(self, instance):
        self._vmops.pause(instance)

    def unpause(self, instance):
        self._vmops.unpause(instance)

    def resume_state_on_host_boot(self, context, instance, network_info,
                                  share_info, block_device_info=None):
        self._vmops.resume_state_on_host_boot(instance, network_info)

    def plug_vifs(self, instance, network_info):
        # NOTE(driver): VIFs are XAPI objects created by spawn; Neutron's
        # agent on the host binds the ports
        pass

    def unplug_vifs(self, instance, network_info):
        pass

    def attach_interface(self, context, instance, image_meta, vif):
        self._vifops.attach_interface(instance, vif)

    def detach_interface(self, context, instance, vif):
        self._vifops.detach_interface(instance, vif)

    # -- information -----------------------------------------------------
    def get_info(self, instance, use_cache=True):
        if instance.vm_state == vm_states.RESCUED:
            # the instance runs as its rescue guest
            state = self._rescueops.power_state(instance)
            if state is not None:
                return hardware.InstanceInfo(
                    state=xpower.to_nova_power_state(state))
        return self._vmops.get_info(instance)

    def instance_exists(self, instance):
        # on this host: a pool shares its VMs, and an evacuation checks
        # that the instance is not on the destination already
        return instance.uuid in self._vmops.list_instance_uuids()

    def instance_on_disk(self, instance):
        return self._evacuateops.instance_on_disk(instance)

    def rebuild(self, context, instance, image_meta, injected_files,
                admin_password, allocations, bdms, detach_block_devices,
                attach_block_devices, network_info=None, evacuate=False,
                block_device_info=None, preserve_ephemeral=False,
                accel_uuids=None, reimage_boot_volume=False):
        if not evacuate:
            # (reimage_boot_volume only says the API allows it: it is set
            # for every rebuild from microversion 2.93)
            if self._rebuildops.boots_from_volume(instance):
                # Nova's default path reimages the volume through Cinder,
                # then spawns it again
                raise NotImplementedError()
            self._rebuildops.rebuild(context, instance, image_meta,
                                     injected_files, admin_password,
                                     network_info, preserve_ephemeral)
            return
        if (block_device_info or {}).get('block_device_mapping'):
            # a volume's SR is this pool member's own iSCSI session
            # (volumeops): re-attaching it elsewhere is not built yet
            raise dexc.XenStubdomDriverError(
                reason=_('evacuating an instance with volumes attached is '
                         'not supported'))
        instance.task_state = task_states.REBUILD_SPAWNING
        instance.save(expected_task_state=[task_states.REBUILDING])
        self._evacuateops.evacuate(context, instance, network_info)

    def list_instances(self):
        return self._vmops.list_instances()

    def list_instance_uuids(self):
        return self._vmops.list_instance_uuids()

    def get_console_output(self, context, instance):
        return self._consoleops.get_console_output(instance)

    def get_vnc_console(self, context, instance):
        return self._consoleops.get_vnc_console(instance)

    def get_serial_console(self, context, instance):
        return self._consoleops.get_serial_console(instance)

    def get_diagnostics(self, instance):
        return self._vmops.get_diagnostics(instance)

    # -- images (snapshotops) -------------------------------------------
    def snapshot(self, context, instance, image_id, update_task_state):
        return self._snapshotops.snapshot(context, instance, image_id,
                                          update_task_state)

    def rescue(self, context, instance, network_info, image_meta,
               rescue_password, block_device_info, share_info=None):
        return self._rescueops.rescue(context, instance, network_info,
                                      image_meta)

    def unrescue(self, context, instance):
        return self._rescueops.unrescue(context, instance)

    # -- volumes (volumeops) ----------------------------------------------
    def get_volume_connector(self, instance):
        return self._volumeops.get_volume_connector(instance)

    def attach_volume(self, context, connection_info, instance, mountpoint,
                      disk_bus=None, device_type=None, encryption=None):
        if encryption:
            raise exception.VolumeEncryptionNotSupported(
                volume_type='encrypted',
                volume_id=(connection_info.get('data') or {}).get(
                    'volume_id', '?'))
        return self._volumeops.attach_volume(connection_info, instance,
                                             mountpoint)

    def detach_volume(self, context, connection_info, instance, mountpoint,
                      encryption=None):
        return self._volumeops.detach_volume(connection_info, instance,
                                             mountpoint)

    def swap_volume(self, context, old_connection_info, new_connection_info,
                    instance, mountpoint, resize_to):
        return self._volumeops.swap_volume(
            old_connection_info, new_connection_info, instance, mountpoint)

    # -- suspend / migrations ---------------------------------------------
    def suspend(self, context, instance):
        return self._suspendops.suspend(context, instance)

    def resume(self, context, instance, network_info, block_device_info=None,
               share_info=None):
        return self._suspendops.resume(context, instance, network_info,
                                       block_device_info, share_info)

    def migrate_disk_and_power_off(self, context, instance, dest, flavor,
                                   network_info, block_device_info=None,
                                   timeout=0, retry_interval=0):
        try:
            volumeops.refuse_volumes(block_device_info,
                                     _('resize / migrate'))
            configdrive.refuse_moves(instance, _('resize / migrate'))
        except exception.MigrationPreCheckError as exc:
            # nothing was touched: Nova puts the server back as it was
            raise exception.InstanceFaultRollback(inner_exception=exc)
        return self._coldmigrationops.migrate_disk_and_power_off(
            context, instance, dest, flavor, network_info,
            block_device_info, timeout, retry_interval)

    def check_can_live_migrate_destination(self, context, instance,
                                           src_compute_info,
                                           dst_compute_info,
                                           block_migration=False,
                                           disk_over_commit=False):
        return self._lm_checks.check_can_live_migrate_destination(
            context, instance, src_compute_info, dst_compute_info,
            block_migration, disk_over_commit)

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        volumeops.refuse_volumes(block_device_info, _('live migration'))
        configdrive.refuse_moves(instance, _('live migration'))
        return self._lm_checks.check_can_live_migrate_source(
            context, instance, dest_check_data, block_device_info)

    def live_migration(self, context, instance, dest, post_method,
                       recover_method, block_migration=False,
                       migrate_data=None):
        return self._lm_sender.live_migration(
            context, instance, dest, post_method, recover_method,
            block_migration, migrate_data)

    # (added by migration: the rest of the migration surface)
    def cleanup_live_migration_destination_check(self, context,
                                                 dest_check_data):
        return self._lm_checks.cleanup_live_migration_destination_check(
            context, dest_check_data)

    def pre_live_migration(self, context, instance, block_device_info,
                           network_info, disk_info, migrate_data):
        return self._lm_prepare.pre_live_migration(
            context, instance, block_device_info, network_info, disk_info,
            migrate_data)

    def live_migration_abort(self, instance):
        return self._lm_sender.live_migration_abort(instance)

    def live_migration_force_complete(self, instance):
        return self._lm_sender.live_migration_force_complete(instance)

    def post_live_migration(self, context, instance, block_device_info,
                            migrate_data=None):
        return self._lm_finish.post_live_migration(
            context, instance, block_device_info, migrate_data)

    def post_live_migration_at_source(self, context, instance, network_info):
        return self._lm_finish.post_live_migration_at_source(
            context, instance, network_info)

    def post_live_migration_at_destination(self, context, instance,
                                           network_info,
                                           block_migration=False,
                                           block_device_info=None):
        return self._lm_finish.post_live_migration_at_destination(
            context, instance, network_info, block_migration,
            block_device_info)

    def rollback_live_migration_at_source(self, context, instance,
                                          migrate_data):
        return self._lm_finish.rollback_live_migration_at_source(
            context, instance, migrate_data)

    def rollback_live_migration_at_destination(self, context, instance,
                                               network_info,
                                               block_device_info,
                                               destroy_disks=True,
                                               migrate_data=None):
        return self._lm_finish.rollback_live_migration_at_destination(
            context, instance, network_info, block_device_info,
            destroy_disks, migrate_data)

    def finish_migration(self, context, migration, instance, disk_info,
                         network_info, image_meta, resize_instance,
                         allocations, block_device_info=None, power_on=True,
                         share_info=None):
        return self._coldmigrationops.finish_migration(
            context, migration, instance, disk_info, network_info,
            image_meta, resize_instance, allocations, block_device_info,
            power_on)

    def confirm_migration(self, context, migration, instance, network_info):
        return self._coldmigrationops.confirm_migration(
            context, migration, instance, network_info)

    def delete_instance_files(self, instance):
        return self._coldmigrationops.remove_aside(instance)

    def finish_revert_migration(self, context, instance, network_info,
                                migration, block_device_info=None,
                                power_on=True, share_info=None):
        return self._coldmigrationops.finish_revert_migration(
            context, instance, network_info, migration, block_device_info,
            power_on)
