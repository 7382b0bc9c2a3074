"""Spawn: an HVM guest VM plus its device-model stub domain VM.

Spawn builds, in order: the root VDI (image imported over HTTP), the guest
VM, the stub domain VM, the guest's VBDs/VIFs and their mirrors on the stub
domain; then starts the stub domain, has the dom0 agent link it to the
guest, starts the guest and waits until QEMU in the stub domain reports
``running``.  Every object is recorded as it is created; any failure tears
down exactly what exists, so a failed spawn leaves nothing behind.
"""
from typing import Callable

from oslo_log import log as logging
from oslo_utils import excutils

from nova import exception
from nova.i18n import _

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import configdrive
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import imageops
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices
from nova_xen_stubdom.driver import volumeutils

LOG = logging.getLogger(__name__)


class SpawnStepFailed(dexc.XenStubdomDriverError):
    msg_fmt = _('spawn of instance %(uuid)s failed at step "%(step)s": '
                '%(reason)s (everything created was removed)')


class SpawnOps(common.InstanceOps):
    """Nova's spawn."""

    def spawn(self, context, instance, image_meta, network_info,
              power_on: bool = True, block_device_info=None,
              injected_files=None, admin_password=None) -> None:
        # Everything checkable is checked before anything is created.
        if self._vmops._pciops is not None:
            # an image without xen-pci-passthrough: refused before any VM,
            # VDI or grant exists
            self._vmops._pciops.check_image(instance)
        cfg = guest_config.resolve(instance.flavor, image_meta)
        configdrive.check(instance)
        volumes = volumeutils.plan(block_device_info, [
            n for disk, n in cfg.disks() if disk != 'root'])
        boot_volume = volumes[0] if volumes and \
            volumes[0].userdevice == 0 else None
        sr_ref = self._vmops._hostops.select_sr()
        if sr_ref is None:
            raise dexc.XenStubdomDriverError(
                reason=_('no SR matches [xen_stubdom] sr_matching_filter '
                         '%s') % self._conf.sr_matching_filter)
        vifs = [(vif, vmdevices.network_ref(self._ctx, vif))
                for vif in network_info or []]
        built = vmbuild.Built()
        step = ['start']

        def do(name: str, fn: Callable, *args, **kwargs):
            step[0] = name
            return fn(*args, **kwargs)

        with self._vmops._operation(instance, 'spawn'):
            try:
                vdis = {}
                for vol in volumes:
                    # boot from volume: the root disk is the volume's VDI
                    sr, vdis[vol.userdevice] = self._vmops.volumes.connect(
                        vol.target, 'volume %s of %s' % (
                            vol.target.volume_id, instance.name), do)
                    built.srs.append(sr)
                if boot_volume is None:
                    size = max(cfg.root_gb, 1) * dc.GiB
                    vdi = do('VDI.create (root disk)', self._call,
                             'VDI.create', vmbuild.vdi_record(
                                 instance, sr_ref, size, 'root'))
                    built.vdis.append(vdi)
                    do('image import (HTTP PUT /import_raw_vdi)',
                       imageops.import_image, context, self._ctx,
                       instance, image_meta, vdi, size)
                else:
                    vdi = vdis[0]
                guest = do('VM.create (HVM guest)', self._call, 'VM.create',
                           vmbuild.guest_record(instance, cfg,
                                                self._ctx.host_ref))
                built.guest = guest
                built.guest_uuid = do('VM.get_uuid', self._call,
                                      'VM.get_uuid', guest)
                stub = do('VM.create (stub domain)', self._call, 'VM.create',
                          vmbuild.stubdom_record(
                              instance, cfg, self._ctx.host_ref,
                              built.guest_uuid, self._conf.stubdom_kernel,
                              self._conf.stubdom_ramdisk))
                built.stubdom = stub
                stub_uuid = do('VM.get_uuid', self._call, 'VM.get_uuid',
                               stub)
                do('VM.add_to_other_config (guest)', self._call,
                   'VM.add_to_other_config', guest, dc.OC_STUBDOM, stub_uuid)
                disks = {'root': vdi}
                if cfg.ephemeral_gb:
                    disks['ephemeral'] = do(
                        'VDI.create (ephemeral disk)', self._call,
                        'VDI.create', vmbuild.vdi_record(
                            instance, sr_ref, cfg.ephemeral_gb * dc.GiB,
                            'ephemeral'))
                    built.vdis.append(disks['ephemeral'])
                if cfg.swap_mb:
                    disks['swap'] = do(
                        'VDI.create (swap disk)', self._call, 'VDI.create',
                        vmbuild.vdi_record(instance, sr_ref,
                                           cfg.swap_mb * dc.MiB, 'swap'))
                    built.vdis.append(disks['swap'])
                    do('swap signature (HTTP PUT /import_raw_vdi)',
                       imageops.format_swap, self._ctx, instance,
                       disks['swap'], cfg.swap_mb * dc.MiB)
                for disk, userdevice in cfg.disks():
                    vmdevices.attach_disk(
                        self._ctx, built, disks[disk], disk, userdevice, do,
                        volume_id=boot_volume.target.volume_id
                        if boot_volume and userdevice == 0 else None)
                for vol in volumes:
                    if vol is not boot_volume:
                        vmdevices.attach_disk(
                            self._ctx, built, vdis[vol.userdevice],
                            'volume', vol.userdevice, do,
                            volume_id=vol.target.volume_id)
                for index, (vif, net_ref) in enumerate(vifs):
                    vmdevices.attach_nic(self._ctx, built, vif, net_ref,
                                         index, do)
                if configdrive.required_by(instance):
                    configdrive.attach(self._ctx, built, instance, sr_ref,
                                       injected_files, admin_password,
                                       network_info, do)
                if power_on:
                    self._vmops.starter.start(instance, built, cfg, vifs, do)
            except Exception as exc:
                with excutils.save_and_reraise_exception() as ctxt:
                    LOG.error('spawn failed at step "%(step)s": %(exc)s; '
                              'removing what was built', {
                                  'step': step[0], 'exc': exc},
                              instance=instance)
                    self._vmops.stopper.teardown(instance, built,
                                                 raise_first=False)
                    if not isinstance(exc, exception.NovaException) or \
                            isinstance(exc, dexc.XenStubdomDriverError):
                        ctxt.reraise = False
                        raise SpawnStepFailed(
                            uuid=instance.uuid, step=step[0],
                            reason=str(dexc.translate(exc))) from exc
        LOG.info('spawned: guest %(guest)s with its stub domain %(stub)s',
                 {'guest': built.guest, 'stub': built.stubdom},
                 instance=instance)
