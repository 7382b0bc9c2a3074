"""Rebuild: the new image on the instance's own guest VM, its stub domain
started afresh for it.

Nova's default rebuild destroys the instance and spawns it again: new XAPI
VMs, new VIFs, volumes detached and attached again.  On XAPI the guest VM
can keep its identity instead -- its uuid, its VIFs (Neutron's ports, their
MACs and devices), its volume VBDs and its stub domain VM -- because what
the image decides lives elsewhere:

* the **root disk**: a new VDI on the old root's SR, the image imported
  into it *before* anything is stopped (a bad image leaves the server
  running as it was).  A VBD cannot change its VDI in XAPI, so the root's
  guest VBD and its stub-domain mirror are replaced at userdevice 0;
* the **ephemeral disk**: a new blank one unless ``preserve_ephemeral``
  (what Nova's destroy + spawn gives);
* the **config drive**, when the instance has one: built again (Nova's
  rebuild brings new metadata, files and admin password);
* the guest's **firmware / platform** flags the image asks for
  (``HVM_boot_params``, ``platform``);
* the **stub domain**: halted with the guest and started afresh (new
  domain, new device-model configuration from the new image's disk bus,
  NIC model and video).

Volumes are not touched, and Nova's detach/attach callbacks are not needed.
A boot-from-volume instance is left to Nova's default path (it reimages
the volume through Cinder).  Any failure before the new disks are committed
puts the old disks, flags and power state back and removes what was made.
"""
from typing import Callable, Dict, List

from oslo_log import log as logging
from oslo_utils import excutils

from nova.compute import task_states

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import configdrive
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import imageops
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices
from nova_xen_stubdom.driver import volumeutils
from nova_xen_stubdom.xapi import constants as xc

LOG = logging.getLogger(__name__)

#: guest VM fields the image decides (vmbuild.guest_record)
IMAGE_FIELDS = ('HVM_boot_params', 'platform')


