"""Hand-written VM behaviour: the power state machine and its domains.

Halted --start--> Running <--pause/unpause--> Paused
Running --suspend--> Suspended --resume--> Running
Running/Paused --clean|hard_shutdown--> Halted;  --clean|hard_reboot--> Running

A wrong state answers ``VM_BAD_POWER_STATE [vm, expected, actual]`` (states
lower-case, as XAPI writes them); a second lifecycle operation on a VM while
one runs answers ``OTHER_OPERATION_IN_PROGRESS [VM, vm, op, task]``.
Starting builds a domain on the host's simulated hypervisor, plugs the VM's
VBDs/VIFs as frontends of that domain, and for an HVM guest asks the host's
device-model launcher where the device model runs.
"""
import contextlib
import hashlib
import logging
from typing import Optional

from nova_xen_stubdom.sim import (api, bootfiles, devices, hostfail,
                                  vbd_rules, vif_rules, wire, xenopsd_pci)
from nova_xen_stubdom.sim.api import handler
from nova_xen_stubdom.sim.db import new_ref
from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.datamodel.schema import NULL_REF

LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def operation(ctx, vm: str, op: str):
    pool = ctx.pool
    # a VM resident on a dead member: the call cannot be forwarded to it
    hostfail.check_resident_live(ctx, vm)
    # XAPI runs even a synchronous call under an (internal) task
    token = ctx.task or new_ref()
    with pool.lock:
        current = pool.vm_ops.get(vm)
        if current is not None:
            raise XapiError('OTHER_OPERATION_IN_PROGRESS', 'VM', vm,
                            current[0], current[1])
        pool.vm_ops[vm] = (op, token)
    try:
        with ctx.db.lock:
            rec = ctx.db.get('VM', vm)
            rec['current_operations'] = {token: op}
            ctx.db.touch('VM', vm)
        yield
    finally:
        with pool.lock:
            pool.vm_ops.pop(vm, None)
        if ctx.db.exists('VM', vm):
            with ctx.db.lock:
                ctx.db.get('VM', vm)['current_operations'] = {}
                update_allowed_operations(ctx.db, vm)


def expect(ctx, vm: str, *states: str) -> dict:
    rec = ctx.db.get('VM', vm)
    if rec['is_a_template'] and ctx.message.name not in ('destroy',):
        raise XapiError('VM_IS_TEMPLATE', vm)
    if rec['power_state'] not in states:
        raise XapiError('VM_BAD_POWER_STATE', vm, states[0].lower(),
                        rec['power_state'].lower())
    return rec


_ALLOWED = {
    'Halted': ['start', 'start_on', 'destroy', 'clone', 'copy', 'export',
               'snapshot', 'make_into_template'],
    'Running': ['clean_shutdown', 'hard_shutdown', 'clean_reboot',
                'hard_reboot', 'pause', 'suspend', 'pool_migrate',
                'migrate_send', 'snapshot', 'changing_dynamic_range'],
    'Paused': ['unpause', 'hard_shutdown', 'hard_reboot', 'clean_shutdown'],
    'Suspended': ['resume', 'resume_on', 'hard_shutdown', 'destroy'],
}


#: what a guest must advertise (VM_guest_metrics.other = "1") for XAPI to
#: ask it to shut down / reboot: xapi_vm_lifecycle.ml check_op_for_feature
_FEATURES = {
    'clean_shutdown': ('feature-shutdown', 'feature-poweroff'),
    'clean_reboot': ('feature-shutdown', 'feature-reboot'),
}


def lacks_feature(db, rec: dict, op: str) -> bool:
    """``check_op_for_feature`` (strict, as ``with_vm_operation`` uses it):
    a live guest that has not definitely booted PV
    (``VM_metrics.current_domain_type``), has no PV drivers
    (``PV_drivers_version`` major/minor, ``Xapi_pv_driver_version``) and
    advertises none of the op's features cannot be asked to shut down or
    reboot cleanly: ``VM_LACKS_FEATURE [vm]``."""
    if op not in _FEATURES or rec['power_state'] not in ('Running',
                                                         'Paused'):
        return False
    metrics = (db.get('VM_metrics', rec['metrics'])
               if db.exists('VM_metrics', rec['metrics']) else {})
    if metrics.get('current_domain_type') in ('pv', 'pvh', 'pv_in_pvh'):
        return False
    gm = (db.get('VM_guest_metrics', rec['guest_metrics'])
          if db.exists('VM_guest_metrics', rec['guest_metrics']) else {})
    version = gm.get('PV_drivers_version') or {}
    if 'major' in version and 'minor' in version:
        return False
    other = gm.get('other') or {}
    return not any(other.get(f) == '1' for f in _FEATURES[op])


