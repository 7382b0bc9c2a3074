"""Cinder volumes on an HVM guest and its stub domain.

A volume is a VDI of a per-target ``iscsi`` SR (:mod:`volumeutils`).  It
reaches the instance as two VBDs, like every disk of ours:

* the **guest's** VBD at the userdevice Nova's mountpoint names
  (``/dev/xvdb`` -> 1), ``unpluggable`` so it can leave a running guest;
* the **stub domain's mirror** VBD at the same userdevice: QEMU in the stub
  domain emulates the disk (IDE/AHCI) from it for a guest without PV
  drivers.

Hot attach: XAPI hot-plugs a VBD only into a *running* guest, and into an
HVM guest only when it claims PV drivers with VBD hot-plug
(xapi-project/xen-api ``ocaml/xapi/xapi_vbd_helpers.ml``
``valid_operations``: ``VM_guest_metrics.can_use_hotplug_vbd``, else
``VM_MISSING_PV_DRIVERS`` / ``OPERATION_NOT_ALLOWED``; :mod:`hotplug`).
Where the guest's new VBD lists ``plug`` in its ``allowed_operations``,
only it is plugged (``VBD.plug``): the volume appears to the guest through
its **PV block frontend** at once.  Otherwise (no PV drivers, paused)
nothing is plugged and the volume appears at the instance's next start.
The mirror is created but left unplugged either way: QEMU's emulated IDE
and AHCI disks are not hot-pluggable (QEMU has no hotplug handler for
``ide-hd``, and an AHCI port cannot be added to a running controller), so
an emulated disk cannot appear in a running guest anyway; the stub domain
attaches the mirror at its next start and QEMU emulates the volume from
the instance's next boot (the device-model config lists the guest's
volume VBDs, :meth:`volumeutils.VolumeStorage.dm_disks`) -- the same limit
an HVM guest has on XAPI with QEMU in dom0.

Detach from a running guest is refused, with nothing changed, where XAPI
will not unplug the guest's attached VBD (an HVM guest without PV drivers,
a paused guest): stop the server first.
Attach to a stopped instance creates both VBDs; they plug when it starts.
Detach unplugs what is plugged (the guest's VBD, and the mirror when the
stub domain attached it at a later start), destroys both VBDs, then
forgets the SR when no other VBD uses it.  A failure at any step of an
attach removes what the attach created (VBDs, and the SR with its PBD and
VDI records when nothing else uses it); bad connection_info is refused
before anything is touched.

Swap (Cinder's volume migration, the only caller Nova lets through) copies
the old volume's contents into the new one with ``VDI.copy`` *into* the new
LUN's VDI and moves the instance's two VBDs over to it at the same
userdevice.  XAPI has no live block mirror onto an existing VDI, so the copy
is consistent only while nothing writes: on a running guest the old guest
VBD is unplugged first.  Whether it may be is XAPI's call (``VBD.unplug``
on a running HVM guest needs its PV drivers, ``xapi_vbd_helpers.ml``
``valid_operations``): a refusal is reported as such with nothing changed.
A mirror the running stub domain has attached (the volume was there at its
last start) is held open by QEMU as an emulated disk, whose backing cannot
change under a running guest: that swap is refused up front.  Any failure
after the first change puts the old volume back exactly (its VBDs, plugged
as they were) and forgets the new volume's SR.
"""
from typing import Callable, List, Optional

from oslo_log import log as logging
from oslo_utils import excutils

from nova import exception
from nova.i18n import _
from nova.virt import driver as virt_driver

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import hotplug
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices
from nova_xen_stubdom.driver import volumeutils
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)


def refuse_volumes(block_device_info, operation: str) -> None:
    """Moving a server with volumes to another host is not done yet: the
    destination would have to introduce the volumes' SRs before the guest
    arrives (untested), so it is refused up front."""
    if virt_driver.block_device_info_get_mapping(block_device_info):
        raise exception.MigrationPreCheckError(reason=_(
            '%s of a server with Cinder volumes is not supported by the '
            'xen_stubdom driver yet') % operation)


