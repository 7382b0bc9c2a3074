"""Interface hot-plug: Nova's ``attach_interface`` / ``detach_interface``.

A NIC of ours is two XAPI VIFs with one device number
(:func:`vmdevices.attach_nic`): the **guest's** VIF (its PV network
frontend, used by a guest with PV drivers) and the **stub domain's
mirror**, the netfront that QEMU in the stub domain bridges to the NIC it
emulates (e1000/rtl8139) for a guest without PV drivers.

What XAPI allows decides the shape (xapi-project/xen-api
``ocaml/xapi/xapi_vif_helpers.ml`` ``valid_operations``, modelled in
``sim/vif_rules.py``):

* ``VIF.plug``/``unplug`` need the VM ``Running`` (not paused), and for an
  **HVM** VM the guest must claim hot-plug support
  (``VM_guest_metrics.can_use_hotplug_vif = yes``, or PV drivers detected);
  otherwise ``VM_MISSING_PV_DRIVERS`` or ``OPERATION_NOT_ALLOWED``.  The
  stub domain is a PV VM: its VIFs have no such check.
* even where XAPI plugs a VIF into a running HVM guest, xenopsd adds only
  the PV device (``xenops_server_xen.ml`` ``VIF.plug_exn``: ``Device.Vif.add``;
  QEMU's NICs, ``qemu_vifs``, are made only when the device model starts).
  Our QEMU lives in the stub domain and is not told of new NICs while it
  runs (it has no hot-add path: a hot-plugged emulated PCI NIC would need
  ``device_add`` over QMP into the stub domain plus ACPI hot-plug in the
  guest), so the emulated NIC of a new interface exists from the
  instance's **next start** -- the device-model config lists the guest's
  VIFs as XAPI has them (:meth:`VMStarter._dm_nics` in vmstart).

So **attach**: both VIFs are created; on a running guest that XAPI lets
hot-plug (``plug`` in the new VIF's ``allowed_operations``) the guest's
VIF is plugged and the guest sees a PV NIC at once; otherwise (no PV
drivers, paused, stopped) nothing is plugged and the NIC appears when the
instance next starts (the log says which).  The mirror is never plugged
into a running stub domain: it would be a netfront no QEMU NIC uses.
**Detach**: both VIFs are unplugged where attached and destroyed.  A
guest whose attached VIF XAPI will not unplug (a running HVM guest without
PV drivers, a paused guest) is refused before anything changes, with the
reason: XAPI cannot take a NIC away from such a guest -- stop it first.
A failure part-way through either operation undoes what it did: no VIF is
left behind by an attach, none lost by a detach.
"""
import re
from typing import Callable, List, Optional, Tuple

from oslo_log import log as logging
from oslo_utils import excutils

from nova.i18n import _

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import hotplug
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices
from nova_xen_stubdom.driver import volumeutils
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)

#: what XAPI accepts as a VIF's MAC (xen-api helpers.ml is_valid_MAC)
_MAC = re.compile(r'^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$')


class InterfaceOpRefused(dexc.XenStubdomDriverError):
    msg_fmt = _('interface %(op)s on instance %(uuid)s refused: %(reason)s '
                '(nothing was changed)')


