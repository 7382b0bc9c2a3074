"""Cinder volumes in XAPI's storage model: connection_info checked, and
the SR / PBD / VDI of a volume found, built and removed.

The shape is the removed Nova XenAPI driver's (openstack/nova, Ussuri,
``nova/virt/xenapi/volume_utils.py``: ``parse_sr_info``,
``_parse_volume_info``, ``introduce_sr``, ``_create_pbd``,
``introduce_vdi``, ``purge_sr``, ``forget_sr``): **one SR per iSCSI
target**, of type ``iscsi`` (SM's ISCSISR: one VDI per LUN), whose uuid is
derived from the target (address, port, IQN) so every volume of one target
shares it and a second attach finds it:

1. ``SR.introduce`` -- a database record only (xapi-project/xen-api
   ``ocaml/xapi/xapi_sr.ml`` ``introduce``); ``device_config`` is not part
   of an SR but of its PBD;
2. ``PBD.create`` for this host with ``device_config`` ``target``,
   ``port``, ``targetIQN`` (+ ``chapuser``/``chappassword``), then
   ``PBD.plug``: the storage backend's ``SR.attach``, i.e. the iSCSI login
   (``xapi_pbd.ml`` ``create_common``, ``plug``);
3. ``SR.scan``: the backend lists the target's LUNs and XAPI makes a VDI
   record for each (``xapi_sr.ml`` ``scan`` / ``update_vdis``); the
   volume's VDI is the one whose ``sm_config:LUNid`` is the volume's LUN.
   No ``VDI.introduce`` is needed for iSCSI: the scan introduces LUN VDIs
   itself (the old driver's ``VDI.introduce`` path served ``xensm`` with a
   ``vdi_uuid``, which Cinder no longer produces);
4. the VDI is made ``sharable`` (``VDI.set_sharable``): the guest's VBD and
   its stub domain's mirror VBD both attach it read-write, which XAPI
   refuses for a VDI that is not (``VDI_IN_USE``, as for the driver's own
   disks).

Removal is ``purge_sr``'s: only when no VBD uses a VDI of the SR any more,
unplug its PBD on this host and ``SR.forget`` it (``xapi_sr.ml``
``forget``: refuses while a PBD is plugged, ``SR_HAS_PBD``; destroys the
PBDs and the VDI records, never the data).
"""
import dataclasses
import re
import uuid as uuidlib
from typing import Callable, Dict, List, Optional, Set

from oslo_log import log as logging

from nova import exception
from nova.i18n import _
from nova.virt import driver as virt_driver

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)

#: Cinder ``driver_volume_type`` values this driver attaches
SUPPORTED_VOLUME_TYPES = ('iscsi',)
#: XAPI SR type of a volume SR (SM's ISCSISR)
VOLUME_SR_TYPE = 'iscsi'
DEFAULT_ISCSI_PORT = '3260'
#: namespace of volume SR uuids (uuid5 of "address/port/iqn")
SR_NAMESPACE = uuidlib.UUID('3cbd7c59-5a43-4e1b-9d0a-7b33c2a1f0e4')
NULL_REF = 'OpaqueRef:NULL'
_DEVICE = re.compile(r'^(?:/dev/)?(?:xvd|vd|sd|hd)([a-p])$')


