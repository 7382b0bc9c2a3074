"""Clones, copies and snapshots of VMs and VDIs.

Disk contents are copied sparsely (the simulator has no copy-on-write):
``VDI.clone``/``VDI.snapshot`` make a new VDI on the same SR with the same
bytes; ``VM.clone``/``VM.copy``/``VM.snapshot`` copy the VM record (not its
runtime fields), its VIFs and its VBDs, each VBD onto a clone (copy: onto
a copy on the given SR; snapshot: onto a snapshot) of its VDI.
"""
import copy as copylib

from nova_xen_stubdom.sim import api, storage, wire
from nova_xen_stubdom.sim.api import handler
from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.datamodel.schema import NULL_REF

_VDI_KEEP = ('name_label', 'name_description', 'virtual_size', 'type',
             'sharable', 'read_only', 'other_config', 'xenstore_data',
             'sm_config', 'tags')


def _copy_vdi(ctx, vdi: str, sr: str, snapshot: bool = False) -> str:
    db = ctx.db
    rec = db.snapshot('VDI', vdi)
    fields = {k: rec[k] for k in _VDI_KEEP}
    fields['SR'] = sr
    new = api.generic_create(ctx, 'VDI', fields)
    storage.sparse_copy(storage.vdi_path(ctx.pool, rec['uuid']),
                        storage.vdi_path(ctx.pool,
                                         db.get('VDI', new)['uuid']))
    if snapshot:
        db.set('VDI', new, is_a_snapshot=True, snapshot_of=vdi,
               snapshot_time=wire.now())
        db.link('VDI', vdi, 'snapshots', new)
    return new


@handler('VDI.clone')
def vdi_clone(ctx, vdi, driver_params):
    return _copy_vdi(ctx, vdi, ctx.db.get('VDI', vdi)['SR'])


@handler('VDI.snapshot')
def vdi_snapshot(ctx, vdi, driver_params):
    return _copy_vdi(ctx, vdi, ctx.db.get('VDI', vdi)['SR'], snapshot=True)


def _copy_vm(ctx, vm: str, new_name: str, sr=None, snapshot=False,
             ignore=()) -> str:
    db = ctx.db
    rec = db.snapshot('VM', vm)
    if rec['is_control_domain']:
        raise XapiError('OPERATION_NOT_ALLOWED',
                        'the control domain cannot be copied')
    states = ('Halted', 'Running', 'Paused', 'Suspended') if snapshot \
        else ('Halted', 'Suspended')
    if rec['power_state'] not in states:
        raise XapiError('VM_BAD_POWER_STATE', vm, states[0].lower(),
                        rec['power_state'].lower())
    fields = {k: copylib.deepcopy(rec[k])
              for k in api.constructor_fields('VM') if k in rec}
    fields.update(name_label=new_name, power_state='Halted',
                  suspend_VDI=NULL_REF)
    created = []
    try:
        new = api.generic_create(ctx, 'VM', fields)
        created.append(('VM', new))
        if snapshot:
            db.set('VM', new, is_a_snapshot=True, snapshot_of=vm,
                   snapshot_time=wire.now(), is_a_template=True)
            db.link('VM', vm, 'snapshots', new)
        for vbd in rec['VBDs']:
            v = db.snapshot('VBD', vbd)
            disk = v['VDI']
            if disk != NULL_REF and disk not in ignore and not v['empty']:
                target_sr = sr if sr else db.get('VDI', disk)['SR']
                disk = _copy_vdi(ctx, disk, target_sr, snapshot)
                created.append(('VDI', disk))
            elif disk in ignore:
                disk = NULL_REF
            nv = api.generic_create(ctx, 'VBD', {
                'VM': new, 'VDI': disk, 'userdevice': v['userdevice'],
                'bootable': v['bootable'], 'mode': v['mode'],
                'type': v['type'], 'unpluggable': v['unpluggable'],
                'empty': disk == NULL_REF, 'other_config': v['other_config'],
                'qos_algorithm_type': v['qos_algorithm_type'],
                'qos_algorithm_params': v['qos_algorithm_params']})
            created.append(('VBD', nv))
        for vif in rec['VIFs']:
            f = db.snapshot('VIF', vif)
            nf = api.generic_create(ctx, 'VIF', {
                k: f[k] for k in api.constructor_fields('VIF') if k in f}
                | {'VM': new})
            created.append(('VIF', nf))
    except Exception:
        # a failed copy leaves nothing behind
        for cls, ref in reversed(created):
            if db.exists(cls, ref):
                api.generic_destroy(ctx, cls, ref)
        raise
    return new


@handler('VM.clone')
def vm_clone(ctx, vm, new_name):
    return _copy_vm(ctx, vm, new_name)


@handler('VM.copy')
def vm_copy(ctx, vm, new_name, sr):
    return _copy_vm(ctx, vm, new_name, sr=None if sr == NULL_REF else sr)


@handler('VM.snapshot')
def vm_snapshot(ctx, vm, new_name, ignore_vdis):
    return _copy_vm(ctx, vm, new_name, snapshot=True,
                    ignore=set(ignore_vdis))


@handler('VM.provision')
def vm_provision(ctx, vm):
    rec = ctx.db.get('VM', vm)
    if rec['power_state'] != 'Halted':
        raise XapiError('VM_BAD_POWER_STATE', vm, 'halted',
                        rec['power_state'].lower())
    ctx.db.set('VM', vm, is_a_template=False)


@handler('VM.get_allowed_VBD_devices')
def allowed_vbd_devices(ctx, vm):
    used = {ctx.db.get('VBD', v)['userdevice']
            for v in ctx.db.get('VM', vm)['VBDs']}
    return [str(n) for n in range(16) if str(n) not in used]


@handler('VM.get_allowed_VIF_devices')
def allowed_vif_devices(ctx, vm):
    used = {ctx.db.get('VIF', v)['device']
            for v in ctx.db.get('VM', vm)['VIFs']}
    return [str(n) for n in range(7) if str(n) not in used]
