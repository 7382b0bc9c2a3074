"""PCI pass-through through the stub domain (dom0 side).

A guest's device model (QEMU) runs in its Linux stub domain, so the stub
domain -- not dom0 -- maps the device's BARs, I/O ports and interrupt into
the guest (QEMU's ``xen-pci-passthrough``).  Xen checks the *caller's*
permission in ``XEN_DOMCTL_memory_mapping``, ``ioport_mapping`` and
``bind_pt_irq``, so the stub domain needs the grants; like libxl
(``do_pci_add`` run for the stubdom and then for the guest) the guest gets
them too, and the device goes behind the guest's IOMMU context.

Per device, in order (each undone in reverse if a later step fails):

1. ``assign_device(guest, sbdf)``
2. for the stub domain, then the guest: ``iomem_permission`` per memory BAR,
   ``ioport_permission`` per I/O BAR, ``irq_permission`` for its IRQ.

Then the pass-through is wired as libxl wires a Linux stubdom's PCI: a
pciback backend for the stub domain in xenstore (``dev-N``/``key-N``/
``opts-N``, ``num_devs``) and its pcifront frontend, and the QEMU arguments
``-device xen-pci-passthrough,hostaddr=...`` for the stubdom's dm-argv.

What was granted is recorded in a dom0-only xenstore node so release
revokes exactly that, even when the device has since vanished from sysfs.

Device facts (ids, class, NUMA node, SR-IOV links, resources, which
functions dom0 itself uses) come from Linux sysfs under ``sysfs_root``; the
simulator writes the same layout for its hosts.
"""
import json
import logging
import os
import re
from typing import Dict, List, Optional, Tuple

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import records
from nova_xen_stubdom.dom0 import registry as plugin

LOG = logging.getLogger(__name__)

DEFAULT_SYSFS_ROOT = '/sys'
SBDF_RE = re.compile(r'^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$')
_SBDF_IN_PATH = re.compile(r'[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]')

IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
PAGE_SHIFT = 12

#: pciback options libxl writes per device (``opts-N``)
PCIBACK_OPTS = 'msitranslate=0,power_mgmt=0,permissive=0,rdm_policy=strict'
#: dom0-only record of the grants made per guest domain
GRANT_RECORD_ROOT = '/local/domain/0/nova-xen-stubdom/pci'


class PciAgentError(errors.AgentError):
    msg_fmt = 'PCI pass-through failed'
    code = 'PCI_ERROR'


class InvalidAddress(PciAgentError):
    msg_fmt = 'invalid PCI address %(address)r (expected dddd:bb:dd.f)'
    code = 'PCI_INVALID_ADDRESS'


class DuplicateAddress(PciAgentError):
    msg_fmt = 'a PCI device is listed twice in %(addresses)s'
    code = 'PCI_INVALID_ADDRESS'


class DeviceNotFound(PciAgentError):
    msg_fmt = 'PCI device %(address)s is not present on this host'
    code = 'PCI_DEVICE_NOT_FOUND'


class AttachFailed(PciAgentError):
    msg_fmt = ('attaching PCI device %(address)s to domain %(guest)d '
               '(stub domain %(stub)d) failed at %(step)s: %(cause)s; '
               'everything granted was revoked')
    code = 'PCI_ATTACH_FAILED'


def normalize_sbdf(address: str) -> str:
    """``0000:81:00.0`` form, lower case; accepts ``bb:dd.f`` (segment 0)."""
    addr = str(address).strip().lower()
    if addr.count(':') == 1:
        addr = '0000:' + addr
    if not SBDF_RE.match(addr):
        raise InvalidAddress(address=address)
    return addr


