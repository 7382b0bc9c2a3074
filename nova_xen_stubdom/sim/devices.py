"""VBDs, VIFs, VDIs, consoles and the device model of a starting guest.

A plugged VBD/VIF becomes a PV frontend of the VM's domain in the host's
hypervisor (``Hypervisor.frontends``: which domain holds which frontend),
backed by the VDI's file or the network's bridge.  VDIs are sparse files.
"""
import functools
import logging
import os

from nova_xen_stubdom.sim import api, hotplug_rules, storage, vbd_rules, \
    vif_rules
from nova_xen_stubdom.sim.api import handler
from nova_xen_stubdom.sim.errors import XapiError, handle_invalid
from nova_xen_stubdom.sim.hypervisor import Frontend
from nova_xen_stubdom.datamodel.schema import NULL_REF

LOG = logging.getLogger(__name__)


def _vbd_devname(userdevice: str) -> str:
    if userdevice.isdigit():
        return 'xvd%s' % chr(ord('a') + int(userdevice))
    return userdevice


#: xenopsd ``Domain.allowed_xsdata_prefixes``: the only ``VM.xenstore_data``
#: keys written to the domain's xenstore directory
XSDATA_PREFIXES = ('vm-data/', 'FIST/')

#: XAPI ``Vm_platform.filtered_flags``: the platform keys that reach xenopsd
#: unless the pool feature ``No_platform_filter`` is on (not modelled: the
#: simulated pool always filters)
PLATFORM_FLAGS = frozenset((
    'acpi', 'apic', 'nx', 'pae', 'viridian', 'acpi_s3', 'acpi_s4',
    'mmio_size_mib', 'revision', 'device_id', 'tsc_mode', 'device-model',
    'xenguest', 'pv-kernel-max-size', 'pv-ramdisk-max-size',
    'pv-postinstall-kernel-max-size', 'pv-postinstall-ramdisk-max-size',
    'usb', 'usb_tablet', 'parallel', 'vga', 'featureset', 'nested-virt',
    'vcpu-unrestricted'))


def write_domain_config(hv, dom, rec) -> None:
    """What xenopsd's ``Domain.make`` writes before the device model starts
    (xen-api ``ocaml/xenopsd/xc/domain.ml``), from what XAPI passes
    (``ocaml/xapi/xapi_xenops.ml`` ``MD.of_vm``: ``xsdata`` is
    ``VM.xenstore_data`` unchanged, ``platformdata`` the platform map after
    ``Vm_platform.sanity_check ~filter_out_unknowns``)."""
    xs = hv.xenstore
    base = '/local/domain/%d' % dom.domid
    xs.write(base + '/memory/static-max', str(rec['memory_static_max'] >> 10))
    xs.write(base + '/memory/target', str(rec['memory_target'] >> 10))
    xs.write(base + '/cpu/number', str(rec['VCPUs_at_startup']))
    if dom.hvm:
        xs.write(base + '/hvmloader/bios', rec['HVM_boot_params'].get(
            'firmware', 'bios'))
        for k, v in rec['platform'].items():
            xs.write('/vm/%s/platform/%s' % (rec['uuid'], k), v)
    for k, v in rec['platform'].items():
        # XAPI's platform filter drops the rest (platform:stubdom among
        # them) before xenopsd sees the map
        if k in PLATFORM_FLAGS:
            xs.write('%s/platform/%s' % (base, k), v)
    for k, v in rec['xenstore_data'].items():
        # Domain.make: filtered_xsdata keeps only keys under the allowed
        # prefixes (a bare "vm-data" key is dropped too)
        if k.startswith(XSDATA_PREFIXES):
            xs.write('%s/%s' % (base, k), v)


