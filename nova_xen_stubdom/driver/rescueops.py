"""Rescue and unrescue: a rescue guest, in a fresh stub domain, with the
instance's own root disk attached as its second disk.

On XAPI's terms the instance's guest/stub-domain pair is halted, not
destroyed (its VMs, VBDs and disks stay as they are), and a second pair is
built beside it: ``<name>-rescue`` booting a new VDI imported from the
rescue image, with the original root VDI as its disk 1, and
``<name>-rescue-dm`` running its device model -- mirrors included, as for
any guest.  Unrescue removes the rescue pair and its VDI (never the
original disk) and starts the original pair again, so the instance comes
back exactly as it was.  A failure while rescuing removes what was built
and restarts the original pair; a failure while unrescuing leaves the
rescue pair for a retry (or for delete, which removes both pairs).
"""
from typing import Optional

from oslo_log import log as logging
from oslo_utils import excutils

from nova import exception
from nova.i18n import _

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import imageops
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices
from nova_xen_stubdom.xapi import constants as xc

LOG = logging.getLogger(__name__)

RESCUE_SUFFIX = '-rescue'
ROLE_RESCUE_GUEST = 'rescue-guest'
ROLE_RESCUE_STUBDOM = 'rescue-stubdom'
#: the rescue VDI's disk name (name_label ``<instance>-rescue``)
RESCUE_DISK = 'rescue'
#: where the instance's own root disk appears in the rescue guest
ORIGINAL_ROOT_USERDEVICE = 1