@records.record
class DeviceResources:
    sbdf: str
    #: memory BARs as (first_mfn, nr_mfns)
    iomem: List[Tuple[int, int]]
    #: I/O port BARs as (first_port, nr_ports)
    ioports: List[Tuple[int, int]]
    #: the device's (legacy INTx) IRQ; dom0 maps GSI n to pirq n
    irq: int

    def to_dict(self) -> dict:
        return {'iomem': [list(r) for r in self.iomem],
                'ioports': [list(r) for r in self.ioports],
                'irq': self.irq}

    @classmethod
    def from_dict(cls, sbdf: str, d: dict) -> 'DeviceResources':
        return cls(sbdf, [tuple(r) for r in d['iomem']],
                   [tuple(r) for r in d['ioports']], int(d['irq']))


# -- sysfs ------------------------------------------------------------------

def _dev_dir(root: str, sbdf: str) -> str:
    return os.path.join(root, 'bus', 'pci', 'devices', sbdf)


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_resources(sbdf: str,
                   sysfs_root: str = DEFAULT_SYSFS_ROOT) -> DeviceResources:
    """Memory/I-O BARs and IRQ of one device from its sysfs ``resource``
    (``start end flags`` per line; lines 0-5 are the BARs) and ``irq``."""
    sbdf = normalize_sbdf(sbdf)
    d = _dev_dir(sysfs_root, sbdf)
    text = _read(os.path.join(d, 'resource'))
    if text is None:
        raise DeviceNotFound(address=sbdf)
    iomem, ioports = [], []
    for line in text.splitlines()[:6]:
        start, end, flags = (int(x, 16) for x in line.split()[:3])
        if not (start or end):
            continue
        size = end - start + 1
        if flags & IORESOURCE_MEM:
            first = start >> PAGE_SHIFT
            last = end >> PAGE_SHIFT
            iomem.append((first, last - first + 1))
        elif flags & IORESOURCE_IO:
            ioports.append((start, size))
    irq = int(_read(os.path.join(d, 'irq')) or 0)
    return DeviceResources(sbdf, iomem, ioports, irq)


def _hex(path: str, width: int) -> Optional[str]:
    v = _read(path)
    if v is None:
        return None
    return '%0*x' % (width, int(v, 16))


def _link_name(path: str) -> Optional[str]:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def dom0_block_controllers(sysfs_root: str = DEFAULT_SYSFS_ROOT
                           ) -> Dict[str, List[str]]:
    """PCI functions behind dom0's block devices: {sbdf: ['sda', ...]}.

    Every ``<root>/block/X`` resolves to its device path; the last PCI
    address in that path is the controller (NVMe, AHCI, RAID HBA).  Virtual
    devices (loop, dm, xvd) have no PCI address and are skipped."""
    out: Dict[str, List[str]] = {}
    blockdir = os.path.join(sysfs_root, 'block')
    try:
        names = sorted(os.listdir(blockdir))
    except OSError:
        return out
    for name in names:
        real = os.path.realpath(os.path.join(blockdir, name))
        found = _SBDF_IN_PATH.findall(real)
        if found:
            out.setdefault(found[-1], []).append(name)
    return out


def read_inventory(sysfs_root: str = DEFAULT_SYSFS_ROOT) -> List[dict]:
    """Facts about every PCI function of the host, from sysfs.

    Each entry: address, vendor_id, product_id, class_id,
    subsystem_vendor_id, subsystem_device_id (lower-case hex), numa_node
    (int or None), driver, physfn (PF address of a VF or None), virtfns,
    sriov_totalvfs, netdevs, block_devices, irq, iomem, ioports."""
    devdir = os.path.join(sysfs_root, 'bus', 'pci', 'devices')
    try:
        names = sorted(os.listdir(devdir))
    except OSError:
        return []
    blocks = dom0_block_controllers(sysfs_root)
    out = []
    for name in names:
        if not SBDF_RE.match(name):
            continue
        d = os.path.join(devdir, name)
        numa = _read(os.path.join(d, 'numa_node'))
        numa_node = int(numa) if numa not in (None, '') else None
        if numa_node is not None and numa_node < 0:
            numa_node = None
        virtfns = []
        try:
            entries = sorted(os.listdir(d))
        except OSError:
            continue
        for e in entries:
            if e.startswith('virtfn'):
                virtfns.append(_link_name(os.path.join(d, e)))
        try:
            netdevs = sorted(os.listdir(os.path.join(d, 'net')))
        except OSError:
            netdevs = []
        try:
            res = read_resources(name, sysfs_root)
        except PciAgentError:
            continue   # vanished while we looked
        out.append({
            'address': name,
            'vendor_id': _hex(os.path.join(d, 'vendor'), 4),
            'product_id': _hex(os.path.join(d, 'device'), 4),
            'class_id': _hex(os.path.join(d, 'class'), 6),
            'subsystem_vendor_id': _hex(
                os.path.join(d, 'subsystem_vendor'), 4),
            'subsystem_device_id': _hex(
                os.path.join(d, 'subsystem_device'), 4),
            'numa_node': numa_node,
            'driver': _link_name(os.path.join(d, 'driver')),
            'physfn': _link_name(os.path.join(d, 'physfn')),
            'virtfns': [v for v in virtfns if v],
            'sriov_totalvfs': int(
                _read(os.path.join(d, 'sriov_totalvfs')) or 0),
            'netdevs': netdevs,
            'block_devices': blocks.get(name, []),
            'irq': res.irq,
            'iomem': [list(r) for r in res.iomem],
            'ioports': [list(r) for r in res.ioports],
        })
    return out