# -- plug / unplug ------------------------------------------------------------
def _plug_vbd(ctx, vbd: str, host, domid: int) -> None:
    db = ctx.db
    rec = db.get('VBD', vbd)
    devname = _vbd_devname(rec['userdevice'])
    target = ''
    if not rec['empty'] and rec['VDI'] != NULL_REF:
        _assert_attachable(ctx, vbd, rec)
        target = vdi_file(ctx, rec['VDI'], host)
    host.hypervisor.add_frontend(Frontend(domid, 'vbd', devname, 0, target,
                                          vbd))
    db.set('VBD', vbd, currently_attached=True, device=devname)


def _plug_vif(ctx, vif: str, host, domid: int) -> None:
    db = ctx.db
    rec = db.get('VIF', vif)
    bridge = db.get('network', rec['network'])['bridge'] \
        if db.exists('network', rec['network']) else ''
    host.hypervisor.add_frontend(Frontend(domid, 'vif', rec['device'], 0,
                                          bridge, vif))
    db.set('VIF', vif, currently_attached=True)


def _assert_attachable(ctx, vbd: str, rec: dict) -> None:
    """XAPI refuses a second read-write attachment of a VDI that is not
    ``sharable`` (VDI_IN_USE)."""
    db = ctx.db
    vdi = db.get('VDI', rec['VDI'])
    if vdi['sharable']:
        return
    if rec['mode'] == 'RW' and vdi['read_only']:
        raise XapiError('VDI_READONLY', rec['VDI'])
    for other in vdi['VBDs']:
        if other == vbd or not db.exists('VBD', other):
            continue
        o = db.get('VBD', other)
        if o['currently_attached'] and 'RW' in (o['mode'], rec['mode']):
            raise XapiError('VDI_IN_USE', rec['VDI'], 'attach')


def plug_all(ctx, vm: str, host, domid: int) -> None:
    rec = ctx.db.get('VM', vm)
    for vbd in rec['VBDs']:
        _plug_vbd(ctx, vbd, host, domid)
    for vif in rec['VIFs']:
        _plug_vif(ctx, vif, host, domid)


def unplug_all(ctx, vm: str, domid: int, host) -> None:
    db = ctx.db
    rec = db.get('VM', vm)
    for cls in ('VBD', 'VIF'):
        for ref in rec[cls + 's']:
            if db.exists(cls, ref):
                _detach(ctx, cls, ref, host, domid)
    _stop_device_model(host, domid, rec['uuid'])


def _detach(ctx, cls: str, ref: str, host, domid) -> None:
    """The VBD/VIF's frontend leaves the domain (if it runs on *host*)."""
    if host is not None:
        host.hypervisor.remove_frontend(domid, cls.lower(),
                                        ctx.db.get(cls, ref)['device'])
    ctx.db.set(cls, ref, currently_attached=False)


def _running_domain(ctx, vm: str):
    rec = ctx.db.get('VM', vm)
    if rec['power_state'] not in ('Running', 'Paused'):
        return None, None
    return ctx.pool.host_by_ref(rec['resident_on']), rec['domid']


def _plug(ctx, cls: str, ref: str, attach) -> None:
    """VBD.plug / VIF.plug: hot-plug into the VM's running domain."""
    rec = ctx.db.get(cls, ref)
    if rec['currently_attached']:
        raise XapiError('DEVICE_ALREADY_ATTACHED', ref)
    host, domid = _running_domain(ctx, rec['VM'])
    if host is None:
        raise XapiError('VM_BAD_POWER_STATE', rec['VM'], 'running',
                        ctx.db.get('VM', rec['VM'])['power_state'].lower())
    attach(ctx, ref, host, domid)


def _unplug(ctx, cls: str, ref: str) -> None:
    """VBD.unplug / VIF.unplug (and their _force)."""
    rec = ctx.db.get(cls, ref)
    if not rec['currently_attached']:
        raise XapiError('DEVICE_ALREADY_DETACHED', ref)
    host, domid = _running_domain(ctx, rec['VM'])
    _detach(ctx, cls, ref, host, domid)