class RebuildOps(common.InstanceOps):
    def _disks(self, guest: str) -> Dict[int, dict]:
        """userdevice -> record of the guest's VBDs."""
        out = {}
        for vbd in self._call('VM.get_VBDs', guest):
            rec = self._call('VBD.get_record', vbd)
            rec['ref'] = vbd
            out[int(rec['userdevice'])] = rec
        return out

    def boots_from_volume(self, instance) -> bool:
        built = self._vmops._require(instance)
        root = self._disks(built.guest).get(dc.DISK_USERDEVICE['root'])
        return bool(root and dc.OC_VOLUME_ID in root['other_config'])

    def rebuild(self, context, instance, image_meta, injected_files,
                admin_password, network_info,
                preserve_ephemeral: bool) -> None:
        # checked before anything changes (ImageUnacceptable, config drive)
        cfg = guest_config.resolve(instance.flavor, image_meta)
        configdrive.check(instance)
        instance.task_state = task_states.REBUILD_SPAWNING
        instance.save(expected_task_state=[task_states.REBUILDING])
        with self._vmops._operation(instance, 'rebuild'):
            built = self._vmops._require(instance)
            disks = self._disks(built.guest)
            replace = ['root']
            if 'ephemeral' in dict(cfg.disks()) and not preserve_ephemeral:
                replace.append('ephemeral')
            if configdrive.required_by(instance):
                replace.append(configdrive.DISK)
            old = {d: disks[self._userdevice(d)] for d in replace
                   if self._userdevice(d) in disks}
            saved = {f: self._call('VM.get_%s' % f, built.guest)
                     for f in IMAGE_FIELDS}
            was_running = self._vmops.stopper.power_state(built.guest) in (
                xc.POWER_STATE_RUNNING, xc.POWER_STATE_PAUSED)
            self._replace(context, instance, image_meta, cfg, built, old,
                          saved, was_running, injected_files,
                          admin_password, network_info)
        LOG.info('rebuilt on guest %(guest)s: %(disks)s new, stub domain '
                 'restarted for the new image',
                 {'guest': built.guest, 'disks': ', '.join(replace)},
                 instance=instance)

    @staticmethod
    def _userdevice(disk: str) -> int:
        if disk == configdrive.DISK:
            return configdrive.USERDEVICE
        return dc.DISK_USERDEVICE[disk]

    def _replace(self, context, instance, image_meta, cfg, built, old,
                 saved, was_running, injected_files, admin_password,
                 network_info) -> None:
        step = ['start']

        def do(name: str, fn: Callable, *args, **kwargs):
            step[0] = name
            return fn(*args, **kwargs)
        sr = self._call('VDI.get_SR', old['root']['VDI'])
        made = vmbuild.Built(guest=built.guest, stubdom=built.stubdom)
        removed: List[str] = []
        stopped = []
        try:
            new_vdis = self._new_disks(context, instance, image_meta, cfg,
                                       sr, old, made, do)
            stopped.append(True)
            do('stop the guest and its stub domain', self._vmops.stopper.stop,
               instance, built.guest, built.stubdom, built.guest_uuid)
            for disk, rec in sorted(old.items()):
                removed.append(disk)
                for vbd in self._pair(built, rec):
                    do('VBD.destroy (old %s)' % disk, self._call,
                       'VBD.destroy', vbd)
            for disk, vdi in sorted(new_vdis.items()):
                vmdevices.attach_disk(self._ctx, made, vdi, disk,
                                      self._userdevice(disk), do)
            if configdrive.DISK in old:
                do('config drive', configdrive.attach, self._ctx,
                   made, instance, sr, injected_files,
                   admin_password, network_info, do)
            self._set_image_fields(built.guest, cfg, instance, do)
            vifs = [(vif, None) for vif in network_info or []]
            self._vmops.starter.start(instance, built, cfg, vifs, do)
        except Exception as exc:
            with excutils.save_and_reraise_exception():
                LOG.error('rebuild failed at step "%(step)s": %(exc)s; '
                          'putting the old disks back',
                          {'step': step[0], 'exc': exc}, instance=instance)
                self._roll_back(instance, built, made, old, removed, saved,
                                was_running and bool(stopped), network_info)
        for rec in old.values():
            self._forget(instance, rec['VDI'])

    def _new_disks(self, context, instance, image_meta, cfg, sr, old, made,
                   do) -> Dict[str, str]:
        """The new root (image imported) and blank ephemeral VDIs."""
        out = {}
        size = max(cfg.root_gb, 1) * dc.GiB
        out['root'] = do('VDI.create (new root disk)', self._call,
                         'VDI.create', vmbuild.vdi_record(
                             instance, sr, size, 'root'))
        made.vdis.append(out['root'])
        do('image import (HTTP PUT /import_raw_vdi)', imageops.import_image,
           context, self._ctx, instance, image_meta, out['root'], size)
        if 'ephemeral' in old:
            out['ephemeral'] = do(
                'VDI.create (new ephemeral disk)', self._call, 'VDI.create',
                vmbuild.vdi_record(instance, sr, cfg.ephemeral_gb * dc.GiB,
                                   'ephemeral'))
            made.vdis.append(out['ephemeral'])
        return out

    def _pair(self, built, rec: dict) -> List[str]:
        """The guest's VBD *rec* and its stub-domain mirror."""
        out = [rec['ref']]
        for vbd in self._call('VM.get_VBDs', built.stubdom):
            if self._call('VBD.get_other_config', vbd).get(
                    dc.OC_MIRROR_OF) == rec['uuid']:
                out.append(vbd)
        return out

    def _set_image_fields(self, guest: str, cfg, instance, do) -> None:
        want = vmbuild.guest_record(instance, cfg, self._ctx.host_ref)
        for field in IMAGE_FIELDS:
            do('VM.set_%s' % field, self._call, 'VM.set_%s' % field, guest,
               want[field])

    def _roll_back(self, instance, built, made, old, removed, saved,
                   restart, network_info) -> None:
        """Old VBDs back (VBDs cannot change their VDI: made again),
        new ones and their VDIs gone, flags and power state restored."""
        if restart:
            try:
                self._vmops.stopper.stop(instance, built.guest, built.stubdom,
                                         built.guest_uuid)
            except Exception as exc:
                LOG.warning('rollback: stop failed: %s', exc,
                            instance=instance)
        for vbd in made.vbds:
            volumeutils.unplug_and_destroy(self._call, 'VBD', vbd, instance)
        again = vmbuild.Built(guest=built.guest, stubdom=built.stubdom)
        try:
            for field, value in saved.items():
                self._call('VM.set_%s' % field, built.guest, value)
            for disk in removed:
                rec = old[disk]
                for vbd in self._pair(built, rec):
                    volumeutils.unplug_and_destroy(self._call, 'VBD', vbd,
                                                   instance)
                if disk == configdrive.DISK:
                    configdrive.attach_vdi(self._ctx, again, rec['VDI'],
                                           vmbuild.direct)
                else:
                    vmdevices.attach_disk(self._ctx, again, rec['VDI'], disk,
                                          int(rec['userdevice']))
        except Exception as exc:
            LOG.error('rollback: could not put the old disks back: %s', exc,
                      instance=instance)
        for vdi in made.vdis:
            self._forget(instance, vdi)
        if restart:
            try:
                self._vmops._restart(instance, built, None, network_info)
            except Exception as exc:
                LOG.error('rollback: could not restart the instance: %s',
                          exc, instance=instance)

    def _forget(self, instance, vdi: str) -> None:
        try:
            self._call('VDI.destroy', vdi)
        except Exception as exc:
            LOG.warning('could not destroy VDI %(vdi)s: %(exc)s',
                        {'vdi': vdi, 'exc': exc}, instance=instance)