# -- grants -----------------------------------------------------------------

def grant_plan(res: DeviceResources, guest_domid: int,
               stub_domid: int) -> List[Tuple[str, tuple]]:
    """The backend calls that give *stub_domid* (and the guest) access to
    one device, in order; each is undone by the same call with allow=False
    (``deassign_device`` for ``assign_device``)."""
    plan: List[Tuple[str, tuple]] = [
        ('assign_device', (guest_domid, res.sbdf))]
    for domid in (stub_domid, guest_domid):
        for first, nr in res.iomem:
            plan.append(('iomem_permission', (domid, first, nr)))
        for first, nr in res.ioports:
            plan.append(('ioport_permission', (domid, first, nr)))
        if res.irq:
            plan.append(('irq_permission', (domid, res.irq)))
    return plan


def _do(backend, op: str, args: tuple, allow: bool) -> None:
    if op == 'assign_device':
        (backend.assign_device if allow else backend.deassign_device)(*args)
    else:
        getattr(backend, op)(*args, allow)


def _undo(backend, done: List[Tuple[str, tuple]]) -> List[str]:
    errors = []
    for op, args in reversed(done):
        try:
            _do(backend, op, args, False)
        except Exception as exc:   # keep revoking the rest
            LOG.warning('PCI revoke %s%r failed: %s', op, args, exc)
            errors.append('%s%r: %s' % (op, args, exc))
    return errors


def _record_key(backend, guest_domid: int) -> str:
    """Grant records are keyed by the guest's VM uuid (it survives the
    domain, so a release after the guest halted still finds them), or by
    ``dom<domid>`` for a domain without one."""
    try:
        uuid = backend.domain_info(guest_domid).vm_uuid
    except Exception:
        uuid = ''
    return uuid or 'dom%d' % guest_domid


def _find_record_key(backend, guest_domid: int) -> str:
    """The record key of *guest_domid*, also once the domain is gone (the
    device-model stop hook runs as the domain is destroyed)."""
    key = _record_key(backend, guest_domid)
    if backend.xs_read(_record_path(key)):
        return key
    try:
        keys = backend.xs_list(GRANT_RECORD_ROOT)
    except Exception:
        keys = []
    for k in keys:
        raw = backend.xs_read(_record_path(k))
        try:
            if raw and int(json.loads(raw)['guest_domid']) == guest_domid:
                return k
        except (ValueError, KeyError, TypeError):
            continue
    return key


def _record_path(key: str) -> str:
    return '%s/%s' % (GRANT_RECORD_ROOT, key)


def _domain_exists(backend, domid: int) -> bool:
    try:
        backend.domain_info(domid)
        return True
    except KeyError:
        return False
    except Exception:
        return True     # cannot tell: try the revoke anyway


