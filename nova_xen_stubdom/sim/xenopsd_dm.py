"""xenopsd starting an HVM VM's device model, with our wrapper registered.

What real xenopsd does (xen-api ``ocaml/xenopsd/xc/device.ml``; the same at
tag ``v24.19.0``): it runs the host's one wrapper
(``upstream-compat-qemu-dm-wrapper``, ``Profile.wrapper_of``) with the argv
``<domid> --syslog <QEMU arguments>`` (``Dm_Common.prepend_wrapper_args``,
``Dm.__start``) for EVERY HVM VM of the host -- there is no per-VM choice.
On a host where this project is installed that program is our wrapper
(``dom0/dm_wrapper.py``), which

* hands a VM that is not ours, argv unchanged, to the host's stock wrapper
  (``[agent] stock_dm_wrapper``): xenopsd's own ``qemu-wrapper``
  (``ocaml/xenopsd/scripts/qemu-wrapper`` ``main``), which runs QEMU in dom0
  as ``qemu-dm-<domid>`` -- XAPI's normal behaviour for any HVM VM;
* for ours (:func:`device_model.managed_by_us`: a stub domain link or a
  marker key in the guest's xenstore) asks :func:`device_model.launch`:
  the stub domain serves the guest, or the start is refused unless the host
  allows dom0 device models, when the stock wrapper runs it after all.

The simulator runs that decision in process with the wrapper's own
functions (:func:`dm_wrapper.parse_argv`, :func:`device_model.vm_uuid_of`,
:func:`device_model.managed_by_us`, :func:`device_model.launch`: one
implementation); what it does not model is the wrapper as a process (the
re-exec as ``qemu-dm-<domid>``, the pidfile, the QMP sockets) and the stock
wrapper's checks on the host's filesystem: the "stock" device model is the
simulator's dom0 QEMU (:func:`devicemodel.start_dom0_qemu`), recorded with
the stock wrapper's path and the argv it was given (:class:`WrapperRun`).
"""
import dataclasses
from typing import Dict, List, Optional

from nova_xen_stubdom.datamodel.schema import NULL_REF

#: xenopsd's run directory (``Dm_Common`` socket and pidfile paths)
RUN_DIR = '/var/run/xen'


@dataclasses.dataclass
class WrapperRun:
    """One device-model start as the wrapper decided it."""
    #: what xenopsd passed to the wrapper
    argv: List[str]
    #: the stock wrapper the argv went to unchanged, None: not dom0
    stock: Optional[str]
    #: why the VM is ours (``managed_by_us``), None: not ours
    ours: Optional[str]


def xenopsd_argv(db, domid: int, rec: dict) -> List[str]:
    """The wrapper's argv as xenopsd builds it for *rec* (upstream-compat
    profile): ``prepend_wrapper_args``, then ``Dm_Common.qemu_args``
    (display, ``-acpi``, ``-pidfile``) and ``Make_qemu_upstream.Dm.qemu_args``
    (``-xen-domid``, ``-m``, ``-boot``, ``-smp``, serial, ``-display none
    -nodefaults``, ``-S``, the two ``-qmp`` sockets, IDE disks, NICs as
    ``tapnet<devid>`` or ``-net none``).  Left out, as nothing in the
    simulator reads them: ``-trace``, ``-sandbox``, the compat ``-global``s,
    USB, ``-parallel`` and the Xen platform device; a NIC's ``fd=`` names
    a placeholder, not an open tap."""
    platform = rec.get('platform') or {}
    vcpus = int(rec.get('VCPUs_at_startup') or 1)
    vcpus_max = int(rec.get('VCPUs_max') or vcpus)
    argv = [str(domid), '--syslog']
    if platform.get('vga', 'std') == 'std':
        argv += ['-std-vga']
    else:
        argv += ['-vga', platform['vga']]
    argv += ['-videoram', platform.get('videoram', '8'),
             '-vnc', 'unix:%s/vnc-%d,lock-key-sync=off' % (RUN_DIR, domid),
             '-acpi',
             '-pidfile', '%s/qemu-dm-%d.pid' % (RUN_DIR, domid),
             '-xen-domid', str(domid),
             '-m', 'size=%d' % (int(rec['memory_static_max']) >> 20),
             '-boot', 'order=%s' % (rec.get('HVM_boot_params') or {}).get(
                 'order', 'cd'),
             '-smp', '%d,maxcpus=%d' % (vcpus, vcpus_max),
             '-serial', 'pty', '-display', 'none', '-nodefaults', '-S',
             '-qmp', 'unix:%s/qmp-libxl-%d,server,nowait' % (RUN_DIR, domid),
             '-qmp', 'unix:%s/qmp-event-%d,server,nowait' % (RUN_DIR, domid)]
    argv += _disk_args(db, rec)
    nics = _nic_args(db, domid, rec)
    return argv + (nics or ['-net', 'none'])


