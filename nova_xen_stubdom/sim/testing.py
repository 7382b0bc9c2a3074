"""Helpers for tests that run against the simulator.

    from nova_xen_stubdom.sim import testing
    with testing.running_sim(hosts=2) as sim:
        x = testing.login(sim)            # XenAPI session (pool-admin)
        vm = x.xenapi.VM.create(testing.vm_record(name='a', hvm=False))
"""
import contextlib
import time
from typing import Iterator

from nova_xen_stubdom.sim.server import SimServer

USERNAME = 'root'
PASSWORD = 'sim-password'
RO_USER = 'auditor'
RO_PASSWORD = 'ro-password'
MiB = 1 << 20
#: a direct-boot kernel where XAPI accepts one (sim/bootfiles.py)
PV_KERNEL = '/var/lib/xcp/guest/vmlinuz'


@contextlib.contextmanager
def running_sim(**kwargs) -> Iterator[SimServer]:
    kwargs.setdefault('username', USERNAME)
    kwargs.setdefault('password', PASSWORD)
    users = dict(kwargs.pop('users', {}) or {})
    users.setdefault(RO_USER, (RO_PASSWORD, 'read-only'))
    sim = SimServer(users=users, **kwargs)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def login(sim_or_url, username: str = USERNAME, password: str = PASSWORD):
    import XenAPI
    url = sim_or_url if isinstance(sim_or_url, str) else sim_or_url.url
    session = XenAPI.Session(url)
    session.login_with_password(username, password, '2.0', 'tests')
    return session


def vm_record(name: str = 'vm', hvm: bool = True, memory: int = 256 * MiB,
              vcpus: int = 1, other_config=None, platform=None,
              xenstore_data=None) -> dict:
    """A complete VM.create argument (wire form: ints as strings)."""
    mem = str(memory)
    return {
        'name_label': name, 'name_description': '', 'user_version': '1',
        'is_a_template': False, 'affinity': 'OpaqueRef:NULL',
        'memory_static_max': mem, 'memory_dynamic_max': mem,
        'memory_dynamic_min': mem, 'memory_static_min': mem,
        'memory_target': mem,
        'VCPUs_params': {}, 'VCPUs_max': str(vcpus),
        'VCPUs_at_startup': str(vcpus),
        'actions_after_shutdown': 'destroy',
        'actions_after_reboot': 'restart', 'actions_after_crash': 'destroy',
        'PV_bootloader': '', 'PV_kernel': '' if hvm else PV_KERNEL,
        'PV_ramdisk': '', 'PV_args': '', 'PV_bootloader_args': '',
        'PV_legacy_args': '',
        'HVM_boot_policy': 'BIOS order' if hvm else '',
        'HVM_boot_params': {'order': 'cd'} if hvm else {},
        'platform': dict(platform or {}), 'PCI_bus': '',
        'other_config': dict(other_config or {}), 'recommendations': '',
        'xenstore_data': dict(xenstore_data or {}),
        'domain_type': 'hvm' if hvm else 'pv',
    }


def wait_task(session, task: str, timeout: float = 10.0) -> dict:
    """Poll a task to completion; returns its record."""
    x = session.xenapi
    deadline = time.monotonic() + timeout
    while True:
        rec = x.task.get_record(task)
        if rec['status'] not in ('pending', 'cancelling'):
            return rec
        if time.monotonic() > deadline:
            raise TimeoutError('task %s still %s' % (task, rec['status']))
        time.sleep(0.02)


def report_pv_drivers(sim, vm_ref: str, hotplug_vif: str = 'yes',
                      pool: int = 0, hotplug_vbd: str = 'yes') -> None:
    """What a running guest's agent with PV drivers reports: XAPI's guest
    metrics then show a driver version and ``can_use_hotplug_vif`` /
    ``_vbd`` (from the guest's xenstore ``feature/hotplug/vif`` / ``vbd``,
    xen-api
    ``ocaml/xapi/xapi_guest_agent.ml``).  The simulated HVM guests boot
    without PV drivers; a new boot reports that again (sim/vm.py)."""
    from nova_xen_stubdom.sim import vm as vmlib
    db = sim.pools[pool].db
    with db.lock:
        gm = db.get('VM', vm_ref)['guest_metrics']
        db.set('VM_guest_metrics', gm, PV_drivers_detected=True,
               PV_drivers_up_to_date=True,
               PV_drivers_version={'major': '9', 'minor': '0'},
               can_use_hotplug_vif=hotplug_vif,
               can_use_hotplug_vbd=hotplug_vbd)
        vmlib.update_allowed_operations(db, vm_ref)
