"""Link a Linux stub domain to the HVM guest whose device model it runs.

Follows libxl's xenstore conventions for device-model stub domains:

- ``xc_domain_set_target(stub, guest)`` gives the stub domain privilege over
  exactly one guest (its memory, its event channels);
- ``/local/domain/<stub>/target = <guest domid>``;
- ``/local/domain/<guest>/image/device-model-domid = <stub domid>``;
- ``/local/domain/<stub>/dm-argv``: QEMU's command line, arguments joined by
  ESC (``\\x1b``), read by the stub domain's init;
- ``/local/domain/<stub>/device-model/<guest>/state``: written by QEMU inside
  the stub domain (``running`` once it serves the guest).

XAPI creates the stub domain (a PV VM) *before* the guest, so the guest's
domid is unknown when the driver asks for the link.  :func:`link` therefore
records a pending link keyed by the guest's VM uuid; the device-model
wrapper, run when xenopsd starts the guest, calls :func:`attach_target` with
the new domid.  The pending link lives in xenstore (not in this process) so
it survives an agent restart.
"""
import json
from typing import Any, Callable, Dict, List, Optional

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import registry as plugin

LINKS_ROOT = '/nova-xen-stubdom/links'
DM_ARGV_SEP = '\x1b'

DISK_BUSES = {'ide': 'ide', 'sata': 'ahci', 'xen': 'xen'}
NIC_MODELS = {'e1000': 'e1000', 'rtl8139': 'rtl8139', 'netfront': 'netfront'}
VGA_MODELS = {'vga': 'std', 'std': 'std', 'cirrus': 'cirrus', 'none': 'none'}
#: the guest's COM1: none (default), or the stub domain's own PV console,
#: which dom0's xenconsoled logs (libxl's Linux stub uses a second console,
#: ``-serial /dev/hvc3``, which does not connect on Xen 4.17 without its
#: dom0 QEMU console backend: doc/source/realxen.rst)
SERIAL_MODES = {'none': None, 'console': '/dev/hvc0'}

#: QEMU's VNC server inside the stub domain: a unix socket, never TCP.  The
#: stub init bridges it over a vchan (``device-model/<guest>/vnc-vchan``)
#: to dom0's ``/var/run/xen/vnc-<guest domid>``, which only XAPI's
#: authenticated console proxy opens (doc/source/consoles.rst)
VNC_SOCKET = '/run/qemu-vnc.sock'


def _link_path(guest_vm_uuid: str) -> str:
    return '%s/%s' % (LINKS_ROOT, guest_vm_uuid)


def dm_state_path(stub_domid: int, guest_domid: int) -> str:
    return '/local/domain/%d/device-model/%d/state' % (stub_domid,
                                                       guest_domid)


def _int_arg(args: Dict[str, str], name: str) -> int:
    try:
        value = int(args[name])
    except KeyError:
        raise errors.InvalidArgument(name=name, value=None,
                                     reason='missing')
    except ValueError:
        raise errors.InvalidArgument(name=name, value=args[name],
                                     reason='not an integer')
    if value < 0:
        raise errors.InvalidArgument(name=name, value=value,
                                     reason='negative')
    return value


def _stub_disk(index: int) -> str:
    """The stub domain's block device for the guest's disk *index* (its
    blkfront names them in VBD order: xvda, xvdb, ...)."""
    return '/dev/xvd%s' % chr(ord('a') + index)


