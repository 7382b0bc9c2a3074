"""The simulator's PCI side: host devices, the grant table, ownership.

Each simulated host has a :class:`PciHost`: the PCI functions it has (ids,
class, NUMA node, SR-IOV PF/VF links, BARs, I/O ports, IRQ), the permissions
Xen would hold per domain (``iomem``/``ioport``/``irq`` rangesets, as
``xc_domain_*_permission`` edits them) and which domain each device is
assigned to (``xc_assign_device``).  It enforces what Xen enforces:

* a device is assigned to at most one domain (``DEVICE_ALREADY_ATTACHED``);
* a guest cannot start using a device unless the device is assigned to it and
  the stub domain that runs its device model holds every BAR, I/O port range
  and the IRQ of the device (QEMU's ``xen-pci-passthrough`` maps them from the
  stubdom: Xen checks the *caller's* permission in ``memory_mapping``,
  ``ioport_mapping`` and ``bind_pt_irq``);
* destroying a domain drops its permissions and returns its devices to dom0,
  as Xen's ``domain_kill`` does.

It is stricter than Xen in one place, to catch agent bugs: granting a range
that belongs to no host device is refused.

The same definitions are written as a sysfs tree (:meth:`PciHost.write_sysfs`)
so the dom0 agent reads the simulated host with the code that reads a real
dom0's ``/sys``.
"""
import dataclasses
import os
import threading
from typing import Dict, Iterable, List, Optional, Set, Tuple

PAGE_SHIFT = 12

#: Linux ``IORESOURCE_*`` flags written in sysfs ``resource`` files
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200


class SimPciError(Exception):
    """A PCI operation Xen/XAPI would refuse.  ``code``/``params`` are the
    XAPI error the simulator reports (names from ``xapi-errors.json``)."""

    def __init__(self, code: str, params: List[str]):
        self.code = code
        self.params = list(params)
        super().__init__('%s: %s' % (code, ', '.join(self.params)))


@dataclasses.dataclass
class Bar:
    #: 'mem' or 'io'
    kind: str
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size - 1


@dataclasses.dataclass
class PciDevice:
    """One PCI function of a simulated host."""
    #: ``dddd:bb:dd.f``
    address: str
    vendor_id: int
    device_id: int
    #: 24-bit class code, e.g. 0x030000 (VGA), 0x020000 (Ethernet)
    class_id: int
    subsystem_vendor_id: int = 0
    subsystem_device_id: int = 0
    vendor_name: str = ''
    device_name: str = ''
    class_name: str = ''
    subsystem_vendor_name: str = ''
    subsystem_device_name: str = ''
    #: None: the host is not NUMA (sysfs says -1)
    numa_node: Optional[int] = None
    #: dom0 driver the function is bound to
    driver: str = 'pciback'
    bars: List[Bar] = dataclasses.field(default_factory=list)
    irq: int = 0
    #: addresses of functions that must be assigned together (XAPI
    #: ``PCI.dependencies``: other functions of a multi-function device)
    dependencies: List[str] = dataclasses.field(default_factory=list)
    #: SR-IOV: this function is a VF of the PF at this address
    physfn: Optional[str] = None
    #: SR-IOV: this function is a PF able to have this many VFs
    sriov_totalvfs: int = 0
    #: dom0 network interface name (the sim links a PIF to it)
    netdev: Optional[str] = None
    #: dom0 block devices behind this controller (e.g. ['sda'])
    block_devices: List[str] = dataclasses.field(default_factory=list)

    @property
    def pci_id(self) -> str:
        return self.address

    def xapi_fields(self) -> dict:
        """The published fields of XAPI's ``PCI`` record (no refs)."""
        return {
            'class_name': self.class_name,
            'vendor_name': self.vendor_name,
            'device_name': self.device_name,
            'pci_id': self.address,
            'subsystem_vendor_name': self.subsystem_vendor_name,
            'subsystem_device_name': self.subsystem_device_name,
            'driver_name': self.driver,
            'other_config': {},
        }


def parse_other_config_pci(value: Optional[str]) -> List[str]:
    """Addresses in a VM's ``other_config:pci`` (``0/0000:81:00.0,1/...``,
    the form xenopsd reads), in slot order."""
    out = []
    for item in (value or '').split(','):
        item = item.strip()
        if item:
            out.append(item.rpartition('/')[2].lower())
    return out


# -- device factories (tests and the demo build hosts from these) -----------

