"""What XAPI lets the driver hot-plug into, or unplug from, a running
guest: one rule for VBDs (volumes) and VIFs (interfaces).

XAPI computes it in ``xapi_vbd_helpers.ml`` / ``xapi_vif_helpers.ml``
``valid_operations`` (modelled in ``sim/hotplug_rules.py``) and publishes
it as the device's ``allowed_operations``: ``plug``/``unplug`` only while
the VM is ``Running`` (not paused), and on an **HVM** guest only when it
claims PV drivers with hot-plug (``VM_guest_metrics.can_use_hotplug_vbd``
/ ``_vif``, else ``VM_MISSING_PV_DRIVERS`` / ``OPERATION_NOT_ALLOWED``).
The driver asks before it acts so that a refused operation changes
nothing: an attach then defers the device to the instance's next start, a
detach is refused with the reason.  Volume swap uses the same two calls.
"""
from typing import Callable, Optional

from nova.i18n import _

from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors

#: what a refusal calls the device, per XAPI class
_NOUN = {'VBD': 'disk', 'VIF': 'NIC'}


def can_plug(call: Callable, cls: str, ref: str, power_state: str) -> bool:
    """Whether XAPI will hot-plug *ref* (a VBD or VIF of a guest in
    *power_state*) now: the guest runs and ``plug`` is allowed."""
    return power_state == xc.POWER_STATE_RUNNING and \
        'plug' in call('%s.get_allowed_operations' % cls, ref)


def unplug_refusal(call: Callable, power_state_of: Callable[[str], str],
                   cls: str, ref: str) -> Optional[str]:
    """Why XAPI would refuse to unplug attached *ref*, or None (also when
    it is not attached or gone: nothing to unplug)."""
    try:
        rec = call('%s.get_record' % cls, ref)
    except xapi_errors.HandleInvalid:
        return None
    if not rec['currently_attached'] or 'unplug' in \
            rec['allowed_operations']:
        return None
    state = power_state_of(rec['VM'])
    if state != xc.POWER_STATE_RUNNING:
        return _('the guest is %s; XAPI unplugs a device only from a '
                 'running VM (unpause or stop the server first)') % (
                     (state or 'gone').lower())
    return _('XAPI will not unplug a %(noun)s from this running HVM guest: '
             'it does not claim PV drivers with %(cls)s hot-plug '
             '(VM_MISSING_PV_DRIVERS / can_use_hotplug_%(lower)s); stop the '
             'server first') % {'noun': _NOUN[cls], 'cls': cls,
                                'lower': cls.lower()}
