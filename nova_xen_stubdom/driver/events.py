"""Power changes made outside Nova become Nova lifecycle events.

The event cache follows ``event.from``; a guest VM whose ``power_state``
changes while no driver operation is running on it was changed by someone
else (an admin with ``xe``, the guest shutting itself down, a crash): Nova
hears about it through ``emit_event`` and syncs its power state.
When such a guest halts, its stub domain is stopped too.
"""
import threading
import time

from oslo_log import log as logging

from nova.virt import event as virtevent

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


class LifecycleEvents:
    def __init__(self, ctx, vmops, emit) -> None:
        self._ctx = ctx
        self._vmops = vmops
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
        self._emit(virtevent.LifecycleEvent(uuid, name, time.time()))
        if new == xc.POWER_STATE_HALTED:
            stub = oc.get(dc.OC_STUBDOM)
            threading.Thread(target=self._stop_stubdom, args=(uuid, stub),
                             daemon=True,
                             name='xen-stubdom-orphan-%s' % uuid).start()

    def _stop_stubdom(self, instance_uuid: str, stub_uuid: str) -> None:
        """A stub domain never outlives its guest."""
        try:
            with self._ctx.lock(instance_uuid):
                found = self._ctx.cache.find(
                    'VM', other_config={dc.OC_NOVA_UUID: instance_uuid,
                                        dc.OC_ROLE: dc.ROLE_STUBDOM})
                for ref, rec in found:
                    if rec.get('power_state') != xc.POWER_STATE_HALTED:
                        self._ctx.call('VM.hard_shutdown', ref)
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
