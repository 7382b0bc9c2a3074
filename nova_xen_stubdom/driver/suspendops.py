"""Suspend and resume through the agents' save/restore engine.

Not XAPI's VM.suspend/VM.resume: those drive xenopsd's own save, which
asks a dom0 QEMU for the device state; our QEMU runs in the stub domain.
The guest's memory, CPU and device state go into a VDI we own, encrypted
and authenticated with a per-image key kept in the instance's
system_metadata.
"""
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
from nova_xen_stubdom.driver import pv_guests
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmlookup
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)

#: disk name (VDI name_label suffix, other_config) of suspend images
SUSPEND_DISK = 'suspend'
#: instance system_metadata key holding the suspend image's key (hex)
SMETA_IMAGE_KEY = 'xen_stubdom_image_key'


class SuspendOps(common.InstanceOps):
    """Nova's suspend and resume."""

    def suspend(self, context, instance) -> None:
        """Save the guest (memory, CPU, device state) into a VDI we own,
        then halt guest and stub domain through XAPI.

        Not XAPI's VM.suspend: that drives xenopsd's own save, which asks
        a dom0 QEMU for the device state over QMP, and XAPI accepts no
        other image in its place (VM.set_suspend_VDI refuses a replacement
        whose content differs: SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL).
        XAPI sees a Halted guest whose ``other_config`` names the image
        (``dc.OC_SUSPEND_IMAGE``); ``get_info`` reports it SUSPENDED.  See
        doc/source/xapi-behaviour.rst.
        """
        with self._vmops._operation(instance):
            built = self._vmops._require(instance)
            if self._call('VM.get_power_state', built.guest) != \
                    xc.POWER_STATE_RUNNING:
                raise exception.InstanceSuspendFailure(reason=_(
                    'only a running guest can be suspended'))
            pv_guests.check_suspend(self._ctx, instance, built.guest_uuid)
            memory = int(self._call('VM.get_memory_static_max',
                                    built.guest))
            sr = self._vmops._hostops.select_sr()
            vdi = self._call('VDI.create', vmbuild.vdi_record(
                instance, sr, memory + 64 * dc.MiB, SUSPEND_DISK))
            key = mu.new_key().hex()
            try:
                vdi_uuid = self._call('VDI.get_uuid', vdi)
                self._ctx.call_plugin(
                    'save_image', guest_vm_uuid=built.guest_uuid,
                    vdi_uuid=vdi_uuid, key=key,
                    device_state_timeout=self._conf.device_state_timeout)
            except Exception:
                with excutils.save_and_reraise_exception():
                    self._call('VDI.destroy', vdi)
            try:
                # the key first: the Halted event then carries it, so
                # nobody takes the halt for a shutdown
                self._call('VM.add_to_other_config', built.guest,
                           dc.OC_SUSPEND_IMAGE, vdi_uuid)
                self._ctx.call_async('VM.hard_shutdown', built.guest)
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('suspend failed after the save; the guest '
                              'runs on', instance=instance)
                    self._forget_image(built.guest, vdi)
                    if self._call('VM.get_power_state', built.guest) == \
                            xc.POWER_STATE_RUNNING:
                        self._ctx.call_plugin(
                            'undo_save', guest_vm_uuid=built.guest_uuid)
            self._vmops.stopper.stop(instance, None, built.stubdom,
                                     built.guest_uuid)
            instance.system_metadata[SMETA_IMAGE_KEY] = key
        LOG.info('suspended into VDI %s', vdi_uuid, instance=instance)

    def _forget_image(self, guest: str, vdi: Optional[str]) -> None:
        oc = self._call('VM.get_other_config', guest)
        if dc.OC_SUSPEND_IMAGE in oc:
            self._call('VM.remove_from_other_config', guest,
                       dc.OC_SUSPEND_IMAGE)
        if vdi:
            self._call('VDI.destroy', vdi)

    def resume(self, context, instance, network_info,
               block_device_info=None, share_info=None) -> None:
        """Start stub domain and (paused) guest through XAPI, feed the
        device state back and restore memory and CPU from the suspend
        image (checked completely first), then unpause."""
        with self._vmops._operation(instance):
            built = self._vmops._require(instance)
            state = self._call('VM.get_power_state', built.guest)
            vdi = vmlookup.suspend_image(self._ctx, built.guest)
            if state != xc.POWER_STATE_HALTED or not vdi:
                raise exception.InstanceResumeFailure(reason=_(
                    'the guest VM is %s and has no suspend image of this '
                    'driver') % state)
            key = (instance.system_metadata or {}).get(SMETA_IMAGE_KEY)
            if not key:
                raise exception.InstanceResumeFailure(reason=_(
                    'no key for the suspend image of this instance: it was '
                    'not suspended by this driver'))
            try:
                vdi_uuid = self._call('VDI.get_uuid', vdi)
                self._ctx.call_plugin('verify_image', vdi_uuid=vdi_uuid,
                                      key=key,
                                      expected_vm_uuid=built.guest_uuid)
            except (dexc.AgentCallFailed, xapi_errors.XAPIError) as exc:
                # nothing changed: still halted with its image, untouched
                # (the rollback keeps Nova's vm_state SUSPENDED, not ERROR)
                raise exception.InstanceFaultRollback(
                    exception.InstanceResumeFailure(reason=_(
                        'the suspend image was refused: %s') % exc))
            cfg = guest_config.resolve(instance.flavor, None)
            vifs = [(vif, None) for vif in network_info or []]
            try:
                self._vmops.starter.start(instance, built, cfg, vifs,
                                          paused=True)
                self._ctx.call_plugin(
                    'restore_image', guest_vm_uuid=built.guest_uuid,
                    vdi_uuid=vdi_uuid, key=key,
                    expected_vm_uuid=built.guest_uuid,
                    device_state_timeout=self._conf.device_state_timeout)
                self._call('VM.unpause', built.guest)
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('resume failed; the guest is halted and its '
                              'suspend image kept', instance=instance)
                    self._vmops.stopper.stop(instance, built.guest,
                                             built.stubdom, built.guest_uuid)
            self._forget_image(built.guest, vdi)
            instance.system_metadata.pop(SMETA_IMAGE_KEY, None)
        LOG.info('resumed', instance=instance)
