"""A simulated XAPI pool: its database, hosts, sessions, tasks.

Each pool has its own database, as in XAPI; its first host is the master.
Every host serves XAPI on its own loopback address (``127.0.0.<n>``) and the
same port, so ``HOST_IS_SLAVE``'s parameter (the master's address) is
followed by keeping the scheme and port of the URL the client used.
"""
import dataclasses
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from nova_xen_stubdom.sim import wire
from nova_xen_stubdom.sim.db import Database, new_uuid
from nova_xen_stubdom.sim.hypervisor import Hypervisor
from nova_xen_stubdom.datamodel.schema import NULL_REF
from nova_xen_stubdom.sim.sessions import Sessions
from nova_xen_stubdom.sim.tasks import Tasks

GiB = 1 << 30
MiB = 1 << 20
DOM0_MEMORY = 1 * GiB


@dataclasses.dataclass
class HostConfig:
    """Per-host knobs (``SimServer(host_configs=[...])``)."""
    memory: int = 16 * GiB
    cpus: int = 8
    #: PCI functions: a device set name of :func:`sim.pci.host_devices`
    #: ('none', 'gpu', 'sriov') or a list of ``sim.pci.PciDevice`` / dicts
    #: for ``sim.pci.device_from_dict``
    pci_devices: Any = 'none'
    #: a dom0 device model is allowed (operator opt-out of stubdoms)
    allow_dom0_dm: bool = False
    #: workload dirty rate (bytes/s) of new domains
    dirty_rate: int = 0
    #: the stub-domain image manifest the host's agent reads (agent.conf
    #: stubdom_manifest; None: the agent's default path, absent here)
    stubdom_manifest: Optional[str] = None


class HostRuntime:
    """What the simulator keeps per host besides its database record."""

    def __init__(self, pool: 'Pool', index: int, address: str,
                 config: HostConfig, mem_dir: Optional[str]):
        self.pool = pool
        self.index = index
        self.address = address
        self.config = config
        self.uuid = new_uuid()
        self.ref = ''
        self.port = 0
        self.is_master = False
        #: serialises memory checks with domain creation on this host
        self.placement_lock = threading.Lock()
        #: bumped by a toolstack restart: sessions of older epochs die
        self.toolstack_epoch = 0
        #: crashed and not back yet (sim/hostfail.py)
        self.down = False
        #: epoch seconds of the simulated host's boot (simulator start)
        self.boot_time = 0.0
        self.hypervisor = Hypervisor(self.uuid, config.memory, config.cpus,
                                     mem_dir=mem_dir,
                                     default_dirty_rate=config.dirty_rate)
        from nova_xen_stubdom.sim import pci
        devs = config.pci_devices
        if isinstance(devs, str):
            devs = pci.host_devices(devs)
        self.pci = pci.PciHost(
            d if isinstance(d, pci.PciDevice) else pci.device_from_dict(d)
            for d in devs)
        self.sysfs_root = os.path.join(self.hypervisor.mem_dir, 'sysfs')
        self.pci.write_sysfs(self.sysfs_root)
        self.hypervisor.pci = self.pci
        # xenopsd's VM_check_state for domains changed outside its
        # operations (sim/xenopsd_events.py)
        from nova_xen_stubdom.sim import xenopsd_events
        self.xenopsd = xenopsd_events.Xenopsd(self)
        self.hypervisor.listeners.append(self.xenopsd.on_domain)
        self._agent = None
        self.agent_factory: Optional[Callable[['HostRuntime'], Any]] = None
        self.plugin_dispatch: Optional[Callable] = None
        #: host.call_plugin through a plugin process and this host's dom0
        #: daemon (sim/dom0_process.py); None: the environment decides
        self.plugin_process: Optional[bool] = None
        self.dom0_process = None    # its dom0_process.HostDom0, once used

    @property
    def url(self) -> str:
        return 'http://%s:%d' % (self.address, self.port)

    def free_memory(self) -> int:
        return (self.config.memory - DOM0_MEMORY
                - self.hypervisor.memory_used())

    def agent(self):
        """The dom0 agent of this host (built on first use)."""
        if self._agent is None:
            from nova_xen_stubdom.sim import plugins
            self._agent = (self.agent_factory or plugins.default_agent)(self)
        return self._agent


