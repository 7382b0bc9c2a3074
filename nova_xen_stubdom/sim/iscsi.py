"""An iSCSI storage array on the simulated storage network, and XAPI's
storage messages for SRs of type ``iscsi`` (one SR per target, one VDI per
LUN: the SM driver ISCSISR / LUNperVDI of XCP-ng).

The array is what Cinder's iSCSI drivers export: targets (IQN, portal,
optional CHAP) holding LUNs whose contents are sparse files, as the
simulator's VDIs are.  Tests (and the driver's tests) register targets and
LUNs on it::

    arr = iscsi.array(sim)
    target = arr.add_target('iqn.2010-10.org.openstack:volume-1',
                            portal='192.0.2.10:3260')
    target.add_lun(1, 1 << 30)

XAPI behaviour modelled here, from xapi-project/xen-api ``ocaml/xapi``:

* ``xapi_sr.ml`` ``introduce``: a database record only ("It has no other
  side effect"); an empty uuid gets a fresh one, a uuid already known is
  ``SR_UUID_EXISTS``; ``physical_size``/``physical_utilisation`` start at -1.
* ``xapi_sr.ml`` ``forget``: ``check_no_pbds_attached`` (``SR_HAS_PBD``),
  then the SR's PBDs and VDI records are destroyed -- never the data.
* ``xapi_sr.ml`` ``scan`` / ``update_vdis``: the backend lists its VDIs;
  records appear for new locations and go for vanished ones; the SR's sizes
  are refreshed.  For an iSCSI SR the backend lists the target's LUNs
  (location = SCSI id, ``sm_config`` ``LUNid``/``SCSIid``).  An SR not
  attached on this host cannot be scanned (the storage layer's
  ``SR_NOT_ATTACHED``).
* ``xapi_pbd.ml`` ``create_common``: one PBD per (SR, host)
  (``PBD_EXISTS``); the ``SRmaster`` key is refused
  (``VALUE_NOT_SUPPORTED``).  ``plug``: a no-op when attached;
  ``check_sharing_constraint`` (``SR_NOT_SHARABLE``); then the backend's
  ``SR.attach`` -- for iSCSI the login to the target, which fails with the
  backend's error (real SM answers ``SR_BACKEND_FAILURE_<n>``; the datamodel
  knows the generic ``SR_BACKEND_FAILURE`` [status; stdout; stderr], used
  here with the SM status number).  ``unplug``: a no-op when detached;
  ``VDI_IN_USE`` while a VM resident on the host has one of the SR's VDIs
  attached; then ``SR.detach`` (the logout).  ``destroy``: refused while
  attached (``OPERATION_NOT_ALLOWED`` "PBD is currently attached").
* ``xapi_vdi.ml`` ``introduce`` / ``introduce_dbonly``: the location must
  be unique in the SR (``LOCATION_NOT_UNIQUE``), the uuid must look like
  one (``UUID_INVALID``), the SR must be plugged (``Helpers``
  ``assert_pbd_is_plugged``: ``SR_HAS_NO_PBDS``), and the backend must know
  the location; SRs whose driver lacks ``VDI_INTRODUCE`` answer
  ``SR_OPERATION_NOT_SUPPORTED``.
* A LUN VDI cannot be destroyed through XAPI (ISCSISR has no
  ``VDI_DELETE``: ``SR_OPERATION_NOT_SUPPORTED``); the volume belongs to
  the array (Cinder), XAPI only forgets it.
"""
import dataclasses
import hashlib
import os
import shutil
import tempfile
import threading
import uuid as uuidlib
from typing import Dict, Optional, Set, Tuple

from nova_xen_stubdom.sim import api, devices
from nova_xen_stubdom.sim.api import handler
from nova_xen_stubdom.sim.db import Database
from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.datamodel.schema import NULL_REF

SR_TYPE = 'iscsi'
DEFAULT_PORT = 3260
#: SR types the simulated hosts have SM drivers for (PBD.plug of any other
#: type: SR_UNKNOWN_DRIVER, as ``Storage_access.bind`` finds no plugin)
SM_DRIVERS = frozenset({'ext', 'lvm', 'iso', 'udev', SR_TYPE})
#: SM status numbers of ISCSISR failures (SR_BACKEND_FAILURE_<n>)
SM_ISCSI_LOGIN_FAILED = '68'
SM_NO_TARGET_IQN = '96'
SM_NO_TARGET = '95'
SM_CHAP_FAILED = '70'
SM_LUN_MISSING = '78'