class RescueOps(common.InstanceOps):
    def __init__(self, ctx, vmops, snapshotops) -> None:
        super().__init__(ctx, vmops)
        self._snapshotops = snapshotops

    # -- lookup -----------------------------------------------------------
    def find(self, instance) -> vmbuild.Built:
        """The rescue pair and VDI of *instance*, asked from XAPI."""
        built = vmbuild.Built()
        name = instance.name + RESCUE_SUFFIX
        for label, role in ((name, ROLE_RESCUE_GUEST),
                            (name + dc.STUBDOM_SUFFIX, ROLE_RESCUE_STUBDOM)):
            for ref in self._call('VM.get_by_name_label', label):
                oc = self._call('VM.get_other_config', ref)
                if oc.get(dc.OC_NOVA_UUID) != instance.uuid or \
                        oc.get(dc.OC_ROLE) != role:
                    continue
                if role == ROLE_RESCUE_GUEST:
                    built.guest = ref
                    built.guest_uuid = self._call('VM.get_uuid', ref)
                else:
                    built.stubdom = ref
        for ref in self._call('VDI.get_by_name_label', '%s-%s' % (
                instance.name, RESCUE_DISK)):
            oc = self._call('VDI.get_other_config', ref)
            if oc.get(dc.OC_NOVA_UUID) == instance.uuid:
                built.vdis.append(ref)
        return built

    def power_state(self, instance) -> Optional[str]:
        """XAPI power state of the rescue guest, or None without one."""
        built = self.find(instance)
        return self._vmops.stopper.power_state(built.guest) if built.guest \
            else None

    # -- rescue -----------------------------------------------------------
    def rescue(self, context, instance, network_info, image_meta) -> None:
        with self._vmops._operation(instance, 'rescue'):
            if not self.find(instance).empty():
                raise exception.InstanceNotRescuable(
                    instance_id=instance.uuid,
                    reason=_('a rescue guest already exists'))
            original = self._vmops._require(instance)
            # Nova powers the instance off before asking for a rescue;
            # restart it after a failure only if it was running here
            was_running = self._vmops.stopper.power_state(original.guest) == \
                xc.POWER_STATE_RUNNING
            stopped = []
            root = self._snapshotops.root_vdi(original.guest)
            cfg = guest_config.resolve(instance.flavor, image_meta)
            vifs = [(vif, vmdevices.network_ref(self._ctx, vif))
                    for vif in network_info or []]
            rescue = vmbuild.Built()
            step = ['start']

            def do(name, fn, *args, **kwargs):
                step[0] = name
                return fn(*args, **kwargs)
            try:
                self._build(context, instance, image_meta, cfg, vifs, root,
                            rescue, do)
                stopped.append(True)
                do('stop the instance', self._vmops.stopper.stop, instance,
                   original.guest, original.stubdom, original.guest_uuid)
                self._vmops.starter.start(instance, rescue, cfg, vifs, do)
            except Exception as exc:
                with excutils.save_and_reraise_exception():
                    LOG.error('rescue failed at step "%(step)s": %(exc)s;'
                              ' removing the rescue guest',
                              {'step': step[0], 'exc': exc},
                              instance=instance)
                    self._vmops.stopper.teardown(instance, rescue,
                                                 raise_first=False)
                    if was_running and stopped:
                        self._restart_original(instance, original,
                                               network_info)
        LOG.info('rescued: guest %(guest)s boots the rescue image with the '
                 'root disk at userdevice %(dev)d',
                 {'guest': rescue.guest, 'dev': ORIGINAL_ROOT_USERDEVICE},
                 instance=instance)

    def _build(self, context, instance, image_meta, cfg, vifs, root: str,
               rescue: vmbuild.Built, do) -> None:
        sr_ref = self._call('VDI.get_SR', root)
        size = max(cfg.root_gb, 1) * dc.GiB
        vdi = do('VDI.create (rescue disk)', self._call, 'VDI.create',
                 vmbuild.vdi_record(instance, sr_ref, size, RESCUE_DISK))
        rescue.vdis.append(vdi)
        do('image import (HTTP PUT /import_raw_vdi)', imageops.import_image,
           context, self._ctx, instance, image_meta, vdi, size)
        guest_rec = vmbuild.guest_record(instance, cfg, self._ctx.host_ref)
        guest_rec['name_label'] = instance.name + RESCUE_SUFFIX
        guest_rec['other_config'][dc.OC_ROLE] = ROLE_RESCUE_GUEST
        rescue.guest = do('VM.create (rescue guest)', self._call,
                          'VM.create', guest_rec)
        rescue.guest_uuid = self._call('VM.get_uuid', rescue.guest)
        stub_rec = vmbuild.stubdom_record(
            instance, cfg, self._ctx.host_ref, rescue.guest_uuid,
            self._conf.stubdom_kernel, self._conf.stubdom_ramdisk)
        stub_rec['name_label'] = (instance.name + RESCUE_SUFFIX +
                                  dc.STUBDOM_SUFFIX)
        stub_rec['other_config'][dc.OC_ROLE] = ROLE_RESCUE_STUBDOM
        rescue.stubdom = do('VM.create (rescue stub domain)', self._call,
                            'VM.create', stub_rec)
        stub_uuid = self._call('VM.get_uuid', rescue.stubdom)
        self._call('VM.add_to_other_config', rescue.guest, dc.OC_STUBDOM,
                   stub_uuid)
        vmdevices.attach_disk(self._ctx, rescue, vdi, RESCUE_DISK, 0, do)
        vmdevices.attach_disk(self._ctx, rescue, root, 'root',
                              ORIGINAL_ROOT_USERDEVICE, do)
        for index, (vif, net_ref) in enumerate(vifs):
            vmdevices.attach_nic(self._ctx, rescue, vif, net_ref, index, do)

    def _restart_original(self, instance, original, network_info) -> None:
        try:
            self._vmops._restart(instance, original, None, network_info)
        except Exception as exc:
            LOG.error('could not restart the instance after a failed '
                      'rescue: %s', exc, instance=instance)

    # -- unrescue ---------------------------------------------------------
    def unrescue(self, context, instance) -> None:
        with self._vmops._operation(instance, 'unrescue'):
            rescue = self.find(instance)
            original = self._vmops._require(instance)
            # the original root is one of the rescue guest's VBDs: only
            # the VBDs go with the rescue VMs, the VDI stays
            self._vmops.stopper.teardown(instance, rescue, raise_first=True)
            self._vmops._restart(instance, original, None,
                                 instance.get_network_info())
        LOG.info('unrescued', instance=instance)

    def destroy(self, instance) -> None:
        """Remove a rescue pair left by a rescue (delete while rescued)."""
        with self._vmops._operation(instance, 'destroy rescue'):
            rescue = self.find(instance)
            if not rescue.empty():
                self._vmops.stopper.teardown(instance, rescue,
                                             raise_first=True)