def gpu(address: str = '0000:81:00.0', numa_node: Optional[int] = 1,
        irq: int = 88, mem_base: int = 0xf4000000,
        with_audio: bool = True) -> List[PciDevice]:
    """A GPU-like device: VGA function (+ its HDMI audio function, a
    dependency that XAPI reports and that must travel with it)."""
    dom, bus, devfn = address.split(':')
    slot = devfn.split('.')[0]
    audio = '%s:%s:%s.1' % (dom, bus, slot)
    vga = PciDevice(
        address=address, vendor_id=0x10de, device_id=0x1eb8,
        class_id=0x030200, subsystem_vendor_id=0x10de,
        subsystem_device_id=0x12a2, vendor_name='NVIDIA Corporation',
        device_name='TU104GL [Tesla T4]', class_name='3D controller',
        subsystem_vendor_name='NVIDIA Corporation',
        subsystem_device_name='Tesla T4', numa_node=numa_node,
        bars=[Bar('mem', mem_base, 0x1000000),
              Bar('mem', mem_base + 0x10000000, 0x10000000),
              Bar('io', 0xe000, 0x80)],
        irq=irq, dependencies=[audio] if with_audio else [])
    if not with_audio:
        return [vga]
    hda = PciDevice(
        address=audio, vendor_id=0x10de, device_id=0x10f8,
        class_id=0x040300, vendor_name='NVIDIA Corporation',
        device_name='TU104 HD Audio Controller',
        class_name='Audio device', numa_node=numa_node,
        bars=[Bar('mem', mem_base + 0x1000000, 0x4000)], irq=irq + 1,
        dependencies=[address])
    return [vga, hda]


def sriov_nic(pf_address: str = '0000:3b:00.0', num_vfs: int = 4,
              numa_node: Optional[int] = 0, irq: int = 64,
              mem_base: int = 0xe0000000, netdev: str = 'eth1',
              vendor_id: int = 0x8086, pf_device_id: int = 0x1572,
              vf_device_id: int = 0x154c) -> List[PciDevice]:
    """An SR-IOV NIC: one PF bound to its dom0 driver and *num_vfs* VFs
    (bus+1, as the Intel parts place them)."""
    dom, bus, _ = pf_address.split(':')
    pf = PciDevice(
        address=pf_address, vendor_id=vendor_id, device_id=pf_device_id,
        class_id=0x020000, subsystem_vendor_id=vendor_id,
        subsystem_device_id=0x0001,
        vendor_name='Intel Corporation',
        device_name='Ethernet Controller X710 for 10GbE SFP+',
        class_name='Ethernet controller', numa_node=numa_node,
        driver='i40e', bars=[Bar('mem', mem_base, 0x800000)], irq=irq,
        sriov_totalvfs=max(num_vfs, 1), netdev=netdev)
    devs = [pf]
    vf_bus = '%02x' % (int(bus, 16) + 1)
    for i in range(num_vfs):
        slot, fn = divmod(i, 8)
        devs.append(PciDevice(
            address='%s:%s:%02x.%d' % (dom, vf_bus, slot, fn),
            vendor_id=vendor_id, device_id=vf_device_id, class_id=0x020000,
            subsystem_vendor_id=vendor_id, subsystem_device_id=0x0000,
            vendor_name='Intel Corporation',
            device_name='Ethernet Virtual Function 700 Series',
            class_name='Ethernet controller', numa_node=numa_node,
            bars=[Bar('mem', mem_base + 0x1000000 + i * 0x10000, 0x10000)],
            irq=irq + 1 + i, physfn=pf_address))
    return devs


def management_nic(address: str = '0000:01:00.0', netdev: str = 'eth0',
                   irq: int = 30) -> PciDevice:
    """The NIC behind dom0's management PIF (never offered to guests)."""
    return PciDevice(
        address=address, vendor_id=0x8086, device_id=0x1521,
        class_id=0x020000, vendor_name='Intel Corporation',
        device_name='I350 Gigabit Network Connection',
        class_name='Ethernet controller', numa_node=0, driver='igb',
        bars=[Bar('mem', 0xfb000000, 0x100000)], irq=irq, netdev=netdev)