# The errors these messages raise beyond their datamodel entries are
# listed in datamodel/fidelity.py MESSAGE_ERRORS (the sources above).


# -- the array -----------------------------------------------------------
@dataclasses.dataclass
class Lun:
    lun_id: int
    size: int
    path: str
    name: str = ''
    #: SCSI page-83 id, stable for the LUN's life (SM's SCSIid)
    scsi_id: str = ''


@dataclasses.dataclass
class Target:
    iqn: str
    portal: str
    chap: Optional[Tuple[str, str]] = None
    luns: Dict[int, Lun] = dataclasses.field(default_factory=dict)
    array: Optional['Array'] = None

    def add_lun(self, lun_id: int, size: int, name: str = '',
                data: bytes = b'') -> Lun:
        """A new LUN of *size* bytes (sparse), *data* written at 0."""
        if lun_id in self.luns:
            raise ValueError('LUN %d exists on %s' % (lun_id, self.iqn))
        scsi_id = '36' + hashlib.sha1(('%s/%d' % (self.iqn, lun_id))
                                      .encode()).hexdigest()[:30]
        path = os.path.join(self.array.directory, scsi_id + '.lun')
        with open(path, 'wb') as f:
            f.truncate(size)
            if data:
                f.write(data)
        lun = Lun(lun_id, size, path, name, scsi_id)
        with self.array.lock:
            self.luns[lun_id] = lun
        return lun

    def read(self, lun_id: int, length: int, offset: int = 0) -> bytes:
        with open(self.luns[lun_id].path, 'rb') as f:
            f.seek(offset)
            return f.read(length)