def update_allowed_operations(db, vm: str) -> None:
    rec = db.get('VM', vm)
    ops = [] if rec['is_a_template'] or rec['is_control_domain'] else \
        list(_ALLOWED.get(rec['power_state'], []))
    ops = [op for op in ops if not lacks_feature(db, rec, op)]
    if rec['current_operations']:
        ops = []
    rec['allowed_operations'] = ops
    db.touch('VM', vm)
    # message_forwarding.ml unmark_vbds / unmark_vifs: the VM's devices
    # after each VM operation (plug/unplug follow its power state and
    # guest metrics)
    for vbd in rec['VBDs']:
        if db.exists('VBD', vbd):
            vbd_rules.update_allowed_operations(db, vbd)
    for vif in rec['VIFs']:
        if db.exists('VIF', vif):
            vif_rules.update_allowed_operations(db, vif)


def is_hvm(rec: dict) -> bool:
    if rec['domain_type'] in ('hvm', 'pvh', 'pv', 'pv_in_pvh'):
        return rec['domain_type'] == 'hvm'
    return rec['HVM_boot_policy'] != ''


def _choose_host(ctx, rec: dict, needed: int):
    pool = ctx.pool
    hosts = list(pool.hosts)
    aff = pool.host_by_ref(rec['affinity'])
    if aff is not None:
        hosts.remove(aff)
        hosts.insert(0, aff)
    for h in hosts:
        if ctx.db.get('host', h.ref)['enabled'] and h.free_memory() >= needed:
            return h
    if len(pool.hosts) == 1:
        raise XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', needed,
                        pool.hosts[0].free_memory())
    raise XapiError('NO_HOSTS_AVAILABLE')


def boot(ctx, vm: str, host, paused: bool, reason: str = 'start'):
    """Build and start the VM's domain on *host*; update the database."""
    db = ctx.db
    rec = db.snapshot('VM', vm)
    needed = rec['memory_static_max']
    if not db.get('host', host.ref)['enabled']:
        raise XapiError('HOST_DISABLED', host.ref)
    ctx.check_cancel()
    hv = host.hypervisor
    hvm = is_hvm(rec)
    if not hvm:
        # xapi_xenops.builder_of_vm: direct-boot files only from the allowed
        # dom0 directory, checked before xenopsd builds anything
        bootfiles.direct_boot_files(rec)
    # the memory check and the allocation are one step per host
    with host.placement_lock:
        available = host.free_memory()
        if needed > available:
            raise XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', needed, available)
        dom = hv.create_domain(rec['uuid'], hvm, needed,
                               rec['VCPUs_at_startup'] or 1,
                               rec['name_label'])
    ctx.progress(0.3)
    try:
        devices.write_domain_config(hv, dom, rec)
        devices.plug_all(ctx, vm, host, dom.domid)
        ctx.progress(0.6)
        if hvm:
            devices.launch_device_model(ctx, host, vm, rec, dom.domid)
        # xenops_server VM_start: PCI_plug of other_config:pci after the
        # device model
        xenopsd_pci.plug(ctx, host, vm, rec, dom.domid, hvm)
        if not paused:
            hv.unpause(dom.domid)
    except Exception:
        devices.unplug_all(ctx, vm, dom.domid, host)
        hv.destroy_domain(dom.domid)
        xenopsd_pci.unplugged(ctx, vm)
        raise
    with db.lock:
        live = db.get('VM', vm)
        live.update(power_state='Paused' if paused else 'Running',
                    domid=dom.domid, resident_on=host.ref,
                    scheduled_to_be_resident_on=NULL_REF)
        if reason == 'start':
            live['last_booted_record'] = ''
        db.touch('VM', vm)
        db.link('host', host.ref, 'resident_VMs', vm)
        if db.exists('VM_metrics', rec['metrics']):
            db.set('VM_metrics', rec['metrics'], start_time=wire.now(),
                   memory_actual=needed,
                   VCPUs_number=rec['VCPUs_at_startup'] or 1, hvm=hvm,
                   current_domain_type='hvm' if hvm else 'pv',
                   last_updated=wire.now(),
                   state=['paused'] if paused else ['running'])
        devices.create_console(ctx, vm, host, dom.domid, hvm)
        _guest_metrics(ctx, vm, hvm)
    host.pool.refresh_host_metrics(host)
    return dom