def _noop_do(step: str, fn: Callable, *args, **kwargs):
    return fn(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class VolumeTarget:
    """Where one Cinder volume is: an iSCSI target and LUN."""
    volume_id: str
    address: str
    port: str
    iqn: str
    lun: int
    chap: Optional[tuple] = None

    @property
    def sr_uuid(self) -> str:
        return str(uuidlib.uuid5(SR_NAMESPACE, '%s/%s/%s' % (
            self.address, self.port, self.iqn)))

    def device_config(self) -> Dict[str, str]:
        config = {'target': self.address, 'port': self.port,
                  'targetIQN': self.iqn}
        if self.chap:
            config['chapuser'], config['chappassword'] = self.chap
        return config


def parse_connection_info(connection_info) -> VolumeTarget:
    """Cinder's *connection_info*, checked before anything is touched.

    :raises VolumeDriverNotFound: a ``driver_volume_type`` we do not attach.
    :raises VolumeEncryptionNotSupported: an encrypted volume.
    :raises InvalidVolume: a field is missing or malformed, or the volume
        is read-only (XAPI refuses read-only disks on HVM guests:
        ``DISK_VBD_MUST_BE_READWRITE_FOR_HVM``, ``xapi_vbd.ml`` ``plug``).
    """
    if not isinstance(connection_info, dict):
        raise exception.InvalidVolume(
            reason=_('connection_info is not a mapping'))
    kind = connection_info.get('driver_volume_type')
    if kind not in SUPPORTED_VOLUME_TYPES:
        raise exception.VolumeDriverNotFound(driver_type=kind)
    data = connection_info.get('data') or {}
    volume_id = data.get('volume_id') or connection_info.get('serial')
    missing = [k for k in ('target_portal', 'target_iqn', 'target_lun')
               if data.get(k) in (None, '')]
    if not volume_id:
        missing.insert(0, 'volume_id')
    if missing:
        raise exception.InvalidVolume(reason=_(
            'iSCSI connection_info of volume %(vol)s lacks %(keys)s') % {
                'vol': volume_id or '?', 'keys': ', '.join(missing)})
    portal = str(data['target_portal'])
    address, sep, port = portal.rpartition(':')
    if not sep:
        address, port = portal, DEFAULT_ISCSI_PORT
    address = address.strip('[]')
    if not address or not port.isdigit():
        raise exception.InvalidVolume(reason=_(
            'volume %(vol)s: target_portal %(portal)r is not host:port')
            % {'vol': volume_id, 'portal': portal})
    try:
        lun = int(data['target_lun'])
    except (TypeError, ValueError):
        lun = -1
    if lun < 0:
        raise exception.InvalidVolume(reason=_(
            'volume %(vol)s: target_lun %(lun)r is not a LUN number')
            % {'vol': volume_id, 'lun': data['target_lun']})
    chap = None
    if data.get('auth_method'):
        if str(data['auth_method']).upper() != 'CHAP' or not (
                data.get('auth_username') and data.get('auth_password')):
            raise exception.InvalidVolume(reason=_(
                'volume %s: only CHAP with auth_username and '
                'auth_password is supported') % volume_id)
        chap = (data['auth_username'], data['auth_password'])
    if data.get('encrypted'):
        raise exception.VolumeEncryptionNotSupported(
            volume_type=kind, volume_id=volume_id)
    if data.get('access_mode', 'rw') != 'rw':
        raise exception.InvalidVolume(reason=_(
            'volume %s is read-only: XAPI attaches disks of HVM guests '
            'read-write only') % volume_id)
    return VolumeTarget(str(volume_id), address, port,
                        str(data['target_iqn']), lun, chap)


def userdevice_of(mountpoint: str) -> int:
    """``/dev/xvdb`` (or vdb, sdb, hdb) -> XAPI userdevice 1."""
    m = _DEVICE.match(mountpoint or '')
    if not m:
        raise exception.InvalidDevicePath(path=mountpoint)
    return ord(m.group(1)) - ord('a')


@dataclasses.dataclass
class PlannedVolume:
    target: VolumeTarget
    userdevice: int
    mountpoint: str


def plan(block_device_info, taken: List[int]) -> List[PlannedVolume]:
    """The volumes of *block_device_info*, checked, in userdevice order;
    the boot volume (root device name or boot index 0) at userdevice 0.
    *taken*: userdevices the flavor's own disks use."""
    root_name = virt_driver.block_device_info_get_root_device(
        block_device_info)
    out: List[PlannedVolume] = []
    used = set(taken)
    for bdm in virt_driver.block_device_info_get_mapping(block_device_info):
        target = parse_connection_info(bdm.get('connection_info'))
        mount = bdm.get('mount_device') or ''
        is_root = bdm.get('boot_index') == 0 or (
            root_name and mount == root_name)
        userdevice = 0 if is_root else userdevice_of(mount)
        if userdevice in used and not (is_root and userdevice == 0):
            raise exception.InvalidBDM(_(
                'volume %(vol)s at %(dev)s: userdevice %(n)d is already '
                'used by another disk') % {'vol': target.volume_id,
                                           'dev': mount, 'n': userdevice})
        used.add(userdevice)
        out.append(PlannedVolume(target, userdevice, mount))
    return sorted(out, key=lambda v: v.userdevice)


class VolumeStorage(common.XapiUser):
    """SR / PBD / VDI of volumes on this host (no VM knowledge)."""

    def __init__(self, ctx) -> None:
        self._ctx = ctx

    def connector(self) -> dict:
        """What Cinder needs to export a volume to this host: the host's
        iSCSI initiator name as XAPI keeps it (``host.other_config``
        ``iscsi_iqn``), its address and hostname (as the old driver's
        ``get_volume_connector``)."""
        host = self._call('host.get_record', self._ctx.host_ref)
        connector = {'ip': host['address'], 'host': host['hostname'],
                     'platform': 'x86_64', 'os_type': 'linux',
                     'multipath': False}
        iqn = (host.get('other_config') or {}).get('iscsi_iqn')
        if iqn:
            connector['initiator'] = iqn
        else:
            LOG.warning('XAPI host %s has no other_config:iscsi_iqn: iSCSI '
                        'volumes cannot be exported to it',
                        host['name_label'])
        return connector

    def find_sr(self, target: VolumeTarget) -> Optional[str]:
        try:
            return self._call('SR.get_by_uuid', target.sr_uuid)
        except xapi_errors.XAPIError as exc:
            if exc.matches('UUID_INVALID') or exc.matches('HANDLE_INVALID'):
                return None
            raise

    def connect(self, target: VolumeTarget, label: str,
                do: Callable = _noop_do) -> tuple:
        """``(sr, vdi)`` of *target*, introduced and plugged as needed.
        On failure, an SR left unused is forgotten again."""
        sr = self.find_sr(target)
        made_pbd = None
        try:
            if sr is None:
                sr = do('SR.introduce', self._call, 'SR.introduce',
                        target.sr_uuid, 'volume-sr %s' % target.iqn,
                        label, VOLUME_SR_TYPE, '', False, {})
            pbd = self._host_pbd(sr)
            if pbd is None:
                pbd = made_pbd = do('PBD.create', self._call, 'PBD.create', {
                    'SR': sr, 'host': self._ctx.host_ref,
                    'device_config': target.device_config(),
                    'other_config': {}})
            if not self._call('PBD.get_currently_attached', pbd):
                do('PBD.plug', self._call, 'PBD.plug', pbd)
            do('SR.scan', self._call, 'SR.scan', sr)
            vdi = self._lun_vdi(sr, target)
            do('VDI.set_sharable', self._call, 'VDI.set_sharable', vdi,
               True)
            return sr, vdi
        except Exception:
            if made_pbd is not None:
                # this host had no PBD: nothing here uses the SR (it may be
                # in use on another host of the pool, and stays then)
                self._forget_pbd(made_pbd)
            if sr is not None:
                self.purge(sr, quiet=True)
            raise

    def _forget_pbd(self, pbd: str) -> None:
        unplug_and_destroy(self._call, 'PBD', pbd)

    def _host_pbd(self, sr: str) -> Optional[str]:
        for pbd in self._call('SR.get_PBDs', sr):
            if self._call('PBD.get_host', pbd) == self._ctx.host_ref:
                return pbd
        return None

    def _lun_vdi(self, sr: str, target: VolumeTarget) -> str:
        for vdi in self._call('SR.get_VDIs', sr):
            sm = self._call('VDI.get_sm_config', vdi)
            if sm.get('LUNid') == str(target.lun):
                return vdi
        raise exception.StorageError(reason=_(
            'target %(iqn)s at %(addr)s:%(port)s has no LUN %(lun)d '
            '(volume %(vol)s)') % {'iqn': target.iqn,
                                   'addr': target.address,
                                   'port': target.port, 'lun': target.lun,
                                   'vol': target.volume_id})

    def in_use(self, sr: str) -> bool:
        for vdi in self._call('SR.get_VDIs', sr):
            if self._call('VDI.get_VBDs', vdi):
                return True
        return False

    def purge(self, sr: str, quiet: bool = False) -> bool:
        """Forget *sr* if no VBD uses it (True when it is gone)."""
        try:
            if self.in_use(sr):
                LOG.debug('volume SR %s still in use: kept', sr)
                return False
            for pbd in self._call('SR.get_PBDs', sr):
                if self._call('PBD.get_currently_attached', pbd):
                    self._call('PBD.unplug', pbd)
            self._call('SR.forget', sr)
            return True
        except xapi_errors.HandleInvalid:
            return True
        except Exception as exc:
            if not quiet:
                raise
            LOG.error('could not forget volume SR %(sr)s: %(exc)s',
                      {'sr': sr, 'exc': exc})
            return False

    def volume_srs(self, vbds: List[str]) -> Set[str]:
        """Volume SRs behind *vbds* (before they are destroyed)."""
        out = set()
        for vbd in vbds:
            try:
                vdi = self._call('VBD.get_VDI', vbd)
                if vdi == NULL_REF:
                    continue
                sr = self._call('VDI.get_SR', vdi)
                if self._call('SR.get_type', sr) == VOLUME_SR_TYPE:
                    out.add(sr)
            except xapi_errors.HandleInvalid:
                continue
        return out

    def dm_disks(self, guest: str, bus: str,
                 known: List[int]) -> List[dict]:
        """Device-model disks for the guest's volumes that are not among
        the flavor's disks: QEMU in the stub domain emulates them from
        their mirror VBDs (attached to the stub domain at its start)."""
        out = []
        for vbd in self._call('VM.get_VBDs', guest):
            rec = self._call('VBD.get_record', vbd)
            if dc.OC_VOLUME_ID not in rec['other_config']:
                continue
            index = int(rec['userdevice'])
            if index not in known:
                out.append({'bus': bus, 'index': index})
        return sorted(out, key=lambda d: d['index'])


def unplug_and_destroy(call, cls: str, ref: str, instance=None) -> None:
    """Unplug *ref* (a VBD or PBD) if attached, then destroy it; one
    already gone is fine, any other failure is logged (clean-up paths must
    go on to the next object)."""
    try:
        if call('%s.get_currently_attached' % cls, ref):
            call('%s.unplug' % cls, ref)
        call('%s.destroy' % cls, ref)
    except xapi_errors.HandleInvalid:
        pass
    except Exception as exc:
        LOG.error('could not remove %(cls)s %(ref)s: %(exc)s',
                  {'cls': cls, 'ref': ref, 'exc': exc}, instance=instance)