@handler('VBD.plug')
def vbd_plug(ctx, vbd):
    # message_forwarding.ml VBD.plug: with_vbd_marked asserts the
    # operation valid (sim/vbd_rules.py) before Xapi_vbd.plug runs
    vbd_rules.assert_operation_valid(ctx.db, vbd, 'plug')
    # xapi_vbd.ml plug (CA-83260): no read-only disk on an HVM guest
    rec = ctx.db.get('VBD', vbd)
    if rec['type'] != 'CD' and rec['mode'] == 'RO' and \
            ctx.db.exists('VM', rec['VM']) and \
            hotplug_rules.is_hvm(ctx.db.get('VM', rec['VM'])):
        raise XapiError('DISK_VBD_MUST_BE_READWRITE_FOR_HVM', vbd)
    try:
        _plug(ctx, 'VBD', vbd, _plug_vbd)
    finally:
        vbd_rules.update_allowed_operations(ctx.db, vbd)


@handler('VBD.unplug', 'VBD.unplug_force')
def vbd_unplug(ctx, vbd):
    vbd_rules.assert_operation_valid(ctx.db, vbd, ctx.message.name)
    try:
        _unplug(ctx, 'VBD', vbd)
    finally:
        vbd_rules.update_allowed_operations(ctx.db, vbd)


@handler('VIF.plug')
def vif_plug(ctx, vif):
    # message_forwarding.ml VIF.plug: with_vif_marked asserts the
    # operation valid (sim/vif_rules.py) before xenopsd is asked
    vif_rules.assert_operation_valid(ctx.db, vif, 'plug')
    try:
        _plug(ctx, 'VIF', vif, _plug_vif)
    finally:
        vif_rules.update_allowed_operations(ctx.db, vif)


@handler('VIF.unplug', 'VIF.unplug_force')
def vif_unplug(ctx, vif):
    vif_rules.assert_operation_valid(ctx.db, vif, 'unplug')
    try:
        _unplug(ctx, 'VIF', vif)
    finally:
        vif_rules.update_allowed_operations(ctx.db, vif)


# -- create / destroy hooks ---------------------------------------------------
#: device class -> (its slot field, unique per VM; the class it is backed by)
_DEVICES = {'VBD': ('userdevice', 'VDI'), 'VIF': ('device', 'network')}


def _device_created(ctx, ref, cls):
    """A new VBD/VIF: its slot is free on its VM (XAPI's
    DEVICE_ALREADY_EXISTS); it is linked from its VM and what backs it (an
    empty CD drive's VBD has no VDI)."""
    slot, backing = _DEVICES[cls]
    db = ctx.db
    rec = db.get(cls, ref)
    if rec['VM'] == NULL_REF:
        raise handle_invalid('VM', rec['VM'])
    if cls == 'VIF':
        vif_rules.check_create(rec, db.get('VM', rec['VM'])['other_config'])
    elif rec['type'] == 'CD' and rec['mode'] != 'RO':
        # xapi_vbd.ml create: "All CD VBDs must be readonly"
        raise XapiError('VBD_CDS_MUST_BE_READONLY')
    for other in db.get('VM', rec['VM'])[cls + 's']:
        if db.get(cls, other)[slot] == rec[slot]:
            raise XapiError('DEVICE_ALREADY_EXISTS', rec[slot])
    rec['currently_attached'] = False
    if cls == 'VBD':
        rec['device'] = ''
    db.link('VM', rec['VM'], cls + 's', ref)
    db.link(backing, rec[backing], cls + 's', ref)
    (vbd_rules if cls == 'VBD' else vif_rules).update_allowed_operations(
        db, ref)


def _device_destroying(ctx, ref, cls):
    """A plugged VBD/VIF cannot be destroyed; else it leaves its VM's and
    its backing's sets."""
    _slot, backing = _DEVICES[cls]
    db = ctx.db
    rec = db.get(cls, ref)
    if rec['currently_attached']:
        raise XapiError('OPERATION_NOT_ALLOWED',
                        '%s %s is attached' % (cls, rec['uuid']))
    db.unlink('VM', rec['VM'], cls + 's', ref)
    db.unlink(backing, rec[backing], cls + 's', ref)