def _guest_metrics(ctx, vm, hvm):
    """What the guest agent would report: PV drivers only for PV guests
    (an HVM guest's disks/NICs are emulated by its stub domain's QEMU)."""
    db = ctx.db
    rec = db.get('VM', vm)
    fields = {'os_version': {'name': 'simulated guest'},
              'PV_drivers_detected': not hvm,
              'PV_drivers_up_to_date': not hvm,
              'PV_drivers_version': ({} if hvm else
                                     {'major': '8', 'minor': '2'}),
              'networks': {}, 'live': True, 'last_updated': wire.now(),
              'can_use_hotplug_vbd': 'no' if hvm else 'yes',
              'can_use_hotplug_vif': 'no' if hvm else 'yes'}
    if db.exists('VM_guest_metrics', rec['guest_metrics']):
        db.set('VM_guest_metrics', rec['guest_metrics'], **fields)
    else:
        rec['guest_metrics'] = db.create('VM_guest_metrics', fields)
        db.touch('VM', vm)


def teardown(ctx, vm: str, final_state: str = 'Halted') -> None:
    """Destroy the VM's domain and detach its devices."""
    db = ctx.db
    rec = db.snapshot('VM', vm)
    host = ctx.pool.host_by_ref(rec['resident_on'])
    if host is not None and rec['domid'] >= 0:
        devices.unplug_all(ctx, vm, rec['domid'], host)
        host.hypervisor.destroy_domain(rec['domid'])
    xenopsd_pci.unplugged(ctx, vm)
    with db.lock:
        live = db.get('VM', vm)
        live.update(power_state=final_state, domid=-1,
                    resident_on=NULL_REF)
        db.touch('VM', vm)
        if host is not None:
            db.unlink('host', host.ref, 'resident_VMs', vm)
        devices.destroy_consoles(ctx, vm)
        if db.exists('VM_metrics', rec['metrics']):
            db.set('VM_metrics', rec['metrics'], state=[],
                   last_updated=wire.now(), memory_actual=0)
    if host is not None:
        host.pool.refresh_host_metrics(host)


def _host_for_running(ctx, rec):
    return ctx.pool.host_by_ref(rec['resident_on'])


def _power_on(ctx, vm, op: str, state: str, host_ref: Optional[str],
              paused: bool, action) -> None:
    """VM.start/resume (on a host with room) and VM.start_on/resume_on (on
    *host_ref*): *action*(ctx, vm, host, paused) from power state *state*."""
    host = ctx.host_of(host_ref) if host_ref is not None else None
    with operation(ctx, vm, op):
        rec = expect(ctx, vm, state)
        if host is None:
            host = _choose_host(ctx, rec, rec['memory_static_max'])
        action(ctx, vm, host, paused)


@handler('VM.start')
def start(ctx, vm, start_paused, force):
    _power_on(ctx, vm, 'start', 'Halted', None, start_paused, boot)


@handler('VM.start_on')
def start_on(ctx, vm, host_ref, start_paused, force):
    _power_on(ctx, vm, 'start_on', 'Halted', host_ref, start_paused, boot)


@handler('VM.clean_shutdown', 'VM.shutdown')
def clean_shutdown(ctx, vm):
    with operation(ctx, vm, 'clean_shutdown'):
        rec = expect(ctx, vm, 'Running')
        if lacks_feature(ctx.db, rec, 'clean_shutdown'):
            raise XapiError('VM_LACKS_FEATURE', vm)
        ctx.check_cancel()
        teardown(ctx, vm)


@handler('VM.hard_shutdown')
def hard_shutdown(ctx, vm):
    with operation(ctx, vm, 'hard_shutdown'):
        expect(ctx, vm, 'Running', 'Paused', 'Suspended')
        ctx.check_cancel()
        rec = ctx.db.get('VM', vm)
        if rec['power_state'] == 'Suspended':
            _drop_suspend_image(ctx, vm)
            ctx.db.set('VM', vm, power_state='Halted')
        else:
            teardown(ctx, vm)


