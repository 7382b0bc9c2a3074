"""What the migration, resize and suspend paths share.

XAPI no longer knows stub domains, so none of these can be left to
XAPI's own VM.pool_migrate / VM.resume: guest memory and CPU state move
through the dom0 agents' save/restore engine (a Xen migration stream v2,
authenticated), the device model's state through a disk attached to the
stub domain.  XAPI still accounts for every VM: the destination of a live
migration gets its own guest and stub-domain VMs (``other_config`` role
``incoming-*`` until the switch-over is confirmed, so lookups keep finding
the source's), and the source's are removed only once the destination runs
the guest.

Live migration needs both hosts in one XAPI pool (the disks stay on the
pool's SR, as with XAPI's own pool migration); block migration and guests
with PCI pass-through devices are refused with a clear message.

The paths themselves: livemigration_checks (pre-checks on both hosts),
livemigration_prepare (the destination's incoming VMs and receiver),
livemigration_send (the source's send and its switch-over),
livemigration_finish (post-migration and rollback on both hosts),
coldmigrationops (cold migration and resize), suspendops.
"""
import secrets
from typing import Dict, Iterable, Tuple

from nova import exception
from nova.i18n import _

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import pciops
from nova_xen_stubdom.xapi import errors as xapi_errors

#: roles of the destination's VMs while a live migration is in flight
ROLE_INCOMING_GUEST = 'incoming-guest'
ROLE_INCOMING_STUBDOM = 'incoming-stubdom'
#: other_config key on the incoming guest: the receive job on its agent
OC_RECEIVE_JOB = 'nova_xen_stubdom_receive_job'
#: bytes of a per-migration / per-image key (the dom0 side wants at least
#: 16; the driver reaches dom0 only through XAPI, so it does not import the
#: dom0 code)
KEY_BYTES = 32


def new_key() -> bytes:
    """A fresh per-migration / per-image key."""
    return secrets.token_bytes(KEY_BYTES)


def find_vms(ctx, instance, roles: Iterable[str]
             ) -> Dict[str, Tuple[str, dict]]:
    """``role -> (ref, record)`` of the instance's VMs with one of
    *roles*, asked from XAPI (not the cache: the roles change during a
    migration faster than events may arrive)."""
    out = {}
    for name in (instance.name, instance.name + dc.STUBDOM_SUFFIX):
        for ref in ctx.call('VM.get_by_name_label', name):
            rec = ctx.call('VM.get_record', ref)
            oc = rec.get('other_config') or {}
            if oc.get(dc.OC_NOVA_UUID) == instance.uuid and \
                    oc.get(dc.OC_ROLE) in roles:
                out[oc[dc.OC_ROLE]] = (ref, rec)
    return out


def refuse_pci(instance) -> None:
    """MigrationPreCheckError when *instance* has PCI devices
    (``pciops.instance_has_passthrough``)."""
    if pciops.instance_has_passthrough(instance):
        raise exception.MigrationPreCheckError(reason=_(
            'instance %(uuid)s has PCI pass-through devices (%(devs)s): '
            'Xen does not support live migration of guests with assigned '
            'devices; cold migrate (resize/migrate) it instead, which '
            're-claims them on the destination') % {
                'uuid': instance.uuid,
                'devs': pciops.describe_passthrough(instance)})


def host_by_uuid(ctx, uuid: str) -> str:
    """The ref of pool member *uuid*; MigrationPreCheckError when the
    host is not in this host's pool."""
    try:
        return ctx.call('host.get_by_uuid', uuid)
    except xapi_errors.XAPIError:
        raise exception.MigrationPreCheckError(reason=_(
            'destination host %s is not in this host\'s XAPI pool: live '
            'migration needs both hosts in one pool') % uuid)
