"""Guest lifecycle after spawn: power, reboot, destroy, state.

An instance is an HVM guest VM plus its device-model stub domain VM; every
operation here acts on both, in the order Xen needs (vmstart, vmstop).
:class:`VMOps` is also the hub the other ops classes share: the per-instance
operation lock (:meth:`VMOps._operation`), the instance's objects
(:meth:`VMOps._require`), and the starter and stopper that spawn, rebuild,
rescue and the migrations reuse.
"""
import contextlib
import threading
from typing import Dict, List

from oslo_log import log as logging
from oslo_utils import excutils

from nova.compute import power_state
from nova import exception
from nova.i18n import _
from nova.virt import hardware

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmlookup
from nova_xen_stubdom.driver import vmstart
from nova_xen_stubdom.driver import vmstop
from nova_xen_stubdom.driver import volumeutils
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors
from nova_xen_stubdom.xapi import power as xpower

LOG = logging.getLogger(__name__)


class VMOps(common.XapiUser):
    def __init__(self, ctx, hostops, pciops=None) -> None:
        self._ctx = ctx
        self._hostops = hostops
        self._pciops = pciops
        #: SR/PBD/VDI of Cinder volumes (volumeops attaches them)
        self.volumes = volumeutils.VolumeStorage(ctx)
        #: starts a guest with its stub domain (spawn, rebuild, resize...)
        self.starter = vmstart.VMStarter(ctx, self.volumes, pciops)
        #: stops them and removes what an operation built
        self.stopper = vmstop.VMStopper(ctx, self.volumes, pciops)
        #: instance uuids with a driver operation in flight: their power
        #: changes are ours, not lifecycle events from outside Nova
        self._busy: Dict[str, int] = {}
        #: operation name -> XAPI calls of its last run (for figures)
        self.call_stats: Dict[str, List[str]] = {}
        self._busy_lock = threading.Lock()
        #: instances being rebuilt after their guest's own reboot: to Nova
        #: they are running throughout, as a libvirt guest rebooting is
        self._guest_rebooting: set = set()

    # -- helpers ----------------------------------------------------------
    @contextlib.contextmanager
    def _operation(self, instance, name: str = 'other'):
        """Lock the instance and mark its power changes as Nova's own.

        The XAPI calls made inside are kept in :attr:`call_stats` [*name*]
        (the last operation of that name).
        """
        with self._ctx.lock(instance.uuid):
            with self._busy_lock:
                self._busy[instance.uuid] = self._busy.get(
                    instance.uuid, 0) + 1
            try:
                with self._ctx.tally() as calls:
                    yield
            finally:
                self.call_stats[name] = calls
                with self._busy_lock:
                    n = self._busy.pop(instance.uuid) - 1
                    if n:
                        self._busy[instance.uuid] = n

    def is_busy(self, instance_uuid: str) -> bool:
        with self._busy_lock:
            return instance_uuid in self._busy

    def _require(self, instance) -> vmbuild.Built:
        """The instance's guest and stub domain, asked from XAPI;
        InstanceNotFound without a guest."""
        built = vmlookup.find_fresh(self._ctx, instance)
        if not built.guest:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        if not built.stubdom:
            raise dexc.XenStubdomDriverError(
                reason=_('instance %s has no stub domain VM') % instance.uuid)
        built.guest_uuid = self._call('VM.get_uuid', built.guest)
        return built

    def destroy(self, instance) -> None:
        """Remove the guest, its stub domain and disks (idempotent)."""
        with self._operation(instance, 'destroy'):
            built = vmlookup.find_fresh(self._ctx, instance)
            if built.guest:
                image = vmlookup.suspend_image(self._ctx, built.guest)
                if image:
                    built.vdis.append(image)
            if built.empty():
                LOG.warning('destroy: no XAPI objects for this instance',
                            instance=instance)
                return
            self.stopper.teardown(instance, built, raise_first=True)
        LOG.info('destroyed', instance=instance)

    # -- power ------------------------------------------------------------
    def _restart(self, instance, built: vmbuild.Built, image_meta=None,
                 network_info=None) -> None:
        cfg = guest_config.resolve(instance.flavor, image_meta)
        vifs = [(vif, None) for vif in network_info or []]
        image = vmlookup.suspend_image(self._ctx, built.guest)
        if image:
            # a fresh boot (hard reboot of a suspended instance) makes the
            # saved state meaningless, as with libvirt's managed save
            LOG.info('discarding the suspend image', instance=instance)
            self._call('VM.remove_from_other_config', built.guest,
                       dc.OC_SUSPEND_IMAGE)
            self._call('VDI.destroy', image)
        try:
            self.starter.start(instance, built, cfg, vifs)
        except Exception:
            with excutils.save_and_reraise_exception():
                # never leave a stub domain running without its guest
                try:
                    self.stopper.stop(instance, built.guest, built.stubdom,
                                      built.guest_uuid)
                except Exception as exc:
                    LOG.warning('could not stop after a failed start: %s',
                                exc, instance=instance)

    def power_off(self, instance, timeout: int = 0) -> None:
        with self._operation(instance, 'power_off'):
            built = self._require(instance)
            self.stopper.stop(instance, built.guest, built.stubdom,
                              built.guest_uuid, clean_timeout=timeout or None)

    def power_on(self, instance, network_info, image_meta=None) -> None:
        with self._operation(instance, 'power_on'):
            built = self._require(instance)
            state = self.stopper.power_state(built.guest)
            if state == xc.POWER_STATE_RUNNING:
                return
            if state == xc.POWER_STATE_PAUSED:
                self._call('VM.unpause', built.guest)
                return
            # a stub domain may be left from a guest halted outside Nova
            self.stopper.stop(instance, None, built.stubdom, built.guest_uuid)
            self._restart(instance, built, image_meta, network_info)

    def reboot(self, instance, network_info, reboot_type: str) -> None:
        """Soft: clean shutdown (then hard); hard: immediate. Both restart
        the stub domain too: its target is bound to the old guest domid."""
        with self._operation(instance):
            built = self._require(instance)
            timeout = (self._conf.clean_shutdown_timeout
                       if reboot_type == 'SOFT' else None)
            self.stopper.stop(instance, built.guest, built.stubdom,
                              built.guest_uuid, clean_timeout=timeout)
            self._restart(instance, built, None, network_info)

    def restart_after_guest_reboot(self, instance_uuid: str) -> None:
        """The guest rebooted itself and XAPI halted it: start a fresh
        stub domain and the guest again (Nova's instance stays ACTIVE).

        A failure stops what was started (no stub domain without its
        guest) and is raised: the caller reports a stop to Nova.
        """
        from nova import context as nova_context
        from nova import objects
        instance = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), instance_uuid,
            expected_attrs=['flavor', 'info_cache'])
        network_info = instance.get_network_info()
        with self._operation(instance, 'guest_reboot'):
            built = self._require(instance)
            if self.stopper.power_state(built.guest) != xc.POWER_STATE_HALTED:
                return      # someone started it meanwhile
            with self._busy_lock:
                self._guest_rebooting.add(instance_uuid)
            try:
                # the old stub domain targets a domid that is gone
                self.stopper.stop(instance, None, built.stubdom,
                                  built.guest_uuid)
                self._restart(instance, built, None, network_info)
            finally:
                with self._busy_lock:
                    self._guest_rebooting.discard(instance_uuid)
        LOG.info('rebuilt after the guest\'s own reboot', instance=instance)

    def pause(self, instance) -> None:
        with self._operation(instance):
            built = self._require(instance)
            self._call('VM.pause', built.guest)

    def unpause(self, instance) -> None:
        with self._operation(instance):
            built = self._require(instance)
            self._call('VM.unpause', built.guest)

    # -- information ------------------------------------------------------
    def get_info(self, instance) -> hardware.InstanceInfo:
        found = vmlookup.guest_record(self._ctx, instance)
        if found is None:
            # the cache may lag just-created guests: ask XAPI once
            built = vmlookup.find_fresh(self._ctx, instance)
            if not built.guest:
                raise exception.InstanceNotFound(instance_id=instance.uuid)
            state = self.stopper.power_state(built.guest)
            try:
                oc = self._call('VM.get_other_config', built.guest)
            except xapi_errors.HandleInvalid:
                oc = {}
        else:
            state = found[1].get('power_state')
            oc = found[1].get('other_config') or {}
        nova_state = xpower.to_nova_power_state(state)
        with self._busy_lock:
            rebooting = instance.uuid in self._guest_rebooting
        if rebooting:
            nova_state = power_state.RUNNING
        elif state == xc.POWER_STATE_HALTED and oc.get(dc.OC_SUSPEND_IMAGE):
            # halted through XAPI with its image in our VDI: suspended
            nova_state = power_state.SUSPENDED
        return hardware.InstanceInfo(
            state=nova_state,
            internal_id=found[0] if found else None)

    def list_instances(self) -> List[str]:
        return sorted(rec['name_label']
                      for rec in vmlookup.our_guests(self._ctx).values())

    def list_instance_uuids(self) -> List[str]:
        return sorted(rec['other_config'][dc.OC_NOVA_UUID]
                      for rec in vmlookup.our_guests(self._ctx).values())

    def get_diagnostics(self, instance) -> dict:
        built = self._require(instance)
        guest = self._call('VM.get_record', built.guest)
        stub = self._call('VM.get_record', built.stubdom)
        return {
            'power_state': guest['power_state'],
            'domid': int(guest['domid']),
            'memory_mb': int(guest['memory_static_max']) // dc.MiB,
            'vcpus': int(guest['VCPUs_max']),
            'stubdom_domid': int(stub['domid']),
            'stubdom_power_state': stub['power_state'],
            'stubdom_memory_mb': int(stub['memory_static_max']) // dc.MiB,
            'disks': len(guest['VBDs']),
            'nics': len(guest['VIFs']),
        }

    def resume_state_on_host_boot(self, instance, network_info) -> None:
        """After a host reboot: bring the guest back as Nova expects."""
        info = self.get_info(instance)
        if info.state == power_state.RUNNING:
            return
        self.power_on(instance, network_info)