def _vdi_created(ctx, vdi):
    db = ctx.db
    rec = db.get('VDI', vdi)
    if rec['SR'] == NULL_REF:
        raise handle_invalid('SR', rec['SR'])
    rec['location'] = rec['uuid']
    rec['managed'] = True
    rec['allowed_operations'] = ['clone', 'copy', 'destroy', 'resize',
                                 'snapshot']
    storage.create_file(ctx.pool, rec['uuid'], rec['virtual_size'])
    db.link('SR', rec['SR'], 'VDIs', vdi)
    _sr_usage(ctx, rec['SR'])


def _vdi_destroying(ctx, vdi):
    db = ctx.db
    rec = db.get('VDI', vdi)
    for vbd in rec['VBDs']:
        if db.exists('VBD', vbd) and db.get('VBD', vbd)['currently_attached']:
            raise XapiError('VDI_IN_USE', vdi, 'destroy')
    for vbd in list(rec['VBDs']):
        if db.exists('VBD', vbd):
            db.set('VBD', vbd, VDI=NULL_REF, empty=True)
    storage.remove_file(ctx.pool, rec['uuid'])
    db.unlink('SR', rec['SR'], 'VDIs', vdi)
    _sr_usage(ctx, rec['SR'], minus=rec['virtual_size'])


def _sr_usage(ctx, sr, minus=0):
    db = ctx.db
    if not db.exists('SR', sr):
        return
    total = sum(db.get('VDI', v)['virtual_size']
                for v in db.get('SR', sr)['VDIs'] if db.exists('VDI', v))
    db.set('SR', sr, virtual_allocation=max(0, total - (
        minus if minus and total >= minus else 0)),
        physical_utilisation=total)


#: SR type -> fn(ctx, vdi, host) giving the file behind a VDI of an SR
#: whose VDIs are not files of the pool's VDI directory (sim/iscsi.py)
VDI_BACKINGS = {}


def vdi_file(ctx, vdi: str, host=None) -> str:
    rec = ctx.db.get('VDI', vdi)
    if ctx.db.exists('SR', rec['SR']):
        backing = VDI_BACKINGS.get(ctx.db.get('SR', rec['SR'])['type'])
        if backing is not None:
            return backing(ctx, vdi, host)
    return storage.vdi_path(ctx.pool, rec['uuid'])


for _cls in _DEVICES:
    api.AFTER_CREATE[_cls] = functools.partial(_device_created, cls=_cls)
    api.BEFORE_DESTROY[_cls] = functools.partial(_device_destroying,
                                                 cls=_cls)
api.AFTER_CREATE['VDI'] = _vdi_created
api.BEFORE_DESTROY['VDI'] = _vdi_destroying


@handler('VDI.resize')
def vdi_resize(ctx, vdi, size):
    rec = ctx.db.get('VDI', vdi)
    if size < rec['virtual_size']:
        raise XapiError('VDI_TOO_SMALL', vdi, size)
    storage.resize_file(ctx.pool, rec['uuid'], size)
    ctx.db.set('VDI', vdi, virtual_size=size)


@handler('VDI.copy')
def vdi_copy(ctx, vdi, sr, base_vdi, into_vdi):
    """Copy *vdi*'s contents into a new VDI on *sr*, or into *into_vdi*
    (which must be large enough; *base_vdi* is accepted and ignored: the
    whole disk is copied)."""
    rec = ctx.db.snapshot('VDI', vdi)
    if into_vdi != NULL_REF:
        into = ctx.db.get('VDI', into_vdi)
        if into['read_only']:
            raise XapiError('VDI_READONLY', into_vdi)
        if into['virtual_size'] < rec['virtual_size']:
            raise XapiError('VDI_TOO_SMALL', into_vdi, rec['virtual_size'])
        # the source may be a LUN of an iSCSI SR, not a file of the pool
        storage.sparse_copy(vdi_file(ctx, vdi), vdi_file(ctx, into_vdi))
        return into_vdi
    if sr == NULL_REF:
        raise handle_invalid('SR', sr)
    new = api.generic_create(ctx, 'VDI', {
        'name_label': rec['name_label'],
        'name_description': rec['name_description'], 'SR': sr,
        'virtual_size': rec['virtual_size'], 'type': rec['type'],
        'sharable': rec['sharable'], 'read_only': rec['read_only'],
        'other_config': rec['other_config'], 'xenstore_data': {},
        'sm_config': {}, 'tags': []})
    storage.sparse_copy(vdi_file(ctx, vdi), vdi_file(ctx, new))
    return new


