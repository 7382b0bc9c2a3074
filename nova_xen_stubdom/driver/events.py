"""Power changes made outside Nova become Nova lifecycle events.

The event cache follows ``event.from``; a guest VM whose ``power_state``
changes while no driver operation is running on it was changed by someone
else (an admin with ``xe``, the guest shutting itself down, a crash): Nova
hears about it through ``emit_event`` and syncs its power state.
When such a guest halts, its stub domain is stopped too.

A guest that reboots itself halts as well (``actions_after_reboot =
destroy``: its stub domain's target is bound to the old domid, so XAPI may
not restart it alone), and XAPI records nothing that tells it from a
poweroff (``other_config:last_shutdown_*`` went with the legacy Xal in
2012).  The dom0 side keeps Xen's shutdown reason when xenopsd stops the
device model (``dom0/guest_exit.py``); for ``reboot`` the driver rebuilds
stub domain and guest and the instance stays ACTIVE.  Anything else -- and
a rebuild that fails, which leaves nothing running -- is a stop Nova hears.
"""
import threading
import time
from typing import Optional

from oslo_log import log as logging

from nova.virt import event as virtevent

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.xapi import constants as xc

LOG = logging.getLogger(__name__)

_TRANSITIONS = {
    (xc.POWER_STATE_RUNNING, xc.POWER_STATE_HALTED):
        virtevent.EVENT_LIFECYCLE_STOPPED,
    (xc.POWER_STATE_PAUSED, xc.POWER_STATE_HALTED):
        virtevent.EVENT_LIFECYCLE_STOPPED,
    (xc.POWER_STATE_HALTED, xc.POWER_STATE_RUNNING):
        virtevent.EVENT_LIFECYCLE_STARTED,
    (xc.POWER_STATE_RUNNING, xc.POWER_STATE_PAUSED):
        virtevent.EVENT_LIFECYCLE_PAUSED,
    (xc.POWER_STATE_PAUSED, xc.POWER_STATE_RUNNING):
        virtevent.EVENT_LIFECYCLE_RESUMED,
    (xc.POWER_STATE_RUNNING, xc.POWER_STATE_SUSPENDED):
        virtevent.EVENT_LIFECYCLE_SUSPENDED,
}


def transition(old: str, new: str):
    """The Nova lifecycle transition for an XAPI power change, or None."""
    return _TRANSITIONS.get((old, new))


class LifecycleEvents(common.InstanceOps):
    def __init__(self, ctx, vmops, emit) -> None:
        super().__init__(ctx, vmops)
        self._emit = emit
        self._unsubscribe = None

    def start(self) -> None:
        self._unsubscribe = self._ctx.cache.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, ev) -> None:
        if ev.cls != 'VM' or ev.operation != 'mod' or not ev.old or \
                not ev.new:
            return
        oc = ev.new.get('other_config') or {}
        if oc.get(dc.OC_ROLE) != dc.ROLE_GUEST:
            return
        if self._ctx.host_ref not in (ev.new.get('resident_on'),
                                      ev.old.get('resident_on'),
                                      ev.new.get('affinity')):
            return
        old, new = ev.old.get('power_state'), ev.new.get('power_state')
        name = transition(old, new)
        if name is None:
            return
        if new == xc.POWER_STATE_HALTED and oc.get(dc.OC_SUSPEND_IMAGE):
            return      # our suspend: halted with its image kept (get_info)
        uuid = oc.get(dc.OC_NOVA_UUID)
        if not uuid or self._vmops.is_busy(uuid):
            return      # our own operation: Nova knows
        LOG.info('guest %(uuid)s went %(old)s -> %(new)s outside Nova',
                 {'uuid': uuid, 'old': old, 'new': new})
        if new == xc.POWER_STATE_HALTED:
            # asking dom0 why takes a call: not on the event thread
            threading.Thread(target=self._halted, daemon=True,
                             args=(uuid, ev.new.get('uuid'),
                                   ev.old.get('domid'), name),
                             name='xen-stubdom-halted-%s' % uuid).start()
            return
        self._emit(virtevent.LifecycleEvent(uuid, name, time.time()))

    def _exit_reason(self, guest_vm_uuid: str, domid) -> Optional[str]:
        try:
            out = self._ctx.call_plugin('guest_exit',
                                        guest_vm_uuid=guest_vm_uuid,
                                        domid=int(domid), forget='1')
        except Exception as exc:
            LOG.warning('cannot tell why guest VM %(vm)s halted: %(exc)s',
                        {'vm': guest_vm_uuid, 'exc': exc})
            return None
        return out.get('reason')

    def _halted(self, instance_uuid: str, guest_vm_uuid: str, domid,
                name: str) -> None:
        reason = (self._exit_reason(guest_vm_uuid, domid)
                  if guest_vm_uuid and domid is not None else None)
        if reason == 'reboot':
            LOG.info('guest %s rebooted itself: rebuilding its stub domain '
                     'and guest', instance_uuid)
            try:
                self._vmops.restart_after_guest_reboot(instance_uuid)
                return
            except Exception as exc:
                # the rebuild removed what it started: a stop for Nova
                LOG.error('rebuild after the guest\'s own reboot of '
                          '%(uuid)s failed: %(exc)s',
                          {'uuid': instance_uuid, 'exc': exc})
        self._emit(virtevent.LifecycleEvent(instance_uuid, name, time.time()))
        self._stop_stubdom(instance_uuid, None)

    def _stop_stubdom(self, instance_uuid: str, stub_uuid: str) -> None:
        """A stub domain never outlives its guest."""
        try:
            with self._ctx.lock(instance_uuid):
                found = self._ctx.cache.find(
                    'VM', other_config={dc.OC_NOVA_UUID: instance_uuid,
                                        dc.OC_ROLE: dc.ROLE_STUBDOM})
                for ref, rec in found:
                    if rec.get('power_state') != xc.POWER_STATE_HALTED:
                        self._call('VM.hard_shutdown', ref)
                guest = self._ctx.cache.find(
                    'VM', other_config={dc.OC_NOVA_UUID: instance_uuid,
                                        dc.OC_ROLE: dc.ROLE_GUEST})
                for ref, rec in guest:
                    self._ctx.call_plugin('unlink_stubdom',
                                          guest_vm_uuid=rec['uuid'])
        except Exception as exc:
            LOG.warning('could not stop the stub domain of %(uuid)s after '
                        'its guest halted: %(exc)s',
                        {'uuid': instance_uuid, 'exc': exc})