def _reboot(ctx, vm, op, states):
    with operation(ctx, vm, op):
        rec = expect(ctx, vm, *states)
        if lacks_feature(ctx.db, rec, op):
            raise XapiError('VM_LACKS_FEATURE', vm)
        ctx.check_cancel()
        host = _host_for_running(ctx, rec)
        teardown(ctx, vm)
        boot(ctx, vm, host, False, reason='reboot')


@handler('VM.clean_reboot')
def clean_reboot(ctx, vm):
    _reboot(ctx, vm, 'clean_reboot', ('Running',))


@handler('VM.hard_reboot')
def hard_reboot(ctx, vm):
    _reboot(ctx, vm, 'hard_reboot', ('Running', 'Paused'))


@handler('VM.pause')
def pause(ctx, vm):
    with operation(ctx, vm, 'pause'):
        rec = expect(ctx, vm, 'Running')
        _host_for_running(ctx, rec).hypervisor.pause(rec['domid'])
        ctx.db.set('VM', vm, power_state='Paused')
        _metrics_state(ctx, rec, 'paused')


@handler('VM.unpause')
def unpause(ctx, vm):
    with operation(ctx, vm, 'unpause'):
        rec = expect(ctx, vm, 'Paused')
        _host_for_running(ctx, rec).hypervisor.unpause(rec['domid'])
        ctx.db.set('VM', vm, power_state='Running')
        _metrics_state(ctx, rec, 'running')


def _metrics_state(ctx, rec, state):
    if ctx.db.exists('VM_metrics', rec['metrics']):
        ctx.db.set('VM_metrics', rec['metrics'], state=[state],
                   last_updated=wire.now())


@handler('VM.suspend')
def suspend(ctx, vm):
    with operation(ctx, vm, 'suspend'):
        rec = expect(ctx, vm, 'Running')
        ctx.check_cancel()
        host = _host_for_running(ctx, rec)
        vdi = devices.save_suspend_image(ctx, vm, host, rec)
        teardown(ctx, vm, final_state='Suspended')
        ctx.db.set('VM', vm, suspend_VDI=vdi)


@handler('VM.resume')
def resume(ctx, vm, start_paused, force):
    _power_on(ctx, vm, 'resume', 'Suspended', None, start_paused, _resume)


@handler('VM.resume_on')
def resume_on(ctx, vm, host_ref, start_paused, force):
    _power_on(ctx, vm, 'resume_on', 'Suspended', host_ref, start_paused,
              _resume)


def _resume(ctx, vm, host, paused):
    dom = boot(ctx, vm, host, True, reason='resume')
    devices.load_suspend_image(ctx, vm, host, dom)
    if not paused:
        host.hypervisor.unpause(dom.domid)
        ctx.db.set('VM', vm, power_state='Running')
        _metrics_state(ctx, ctx.db.get('VM', vm), 'running')
    _drop_suspend_image(ctx, vm)


def _drop_suspend_image(ctx, vm):
    vdi = ctx.db.get('VM', vm)['suspend_VDI']
    ctx.db.set('VM', vm, suspend_VDI=NULL_REF)
    if vdi != NULL_REF and ctx.db.exists('VDI', vdi):
        api.generic_destroy(ctx, 'VDI', vdi)