class Array:
    """The targets on the storage network and who is logged in to them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.directory = tempfile.mkdtemp(prefix='nxs-sim-iscsi-')
        self.targets: Dict[str, Target] = {}
        #: (host uuid, target iqn) of every iSCSI session (PBD plugged)
        self.sessions: Set[Tuple[str, str]] = set()

    def add_target(self, iqn: str, portal: str = '127.0.0.1:%d'
                   % DEFAULT_PORT, chap: Optional[Tuple[str, str]] = None
                   ) -> Target:
        with self.lock:
            if iqn in self.targets:
                raise ValueError('target %s exists' % iqn)
            t = self.targets[iqn] = Target(iqn, portal, chap, array=self)
        return t

    def remove_target(self, iqn: str) -> None:
        with self.lock:
            t = self.targets.pop(iqn)
        for lun in t.luns.values():
            os.unlink(lun.path)

    def login(self, host_uuid: str, device_config: Dict[str, str]
              ) -> Target:
        """An iSCSI login as ISCSISR's ``attach`` does it; the backend's
        error as ``SR_BACKEND_FAILURE`` otherwise."""
        iqn = device_config.get('targetIQN', '')
        address = device_config.get('target', '')
        if not address:
            raise _backend(SM_NO_TARGET, 'The target address is missing')
        if not iqn:
            raise _backend(SM_NO_TARGET_IQN,
                           'The targetIQN parameter is missing')
        port = device_config.get('port') or str(DEFAULT_PORT)
        with self.lock:
            t = self.targets.get(iqn)
            if t is None or t.portal != '%s:%s' % (address, port):
                raise _backend(SM_ISCSI_LOGIN_FAILED,
                               'ISCSI login failed to %s:%s %s'
                               % (address, port, iqn))
            if t.chap is not None and t.chap != (
                    device_config.get('chapuser'),
                    device_config.get('chappassword')):
                raise _backend(SM_CHAP_FAILED, 'CHAP authentication '
                               'failed for %s' % iqn)
            self.sessions.add((host_uuid, iqn))
        return t

    def logout(self, host_uuid: str, iqn: str) -> None:
        with self.lock:
            self.sessions.discard((host_uuid, iqn))

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _backend(status: str, stderr: str) -> XapiError:
    return XapiError('SR_BACKEND_FAILURE', status, '', stderr)


_arrays_lock = threading.Lock()


def array_of(pool) -> Array:
    """The array the hosts of *pool* reach (created on first use)."""
    with _arrays_lock:
        arr = getattr(pool, 'iscsi_array', None)
        if arr is None:
            arr = pool.iscsi_array = Array()
        return arr


def array(sim) -> Array:
    """The one array every pool of *sim* reaches."""
    arr = array_of(sim.pools[0])
    for pool in sim.pools[1:]:
        pool.iscsi_array = arr
    return arr


def close_arrays(pools) -> None:
    closed = set()
    for pool in pools:
        arr = getattr(pool, 'iscsi_array', None)
        if arr is not None and id(arr) not in closed:
            arr.close()
            closed.add(id(arr))


def leaks(pool) -> Dict[str, list]:
    """Volume SRs and PBDs left in XAPI, iSCSI sessions left open."""
    db = pool.db
    srs = [r for r in db.all_refs('SR')
           if db.get('SR', r)['type'] == SR_TYPE]
    arr = getattr(pool, 'iscsi_array', None)
    return {'SR': srs,
            'PBD': [p for s in srs for p in db.get('SR', s)['PBDs']],
            'iscsi_sessions': sorted('%s %s' % s for s in arr.sessions)
            if arr else []}


# -- helpers ------------------------------------------------------------------
def _vdi_uuid(scsi_id: str) -> str:
    # SM derives a LUN VDI's uuid from its SCSI id: the same LUN keeps its
    # uuid across SR.forget / SR.introduce
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, 'lun:' + scsi_id))


def _attached_pbd(db, sr: str, host_ref: str) -> Optional[str]:
    for pbd in db.get('SR', sr)['PBDs']:
        rec = db.get('PBD', pbd)
        if rec['host'] == host_ref and rec['currently_attached']:
            return pbd
    return None


def _target_of(ctx, sr: str, host_ref: str) -> Target:
    db = ctx.db
    pbd = _attached_pbd(db, sr, host_ref)
    if pbd is None:
        raise XapiError('SR_NOT_ATTACHED', sr)
    iqn = db.get('PBD', pbd)['device_config'].get('targetIQN', '')
    arr = array_of(ctx.pool)
    with arr.lock:
        t = arr.targets.get(iqn)
    if t is None:       # the target went away under a plugged PBD
        raise _backend(SM_ISCSI_LOGIN_FAILED, 'target %s is gone' % iqn)
    return t


def _lun_record(sr: str, lun: Lun) -> dict:
    return {
        'uuid': _vdi_uuid(lun.scsi_id), 'name_label': lun.name or
        'LUN%d' % lun.lun_id, 'name_description': '', 'SR': sr,
        'virtual_size': lun.size, 'physical_utilisation': lun.size,
        'type': 'user', 'sharable': False, 'read_only': False,
        'location': lun.scsi_id, 'managed': True,
        'sm_config': {'LUNid': str(lun.lun_id), 'SCSIid': lun.scsi_id},
        'allowed_operations': ['forget'],
    }


# -- SR -----------------------------------------------------------------------
@handler('SR.introduce')
def sr_introduce(ctx, uuid, name_label, name_description, sr_type,
                 content_type, shared, sm_config):
    db = ctx.db
    with db.lock:
        if uuid:
            if not Database.valid_uuid(uuid):
                raise XapiError('UUID_INVALID', 'SR', uuid)
            if db.find('SR', uuid=uuid):
                raise XapiError('SR_UUID_EXISTS', uuid)
        return db.create('SR', {
            'uuid': uuid, 'name_label': name_label,
            'name_description': name_description,
            'type': sr_type.lower(), 'content_type': content_type,
            'shared': shared, 'sm_config': dict(sm_config),
            'other_config': {}, 'physical_size': -1,
            'physical_utilisation': -1, 'virtual_allocation': 0})


def _forget_vdi(db, vdi: str) -> None:
    rec = db.get('VDI', vdi)
    for vbd in list(rec['VBDs']):
        if db.exists('VBD', vbd):
            db.set('VBD', vbd, VDI=NULL_REF, empty=True)
    db.unlink('SR', rec['SR'], 'VDIs', vdi)
    db.destroy('VDI', vdi)


@handler('SR.forget')
def sr_forget(ctx, sr):
    db = ctx.db
    with db.lock:
        rec = db.get('SR', sr)
        if any(db.get('PBD', p)['currently_attached'] for p in rec['PBDs']):
            raise XapiError('SR_HAS_PBD', sr)
        for pbd in list(rec['PBDs']):
            _pbd_gone(db, pbd)
        for vdi in list(rec['VDIs']):
            _forget_vdi(db, vdi)
        db.destroy('SR', sr)


@handler('SR.scan')
def sr_scan(ctx, sr):
    db = ctx.db
    rec = db.get('SR', sr)
    if rec['type'] != SR_TYPE:
        # file-based SRs: their VDIs are all the driver's own records
        if not any(db.get('PBD', p)['currently_attached']
                   for p in rec['PBDs']):
            raise XapiError('SR_NOT_ATTACHED', sr)
        return
    t = _target_of(ctx, sr, ctx.host.ref)
    with t.array.lock:
        luns = {lun.scsi_id: lun for lun in t.luns.values()}
    with db.lock:
        known = {db.get('VDI', v)['location']: v
                 for v in db.get('SR', sr)['VDIs']}
        for location, vdi in known.items():
            if location not in luns:
                _forget_vdi(db, vdi)
        for location, lun in luns.items():
            if location in known:
                db.set('VDI', known[location], virtual_size=lun.size)
                continue
            vdi = db.create('VDI', _lun_record(sr, lun))
            db.link('SR', sr, 'VDIs', vdi)
        total = sum(lun.size for lun in luns.values())
        db.set('SR', sr, physical_size=total, physical_utilisation=total,
               virtual_allocation=total)


# -- PBD ----------------------------------------------------------------------
def _pbd_gone(db, pbd: str) -> None:
    rec = db.get('PBD', pbd)
    db.unlink('SR', rec['SR'], 'PBDs', pbd)
    db.unlink('host', rec['host'], 'PBDs', pbd)
    db.destroy('PBD', pbd)


@handler('PBD.create')
def pbd_create(ctx, args):
    db = ctx.db
    sr, host = args.get('SR', NULL_REF), args.get('host', NULL_REF)
    if not db.exists('SR', sr):
        raise XapiError('HANDLE_INVALID', 'SR', sr)
    ctx.host_of(host)
    config = dict(args.get('device_config') or {})
    if 'SRmaster' in config:
        raise XapiError('VALUE_NOT_SUPPORTED', 'SRmaster',
                        config['SRmaster'],
                        'This key is for internal use only')
    with db.lock:
        for pbd in db.get('SR', sr)['PBDs']:
            if db.get('PBD', pbd)['host'] == host:
                raise XapiError('PBD_EXISTS', sr, host, pbd)
        ref = db.create('PBD', {
            'SR': sr, 'host': host, 'device_config': config,
            'currently_attached': False,
            'other_config': dict(args.get('other_config') or {})})
        db.link('SR', sr, 'PBDs', ref)
        db.link('host', host, 'PBDs', ref)
    return ref


@handler('PBD.plug')
def pbd_plug(ctx, pbd):
    db = ctx.db
    rec = db.snapshot('PBD', pbd)
    if rec['currently_attached']:
        return
    sr = db.get('SR', rec['SR'])
    if sr['type'] not in SM_DRIVERS:
        raise XapiError('SR_UNKNOWN_DRIVER', sr['type'])
    if not sr['shared']:
        for other in sr['PBDs']:
            o = db.get('PBD', other)
            if o['currently_attached'] and o['host'] != rec['host']:
                raise XapiError('SR_NOT_SHARABLE', rec['SR'], o['host'])
    if sr['type'] == SR_TYPE:
        host = ctx.host_of(rec['host'])
        array_of(ctx.pool).login(host.uuid, rec['device_config'])
    db.set('PBD', pbd, currently_attached=True)


@handler('PBD.unplug')
def pbd_unplug(ctx, pbd):
    db = ctx.db
    with db.lock:
        rec = db.get('PBD', pbd)
        if not rec['currently_attached']:
            return
        sr = db.get('SR', rec['SR'])
        for vdi in sr['VDIs']:
            for vbd in db.get('VDI', vdi)['VBDs']:
                v = db.get('VBD', vbd)
                vm = db.get('VM', v['VM'])
                if v['currently_attached'] and \
                        vm['resident_on'] == rec['host']:
                    # XAPI lists every VDI in use; the datamodel's
                    # VDI_IN_USE has [vdi; operation]
                    raise XapiError('VDI_IN_USE', vdi, 'PBD.unplug')
        if sr['type'] == SR_TYPE:
            host = ctx.host_of(rec['host'])
            array_of(ctx.pool).logout(
                host.uuid, rec['device_config'].get('targetIQN', ''))
        db.set('PBD', pbd, currently_attached=False)


@handler('PBD.destroy')
def pbd_destroy(ctx, pbd):
    db = ctx.db
    with db.lock:
        if db.get('PBD', pbd)['currently_attached']:
            raise XapiError('OPERATION_NOT_ALLOWED',
                            'PBD is currently attached')
        _pbd_gone(db, pbd)


# -- VDI ----------------------------------------------------------------------
@handler('VDI.introduce')
def vdi_introduce(ctx, uuid, name_label, name_description, sr, vdi_type,
                  sharable, read_only, other_config, location,
                  xenstore_data, sm_config, managed, virtual_size,
                  physical_utilisation, metadata_of_pool, is_a_snapshot,
                  snapshot_time, snapshot_of):
    db = ctx.db
    rec = db.get('SR', sr)
    if rec['type'] != SR_TYPE:
        raise XapiError('SR_OPERATION_NOT_SUPPORTED', sr)
    for vdi in rec['VDIs']:
        if db.get('VDI', vdi)['location'] == location:
            raise XapiError('LOCATION_NOT_UNIQUE', sr, location)
    if not Database.valid_uuid(uuid):
        raise XapiError('UUID_INVALID', 'VDI', uuid)
    if _attached_pbd(db, sr, ctx.host.ref) is None:
        raise XapiError('SR_HAS_NO_PBDS', sr)
    t = _target_of(ctx, sr, ctx.host.ref)
    with t.array.lock:
        lun = next((x for x in t.luns.values() if x.scsi_id == location),
                   None)
    if lun is None:
        raise _backend(SM_LUN_MISSING, 'no LUN with SCSI id %s on %s'
                       % (location, t.iqn))
    fields = _lun_record(sr, lun)
    fields.update({
        'uuid': uuid, 'name_label': name_label,
        'name_description': name_description, 'type': vdi_type,
        'sharable': sharable, 'read_only': read_only,
        'other_config': dict(other_config),
        'xenstore_data': dict(xenstore_data), 'managed': managed,
        'is_a_snapshot': is_a_snapshot, 'snapshot_time': snapshot_time,
        'snapshot_of': snapshot_of, 'metadata_of_pool': metadata_of_pool})
    fields['sm_config'] = dict(fields['sm_config'], **sm_config)
    with db.lock:
        vdi = db.create('VDI', fields)
        db.link('SR', sr, 'VDIs', vdi)
    return vdi


@handler('VDI.forget')
def vdi_forget(ctx, vdi):
    with ctx.db.lock:
        _forget_vdi(ctx.db, vdi)


def _lun_file(ctx, vdi: str, host=None) -> str:
    """Where a LUN VDI's blocks are, seen from *host*: the LUN's file on
    the array, once that host attached the SR."""
    db = ctx.db
    rec = db.get('VDI', vdi)
    host = host or ctx.host
    t = _target_of(ctx, rec['SR'], host.ref) if _attached_pbd(
        db, rec['SR'], host.ref) else None
    if t is None:
        # a VM start / VBD.plug on a host that has not attached the SR
        raise XapiError('SR_NOT_ATTACHED', rec['SR'])
    with t.array.lock:
        for lun in t.luns.values():
            if lun.scsi_id == rec['location']:
                return lun.path
    raise _backend(SM_LUN_MISSING, 'LUN %s is gone' % rec['location'])


_generic_vdi_destroying = api.BEFORE_DESTROY['VDI']


def _vdi_destroying(ctx, vdi: str) -> None:
    sr = ctx.db.get('VDI', vdi)['SR']
    if ctx.db.exists('SR', sr) and ctx.db.get('SR', sr)['type'] == SR_TYPE:
        raise XapiError('SR_OPERATION_NOT_SUPPORTED', sr)
    _generic_vdi_destroying(ctx, vdi)


api.BEFORE_DESTROY['VDI'] = _vdi_destroying
devices.VDI_BACKINGS[SR_TYPE] = _lun_file