# -- device model -------------------------------------------------------------
def launch_device_model(ctx, host, vm, rec, domid: int) -> None:
    """xenopsd's device-model start for an HVM VM (``sim/xenopsd_dm.py``:
    our wrapper's decision, the stock wrapper's dom0 QEMU for VMs not
    ours)."""
    from nova_xen_stubdom.sim import xenopsd_dm
    hv = host.hypervisor
    try:
        dm = xenopsd_dm.start(ctx, host, rec, domid)
    except Exception as e:
        # the wrapper exits non-zero: xenopsd fails the start
        LOG.info('device model for %s refused: %s', rec['uuid'], e)
        raise XapiError('INTERNAL_ERROR', 'device model failed to start: '
                        '%s: %s' % (type(e).__name__, e))
    with hv.lock:
        hv.device_models[domid] = dm
    if dm == 0:
        hv.xenstore.write('/local/domain/%d/image/device-model-domid'
                          % domid, '0')
    # what QEMU in a stub domain passes through is what pcifront shows it:
    # the pciback backend wired for the stub domain (libxl's layout)
    sbdfs = stubdom_pci_devices(hv, dm) if dm else []
    if sbdfs:
        from nova_xen_stubdom.sim.pci import SimPciError
        try:
            host.pci.check_guest_start(domid, dm, sbdfs)
        except SimPciError as e:
            raise XapiError(e.code, *e.params)


def stubdom_pci_devices(hv, stub_domid: int):
    """sbdfs in ``/local/domain/0/backend/pci/<stub>/0/dev-N``."""
    be = '/local/domain/0/backend/pci/%d/0' % stub_domid
    try:
        n = int(hv.xenstore.read(be + '/num_devs') or 0)
    except ValueError:
        return []
    devs = (hv.xenstore.read('%s/dev-%d' % (be, i)) for i in range(n))
    return [d for d in devs if d]


def _stop_device_model(host, domid: int, vm_uuid: str) -> None:
    """xenopsd stops the device model (``Dm.stop`` -> ``Service.Qemu.stop``:
    SIGTERM to its pid).  Our wrapper, serving one of ours, then undoes its
    link (``device_model.stop``); a VM handed to the stock wrapper never
    reaches our code again."""
    hv = host.hypervisor
    with hv.lock:
        dm = hv.device_models.get(domid)
        run = hv.dm_wrapper_runs.pop(domid, None)
    if dm is None:
        return
    if run is not None and run.ours is not None:
        from nova_xen_stubdom.dom0 import device_model
        try:
            device_model.stop(host.agent(), domid, vm_uuid)
        except Exception:
            LOG.exception('device-model wrapper stop for domain %d', domid)
    from nova_xen_stubdom.sim import devicemodel
    devicemodel.stop_dom0_qemu(hv, domid)


