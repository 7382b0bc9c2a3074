"""Read-only views of a simulated host's hypervisor, for tests and tools."""
from typing import Dict, List

from nova_xen_stubdom.sim import devicemodel


def domains(host) -> List[dict]:
    hv = host.hypervisor
    out = []
    with hv.lock:
        doms = list(hv.domains.values())
    for d in doms:
        out.append({
            'domid': d.domid, 'vm_uuid': d.vm_uuid, 'name': d.name,
            'hvm': d.hvm, 'memory': d.max_pfn * 4096, 'vcpus': d.vcpus,
            'paused': d.paused, 'target': d.target,
            'dirty_rate': d.dirty_rate, 'logdirty': d.logdirty,
            'device_model_domid': hv.device_models.get(d.domid),
            'frontends': [{'kind': f.kind, 'devid': f.devid,
                           'target': f.target}
                          for f in hv.frontends_of(d.domid)],
        })
    return out


def device_models(host) -> Dict[int, int]:
    """guest domid -> domid its device model runs in (0: dom0)."""
    with host.hypervisor.lock:
        return dict(host.hypervisor.device_models)


def dom0_device_models(host) -> List[int]:
    """Guests whose device model runs in dom0: VMs not managed by Nova (the
    stock wrapper's), never a Nova guest unless the host allows it."""
    return [g for g, dm in device_models(host).items() if dm == 0]


def dm_wrapper_runs(host) -> Dict[int, object]:
    """guest domid -> how the device-model wrapper started its device model
    (``sim.xenopsd_dm.WrapperRun``: xenopsd's argv, the stock wrapper it
    went to unchanged, why the VM is ours)."""
    from nova_xen_stubdom.sim import xenopsd_dm
    return xenopsd_dm.runs(host.hypervisor)


def running_qemus(host) -> Dict[int, int]:
    return devicemodel.qemus(host.hypervisor)


def frontends(host, domid: int) -> List[tuple]:
    return [(f.kind, f.devid) for f in host.hypervisor.frontends_of(domid)]


def console(host, domid: int) -> List[str]:
    return list(host.hypervisor.domain(domid).console)
