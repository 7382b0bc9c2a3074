"""Finding an instance's XAPI objects: its guest and stub-domain VMs, disks
and suspend image.

XAPI keeps no link from a VM to a Nova instance, so the driver tags every
object it creates (``other_config``: the instance uuid and a role) and
finds them again by those tags.  Reads come from the event cache (cheap, may
lag a just-created object by one event) except where a stale answer would
leak an object: :func:`find_fresh` asks XAPI itself.
"""
from typing import Dict, Optional, Tuple

from nova_xen_stubdom.driver import configdrive
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors


def _cached_vms(ctx, instance_uuid: str) -> Dict[str, Tuple[str, dict]]:
    out = {}
    for ref, rec in ctx.cache.find(
            'VM', other_config={dc.OC_NOVA_UUID: instance_uuid}):
        role = rec['other_config'].get(dc.OC_ROLE)
        if role in (dc.ROLE_GUEST, dc.ROLE_STUBDOM):
            out[role] = (ref, rec)
    return out


def guest_record(ctx, instance) -> Optional[Tuple[str, dict]]:
    """``(ref, record)`` of the guest VM from the cache, or None."""
    return _cached_vms(ctx, instance.uuid).get(dc.ROLE_GUEST)


def find_fresh(ctx, instance) -> vmbuild.Built:
    """Every object of *instance*, asked from XAPI (not the cache).

    Used where a stale answer would leak (destroy of a half-built
    guest whose creation events have not reached the cache yet).
    """
    built = vmbuild.Built()
    for name, role in ((instance.name, dc.ROLE_GUEST),
                       (instance.name + dc.STUBDOM_SUFFIX,
                        dc.ROLE_STUBDOM)):
        for ref in ctx.call('VM.get_by_name_label', name):
            oc = ctx.call('VM.get_other_config', ref)
            if oc.get(dc.OC_NOVA_UUID) != instance.uuid:
                continue
            if oc.get(dc.OC_ROLE) != role:
                continue
            if role == dc.ROLE_GUEST:
                built.guest = ref
            else:
                built.stubdom = ref
    for disk in list(dc.DISK_USERDEVICE) + [configdrive.DISK]:
        for ref in ctx.call('VDI.get_by_name_label',
                            '%s-%s' % (instance.name, disk)):
            oc = ctx.call('VDI.get_other_config', ref)
            if oc.get(dc.OC_NOVA_UUID) == instance.uuid:
                built.vdis.append(ref)
    return built


def suspend_image(ctx, guest_ref: str) -> Optional[str]:
    """The VDI holding the suspended guest's image, or None."""
    try:
        uuid = ctx.call('VM.get_other_config', guest_ref).get(
            dc.OC_SUSPEND_IMAGE)
        return ctx.call('VDI.get_by_uuid', uuid) if uuid else None
    except xapi_errors.HandleInvalid:
        return None
    except xapi_errors.XAPIError as exc:
        if exc.code == 'UUID_INVALID':
            return None
        raise


def our_guests(ctx) -> Dict[str, dict]:
    """``ref -> record`` of the guest VMs this host answers for: resident
    here, or halted with their affinity here."""
    out = {}
    host = ctx.host_ref
    for ref, rec in ctx.cache.get_all('VM').items():
        oc = rec.get('other_config') or {}
        if oc.get(dc.OC_ROLE) != dc.ROLE_GUEST:
            continue
        if rec.get('resident_on') == host or (
                rec.get('power_state') == xc.POWER_STATE_HALTED and
                rec.get('affinity') == host):
            out[ref] = rec
    return out
