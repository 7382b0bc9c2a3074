"""Cold migration and resize (Nova runs both through the same three calls).

Both hosts are in one XAPI pool: the disks stay on the pool's SR and the
destination attaches the same VDIs.  Until confirm or revert the source's
VMs and disks are set aside under other roles and names, so that neither
host's lookups nor Nova's destroy can remove what the other side still
needs.
"""
import json
from typing import Optional

from oslo_log import log as logging
from oslo_utils import excutils

from nova import exception
from nova.i18n import _

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import migrationutils as mu
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices

LOG = logging.getLogger(__name__)

#: role prefix and VDI name suffix of a cold migration's source, set aside
#: until confirm or revert
RESIZE_SOURCE = 'resize-source-'
RESIZE_SUFFIX = '.resize-source'


class ColdMigrationOps(common.InstanceOps):
    """Nova's migrate_disk_and_power_off, finish_migration,
    confirm_migration and finish_revert_migration."""

    def migrate_disk_and_power_off(self, context, instance, dest, flavor,
                                   network_info, block_device_info=None,
                                   timeout=0, retry_interval=0) -> str:
        """Source: halt the guest and hand its disks to the destination.

        Both hosts are in one XAPI pool: the disks stay on the pool's SR
        and the destination attaches the same VDIs.  Until confirm or
        revert, the source's VMs are set aside (role ``resize-source-*``)
        and the disks renamed (``<name>-root.resize-source``), so that
        neither host's lookups nor Nova's destroy on the destination (at
        revert) can remove what the other side still needs.  *dest* is the
        destination's IP: nothing here needs it.
        """
        refusal = resize_refusal(instance.flavor, flavor)
        if refusal:
            raise exception.InstanceFaultRollback(
                exception.ResizeError(reason=refusal))
        with self._vmops._operation(instance):
            built = self._vmops._require(instance)
            self._vmops.stopper.stop(instance, built.guest, built.stubdom,
                                     built.guest_uuid,
                                     clean_timeout=timeout or None)
            disks = {}
            for vdi in built.vdis:
                oc = self._call('VDI.get_other_config', vdi)
                disks[self._call('VDI.get_uuid', vdi)] = oc.get(dc.OC_DISK,
                                                                'root')
            self._set_aside(built, aside=True)
        return json.dumps({'vdis': disks})

    def _set_aside(self, built, aside: bool) -> None:
        """Rename the source's VMs/disks out of the instance's way (or
        back), so the destination's lookups and destroy never touch them."""
        for ref, role in ((built.guest, dc.ROLE_GUEST),
                          (built.stubdom, dc.ROLE_STUBDOM)):
            if not ref:
                continue
            self._call('VM.remove_from_other_config', ref, dc.OC_ROLE)
            self._call('VM.add_to_other_config', ref, dc.OC_ROLE,
                       RESIZE_SOURCE + role if aside else role)
        for vdi in built.vdis:
            name = self._call('VDI.get_name_label', vdi)
            if aside and not name.endswith(RESIZE_SUFFIX):
                self._call('VDI.set_name_label', vdi, name + RESIZE_SUFFIX)
            elif not aside and name.endswith(RESIZE_SUFFIX):
                self._call('VDI.set_name_label', vdi,
                           name[:-len(RESIZE_SUFFIX)])

    def _aside(self, instance):
        built = vmbuild.Built()
        vms = mu.find_vms(self._ctx, instance,
                          (RESIZE_SOURCE + dc.ROLE_GUEST,
                           RESIZE_SOURCE + dc.ROLE_STUBDOM))
        if RESIZE_SOURCE + dc.ROLE_GUEST in vms:
            built.guest, rec = vms[RESIZE_SOURCE + dc.ROLE_GUEST]
            built.guest_uuid = rec['uuid']
        if RESIZE_SOURCE + dc.ROLE_STUBDOM in vms:
            built.stubdom = vms[RESIZE_SOURCE + dc.ROLE_STUBDOM][0]
        for disk in dc.DISK_USERDEVICE:
            for ref in self._call('VDI.get_by_name_label', '%s-%s%s' % (
                    instance.name, disk, RESIZE_SUFFIX)):
                oc = self._call('VDI.get_other_config', ref)
                if oc.get(dc.OC_NOVA_UUID) == instance.uuid:
                    built.vdis.append(ref)
        return built

    def finish_migration(self, context, migration, instance, disk_info,
                         network_info, image_meta, resize_instance,
                         allocations, block_device_info=None,
                         power_on=True) -> None:
        """Destination: VMs for the (new) flavor on the copied disks."""
        if self._vmops._pciops is not None:
            # before anything is created here: Nova's finish_resize puts
            # the server in ERROR on this host, and the source's VMs and
            # disks stay set aside until the server is deleted
            # (remove_aside)
            self._vmops._pciops.check_image(instance)
        cfg = guest_config.resolve(instance.flavor, image_meta)
        copies = json.loads(disk_info or '{}').get('vdis', {})
        built = vmbuild.Built()
        host = self._ctx.host_ref
        with self._vmops._operation(instance):
            try:
                disks = {}
                for uuid, disk in copies.items():
                    ref = self._call('VDI.get_by_uuid', uuid)
                    built.vdis.append(ref)
                    disks[disk] = ref
                missing = [d for d, _dev in cfg.disks() if d not in disks]
                if missing:
                    raise dexc.XenStubdomDriverError(reason=_(
                        'disks of the flavor did not come with the '
                        'migration: %s') % ', '.join(missing))
                if resize_instance:
                    # grown disks (resize_refusal let nothing else through)
                    for disk, want in (('root', max(cfg.root_gb, 1) * dc.GiB),
                                       ('ephemeral',
                                        cfg.ephemeral_gb * dc.GiB)):
                        if disk in disks and want > int(self._call(
                                'VDI.get_virtual_size', disks[disk])):
                            self._call('VDI.resize', disks[disk], want)
                guest = self._call('VM.create', vmbuild.guest_record(
                    instance, cfg, host))
                built.guest = guest
                built.guest_uuid = self._call('VM.get_uuid', guest)
                stub = self._call('VM.create', vmbuild.stubdom_record(
                    instance, cfg, host, built.guest_uuid,
                    self._conf.stubdom_kernel, self._conf.stubdom_ramdisk))
                built.stubdom = stub
                stub_uuid = self._call('VM.get_uuid', stub)
                self._call('VM.add_to_other_config', guest, dc.OC_STUBDOM,
                           stub_uuid)
                for disk, userdevice in cfg.disks():
                    vmdevices.attach_disk(self._ctx, built, disks[disk], disk,
                                          userdevice)
                vifs = []
                for index, vif in enumerate(network_info or []):
                    net_ref = vmdevices.network_ref(self._ctx, vif)
                    vifs.append((vif, net_ref))
                    vmdevices.attach_nic(self._ctx, built, vif, net_ref, index)
                if power_on:
                    self._vmops.starter.start(instance, built, cfg, vifs)
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('finish_migration failed; removing the VMs '
                              'built here (the disks stay set aside on the '
                              'source)', instance=instance)
                    built.vdis = []
                    self._vmops.stopper.teardown(instance, built,
                                                 raise_first=False)
        LOG.info('cold migration finished here', instance=instance)

    def confirm_migration(self, context, migration, instance, network_info
                          ) -> None:
        """Source: the move is confirmed; remove the set-aside VMs.  The
        disks are the destination's now: they get their names back."""
        built = self._aside(instance)
        if built.empty():
            return
        with self._vmops._operation(instance):
            vdis, built.vdis = built.vdis, []
            self._vmops.stopper.teardown(instance, built, raise_first=True)
            self._set_aside(vmbuild.Built(vdis=vdis), aside=False)
        LOG.info('resize confirmed: source VMs removed', instance=instance)

    def remove_aside(self, instance) -> bool:
        """Remove the VMs and disks a cold migration set aside for a
        *deleted* instance (Nova's ``delete_instance_files``).

        Nova cannot revert a migration whose ``finish_migration`` failed:
        its ``finish_resize`` leaves the server in ERROR on the destination
        and the migration in ``error``, and ``revert_resize`` asks for a
        ``finished`` migration (``nova/compute/manager.py``,
        ``finish_resize``; ``nova/compute/api.py``, ``revert_resize``).
        Nova's delete then destroys on the destination, which must not
        touch set-aside objects (a revert's destroy there is the same
        call).  Once the server is deleted, Nova's periodic
        ``_run_pending_deletes`` asks the server's host (the destination)
        to delete its files: this is that, and the pool's XAPI reaches the
        source's objects from there.  (``_cleanup_incomplete_migrations``
        would ask the source, but finds no migration: ``instance_destroy``
        soft-deletes them with the instance, ``nova/db/main/api.py``.)

        :returns: False when something could not be removed: Nova tries
            again at its next run, up to ``maximum_instance_delete_attempts``.
        """
        built = self._aside(instance)
        if built.empty():
            return True
        with self._vmops._operation(instance):
            try:
                self._vmops.stopper.teardown(instance, built,
                                             raise_first=True)
            except Exception as exc:
                LOG.warning('could not remove what a cold migration set '
                            'aside: %s', exc, instance=instance)
                return False
        LOG.info('removed the VMs and disks a failed cold migration had '
                 'set aside', instance=instance)
        return True

    def finish_revert_migration(self, context, instance, network_info,
                                migration, block_device_info=None,
                                power_on=True) -> None:
        """Source: bring the set-aside VMs and disks back, intact."""
        built = self._aside(instance)
        if not built.guest:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        with self._vmops._operation(instance):
            self._set_aside(built, aside=False)
            if power_on:
                self._vmops._restart(instance, built, None, network_info)
        LOG.info('resize reverted', instance=instance)


def resize_refusal(old, new) -> Optional[str]:
    """Why a resize from flavor *old* to *new* cannot keep the guest's
    disks (None: it can).  Checked on the source before anything changes:
    disks may grow, never shrink, appear or vanish."""
    if new.root_gb < old.root_gb:
        return _('shrinking the root disk from %(old)d GiB to %(new)d GiB '
                 'is not supported (data would be lost); choose a flavor '
                 'with a root disk of at least %(old)d GiB') % {
                     'old': old.root_gb, 'new': new.root_gb}
    old_eph, new_eph = int(old.ephemeral_gb or 0), int(new.ephemeral_gb or 0)
    if bool(old_eph) != bool(new_eph) or new_eph < old_eph:
        return _('the ephemeral disk can grow on resize, not shrink, appear '
                 'or vanish (%(old)d GiB to %(new)d GiB asked)') % {
                     'old': old_eph, 'new': new_eph}
    old_swap, new_swap = int(old.swap or 0), int(new.swap or 0)
    if old_swap != new_swap:
        return _('changing the swap disk on resize (%(old)d MiB to '
                 '%(new)d MiB) is not supported; choose a flavor with '
                 '%(old)d MiB of swap') % {'old': old_swap, 'new': new_swap}
    return None
