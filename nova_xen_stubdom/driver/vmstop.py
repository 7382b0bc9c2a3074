"""Stopping a guest with its stub domain, and removing what was built.

A stub domain never outlives its guest (its QEMU targets one domid): the
guest goes down first, the agent unlinks the pair, then the stub domain.
Removal keeps going past failures and reports the first, so that a failed
spawn, migration or rebuild leaves as little behind as XAPI allows.
"""
from typing import Callable, List, Optional

from oslo_log import log as logging

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)


class VMStopper(common.XapiUser):
    """Stops an instance's guest and stub domain and removes what an
    operation built (VMOps.stopper).

    :param volumes: ``volumeutils.VolumeStorage`` (volume SRs to forget).
    :param pciops: ``pciops.PciOps`` or None (devices to release).
    """

    def __init__(self, ctx, volumes, pciops=None) -> None:
        self._ctx = ctx
        #: volumeutils.VolumeStorage: volume SRs are forgotten on removal
        self._volumes = volumes
        self._pciops = pciops

    def power_state(self, vm_ref: str) -> Optional[str]:
        """XAPI's power state of *vm_ref*, None when it is gone."""
        try:
            return self._call('VM.get_power_state', vm_ref)
        except xapi_errors.HandleInvalid:
            return None

    def shutdown(self, vm_ref: str, clean_timeout: Optional[float] = None
                 ) -> None:
        """Halt *vm_ref*: cleanly within *clean_timeout*, else hard."""
        state = self.power_state(vm_ref)
        if state in (None, xc.POWER_STATE_HALTED):
            return
        if clean_timeout and state == xc.POWER_STATE_RUNNING and \
                not self._can_clean_shutdown(vm_ref):
            LOG.info('%s cannot be shut down cleanly (no PV drivers, no '
                     'feature-shutdown/-poweroff): halting it', vm_ref)
        elif clean_timeout and state == xc.POWER_STATE_RUNNING:
            try:
                self._ctx.call_async('VM.clean_shutdown', vm_ref,
                                     timeout=clean_timeout)
                return
            except xapi_errors.XAPIException as exc:
                LOG.warning('clean shutdown of %(vm)s failed (%(exc)s); '
                            'forcing it', {'vm': vm_ref, 'exc': exc})
                if self.power_state(vm_ref) in (None,
                                                xc.POWER_STATE_HALTED):
                    return
        if state == xc.POWER_STATE_SUSPENDED:
            return
        self._ctx.call_async('VM.hard_shutdown', vm_ref)

    def _can_clean_shutdown(self, vm_ref: str) -> bool:
        """XAPI asks a guest to shut down only if it has PV drivers or
        advertises the feature (xapi_vm_lifecycle.ml check_op_for_feature);
        otherwise VM.clean_shutdown answers VM_LACKS_FEATURE.  Its
        allowed_operations says which."""
        try:
            ops = self._call('VM.get_allowed_operations', vm_ref)
        except xapi_errors.XAPIError:
            return True     # let the call itself decide
        return 'clean_shutdown' in ops

    def stop(self, instance, guest: Optional[str], stub: Optional[str],
             guest_uuid: Optional[str],
             clean_timeout: Optional[float] = None) -> None:
        """Guest down, then its stub domain: a stubdom never outlives it."""
        if guest:
            self.shutdown(guest, clean_timeout)
            if self._pciops is not None and hasattr(self._pciops, 'release'):
                self._pciops.release(instance, guest)
        if guest_uuid:
            self._ctx.call_plugin('unlink_stubdom', guest_vm_uuid=guest_uuid)
        if stub:
            self.shutdown(stub)

    def teardown(self, instance, built: vmbuild.Built,
                 raise_first: bool) -> None:
        """Remove *built*; keep going past failures (report the first)."""
        failures: List[BaseException] = []

        def attempt(what: str, fn: Callable, *args):
            try:
                return fn(*args)
            except xapi_errors.HandleInvalid:
                return None     # already gone: that is the goal
            except Exception as exc:
                LOG.warning('teardown: %(what)s failed: %(exc)s',
                            {'what': what, 'exc': exc}, instance=instance)
                failures.append(exc)
                return None

        if built.guest and not built.guest_uuid:
            built.guest_uuid = attempt('VM.get_uuid', self._call,
                                       'VM.get_uuid', built.guest)
        attempt('stop', self.stop, instance, built.guest, built.stubdom,
                built.guest_uuid)
        volume_srs = set(built.srs)
        for vm in (built.guest, built.stubdom):
            if not vm:
                continue
            vbds = attempt('VM.get_VBDs', self._call, 'VM.get_VBDs', vm)
            volume_srs |= attempt('volume SRs', self._volumes.volume_srs,
                                  vbds or []) or set()
            vifs = attempt('VM.get_VIFs', self._call, 'VM.get_VIFs', vm)
            for vbd in vbds or []:
                attempt('VBD.destroy', self._call, 'VBD.destroy', vbd)
            for vif in vifs or []:
                attempt('VIF.destroy', self._call, 'VIF.destroy', vif)
            attempt('VM.destroy', self._call, 'VM.destroy', vm)
        # objects created but not reachable from a VM (failed mid-spawn)
        for vbd in built.vbds:
            attempt('VBD.destroy', self._destroy_if_exists, 'VBD', vbd)
        for vif in built.vifs:
            attempt('VIF.destroy', self._destroy_if_exists, 'VIF', vif)
        for vdi in built.vdis:
            attempt('VDI.destroy', self._call, 'VDI.destroy', vdi)
        # volumes stay on their array; XAPI forgets their SRs once no VBD
        # uses them
        for sr in sorted(volume_srs):
            attempt('volume SR.forget', self._volumes.purge, sr)
        if failures and raise_first:
            raise failures[0]

    def _destroy_if_exists(self, cls: str, ref: str) -> None:
        try:
            self._call('%s.get_uuid' % cls, ref)
        except xapi_errors.HandleInvalid:
            return
        self._call('%s.destroy' % cls, ref)