# -- consoles -----------------------------------------------------------------
def create_console(ctx, vm, host, domid, hvm) -> None:
    """The console records XAPI makes from xenopsd's ``VM.stat`` consoles
    (xen-api ``ocaml/xapi/xapi_xenops.ml`` ``update_vm``, "consoles"):
    protocol, ``location = https://<host address>/console?uuid=<uuid>``
    and an empty ``other_config`` (its ``port`` is a database-only field,
    not in the API).  An HVM guest's rfb console is the device model's VNC
    socket in dom0 (``/var/run/xen/vnc-<domid>``), which only XAPI's
    console proxy reaches.  A PV VM's consoles are vncterm's
    (``ocaml/xenopsd/xc/service.ml`` ``PV_Vnc.start``: ``-T`` and ``-v``
    write ``console/tc-port`` and ``vnc-port``, so ``get_state`` lists
    ``vt100`` and ``rfb``); xenopsd starts vncterm unless the VM's
    ``other_config`` has ``disable_pv_vnc`` (``xapi_xenops.ml``
    ``vncterm``), and then there is none."""
    from nova_xen_stubdom.sim import devicemodel
    db = ctx.db
    if hvm:
        if devicemodel.vnc_socket(host.hypervisor, domid) is None and \
                devicemodel.vnc_endpoint(host.hypervisor, domid) is None:
            return      # no device model with a display: no console
        protocols = ['rfb']
    elif 'disable_pv_vnc' in db.get('VM', vm)['other_config']:
        return          # no vncterm: no console
    else:
        protocols = ['rfb', 'vt100']
    for protocol in protocols:
        ref = db.create('console', {'VM': vm, 'protocol': protocol,
                                    'other_config': {}})
        uuid = db.get('console', ref)['uuid']
        db.set('console', ref, location='https://%s/console?uuid=%s'
               % (host.address, uuid))
        db.link('VM', vm, 'consoles', ref)


def destroy_consoles(ctx, vm) -> None:
    db = ctx.db
    for ref in list(db.get('VM', vm)['consoles']):
        db.unlink('VM', vm, 'consoles', ref)
        if db.exists('console', ref):
            db.destroy('console', ref)


# -- suspend images -----------------------------------------------------------
def save_suspend_image(ctx, vm, host, rec) -> str:
    """Write the domain's memory + HVM context into a new VDI."""
    dom = host.hypervisor.domain(rec['domid'])
    size = dom.max_pfn * 4096
    sr = ctx.db.get('pool', ctx.pool.ref)['suspend_image_SR']
    vdi = api.generic_create(ctx, 'VDI', {
        'name_label': 'Suspend image', 'name_description': '', 'SR': sr,
        'virtual_size': size + (1 << 20), 'type': 'suspend',
        'sharable': False, 'read_only': False, 'other_config': {},
        'xenstore_data': {}, 'sm_config': {}, 'tags': []})
    host.hypervisor.pause(dom.domid)
    with open(vdi_file(ctx, vdi), 'r+b') as f:
        mem = dom.memory()
        try:
            _sparse_write(f, mem, dom._fd)
        finally:
            mem.release()
        f.seek(size)
        ctx_blob = dom.hvm_context
        f.write(len(ctx_blob).to_bytes(8, 'little') + ctx_blob)
    return vdi


def _data_ranges(fd: int, end: int):
    """(start, stop) of the allocated parts of a sparse file."""
    off = 0
    while off < end:
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:      # ENXIO: nothing after off
            return
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole
        off = hole


def _sparse_write(f, mem, src_fd: int) -> None:
    # guest memory is mostly untouched: copy only what the memory file has
    for start, stop in _data_ranges(src_fd, len(mem)):
        f.seek(start)
        f.write(mem[start:stop])


def _sparse_read(f, mem) -> None:
    for start, stop in _data_ranges(f.fileno(), len(mem)):
        f.seek(start)
        f.readinto(mem[start:stop])


def load_suspend_image(ctx, vm, host, dom) -> None:
    vdi = ctx.db.get('VM', vm)['suspend_VDI']
    if vdi == NULL_REF or not ctx.db.exists('VDI', vdi):
        return
    with open(vdi_file(ctx, vdi), 'rb') as f:
        mem = dom.memory()
        try:
            _sparse_read(f, mem)
        finally:
            mem.release()
        f.seek(dom.max_pfn * 4096)
        n = int.from_bytes(f.read(8), 'little')
        if n:
            dom.hvm_context = f.read(n)
    dom.dirty(range(dom.max_pfn))
