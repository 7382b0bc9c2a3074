"""Why a guest domain went away: the reason only dom0 can still see.

A guest that reboots or powers itself off makes the hypercall
``SCHEDOP_shutdown`` with a reason (xen/include/public/sched.h
``SHUTDOWN_poweroff``/``reboot``/``crash``...).  xenopsd reads it to choose
the VM's ``actions_after_*`` (xen-api ``ocaml/xenopsd/lib/xenops_server.ml``
``VM_check_state``), but XAPI keeps nothing of it: the VM just goes Halted
(``actions_after_reboot = destroy``) -- the ``other_config:last_shutdown_*``
keys older XAPI wrote (``xapi_vm.ml record_shutdown_details``) were removed
with the legacy Xal in 2012 (xen-api commit f4bdf4bc).

When xenopsd shuts the VM down it pauses the domain and destroys its device
model before the devices and the domain itself (xen-api
``ocaml/xenopsd/lib/xenops_server.ml`` ``atomics_of_operation``,
``VM_shutdown``: ``VM_pause``, ``VM_destroy_device_model``, device unplugs,
then ``VM_destroy``).  For our guests the device model is the wrapper, whose
stop is ``dm_stop`` (:func:`device_model.stop`).  At that moment the domain
still exists with its shutdown code, so :func:`record` keeps it in xenstore
(``/nova-xen-stubdom/exits/<vm uuid>``, dom0-only) and the driver asks for it
(``guest_exit``) when XAPI reports the guest Halted outside Nova.
"""
import json
import time
from typing import Dict, Optional

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import registry as plugin

EXITS_ROOT = '/nova-xen-stubdom/exits'


def _path(guest_vm_uuid: str) -> str:
    return '%s/%s' % (EXITS_ROOT, guest_vm_uuid)


def record(agent, guest_domid: int, guest_vm_uuid: str) -> Optional[str]:
    """Keep why *guest_domid* shut down (None: it did not shut itself
    down -- a destroy from the toolstack -- or it is already gone)."""
    backend = agent.backend
    try:
        reason = backend.domain_info(guest_domid).shutdown
    except KeyError:
        reason = None
    if reason is None:
        return None
    path = _path(guest_vm_uuid)
    backend.xs_write(path, json.dumps({'domid': guest_domid,
                                       'reason': reason,
                                       'time': time.time()}))
    backend.xs_set_perms(path, ['n0'])
    return reason


def read(agent, guest_vm_uuid: str, domid: Optional[int] = None,
         forget: bool = False) -> Dict[str, object]:
    """The last recorded exit of the guest VM (``{}`` if none, or if it was
    of another domain than *domid*: a stale record never answers)."""
    backend = agent.backend
    path = _path(guest_vm_uuid)
    raw = backend.xs_read(path)
    if raw is None:
        return {}
    try:
        out = json.loads(raw)
    except ValueError:
        out = {}
    if forget:
        backend.xs_rm(path)
    if domid is not None and out.get('domid') != domid:
        return {}
    return out


def forget(agent, guest_vm_uuid: str) -> None:
    """Drop the record (idempotent)."""
    agent.backend.xs_rm(_path(guest_vm_uuid))


@plugin.register('guest_exit')
def _plugin_guest_exit(agent, args: Dict[str, str]) -> str:
    """``guest_vm_uuid`` (required), ``domid`` (the domain the caller saw
    go), ``forget`` ("1": remove the record once read)."""
    uuid = args.get('guest_vm_uuid')
    if not uuid:
        raise errors.InvalidArgument(name='guest_vm_uuid', value=None,
                                     reason='missing')
    domid = args.get('domid')
    if domid is not None:
        try:
            domid = int(domid)
        except ValueError:
            raise errors.InvalidArgument(name='domid', value=domid,
                                         reason='not an integer')
    return json.dumps(read(agent, uuid, domid,
                           forget=args.get('forget') == '1'))