def _disk_args(db, rec: dict) -> List[str]:
    out: List[str] = []
    for vbd in rec.get('VBDs') or []:
        if not db.exists('VBD', vbd):
            continue
        v = db.get('VBD', vbd)
        if not v['userdevice'].isdigit() or int(v['userdevice']) > 3 \
                or v['empty'] or v['VDI'] == NULL_REF:
            continue        # QEMU emulates the four IDE slots only
        n = int(v['userdevice'])
        drive = 'ide0-hd%d' % n
        out += ['-drive', 'file=/dev/sm/backend/%s,if=none,id=%s,'
                'auto-read-only=off,format=raw' % (v['VDI'], drive),
                '-device', 'ide-hd,drive=%s,bus=ide.%d,unit=%d'
                % (drive, n // 2, n % 2)]
    return out


def _nic_args(db, domid: int, rec: dict) -> List[str]:
    vifs = [db.get('VIF', v) for v in rec.get('VIFs') or []
            if db.exists('VIF', v)]
    out: List[str] = []
    for index, vif in enumerate(sorted(vifs, key=lambda v: int(v['device'])
                                       if v['device'].isdigit() else 0)):
        devid = vif['device']
        out += ['-device', 'rtl8139,netdev=tapnet%s,mac=%s,addr=%x'
                % (devid, vif['MAC'], 4 + index),
                '-netdev', 'tap,id=tapnet%s,fd=tap%d.%s' % (devid, domid,
                                                            devid)]
    return out


def start(ctx, host, rec: dict, domid: int) -> int:
    """xenopsd runs our wrapper for *domid*: the domid its device model runs
    in (0: the stock wrapper's dom0 QEMU).

    :raises: what ``device_model.launch`` raises for one of ours (refused,
        a stub domain that cannot serve the guest).
    """
    from nova_xen_stubdom.dom0 import device_model
    from nova_xen_stubdom.dom0 import dm_wrapper
    agent = host.agent()
    argv = xenopsd_argv(ctx.db, domid, rec)
    parsed = dm_wrapper.parse_argv(argv)
    vm_uuid = parsed.vm_uuid or device_model.vm_uuid_of(agent, parsed.domid)
    ours = device_model.managed_by_us(agent, parsed.domid, vm_uuid)
    stock = agent.config.stock_dm_wrapper or \
        dm_wrapper.DEFAULT_STOCK_DM_WRAPPER
    if ours is None:
        dm = 0
    else:
        launched = device_model.launch(agent, parsed.domid, vm_uuid)
        dm = 0 if launched['mode'] == 'dom0' else \
            int(launched['stubdom_domid'])
    hv = host.hypervisor
    with hv.lock:
        hv.dm_wrapper_runs[domid] = WrapperRun(argv, stock if dm == 0
                                               else None, ours)
    if dm == 0:
        from nova_xen_stubdom.sim import devicemodel
        devicemodel.start_dom0_qemu(hv, domid, argv)
    return dm


def runs(hv) -> Dict[int, WrapperRun]:
    with hv.lock:
        return dict(hv.dm_wrapper_runs)