def storage_controller(address: str = '0000:00:17.0',
                       block_devices: Iterable[str] = ('sda',),
                       irq: int = 20) -> PciDevice:
    """The SATA controller holding dom0's disk and the local SR."""
    return PciDevice(
        address=address, vendor_id=0x8086, device_id=0xa352,
        class_id=0x010601, vendor_name='Intel Corporation',
        device_name='Cannon Lake PCH SATA AHCI Controller',
        class_name='SATA controller', numa_node=0, driver='ahci',
        bars=[Bar('mem', 0xfc000000, 0x2000), Bar('io', 0xf000, 0x8)],
        irq=irq, block_devices=list(block_devices))


def host_devices(kind: str) -> List[PciDevice]:
    """Ready-made device sets: ``gpu`` (a GPU + HDMI audio), ``sriov`` (a
    PF with 4 VFs), ``none``; each with the host's own management NIC and
    storage controller."""
    base = [management_nic(), storage_controller()]
    if kind == 'gpu':
        return base + gpu()
    if kind == 'sriov':
        return base + sriov_nic()
    if kind == 'none':
        return base
    raise ValueError('unknown PCI device set %r (gpu, sriov, none)' % kind)


def device_from_dict(d: dict) -> PciDevice:
    """Build a device from a JSON-able definition (ids as hex strings or
    ints; ``bars`` as ``[{'kind': 'mem', 'start': .., 'size': ..}]``)."""
    d = dict(d)

    def _int(v):
        return int(v, 16) if isinstance(v, str) else int(v)

    for key in ('vendor_id', 'device_id', 'class_id', 'subsystem_vendor_id',
                'subsystem_device_id'):
        if key in d:
            d[key] = _int(d[key])
    d['bars'] = [b if isinstance(b, Bar) else
                 Bar(b['kind'], _int(b['start']), _int(b['size']))
                 for b in d.get('bars', [])]
    return PciDevice(**d)


