"""A guest's disks and NICs, each as a pair of XAPI objects.

QEMU in the stub domain emulates the guest's disks and NICs, so each one is
a VBD/VIF on the guest (what XAPI and the operator see) plus a mirror with
the same device number on the stub domain (what QEMU's backend opens; the
mirror's ``other_config`` names the guest-side original).  Spawn, rebuild,
cold and live migration and the hot-plug paths all build them the same way.
"""
from typing import Callable, Optional

from nova import exception

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import vmbuild


def network_ref(ctx, vif) -> str:
    """The XAPI network of Nova's *vif*: its bridge (by bridge name, then
    by name label), else ``[xen_stubdom] network_name_label``."""
    bridge = (vif.get('network') or {}).get('bridge')
    nets = ctx.cache.get_all('network')
    wanted = ctx.conf.xen_stubdom.network_name_label
    for key, value in (('bridge', bridge), ('name_label', bridge),
                       ('name_label', wanted)):
        if not value:
            continue
        for ref, net in sorted(nets.items()):
            if net.get(key) == value:
                return ref
    raise exception.NetworkNotFoundForBridge(
        bridge=bridge or wanted or '?')


def attach_disk(ctx, built: vmbuild.Built, vdi: str, disk: str,
                userdevice: int, do: Optional[Callable] = None,
                volume_id: Optional[str] = None) -> None:
    """*vdi* on the guest at *userdevice* and, mirrored, on its stub
    domain (whose QEMU emulates the disk from there).  A Cinder
    volume's VBDs carry its id; beside the boot disk they are
    ``unpluggable`` (detach from a running guest)."""
    do = do or vmbuild.direct
    tag = {dc.OC_VOLUME_ID: volume_id} if volume_id else {}
    rec = vmbuild.vbd_record(built.guest, vdi, userdevice,
                             userdevice == 0, dict(tag))
    rec['unpluggable'] = bool(volume_id) and userdevice != 0
    vbd = do('VBD.create (guest %s disk)' % disk, ctx.call,
             'VBD.create', rec)
    built.vbds.append(vbd)
    vbd_uuid = do('VBD.get_uuid', ctx.call, 'VBD.get_uuid', vbd)
    rec = vmbuild.vbd_record(built.stubdom, vdi, userdevice, False,
                             dict(tag, **{dc.OC_MIRROR_OF: vbd_uuid}))
    rec['unpluggable'] = bool(volume_id) and userdevice != 0
    built.vbds.append(do(
        'VBD.create (stub domain mirror of the %s disk)' % disk,
        ctx.call, 'VBD.create', rec))


def attach_nic(ctx, built: vmbuild.Built, vif, net_ref: str, index: int,
               do: Optional[Callable] = None) -> None:
    """Nova's *vif* as the guest's NIC *index* on *net_ref*, mirrored
    on its stub domain (QEMU's emulated NIC is backed there)."""
    do = do or vmbuild.direct
    mtu = (vif.get('network') or {}).get('meta', {}).get('mtu') or 1500
    ref = do('VIF.create (guest NIC %d)' % index, ctx.call,
             'VIF.create', vmbuild.vif_record(
                 built.guest, net_ref, index, vif['address'], mtu,
                 {dc.OC_VIF_ID: vif['id']}))
    built.vifs.append(ref)
    vif_uuid = do('VIF.get_uuid', ctx.call, 'VIF.get_uuid', ref)
    built.vifs.append(do(
        'VIF.create (stub domain mirror of NIC %d)' % index,
        ctx.call, 'VIF.create', vmbuild.vif_record(
            built.stubdom, net_ref, index, vif['address'], mtu,
            {dc.OC_MIRROR_OF: vif_uuid})))