class VolumeOpRefused(dexc.XenStubdomDriverError):
    msg_fmt = _('volume %(op)s on instance %(uuid)s refused: %(reason)s '
                '(nothing was changed)')


class VolumeOps(common.InstanceOps):
    def __init__(self, ctx, vmops) -> None:
        super().__init__(ctx, vmops)
        self._storage: volumeutils.VolumeStorage = vmops.volumes

    def get_volume_connector(self, instance) -> dict:
        return self._storage.connector()

    # -- attach -------------------------------------------------------------
    def _check_slot(self, built: vmbuild.Built, userdevice: int,
                    volume_id: str) -> None:
        for vm in (built.guest, built.stubdom):
            for vbd in self._call('VM.get_VBDs', vm):
                rec = self._call('VBD.get_record', vbd)
                if rec['other_config'].get(dc.OC_VOLUME_ID) == volume_id:
                    raise exception.InvalidVolume(reason=_(
                        'volume %s is already attached to this instance')
                        % volume_id)
                if rec['userdevice'] == str(userdevice):
                    raise exception.InvalidDevicePath(
                        path='userdevice %d (in use)' % userdevice)

    def attach_volume(self, connection_info, instance,
                      mountpoint: str) -> None:
        target = volumeutils.parse_connection_info(connection_info)
        userdevice = volumeutils.userdevice_of(mountpoint)
        with self._vmops._operation(instance, 'attach_volume'):
            built = self._vmops._require(instance)
            self._check_slot(built, userdevice, target.volume_id)
            state = self._vmops.stopper.power_state(built.guest)
            hot = False
            made = vmbuild.Built(guest=built.guest,
                                 stubdom=built.stubdom)
            step = ['start']

            def do(name: str, fn: Callable, *args, **kwargs):
                step[0] = name
                return fn(*args, **kwargs)
            sr = None
            try:
                sr, vdi = self._storage.connect(
                    target, 'volume %s of %s' % (target.volume_id,
                                                 instance.name), do)
                vmdevices.attach_disk(self._ctx, made, vdi, 'volume',
                                      userdevice, do,
                                      volume_id=target.volume_id)
                hot = do('VBD.get_allowed_operations', hotplug.can_plug,
                         self._call, 'VBD', made.vbds[0], state)
                if hot:
                    do('VBD.plug (guest PV frontend)', self._call,
                       'VBD.plug', made.vbds[0])
            except Exception as exc:
                with excutils.save_and_reraise_exception():
                    LOG.error('attach of volume %(vol)s failed at step '
                              '"%(step)s": %(exc)s; removing what it made',
                              {'vol': target.volume_id, 'step': step[0],
                               'exc': exc}, instance=instance)
                    self._remove_vbds(instance, made.vbds)
                    if sr is not None:
                        self._storage.purge(sr, quiet=True)
        if hot or state != xc.POWER_STATE_RUNNING:
            LOG.info('volume %(vol)s attached at userdevice %(dev)d (%(how)s)',
                     {'vol': target.volume_id, 'dev': userdevice,
                      'how': 'hot-plugged' if hot else 'from next start'},
                     instance=instance)
        else:
            LOG.warning('volume %(vol)s attached at userdevice %(dev)d from '
                        'the next start of the instance: XAPI hot-plugs a '
                        'VBD only into a running guest that claims PV '
                        'drivers (VM_guest_metrics.can_use_hotplug_vbd)',
                        {'vol': target.volume_id, 'dev': userdevice},
                        instance=instance)

    def _remove_vbds(self, instance, vbds: List[str]) -> None:
        for vbd in vbds:
            volumeutils.unplug_and_destroy(self._call, 'VBD', vbd, instance)

    # -- detach -------------------------------------------------------------
    def _volume_vbds(self, built: vmbuild.Built, volume_id: str
                     ) -> List[str]:
        out = []
        for vm in (built.guest, built.stubdom):
            for vbd in self._call('VM.get_VBDs', vm):
                oc = self._call('VBD.get_other_config', vbd)
                if oc.get(dc.OC_VOLUME_ID) == volume_id:
                    out.append(vbd)
        return out

    def detach_volume(self, connection_info, instance,
                      mountpoint: Optional[str]) -> None:
        target = volumeutils.parse_connection_info(connection_info)
        with self._vmops._operation(instance, 'detach_volume'):
            built = self._vmops._require(instance)
            vbds = self._volume_vbds(built, target.volume_id)
            if not vbds:
                LOG.warning('detach: volume %s is not attached here',
                            target.volume_id, instance=instance)
            for vbd in vbds:
                reason = hotplug.unplug_refusal(
                    self._call, self._vmops.stopper.power_state, 'VBD', vbd)
                if reason:
                    raise VolumeOpRefused(op='detach', uuid=instance.uuid,
                                          reason=reason)
            for vbd in vbds:
                if self._call('VBD.get_currently_attached', vbd):
                    self._call('VBD.unplug', vbd)
                self._call('VBD.destroy', vbd)
            sr = self._storage.find_sr(target)
            if sr is not None:
                self._storage.purge(sr)
        LOG.info('volume %s detached', target.volume_id, instance=instance)

    # -- swap -----------------------------------------------------------------
    def swap_volume(self, old_connection_info, new_connection_info,
                    instance, mountpoint: str) -> None:
        old = volumeutils.parse_connection_info(old_connection_info)
        new = volumeutils.parse_connection_info(new_connection_info)
        if (old.sr_uuid, old.lun) == (new.sr_uuid, new.lun):
            raise exception.InvalidVolume(reason=_(
                'volume %(new)s is the LUN volume %(old)s is on: nothing '
                'to swap') % {'new': new.volume_id, 'old': old.volume_id})
        userdevice = volumeutils.userdevice_of(mountpoint)
        with self._vmops._operation(instance, 'swap_volume'):
            built = self._vmops._require(instance)
            old_vbds = self._volume_vbds(built, old.volume_id)
            guest_vbd = self._swappable(built, old_vbds, old, userdevice)
            old_vdi = self._call('VBD.get_VDI', guest_vbd)
            plugged = self._call('VBD.get_currently_attached', guest_vbd)
            self._swap(instance, built, old, new, old_vbds, old_vdi,
                       userdevice, plugged)
        LOG.info('volume %(old)s swapped for %(new)s at userdevice %(dev)d',
                 {'old': old.volume_id, 'new': new.volume_id,
                  'dev': userdevice}, instance=instance)

    def _swappable(self, built: vmbuild.Built, vbds: List[str],
                   old: volumeutils.VolumeTarget, userdevice: int) -> str:
        """The guest's VBD of *old* at *userdevice*, or a clear refusal."""
        guest = [v for v in vbds
                 if self._call('VBD.get_VM', v) == built.guest]
        if not guest:
            raise exception.VolumeNotFound(volume_id=old.volume_id)
        if self._call('VBD.get_userdevice', guest[0]) != str(userdevice):
            raise exception.InvalidDevicePath(path=_(
                '%(dev)d (volume %(vol)s is not at that userdevice)') %
                {'dev': userdevice, 'vol': old.volume_id})
        for vbd in vbds:
            if vbd != guest[0] and \
                    self._call('VBD.get_currently_attached', vbd):
                raise exception.InvalidVolume(reason=_(
                    'QEMU in the running stub domain emulates volume %s '
                    'as a disk of the guest (it was attached at the last '
                    'start), and an emulated disk cannot change its '
                    'backing under a running guest: stop the server to '
                    'swap it') % old.volume_id)
        return guest[0]

    def _swap(self, instance, built, old, new, old_vbds: List[str],
              old_vdi: str, userdevice: int, plugged: bool) -> None:
        step = ['start']

        def do(name: str, fn: Callable, *args, **kwargs):
            step[0] = name
            return fn(*args, **kwargs)
        made = vmbuild.Built(guest=built.guest, stubdom=built.stubdom)
        new_sr = None
        unplugged = destroyed = False
        try:
            new_sr, new_vdi = self._storage.connect(
                new, 'volume %s of %s' % (new.volume_id, instance.name), do)
            if plugged:
                try:
                    do('VBD.unplug (old volume, guest)', self._call,
                       'VBD.unplug', old_vbds[0])
                except xapi_errors.XAPIError as exc:
                    # XAPI's rule, not ours: a running HVM guest gives a
                    # disk up only through its PV drivers
                    raise exception.InvalidVolume(reason=_(
                        'XAPI refuses to unplug volume %(vol)s from the '
                        'running guest (%(exc)s; a running HVM guest needs '
                        'its PV drivers for that): stop the server to swap '
                        'it') % {'vol': old.volume_id, 'exc': exc}) from exc
                unplugged = True
            do('VDI.copy (old volume into the new)', self._call, 'VDI.copy',
               old_vdi, new_sr, volumeutils.NULL_REF, new_vdi)
            destroyed = True        # some may be gone if this fails
            for vbd in old_vbds:
                do('VBD.destroy (old volume)', self._call, 'VBD.destroy', vbd)
            vmdevices.attach_disk(self._ctx, made, new_vdi, 'volume',
                                  userdevice, do, volume_id=new.volume_id)
            if plugged:
                do('VBD.plug (new volume, guest)', self._call, 'VBD.plug',
                   made.vbds[0])
        except Exception as exc:
            with excutils.save_and_reraise_exception():
                LOG.error('swap of volume %(old)s for %(new)s failed at '
                          'step "%(step)s": %(exc)s; putting the old volume '
                          'back', {'old': old.volume_id, 'new': new.volume_id,
                                   'step': step[0], 'exc': exc},
                          instance=instance)
                self._remove_vbds(instance, made.vbds)
                self._restore_old(instance, built, old, old_vbds, old_vdi,
                                  userdevice, plugged, unplugged, destroyed)
                if new_sr is not None:
                    self._storage.purge(new_sr, quiet=True)
        old_sr = self._storage.find_sr(old)
        if old_sr is not None:
            self._storage.purge(old_sr, quiet=True)

    def _restore_old(self, instance, built, old, old_vbds: List[str],
                     old_vdi: str, userdevice: int, plugged: bool,
                     unplugged: bool, destroyed: bool) -> None:
        """The old volume's VBDs as they were before a failed swap."""
        try:
            guest_vbd = old_vbds[0]
            if destroyed:
                self._remove_vbds(instance, old_vbds)
                again = vmbuild.Built(guest=built.guest,
                                      stubdom=built.stubdom)
                vmdevices.attach_disk(self._ctx, again, old_vdi, 'volume',
                                      userdevice, volume_id=old.volume_id)
                guest_vbd = again.vbds[0]
            if plugged and (unplugged or destroyed):
                self._call('VBD.plug', guest_vbd)
        except Exception as exc:
            LOG.error('could not put volume %(vol)s back after a failed '
                      'swap: %(exc)s', {'vol': old.volume_id, 'exc': exc},
                      instance=instance)

    def forget_unused(self, block_device_info) -> None:
        """Forget the SRs of *block_device_info*'s volumes no VBD uses."""
        for bdm in virt_driver.block_device_info_get_mapping(
                block_device_info):
            try:
                target = volumeutils.parse_connection_info(
                    bdm.get('connection_info'))
            except exception.NovaException:
                continue        # nothing of ours can exist for it
            sr = self._storage.find_sr(target)
            if sr is not None:
                self._storage.purge(sr, quiet=True)