def _backend_path(stub_domid: int) -> str:
    return '/local/domain/0/backend/pci/%d/0' % stub_domid


def _frontend_path(stub_domid: int) -> str:
    return '/local/domain/%d/device/pci/0' % stub_domid


def qemu_device_args(sbdfs: List[str]) -> List[str]:
    """QEMU arguments (for the stubdom's dm-argv) passing each device
    through; pciback runs in passthrough mode so the stubdom's pcifront
    shows the host address."""
    args = []
    for i, sbdf in enumerate(sbdfs):
        args += ['-device', 'xen-pci-passthrough,id=pci%d,hostaddr=%s'
                 % (i, normalize_sbdf(sbdf))]
    return args


def _write_xenstore(backend, guest_domid: int, stub_domid: int,
                    sbdfs: List[str]) -> None:
    be, fe = _backend_path(stub_domid), _frontend_path(stub_domid)
    nodes = {
        be + '/frontend': fe, be + '/frontend-id': str(stub_domid),
        be + '/online': '1', be + '/state': '1',
        be + '/num_devs': str(len(sbdfs)),
        be + '/guest-domid': str(guest_domid),
    }
    for i, sbdf in enumerate(sbdfs):
        nodes[be + '/dev-%d' % i] = sbdf
        nodes[be + '/key-%d' % i] = sbdf
        nodes[be + '/opts-%d' % i] = PCIBACK_OPTS
        nodes[be + '/state-%d' % i] = '1'
    # directories with their permissions first (xenstored gives a new node
    # its parent's), both ends in one transaction: pciback, like blkback,
    # drops a backend whose frontend state is missing when it probes
    # (xen-pciback frontend_changed; XenBackend.xs_write_all says more)
    writes = [(be, '', ['n0', 'r%d' % stub_domid])]
    writes += [(path, value, None) for path, value in nodes.items()]
    writes.append((fe, '', ['n%d' % stub_domid, 'r0']))
    writes += [(fe + '/backend', be, None), (fe + '/backend-id', '0', None),
               (fe + '/state', '1', None)]
    backend.xs_write_all(writes)


def _error_path(stub_domid: int) -> str:
    """Where dom0's pciback reports a device it cannot export (Linux
    ``drivers/xen/xenbus/xenbus_client.c`` ``xenbus_va_dev_error``:
    ``error/<backend node>/error`` under dom0's home)."""
    return '/local/domain/0/error/backend/pci/%d' % stub_domid


def _prune(backend, path: str, stop: str) -> None:
    """Remove *path* and its parents while empty, up to *stop* (exclusive),
    as ``libxl_xshelp.c`` ``libxl__xs_path_cleanup`` does: xenstored keeps
    a parent that a write created implicitly."""
    try:
        while path.startswith(stop + '/') and not backend.xs_list(path):
            backend.xs_rm(path)
            path = path.rsplit('/', 1)[0]
    except Exception as exc:
        LOG.warning('removing empty %s failed: %s', path, exc)


def _remove_xenstore(backend, stub_domid: int) -> None:
    for path in (_backend_path(stub_domid), _frontend_path(stub_domid),
                 _error_path(stub_domid)):
        try:
            backend.xs_rm(path)
        except Exception as exc:
            LOG.warning('removing %s failed: %s', path, exc)
    _prune(backend, _backend_path(stub_domid).rsplit('/', 1)[0],
           '/local/domain/0')
    _prune(backend, _error_path(stub_domid), '/local/domain/0')
    _prune(backend, _frontend_path(stub_domid).rsplit('/', 1)[0],
           '/local/domain/%d/device' % stub_domid)