class Pool:
    def __init__(self, index: int, addresses: List[str],
                 configs: List[HostConfig], users: Dict[str, tuple],
                 faults, state_dir: Optional[str] = None):
        self.index = index
        self.db = Database()
        self.faults = faults
        self.state_dir = state_dir
        self.vdi_dir = os.path.join(state_dir, 'vdis') if state_dir else \
            None
        self.sessions = Sessions(self, users)
        self.tasks = Tasks(self)
        self.lock = threading.RLock()
        #: VM ref -> (operation, task) while a lifecycle op runs
        self.vm_ops: Dict[str, tuple] = {}
        #: (method, ErrorDescription) of every failure answered
        self.error_log: List[tuple] = []
        self.hosts: List[HostRuntime] = []
        for i, (addr, cfg) in enumerate(zip(addresses, configs)):
            mem_dir = os.path.join(state_dir, 'mem', 'host%d' % i) \
                if state_dir else None
            self.hosts.append(HostRuntime(self, i, addr, cfg, mem_dir))
        self.hosts[0].is_master = True
        self.ref = NULL_REF

    @property
    def master(self) -> HostRuntime:
        return next(h for h in self.hosts if h.is_master)

    def host_by_ref(self, ref: str) -> Optional[HostRuntime]:
        for h in self.hosts:
            if h.ref == ref:
                return h
        return None

    def host_by_uuid(self, uuid: str) -> Optional[HostRuntime]:
        for h in self.hosts:
            if h.uuid == uuid:
                return h
        return None

    # -- boot -----------------------------------------------------------------
    def boot(self) -> None:
        """The hosts boot (a simulator start, fresh or from a state dir:
        domains never survive it) and their toolstacks start."""
        now = time.time()
        for h in self.hosts:
            h.boot_time = now
            self.toolstack_started(h)

    def toolstack_started(self, h: HostRuntime) -> None:
        """What XAPI's start-up sync writes into its host's other_config:
        ``boot_time`` (when the host booted: unchanged by a toolstack
        restart) and ``agent_start_time`` (now), both OCaml
        ``string_of_float`` of epoch seconds."""
        rec = self.db.get('host', h.ref)
        self.db.set('host', h.ref, other_config=dict(
            rec['other_config'], boot_time=_ocaml_float(h.boot_time),
            agent_start_time=_ocaml_float(time.time())))

    def build(self) -> None:
        """Create the objects a freshly installed pool has."""
        db = self.db
        network = db.create('network', {
            'name_label': 'Pool-wide network associated with eth0',
            'bridge': 'xenbr0', 'MTU': 1500, 'managed': True})
        self.ref = db.create('pool', {'name_label': 'sim-pool-%d' % self.index,
                                      'default_SR': NULL_REF})
        for h in self.hosts:
            self._build_host(h, network)
        master = self.master
        # A pool's VMs move between its hosts only with their disks on
        # shared storage (NFS or iSCSI SR, shared=true, a PBD plugged on
        # every host): the pool's default SR, as XCP-ng operators set up
        # for migration and HA; each host keeps its local SR too.
        sr = db.create('SR', {
            'name_label': 'Pool shared storage', 'type': 'nfs',
            'content_type': 'user', 'physical_size': 512 * GiB,
            'shared': True, 'other_config': {}})
        for h in self.hosts:
            pbd = db.create('PBD', {
                'SR': sr, 'host': h.ref, 'currently_attached': True,
                'device_config': {'server': '192.0.2.10',
                                  'serverpath': '/export/sim-pool-%d'
                                  % self.index}})
            db.link('SR', sr, 'PBDs', pbd)
            db.link('host', h.ref, 'PBDs', pbd)
        db.set('pool', self.ref, master=master.ref, default_SR=sr,
               suspend_image_SR=sr, crash_dump_SR=sr)
        self._build_template()

    def _build_host(self, h: HostRuntime, network: str) -> None:
        db = self.db
        cfg = h.config
        metrics = db.create('host_metrics', {
            'memory_total': cfg.memory, 'live': True,
            'last_updated': wire.now()})
        h.ref = db.create('host', {
            'uuid': h.uuid,
            'name_label': 'sim-host-%d-%d' % (self.index, h.index),
            'hostname': 'sim-host-%d-%d' % (self.index, h.index),
            'address': h.address, 'enabled': True, 'metrics': metrics,
            'API_version_major': 2, 'API_version_minor': 21,
            'API_version_vendor': 'XenServer',
            'software_version': {'product_brand': 'XCP-ng',
                                 'product_version': '8.3.0',
                                 'platform_name': 'XCP',
                                 'xapi': '24.19', 'xen': '4.17.4',
                                 'nova_xen_stubdom_sim': '1'},
            'capabilities': ['xen-3.0-x86_64', 'hvm-3.0-x86_64'],
            'cpu_info': {'cpu_count': str(cfg.cpus),
                         'socket_count': '1', 'vendor': 'GenuineIntel',
                         'speed': '2600.000', 'modelname': 'Sim CPU',
                         'family': '6', 'model': '85', 'stepping': '4',
                         'flags': 'fpu vme de pse tsc msr pae vmx',
                         'features': '', 'features_hvm': '',
                         'features_pv': ''},
            'memory_overhead': 0,
            'sched_policy': 'credit',
            # the host's iSCSI initiator name, set at install and kept
            # here by XAPI (what the old Nova driver's volume connector
            # read)
            'other_config': {'iscsi_iqn': 'iqn.2026-12.org.xcp-ng.sim:'
                                          'host-%d-%d' % (self.index,
                                                          h.index)},
        })
        for n in range(cfg.cpus):
            cpu = db.create('host_cpu', {
                'host': h.ref, 'number': n, 'vendor': 'GenuineIntel',
                'speed': 2600, 'modelname': 'Sim CPU', 'family': 6,
                'model': 85, 'stepping': '4', 'utilisation': 0.0,
                'flags': 'fpu vme de pse tsc msr pae vmx'})
            db.link('host', h.ref, 'host_CPUs', cpu)
        dom0_metrics = db.create('VM_metrics', {
            'memory_actual': DOM0_MEMORY, 'VCPUs_number': cfg.cpus,
            'start_time': wire.now(), 'current_domain_type': 'pv'})
        dom0 = db.create('VM', {
            'name_label': 'Control domain on host: sim-host-%d-%d'
                          % (self.index, h.index),
            'is_control_domain': True, 'power_state': 'Running',
            'resident_on': h.ref, 'domid': 0, 'metrics': dom0_metrics,
            'memory_static_max': DOM0_MEMORY,
            'memory_dynamic_max': DOM0_MEMORY,
            'memory_dynamic_min': DOM0_MEMORY,
            'memory_static_min': DOM0_MEMORY, 'memory_target': DOM0_MEMORY,
            'VCPUs_max': cfg.cpus, 'VCPUs_at_startup': cfg.cpus,
            'domain_type': 'pv'})
        db.set('host', h.ref, control_domain=dom0)
        db.link('host', h.ref, 'resident_VMs', dom0)
        sr = db.create('SR', {
            'name_label': 'Local storage', 'type': 'ext',
            'content_type': 'user', 'physical_size': 512 * GiB,
            'shared': False, 'other_config': {'i18n-key': 'local-storage'}})
        pbd = db.create('PBD', {'SR': sr, 'host': h.ref,
                                'currently_attached': True,
                                'device_config': {'device': '/dev/sda3'}})
        db.link('SR', sr, 'PBDs', pbd)
        db.link('host', h.ref, 'PBDs', pbd)
        db.set('host', h.ref, local_cache_sr=sr, suspend_image_sr=sr,
               crash_dump_sr=sr)
        from nova_xen_stubdom.sim import pci_records
        pci_records.build(self, h, network)

    def _build_template(self) -> None:
        self.db.create('VM', {
            'name_label': 'Other install media', 'is_a_template': True,
            'is_default_template': True,
            'memory_static_max': 256 * MiB, 'memory_dynamic_max': 256 * MiB,
            'memory_dynamic_min': 256 * MiB, 'memory_static_min': 16 * MiB,
            'memory_target': 256 * MiB,
            'VCPUs_max': 1, 'VCPUs_at_startup': 1,
            'HVM_boot_policy': 'BIOS order',
            'HVM_boot_params': {'order': 'cd'}, 'domain_type': 'hvm',
            'platform': {'acpi': '1', 'apic': 'true', 'pae': 'true',
                         'viridian': 'false', 'nx': 'true'}})

    def refresh_host_metrics(self, h: HostRuntime) -> None:
        rec = self.db.get('host', h.ref)
        self.db.set('host_metrics', rec['metrics'], last_updated=wire.now())

    def shutdown(self) -> None:
        self.tasks.join_all(timeout=2)
        from nova_xen_stubdom.sim import dom0_process
        for h in self.hosts:
            h.xenopsd.stop()            # tearing down is no guest's doing
            dom0_process.stop(h)        # before its hypervisor goes
            h.hypervisor.shutdown()


def _ocaml_float(value: float) -> str:
    """OCaml's ``string_of_float`` (``%.12g``, a trailing dot when
    integral), which XAPI uses for these other_config times."""
    text = '%.12g' % value
    return text if any(c in text for c in '.en') else text + '.'