class PciHost:
    """The PCI state of one simulated host's hypervisor."""

    def __init__(self, devices: Iterable[PciDevice] = ()):
        self._lock = threading.RLock()
        self.devices: Dict[str, PciDevice] = {}
        for dev in devices:
            self.add_device(dev)
        #: domid -> {'iomem': {(first_mfn, nr)}, 'ioport': {(first, nr)},
        #:           'irq': {pirq}}
        self.grants: Dict[int, Dict[str, Set]] = {}
        #: sbdf -> domid it is assigned to (absent: dom0 owns it)
        self.owner: Dict[str, int] = {}
        #: op name -> raise on the Nth next call (1 = the next one);
        #: fault injection for tests of mid-assignment failures
        self.faults: Dict[str, int] = {}
        #: every permission/assignment call, in order: (op, domid, arg, allow)
        self.calls: List[Tuple] = []

    # -- inventory -------------------------------------------------------
    def add_device(self, dev: PciDevice) -> None:
        with self._lock:
            if dev.address in self.devices:
                raise ValueError('duplicate PCI address %s' % dev.address)
            self.devices[dev.address] = dev

    def remove_device(self, address: str) -> PciDevice:
        """Hot-unplug (a device vanishing under the cloud's feet)."""
        with self._lock:
            return self.devices.pop(address)

    # -- fault injection ---------------------------------------------------
    def inject_fault(self, op: str, after: int = 1) -> None:
        """Make the *after*-th next call of *op* (``iomem_permission``,
        ``ioport_permission``, ``irq_permission``, ``assign_device``,
        ``deassign_device``) fail like the hypervisor refusing it."""
        self.faults[op] = after

    def _maybe_fail(self, op: str, what: str) -> None:
        left = self.faults.get(op)
        if left is None:
            return
        if left <= 1:
            del self.faults[op]
            raise SimPciError('INTERNAL_ERROR',
                              ['injected fault: %s(%s) failed' % (op, what)])
        self.faults[op] = left - 1

    # -- the hypervisor calls (what the backend delegates to) -------------
    def _owning_device(self, kind: str, first: int, nr: int) -> PciDevice:
        for dev in self.devices.values():
            for bar in dev.bars:
                if bar.kind != kind:
                    continue
                if kind == 'mem':
                    lo, n = bar.start >> PAGE_SHIFT, \
                        max(1, (bar.size + (1 << PAGE_SHIFT) - 1)
                            >> PAGE_SHIFT)
                else:
                    lo, n = bar.start, bar.size
                if lo <= first and first + nr <= lo + n:
                    return dev
        raise SimPciError('INTERNAL_ERROR', [
            '%s range %#x+%#x belongs to no PCI device of this host'
            % (kind, first, nr)])

    def _edit(self, op: str, kind: str, domid: int, item, allow: bool):
        with self._lock:
            self._maybe_fail(op, '%d, %r' % (domid, item))
            self.calls.append((op, domid, item, allow))
            table = self.grants.setdefault(
                domid, {'iomem': set(), 'ioport': set(), 'irq': set()})
            if allow:
                table[kind].add(item)
            else:
                table[kind].discard(item)
            if not any(table.values()):
                del self.grants[domid]

    def iomem_permission(self, domid: int, first_mfn: int, nr_mfns: int,
                         allow: bool) -> None:
        if allow:
            self._owning_device('mem', first_mfn, nr_mfns)
        self._edit('iomem_permission', 'iomem', domid,
                   (first_mfn, nr_mfns), allow)

    def ioport_permission(self, domid: int, first_port: int, nr_ports: int,
                          allow: bool) -> None:
        if allow:
            self._owning_device('io', first_port, nr_ports)
        self._edit('ioport_permission', 'ioport', domid,
                   (first_port, nr_ports), allow)

    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        if allow and not any(d.irq == pirq for d in self.devices.values()):
            raise SimPciError('INTERNAL_ERROR', [
                'IRQ %d belongs to no PCI device of this host' % pirq])
        self._edit('irq_permission', 'irq', domid, pirq, allow)

    def assign_device(self, domid: int, sbdf: str) -> None:
        with self._lock:
            self._maybe_fail('assign_device', '%d, %s' % (domid, sbdf))
            if sbdf not in self.devices:
                raise SimPciError('INTERNAL_ERROR', [
                    'PCI device %s does not exist on this host' % sbdf])
            holder = self.owner.get(sbdf)
            if holder is not None and holder != domid:
                raise SimPciError('DEVICE_ALREADY_ATTACHED', [sbdf])
            self.calls.append(('assign_device', domid, sbdf, True))
            self.owner[sbdf] = domid

    def deassign_device(self, domid: int, sbdf: str) -> None:
        with self._lock:
            self._maybe_fail('deassign_device', '%d, %s' % (domid, sbdf))
            if self.owner.get(sbdf) != domid:
                raise SimPciError('DEVICE_ALREADY_DETACHED', [sbdf])
            self.calls.append(('deassign_device', domid, sbdf, False))
            del self.owner[sbdf]

    # -- lifecycle hooks (called by the simulator's domain code) ----------
    def domain_destroyed(self, domid: int) -> None:
        """Xen's domain_kill: permissions go, devices return to dom0."""
        with self._lock:
            self.grants.pop(domid, None)
            for sbdf in [s for s, d in self.owner.items() if d == domid]:
                del self.owner[sbdf]

    def check_guest_start(self, guest_domid: int,
                          stub_domid: Optional[int],
                          sbdfs: Iterable[str]) -> None:
        """Refuse to run a guest whose pass-through is not wired as Xen
        needs it.  *stub_domid* None means QEMU runs in dom0 (dom0 holds
        every permission)."""
        with self._lock:
            for sbdf in sbdfs:
                dev = self.devices.get(sbdf)
                if dev is None:
                    raise SimPciError('INTERNAL_ERROR', [
                        'PCI device %s does not exist on this host' % sbdf])
                holder = self.owner.get(sbdf)
                if holder != guest_domid:
                    if holder is not None:
                        raise SimPciError('DEVICE_ALREADY_ATTACHED', [sbdf])
                    raise SimPciError('INTERNAL_ERROR', [
                        'PCI device %s is not assigned to domain %d'
                        % (sbdf, guest_domid)])
                if stub_domid is not None:
                    missing = self.missing_grants(stub_domid, dev)
                    if missing:
                        raise SimPciError('INTERNAL_ERROR', [
                            'stub domain %d lacks %s of PCI device %s'
                            % (stub_domid, ', '.join(missing), sbdf)])

    def missing_grants(self, domid: int, dev: PciDevice) -> List[str]:
        table = self.grants.get(domid, {'iomem': set(), 'ioport': set(),
                                        'irq': set()})
        missing = []
        for bar in dev.bars:
            if bar.kind == 'mem':
                need = range(bar.start >> PAGE_SHIFT,
                             (bar.end >> PAGE_SHIFT) + 1)
                have = table['iomem']
            else:
                need = range(bar.start, bar.end + 1)
                have = table['ioport']
            if not all(any(f <= x < f + n for f, n in have) for x in
                       (need[0], need[-1])):
                missing.append('%s %#x-%#x' % (bar.kind, bar.start, bar.end))
        if dev.irq and dev.irq not in table['irq']:
            missing.append('IRQ %d' % dev.irq)
        return missing

    def is_clean(self) -> bool:
        """No permission granted and no device assigned to any domain."""
        with self._lock:
            return not self.grants and not self.owner

    def snapshot(self) -> dict:
        """JSON-able view of grants and ownership (for tests and the
        simulator's inspection API)."""
        with self._lock:
            return {
                'grants': {str(d): {k: sorted(list(v)) for k, v in t.items()}
                           for d, t in self.grants.items()},
                'owner': dict(self.owner),
            }

    # -- sysfs view for the dom0 agent -------------------------------------
    def write_sysfs(self, root: str) -> None:
        """Write the devices as Linux sysfs (``<root>/bus/pci/devices/..``
        and ``<root>/block/..``) so the agent's sysfs reader sees them."""
        devdir = os.path.join(root, 'bus', 'pci', 'devices')
        os.makedirs(devdir, exist_ok=True)
        blockdir = os.path.join(root, 'block')
        os.makedirs(blockdir, exist_ok=True)
        with self._lock:
            for name in os.listdir(devdir):
                if name not in self.devices:
                    _rmtree(os.path.join(devdir, name))
            for dev in self.devices.values():
                _write_device(devdir, blockdir, dev, self.devices)