def build_dm_argv(guest_domid: int, config: Dict[str, Any]) -> List[str]:
    """QEMU's argv inside the stub domain, from the guest's devices.

    *config*: ``name``, ``memory_mb``, ``vcpus``, ``vga`` (std|cirrus|none),
    ``firmware`` (bios|uefi), ``boot`` (e.g. ``cd``), ``disks`` (list of
    ``{'bus': ide|sata|xen, 'index': n}``), ``nics`` (list of
    ``{'mac': .., 'model': e1000|rtl8139|netfront, 'index': n}``),
    ``cdroms`` (list of ``{'index': n}``: a read-only disc such as the
    config drive, emulated as an IDE CD-ROM; IDE has slots 0-3),
    ``serial`` (none|console: :data:`SERIAL_MODES`).
    Each disk/NIC is the stub domain's PV device number ``index``
    (``/dev/xvd<a+index>``, ``eth<index>``), mirrored from the guest.
    """
    argv = ['qemu-system-i386',
            '-xen-domid', str(guest_domid),
            '-machine', 'xenfv',
            '-name', str(config.get('name', 'guest-%d' % guest_domid)),
            '-nodefaults', '-no-user-config', '-no-shutdown',
            '-chardev', 'stdio,id=libxl-cmd',
            '-mon', 'chardev=libxl-cmd,mode=control',
            '-m', str(int(config['memory_mb'])),
            '-smp', '%d,maxcpus=%d' % (int(config['vcpus']),
                                       int(config['vcpus']))]
    vga = VGA_MODELS.get(config.get('vga', 'std'))
    if vga is None:
        raise errors.InvalidArgument(name='vga', value=config.get('vga'),
                                     reason='unsupported video model')
    if vga == 'none':
        argv += ['-vga', 'none', '-display', 'none']
    else:
        argv += ['-vga', vga, '-vnc', 'unix:' + VNC_SOCKET]
    if config.get('firmware', 'bios') == 'uefi':
        argv += ['-drive', 'if=pflash,format=raw,readonly=on,'
                 'file=/usr/share/OVMF/OVMF_CODE.fd']
    argv += ['-boot', 'order=%s' % config.get('boot', 'cd')]
    serial = config.get('serial', 'none')
    if serial not in SERIAL_MODES:
        raise errors.InvalidArgument(name='serial', value=serial,
                                     reason='one of %s' % ', '.join(
                                         sorted(SERIAL_MODES)))
    if SERIAL_MODES[serial]:
        argv += ['-serial', SERIAL_MODES[serial]]
    for disk in config.get('disks', []):
        bus = DISK_BUSES.get(disk.get('bus', 'ide'))
        if bus is None:
            raise errors.InvalidArgument(name='disk bus',
                                         value=disk.get('bus'),
                                         reason='unsupported')
        index = int(disk['index'])
        if bus == 'xen':
            # PV disk: the guest's own blkfront, nothing to emulate
            continue
        dev = _stub_disk(index)
        if bus == 'ahci':
            argv += ['-device', 'ahci,id=ahci%d' % index,
                     '-drive', 'id=disk%d,file=%s,if=none,format=raw,'
                     'cache=writeback' % (index, dev),
                     '-device', 'ide-hd,bus=ahci%d.0,drive=disk%d'
                     % (index, index)]
        else:
            argv += ['-drive', 'file=%s,if=ide,index=%d,media=disk,'
                     'format=raw,cache=writeback' % (dev, index)]
    for cdrom in config.get('cdroms', []):
        index = int(cdrom['index'])
        if not 0 <= index <= 3:
            raise errors.InvalidArgument(name='cdrom index', value=index,
                                         reason='IDE has slots 0-3')
        argv += ['-drive', 'file=%s,if=ide,index=%d,media=cdrom,'
                 'format=raw,readonly=on' % (_stub_disk(index), index)]
    nics = config.get('nics', [])
    for nic in nics:
        model = NIC_MODELS.get(nic.get('model', 'e1000'))
        if model is None:
            raise errors.InvalidArgument(name='nic model',
                                         value=nic.get('model'),
                                         reason='unsupported')
        index = int(nic['index'])
        if model == 'netfront':
            continue
        argv += ['-device', '%s,id=nic%d,netdev=net%d,mac=%s'
                 % (model, index, index, nic['mac']),
                 '-netdev', 'type=tap,id=net%d,ifname=eth%d,script=no,'
                 'downscript=no' % (index, index)]
    if not nics:
        argv += ['-net', 'none']
    if config.get('pci'):
        # pass-through functions: QEMU's xen-pci-passthrough devices
        from nova_xen_stubdom.dom0 import pci_grants as pci
        argv += pci.qemu_device_args(list(config['pci']))
    return argv


def link(agent, stub_domid: int, guest_vm_uuid: str,
         config: Dict[str, Any]) -> None:
    """Record that *stub_domid* will run the device model of *guest_vm_uuid*.

    :raises StubdomLinkError: the stub domain is not a running PV domain,
        already serves another guest, or the guest is linked elsewhere.
    """
    backend = agent.backend
    with agent.lock(guest_vm_uuid):
        try:
            info = backend.domain_info(stub_domid)
        except KeyError:
            raise errors.StubdomLinkError(stub=stub_domid,
                                          reason='no such domain')
        if info.hvm:
            raise errors.StubdomLinkError(
                stub=stub_domid, reason='a stub domain is a PV domain')
        if info.target is not None:
            raise errors.StubdomLinkError(
                stub=stub_domid,
                reason='already targets domain %d' % info.target)
        path = _link_path(guest_vm_uuid)
        current = backend.xs_read(path + '/stubdom-domid')
        if current is not None and int(current) != stub_domid:
            raise errors.StubdomLinkError(
                stub=stub_domid,
                reason='guest %s is linked to stub domain %s'
                       % (guest_vm_uuid, current))
        # validate now, while the driver can still roll back cleanly
        build_dm_argv(0, config)
        backend.xs_write(path + '/stubdom-domid', str(stub_domid))
        backend.xs_write(path + '/config', json.dumps(config,
                                                      sort_keys=True))
        backend.xs_set_perms(path, ['n0'])
        backend.xs_write('/local/domain/%d/nova-xen-stubdom/target-vm'
                         % stub_domid, guest_vm_uuid)


def pending_link(agent, guest_vm_uuid: str) -> Optional[Dict[str, Any]]:
    """The link recorded for *guest_vm_uuid*.

    ``{'stubdom_domid': int, 'config': dict}`` or None.
    """
    path = _link_path(guest_vm_uuid)
    stub = agent.backend.xs_read(path + '/stubdom-domid')
    if stub is None:
        return None
    config = agent.backend.xs_read(path + '/config')
    return {'stubdom_domid': int(stub),
            'config': json.loads(config) if config else {}}


