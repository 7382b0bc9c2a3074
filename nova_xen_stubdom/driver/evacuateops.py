"""Evacuate: take over an instance whose host died, on a pool's shared SR.

Every host of a XAPI pool sees the same VMs and, on a shared SR, the same
disks.  When a member dies the master keeps its VMs Running and
``resident_on`` it (the database cannot know the domains are gone) and
refuses to forward anything to it (``HOST_OFFLINE``).  XCP-ng's answer is
``VM.power_state_reset`` -- refused with ``HOST_IS_LIVE`` while the
member is alive (``ocaml/xapi/xapi_vm.ml``, ``power_state_reset``) -- after
which the VM starts anywhere.  So an evacuation does not rebuild from the
image: it resets the instance's guest and stub-domain VMs, moves their
affinity here and starts them on this host, with the very same disks.

Nova's side: ``instance_on_disk`` says True when every disk of the instance
is on a shared SR this host has plugged (then Nova keeps the disk), and the
host-scoped ``list_instance_uuids`` (resident on, or halted with affinity
to, this host) keeps the old host's compute from destroying the adopted
VMs when it comes back (``_destroy_evacuated_instances`` only destroys what
its driver lists).
"""
from oslo_log import log as logging

from nova import exception
from nova.i18n import _

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import vmlookup
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)


class EvacuateOps(common.InstanceOps):
    def instance_on_disk(self, instance) -> bool:
        """Whether every disk of *instance* is on a shared SR plugged here
        (a pool's shared SR: the disk survives its host)."""
        built = vmlookup.find_fresh(self._ctx, instance)
        if not built.vdis:
            return False
        for vdi in built.vdis:
            sr = self._call('VDI.get_SR', vdi)
            if not self._call('SR.get_shared', sr):
                return False
            plugged = [p for p in self._call('SR.get_PBDs', sr)
                       if self._call('PBD.get_host', p) ==
                       self._ctx.host_ref and
                       self._call('PBD.get_currently_attached', p)]
            if not plugged:
                return False
        return True

    def evacuate(self, context, instance, network_info) -> None:
        with self._vmops._operation(instance, 'evacuate'):
            built = vmlookup.find_fresh(self._ctx, instance)
            if not built.guest or not built.stubdom:
                raise exception.InstanceNotFound(instance_id=instance.uuid)
            for vm in (built.guest, built.stubdom):
                self._take_over(instance, vm)
            built.guest_uuid = self._call('VM.get_uuid', built.guest)
            self._vmops._restart(instance, built, None, network_info)
        LOG.info('evacuated: guest %(guest)s and its stub domain started on '
                 'this host with their own disks',
                 {'guest': built.guest}, instance=instance)

    def _take_over(self, instance, vm: str) -> None:
        state = self._call('VM.get_power_state', vm)
        if state in (xc.POWER_STATE_RUNNING, xc.POWER_STATE_PAUSED):
            old = self._call('VM.get_resident_on', vm)
            try:
                self._call('VM.power_state_reset', vm)
            except xapi_errors.XAPIError as exc:
                if exc.code == 'HOST_IS_LIVE':
                    # XAPI still hears from the old host: its copy may run
                    raise dexc.XenStubdomDriverError(reason=_(
                        'XAPI reports host %(host)s, where VM %(vm)s runs, '
                        'as alive (HOST_IS_LIVE): refusing to start a '
                        'second copy; evacuate once XAPI marks it dead') %
                        {'host': old, 'vm': vm}) from exc
                raise
            LOG.warning('VM %(vm)s was %(state)s on dead host %(host)s: '
                        'power state reset', {'vm': vm, 'state': state,
                                              'host': old},
                        instance=instance)
        elif state == xc.POWER_STATE_SUSPENDED:
            raise dexc.XenStubdomDriverError(reason=_(
                'VM %s is suspended: resume it before evacuating') % vm)
        self._call('VM.set_affinity', vm, self._ctx.host_ref)