def _rmtree(path: str) -> None:
    import shutil
    if os.path.islink(path):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _put(path: str, text: str) -> None:
    with open(path, 'w') as f:
        f.write(text)


def _link(target: str, path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def _write_device(devdir: str, blockdir: str, dev: PciDevice,
                  all_devs: Dict[str, PciDevice]) -> None:
    d = os.path.join(devdir, dev.address)
    os.makedirs(d, exist_ok=True)
    _put(os.path.join(d, 'vendor'), '0x%04x\n' % dev.vendor_id)
    _put(os.path.join(d, 'device'), '0x%04x\n' % dev.device_id)
    _put(os.path.join(d, 'class'), '0x%06x\n' % dev.class_id)
    _put(os.path.join(d, 'subsystem_vendor'),
         '0x%04x\n' % dev.subsystem_vendor_id)
    _put(os.path.join(d, 'subsystem_device'),
         '0x%04x\n' % dev.subsystem_device_id)
    _put(os.path.join(d, 'numa_node'),
         '%d\n' % (-1 if dev.numa_node is None else dev.numa_node))
    _put(os.path.join(d, 'irq'), '%d\n' % dev.irq)
    lines = []
    for bar in dev.bars[:6]:
        flags = IORESOURCE_MEM if bar.kind == 'mem' else IORESOURCE_IO
        lines.append('0x%016x 0x%016x 0x%016x' % (bar.start, bar.end, flags))
    while len(lines) < 13:   # 6 BARs, ROM, 6 bridge windows, as Linux
        lines.append('0x%016x 0x%016x 0x%016x' % (0, 0, 0))
    _put(os.path.join(d, 'resource'), '\n'.join(lines) + '\n')
    # the driver link points at a directory named for the driver
    drv = os.path.join(os.path.dirname(os.path.dirname(devdir)), 'drivers',
                       dev.driver)
    os.makedirs(drv, exist_ok=True)
    _link(drv, os.path.join(d, 'driver'))
    if dev.physfn:
        _link(os.path.join('..', dev.physfn), os.path.join(d, 'physfn'))
    if dev.sriov_totalvfs:
        _put(os.path.join(d, 'sriov_totalvfs'), '%d\n' % dev.sriov_totalvfs)
        vfs = sorted(a for a, v in all_devs.items()
                     if v.physfn == dev.address)
        _put(os.path.join(d, 'sriov_numvfs'), '%d\n' % len(vfs))
        for i, vf in enumerate(vfs):
            _link(os.path.join('..', vf), os.path.join(d, 'virtfn%d' % i))
    if dev.netdev:
        os.makedirs(os.path.join(d, 'net', dev.netdev), exist_ok=True)
    for blk in dev.block_devices:
        path = os.path.join(d, 'host0', 'target0:0:0', '0:0:0:0', 'block',
                            blk)
        os.makedirs(path, exist_ok=True)
        _link(path, os.path.join(blockdir, blk))