def attach_target(agent, stub_domid: int, guest_domid: int,
                  config: Dict[str, Any],
                  prepare: Optional[Callable[[], Any]] = None) -> None:
    """Make *stub_domid* the device-model domain of *guest_domid*.

    *prepare* runs once the stub domain targets the guest and before its
    dm-argv is written (QEMU starts on dm-argv): PCI grants go there.
    """
    backend = agent.backend
    try:
        backend.domain_info(stub_domid)
    except KeyError:
        raise errors.StubdomLinkError(stub=stub_domid,
                                      reason='stub domain is gone')
    try:
        backend.domain_info(guest_domid)
    except KeyError:
        raise errors.StubdomLinkError(
            stub=stub_domid, reason='guest domain %d is gone' % guest_domid)
    argv = build_dm_argv(guest_domid, config)
    backend.set_target(stub_domid, guest_domid)
    backend.xs_set_target(stub_domid, guest_domid)
    stub_root = '/local/domain/%d' % stub_domid
    guest_root = '/local/domain/%d' % guest_domid
    backend.xs_write(stub_root + '/target', str(guest_domid))
    backend.xs_set_perms(stub_root + '/target', ['n0', 'r%d' % stub_domid])
    backend.xs_write(guest_root + '/image/device-model-domid',
                     str(stub_domid))
    backend.xs_set_perms(guest_root + '/image/device-model-domid',
                         ['n0', 'r%d' % guest_domid, 'r%d' % stub_domid])
    # QEMU in the stub domain reports here: it owns the node
    dm_dir = '%s/device-model/%d' % (stub_root, guest_domid)
    backend.xs_write(dm_dir + '/state', 'starting')
    backend.xs_set_perms(dm_dir, ['n%d' % stub_domid])
    backend.xs_set_perms(dm_dir + '/state', ['n%d' % stub_domid])
    if prepare is not None:
        prepare()
    backend.xs_write(stub_root + '/dm-argv', DM_ARGV_SEP.join(argv))
    backend.xs_set_perms(stub_root + '/dm-argv', ['n0', 'r%d' % stub_domid])


def unlink(agent, guest_vm_uuid: str) -> None:
    """Forget the pending link of *guest_vm_uuid* (idempotent)."""
    with agent.lock(guest_vm_uuid):
        agent.backend.xs_rm(_link_path(guest_vm_uuid))
        # a guest stopped or removed by its owner: a recorded exit of its
        # old domain means nothing any more (dom0/guest_exit.py)
        from nova_xen_stubdom.dom0 import guest_exit
        guest_exit.forget(agent, guest_vm_uuid)


def dm_state(agent, stub_domid: int, guest_domid: int) -> Optional[str]:
    return agent.backend.xs_read(dm_state_path(stub_domid, guest_domid))


# -- plugin functions (host.call_plugin 'nova_xen_stubdom' <fn>) -------------

@plugin.register('link_stubdom')
def _plugin_link(agent, args: Dict[str, str]) -> str:
    stub = _int_arg(args, 'stubdom_domid')
    guest_vm_uuid = args.get('guest_vm_uuid')
    if not guest_vm_uuid:
        raise errors.InvalidArgument(name='guest_vm_uuid', value=None,
                                     reason='missing')
    try:
        config = json.loads(args.get('config', '{}'))
    except ValueError as exc:
        raise errors.InvalidArgument(name='config', value=args['config'],
                                     reason='not JSON: %s' % exc)
    for key in ('memory_mb', 'vcpus'):
        if key not in config:
            raise errors.InvalidArgument(name='config.' + key, value=None,
                                         reason='missing')
    link(agent, stub, guest_vm_uuid, config)
    return json.dumps({'stubdom_domid': stub,
                       'guest_vm_uuid': guest_vm_uuid})


@plugin.register('unlink_stubdom')
def _plugin_unlink(agent, args: Dict[str, str]) -> str:
    unlink(agent, args['guest_vm_uuid'])
    return json.dumps({})


@plugin.register('dm_state')
def _plugin_dm_state(agent, args: Dict[str, str]) -> str:
    stub = _int_arg(args, 'stubdom_domid')
    guest = _int_arg(args, 'guest_domid')
    error = agent.backend.xs_read('/local/domain/%d/device-model/%d/error'
                                  % (stub, guest))
    return json.dumps({'state': dm_state(agent, stub, guest),
                       'error': error})


@plugin.register('stubdom_wiring')
def _plugin_wiring(agent, args: Dict[str, str]) -> str:
    """What the link wrote, for the driver's diagnostics and the tests."""
    stub = _int_arg(args, 'stubdom_domid')
    backend = agent.backend
    target = backend.xs_read('/local/domain/%d/target' % stub)
    out = {'stubdom_domid': stub,
           'target': int(target) if target is not None else None,
           'dm_argv': (backend.xs_read('/local/domain/%d/dm-argv' % stub)
                       or '').split(DM_ARGV_SEP)}
    if target is not None:
        out['device_model_domid'] = backend.xs_read(
            '/local/domain/%s/image/device-model-domid' % target)
        out['state'] = dm_state(agent, stub, int(target))
    return json.dumps(out)