class InterfaceOps(common.InstanceOps):
    # -- lookup -------------------------------------------------------------
    def _nic_vifs(self, built: vmbuild.Built, port_id: str
                  ) -> Tuple[Optional[str], Optional[str]]:
        """(guest VIF, stub-domain mirror VIF) of Nova port *port_id*."""
        guest_vif = guest_uuid = None
        for ref in self._call('VM.get_VIFs', built.guest):
            rec = self._call('VIF.get_record', ref)
            if rec['other_config'].get(dc.OC_VIF_ID) == port_id:
                guest_vif, guest_uuid = ref, rec['uuid']
                break
        if guest_vif is None:
            return None, None
        for ref in self._call('VM.get_VIFs', built.stubdom):
            oc = self._call('VIF.get_other_config', ref)
            if oc.get(dc.OC_MIRROR_OF) == guest_uuid:
                return guest_vif, ref
        return guest_vif, None

    def _free_device(self, built: vmbuild.Built) -> Optional[int]:
        """The lowest VIF device number free on the guest and the stub
        domain alike (``VM.get_allowed_VIF_devices``: XAPI's range less the
        devices in use)."""
        free = None
        for vm in (built.guest, built.stubdom):
            devices = {int(d) for d in self._call(
                'VM.get_allowed_VIF_devices', vm)}
            free = devices if free is None else free & devices
        return min(free) if free else None

    # -- attach -------------------------------------------------------------
    def _check_vif(self, instance, vif) -> None:
        port = vif.get('id')
        mac = vif.get('address') or ''
        if not port:
            raise InterfaceOpRefused(op='attach', uuid=instance.uuid,
                                     reason=_('the VIF has no port id'))
        if not _MAC.match(mac):
            raise InterfaceOpRefused(
                op='attach', uuid=instance.uuid,
                reason=_('port %(port)s has MAC %(mac)r, which XAPI refuses '
                         '(MAC_INVALID)') % {'port': port, 'mac': mac})

    def attach_interface(self, instance, vif) -> None:
        """Create the NIC's two VIFs; plug the guest's where XAPI allows."""
        self._check_vif(instance, vif)
        net_ref = vmdevices.network_ref(self._ctx, vif)
        with self._vmops._operation(instance, 'attach_interface'):
            built = self._vmops._require(instance)
            if self._nic_vifs(built, vif['id'])[0] is not None:
                raise InterfaceOpRefused(
                    op='attach', uuid=instance.uuid,
                    reason=_('port %s is already attached') % vif['id'])
            device = self._free_device(built)
            if device is None:
                raise InterfaceOpRefused(
                    op='attach', uuid=instance.uuid,
                    reason=_('no VIF device number is free (XAPI '
                             'VM.get_allowed_VIF_devices is empty)'))
            made = vmbuild.Built(guest=built.guest, stubdom=built.stubdom)
            step = ['start']

            def do(name: str, fn: Callable, *args, **kwargs):
                step[0] = name
                return fn(*args, **kwargs)
            hot = False
            try:
                vmdevices.attach_nic(self._ctx, made, vif, net_ref, device, do)
                guest_vif = made.vifs[0]
                hot = do('VIF.get_allowed_operations', hotplug.can_plug,
                         self._call, 'VIF', guest_vif,
                         self._vmops.stopper.power_state(built.guest))
                if hot:
                    do('VIF.plug (guest PV NIC)', self._call, 'VIF.plug',
                       guest_vif)
            except Exception as exc:
                with excutils.save_and_reraise_exception():
                    LOG.error('attach of port %(port)s failed at step '
                              '"%(step)s": %(exc)s; removing its VIFs',
                              {'port': vif['id'], 'step': step[0],
                               'exc': exc}, instance=instance)
                    self._remove(instance, made.vifs)
        if hot:
            LOG.info('port %(port)s attached as VIF device %(dev)d: the '
                     "guest's PV NIC now, QEMU's emulated NIC from the next "
                     'start', {'port': vif['id'], 'dev': device},
                     instance=instance)
        else:
            LOG.warning('port %(port)s attached as VIF device %(dev)d from '
                        'the next start of the instance: XAPI hot-plugs a '
                        'VIF only into a running guest that claims PV '
                        'drivers (VM_guest_metrics.can_use_hotplug_vif)',
                        {'port': vif['id'], 'dev': device},
                        instance=instance)

    def _remove(self, instance, vifs: List[str]) -> None:
        for ref in vifs:
            volumeutils.unplug_and_destroy(self._call, 'VIF', ref, instance)

    # -- detach -------------------------------------------------------------
    def detach_interface(self, instance, vif) -> None:
        """Unplug and destroy the NIC's two VIFs (refused, unchanged, where
        XAPI cannot unplug the guest's)."""
        with self._vmops._operation(instance, 'detach_interface'):
            built = self._vmops._require(instance)
            guest_vif, mirror = self._nic_vifs(built, vif['id'])
            if guest_vif is None:
                LOG.warning('detach: port %s has no VIF here', vif['id'],
                            instance=instance)
                return
            vifs = [v for v in (guest_vif, mirror) if v]
            for ref in vifs:
                reason = hotplug.unplug_refusal(
                    self._call, self._vmops.stopper.power_state, 'VIF', ref)
                if reason:
                    raise InterfaceOpRefused(op='detach', uuid=instance.uuid,
                                             reason=reason)
            unplugged: List[str] = []
            try:
                for ref in vifs:
                    if self._call('VIF.get_currently_attached', ref):
                        self._call('VIF.unplug', ref)
                        unplugged.append(ref)
                # the mirror first: a failure then loses nothing the
                # guest uses
                for ref in reversed(vifs):
                    self._call('VIF.destroy', ref)
            except Exception as exc:
                with excutils.save_and_reraise_exception():
                    LOG.error('detach of port %(port)s failed: %(exc)s; '
                              'plugging back what was unplugged',
                              {'port': vif['id'], 'exc': exc},
                              instance=instance)
                    self._replug(instance, unplugged)
        LOG.info('port %s detached', vif['id'], instance=instance)

    def _replug(self, instance, vifs: List[str]) -> None:
        for ref in vifs:
            try:
                self._call('VIF.get_uuid', ref)
            except xapi_errors.HandleInvalid:
                continue            # destroyed already: nothing to undo
            try:
                self._call('VIF.plug', ref)
            except xapi_errors.XAPIException as exc:
                LOG.warning('could not plug VIF %(vif)s back: %(exc)s',
                            {'vif': ref, 'exc': exc}, instance=instance)