def _vdi_checksum(ctx, vdi: str) -> str:
    """``VDI.checksum`` (internal message): MD5 of the whole VDI
    (ocaml/xapi/xapi_vdi.ml checksum: ``Digest.file`` of the attached
    device)."""
    h = hashlib.md5()
    with open(devices.vdi_file(ctx, vdi), 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


@handler('VM.set_suspend_VDI')
def set_suspend_vdi(ctx, vm, value):
    """ocaml/xapi/xapi_vm.ml set_suspend_VDI: only for a Suspended VM, not
    a cbt_metadata VDI, and only a replacement with identical content (the
    two VDIs' checksums are compared)."""
    rec = expect(ctx, vm, 'Suspended')
    vdi = ctx.db.get('VDI', value)
    if vdi['type'] == 'cbt_metadata':
        raise XapiError('VDI_INCOMPATIBLE_TYPE', vm, 'cbt_metadata')
    src = rec['suspend_VDI']
    if src != value:
        src_sum = _vdi_checksum(ctx, src)
        dst_sum = _vdi_checksum(ctx, value)
        if src_sum != dst_sum:
            raise XapiError(
                'SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL',
                '%s : %s' % (ctx.db.get('VDI', src)['uuid'], src_sum),
                '%s : %s' % (vdi['uuid'], dst_sum))
    ctx.db.set('VM', vm, suspend_VDI=value)


# -- create / destroy hooks ---------------------------------------------------
def _after_create(ctx, vm):
    db = ctx.db
    rec = db.get('VM', vm)
    metrics = db.create('VM_metrics', {'memory_actual': 0,
                                       'install_time': wire.now(),
                                       'VCPUs_number': rec['VCPUs_at_startup'],
                                       'last_updated': wire.now()})
    rec.update(metrics=metrics, domid=-1,
               power_state='Halted' if rec['power_state'] != 'Suspended'
               else 'Suspended')
    update_allowed_operations(db, vm)


def _before_destroy(ctx, vm):
    db = ctx.db
    rec = db.get('VM', vm)
    if rec['is_control_domain']:
        raise XapiError('OPERATION_NOT_ALLOWED',
                        'the control domain cannot be destroyed')
    if ctx.pool.vm_ops.get(vm):
        op, task = ctx.pool.vm_ops[vm]
        raise XapiError('OTHER_OPERATION_IN_PROGRESS', 'VM', vm, op, task)
    if rec['power_state'] not in ('Halted', 'Suspended'):
        raise XapiError('VM_BAD_POWER_STATE', vm, 'halted',
                        rec['power_state'].lower())
    for vbd in list(rec['VBDs']):
        api.generic_destroy(ctx, 'VBD', vbd)
    for vif in list(rec['VIFs']):
        api.generic_destroy(ctx, 'VIF', vif)
    for ref in (rec['metrics'], rec['guest_metrics']):
        cls = db.class_of(ref)
        if cls:
            db.destroy(cls, ref)
    if rec['suspend_VDI'] != NULL_REF and db.exists('VDI', rec['suspend_VDI']):
        api.generic_destroy(ctx, 'VDI', rec['suspend_VDI'])


api.AFTER_CREATE['VM'] = _after_create
api.BEFORE_DESTROY['VM'] = _before_destroy


@handler('VM.get_possible_hosts')
def get_possible_hosts(ctx, vm):
    rec = ctx.db.get('VM', vm)
    return [h.ref for h in ctx.pool.hosts
            if h.free_memory() >= rec['memory_static_max']]


@handler('VM.assert_can_boot_here')
def assert_can_boot_here(ctx, vm, host_ref):
    rec = ctx.db.get('VM', vm)
    host = ctx.pool.host_by_ref(host_ref)
    if host.free_memory() < rec['memory_static_max']:
        raise XapiError('HOST_NOT_ENOUGH_FREE_MEMORY',
                        rec['memory_static_max'], host.free_memory())


def running_host(ctx, vm: str) -> Optional[object]:
    return ctx.pool.host_by_ref(ctx.db.get('VM', vm)['resident_on'])


# -- memory / vCPU settings (explicit messages with checks) ------------------
def _check_memory(vm, smin, smax, dmin, dmax):
    if not (0 <= smin <= dmin <= dmax <= smax):
        raise XapiError('MEMORY_CONSTRAINT_VIOLATION',
                        'static_min <= dynamic_min <= dynamic_max <= '
                        'static_max does not hold')


def _set_memory(ctx, vm, **values):
    rec = ctx.db.get('VM', vm)
    new = {k: values.get(k, rec[k]) for k in (
        'memory_static_min', 'memory_static_max', 'memory_dynamic_min',
        'memory_dynamic_max')}
    static_change = (new['memory_static_max'] != rec['memory_static_max']
                     or new['memory_static_min'] != rec['memory_static_min'])
    if static_change and rec['power_state'] != 'Halted':
        raise XapiError('VM_BAD_POWER_STATE', vm, 'halted',
                        rec['power_state'].lower())
    _check_memory(vm, new['memory_static_min'], new['memory_static_max'],
                  new['memory_dynamic_min'], new['memory_dynamic_max'])
    new['memory_target'] = new['memory_dynamic_max']
    ctx.db.set('VM', vm, **new)


@handler('VM.set_memory_limits')
def set_memory_limits(ctx, vm, smin, smax, dmin, dmax):
    _set_memory(ctx, vm, memory_static_min=smin, memory_static_max=smax,
                memory_dynamic_min=dmin, memory_dynamic_max=dmax)


@handler('VM.set_memory_static_range')
def set_memory_static_range(ctx, vm, smin, smax):
    _set_memory(ctx, vm, memory_static_min=smin, memory_static_max=smax)


@handler('VM.set_memory_dynamic_range')
def set_memory_dynamic_range(ctx, vm, dmin, dmax):
    _set_memory(ctx, vm, memory_dynamic_min=dmin, memory_dynamic_max=dmax)


@handler('VM.set_memory')
def set_memory(ctx, vm, value):
    _set_memory(ctx, vm, memory_static_max=value, memory_dynamic_min=value,
                memory_dynamic_max=value)


@handler('VM.set_memory_static_max')
def set_memory_static_max(ctx, vm, value):
    _set_memory(ctx, vm, memory_static_max=value)


@handler('VM.set_VCPUs_max')
def set_vcpus_max(ctx, vm, value):
    rec = ctx.db.get('VM', vm)
    if rec['power_state'] != 'Halted':
        raise XapiError('VM_BAD_POWER_STATE', vm, 'halted',
                        rec['power_state'].lower())
    if value < 1 or value < rec['VCPUs_at_startup']:
        raise XapiError('VALUE_NOT_SUPPORTED', 'VCPUs_max', value,
                        'must be >= 1 and >= VCPUs_at_startup')
    ctx.db.set('VM', vm, VCPUs_max=value)


@handler('VM.set_VCPUs_at_startup')
def set_vcpus_at_startup(ctx, vm, value):
    rec = ctx.db.get('VM', vm)
    if value < 1 or value > rec['VCPUs_max']:
        raise XapiError('VALUE_NOT_SUPPORTED', 'VCPUs_at_startup', value,
                        'must be >= 1 and <= VCPUs_max')
    ctx.db.set('VM', vm, VCPUs_at_startup=value)


# -- migration inside a pool --------------------------------------------------
def _refuse_pci(ctx, vm):
    # xapi_vm_lifecycle.ml check_operation_error: suspend, checkpoint,
    # pool_migrate and migrate_send with a (non SR-IOV) attached PCI
    if ctx.db.get('VM', vm)['attached_PCIs']:
        raise XapiError('VM_HAS_PCI_ATTACHED', vm)


@handler('VM.assert_can_migrate')
def assert_can_migrate(ctx, vm, dest, live, vdi_map, vif_map, options,
                       vgpu_map):
    rec = expect(ctx, vm, 'Running', 'Halted', 'Suspended')
    if live and rec['power_state'] != 'Running':
        raise XapiError('VM_BAD_POWER_STATE', vm, 'running',
                        rec['power_state'].lower())
    _refuse_pci(ctx, vm)


@handler('VM.pool_migrate')
def pool_migrate(ctx, vm, host_ref, options):
    """Live-move the domain to another host of the pool: memory, HVM
    context and devices follow; the domid changes."""
    dest = ctx.host_of(host_ref)
    with operation(ctx, vm, 'pool_migrate'):
        rec = expect(ctx, vm, 'Running')
        _refuse_pci(ctx, vm)
        src = _host_for_running(ctx, rec)
        if src is dest:
            raise XapiError('OPERATION_NOT_ALLOWED',
                            'VM is already resident on %s' % host_ref)
        if rec['HVM_boot_policy'] and is_hvm(rec):
            raise XapiError('OPERATION_NOT_ALLOWED',
                            'HVM guests with stub-domain device models are '
                            'migrated by the dom0 agent, not by XAPI')
        ctx.check_cancel()
        old = src.hypervisor.domain(rec['domid'])
        mem = old.memory()
        try:
            image = bytes(mem)
        finally:
            mem.release()
        hvm_ctx, params = old.hvm_context, dict(old.hvm_params)
        policy, tsc = old.cpu.policy, old.cpu.tsc_info()
        teardown(ctx, vm)
        dom = boot(ctx, vm, dest, True, reason='migrate')
        view = dom.memory()
        try:
            view[:len(image)] = image
        finally:
            view.release()
        dom.hvm_context, dom.hvm_params = hvm_ctx, params
        # libxc's restore: the stream's CPU policy and TSC info
        # (xg_sr_common_x86.c, x86_static_data_complete, handle_x86_tsc_info)
        dom.cpu.set_policy(policy, dest.hypervisor.cpu_policy)
        dom.cpu.set_tsc_info(*tsc, host_khz=dest.hypervisor.cpu_khz)
        dest.hypervisor.unpause(dom.domid)
        ctx.db.set('VM', vm, power_state='Running')