def attach_devices(backend, guest_domid: int, stub_domid: int,
                   sbdfs: List[str],
                   sysfs_root: str = DEFAULT_SYSFS_ROOT) -> dict:
    """Assign *sbdfs* to the guest and grant its stub domain their
    resources; wire pciback/pcifront in xenstore.  All or nothing: on any
    failure what was done is undone and :class:`AttachFailed` raised.

    Returns ``{'qemu_args': [...], 'calls': N, 'devices': {sbdf: res}}``."""
    sbdfs = [normalize_sbdf(s) for s in sbdfs]
    if len(set(sbdfs)) != len(sbdfs):
        raise DuplicateAddress(addresses=','.join(sbdfs))
    resources = {}
    for sbdf in sbdfs:
        resources[sbdf] = read_resources(sbdf, sysfs_root)
    record = _record_path(_record_key(backend, guest_domid))
    if backend.xs_read(record):
        # a second attach for the same guest would orphan the first grants
        detach_devices(backend, guest_domid, sysfs_root=sysfs_root)
    done: List[Tuple[str, tuple]] = []
    step = 'start'
    current = sbdfs[0] if sbdfs else ''
    try:
        for sbdf in sbdfs:
            current = sbdf
            for op, args in grant_plan(resources[sbdf], guest_domid,
                                       stub_domid):
                step = '%s%r' % (op, args)
                _do(backend, op, args, True)
                done.append((op, args))
        step = 'grant record'
        backend.xs_write(record, json.dumps({
            'guest_domid': guest_domid, 'stub_domid': stub_domid,
            'devices': {s: r.to_dict() for s, r in resources.items()}}))
        backend.xs_set_perms(record, ['n0'])
        step = 'xenstore wiring'
        if sbdfs:
            _write_xenstore(backend, guest_domid, stub_domid, sbdfs)
    except Exception as exc:
        LOG.error('PCI attach of %s to domain %d failed at %s: %s',
                  current, guest_domid, step, exc)
        _undo(backend, done)
        _remove_xenstore(backend, stub_domid)
        try:
            backend.xs_rm(record)
        except Exception:
            pass
        raise AttachFailed(address=current, guest=guest_domid,
                           stub=stub_domid, step=step, cause=exc) from exc
    LOG.info('PCI devices %s assigned to domain %d through stub domain %d '
             '(%d grant calls)', sbdfs, guest_domid, stub_domid, len(done))
    return {'qemu_args': qemu_device_args(sbdfs), 'calls': len(done),
            'devices': {s: r.to_dict() for s, r in resources.items()}}


def detach_devices(backend, guest_domid: Optional[int] = None,
                   stub_domid: Optional[int] = None,
                   sysfs_root: str = DEFAULT_SYSFS_ROOT,
                   sbdfs: Optional[List[str]] = None,
                   guest_vm_uuid: Optional[str] = None) -> dict:
    """Revoke everything :func:`attach_devices` granted for a guest (found
    by *guest_vm_uuid* or *guest_domid*; from its grant record, or from
    *sbdfs* + sysfs when there is none) and remove the xenstore wiring.

    Grants of a domain that no longer exists are skipped: Xen dropped them
    with the domain.  Best effort: every revoke is tried; returns
    ``{'released': [...], 'errors': [...]}``.  Idempotent."""
    if guest_vm_uuid:
        key = guest_vm_uuid
    elif guest_domid is not None:
        key = _find_record_key(backend, guest_domid)
    else:
        raise errors.InvalidArgument(name='guest', value=None,
                                     reason='guest_vm_uuid or guest_domid '
                                            'is needed')
    raw = backend.xs_read(_record_path(key))
    if raw:
        record = json.loads(raw)
        guest = int(record['guest_domid'])
        stub = int(record['stub_domid'])
        resources = {s: DeviceResources.from_dict(s, r)
                     for s, r in record['devices'].items()}
    else:
        if stub_domid is None or guest_domid is None or not sbdfs:
            return {'released': [], 'errors': []}
        guest, stub = guest_domid, stub_domid
        resources = {}
        for sbdf in sbdfs:
            try:
                resources[normalize_sbdf(sbdf)] = read_resources(
                    sbdf, sysfs_root)
            except PciAgentError as exc:
                LOG.warning('cannot release %s: %s', sbdf, exc)
    live = {d: _domain_exists(backend, d) for d in (guest, stub)}
    plan = []
    for sbdf, res in resources.items():
        plan += [(op, args) for op, args in grant_plan(res, guest, stub)
                 if live[args[0]]]
    errs = _undo(backend, plan)
    _remove_xenstore(backend, stub)
    try:
        backend.xs_rm(_record_path(key))
    except Exception as exc:
        errs.append('grant record: %s' % exc)
    _prune(backend, GRANT_RECORD_ROOT, '/local/domain/0')
    LOG.info('PCI devices %s released from domain %d (stub %d)',
             sorted(resources), guest, stub)
    return {'released': sorted(resources), 'errors': errs}


# -- plugin functions (host.call_plugin: string args, string result) -------

def _sysfs_root(agent) -> str:
    return (getattr(agent, 'sysfs_root', None) or
            getattr(getattr(agent, 'backend', None), 'sysfs_root', None) or
            DEFAULT_SYSFS_ROOT)


def _devices_arg(args: Dict[str, str]) -> List[str]:
    return [normalize_sbdf(s) for s in args.get('devices', '').split(',')
            if s.strip()]


def _domid_arg(args: Dict[str, str], name: str) -> int:
    try:
        return int(args[name])
    except KeyError:
        raise errors.InvalidArgument(name=name, value=None, reason='missing')
    except ValueError:
        raise errors.InvalidArgument(name=name, value=args[name],
                                     reason='not an integer')


@plugin.register('pci_inventory')
def plugin_pci_inventory(agent, args: Dict[str, str]) -> str:
    """JSON list of :func:`read_inventory` entries."""
    return json.dumps(read_inventory(_sysfs_root(agent)))


@plugin.register('pci_attach')
def plugin_pci_attach(agent, args: Dict[str, str]) -> str:
    """args: guest_domid, stub_domid, devices (comma separated sbdfs)."""
    return json.dumps(attach_devices(
        agent.backend, _domid_arg(args, 'guest_domid'),
        _domid_arg(args, 'stub_domid'), _devices_arg(args),
        _sysfs_root(agent)))


def _opt_domid(args: Dict[str, str], name: str) -> Optional[int]:
    if args.get(name) in (None, ''):
        return None
    return _domid_arg(args, name)


@plugin.register('pci_detach')
def plugin_pci_detach(agent, args: Dict[str, str]) -> str:
    """args: guest_vm_uuid or guest_domid [, stub_domid, devices]."""
    return json.dumps(detach_devices(
        agent.backend, _opt_domid(args, 'guest_domid'),
        _opt_domid(args, 'stub_domid'), _sysfs_root(agent),
        _devices_arg(args), guest_vm_uuid=args.get('guest_vm_uuid')))


@plugin.register('pci_grants')
def plugin_pci_grants(agent, args: Dict[str, str]) -> str:
    """The grant record of a guest (args: guest_vm_uuid or guest_domid),
    for diagnostics and tests: ``{'guest_domid': n, 'stub_domid': n,
    'devices': {sbdf: {iomem, ioports, irq}}}`` or ``{}``."""
    key = args.get('guest_vm_uuid') or _record_key(
        agent.backend, _domid_arg(args, 'guest_domid'))
    return agent.backend.xs_read(_record_path(key)) or json.dumps({})


# -- hooks for the device-model wrapper ---------------------------------------

def on_dm_launch(agent, guest_domid: int, stub_domid: int,
                 config: Dict) -> List[str]:
    """Called by the device-model wrapper once the stub domain targets the
    new guest domain: pass through ``config['pci']`` (list of sbdfs).
    Returns the QEMU arguments to append to the stubdom's dm-argv."""
    sbdfs = [normalize_sbdf(s) for s in config.get('pci') or []]
    if not sbdfs:
        return []
    out = attach_devices(agent.backend, guest_domid, stub_domid, sbdfs,
                         _sysfs_root(agent))
    return out['qemu_args']


def on_dm_stop(agent, guest_domid: int) -> dict:
    """Called when the guest domain goes away: revoke what was granted."""
    return detach_devices(agent.backend, guest_domid,
                          sysfs_root=_sysfs_root(agent))
