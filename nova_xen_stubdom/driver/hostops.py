"""Host resources, served from the ``event.from`` cache.

Periodic tasks (the resource tracker every minute, ``update_provider_tree``)
read cached records only: no XAPI call per VM or per period.
"""
import math
import time
from typing import Dict, List, Optional

import os_resource_classes as orc
from oslo_log import log as logging
from oslo_serialization import jsonutils

from nova.objects import fields as obj_fields

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import sharedsr

LOG = logging.getLogger(__name__)


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class HostOps:
    def __init__(self, ctx, nova_conf) -> None:
        self._ctx = ctx
        self._conf = nova_conf

    # -- records ----------------------------------------------------------
    def _host(self) -> dict:
        rec = self._ctx.cache.get('host', self._ctx.host_ref)
        return rec if rec is not None else self._ctx.host_record

    def _metrics(self) -> dict:
        host = self._host()
        return self._ctx.cache.get('host_metrics', host.get('metrics')) or {}

    def _our_vms(self) -> Dict[str, dict]:
        """VMs of this driver resident on this host, or not resident
        anywhere (halted: XAPI's ``resident_on`` is NULL) but placed here
        (``affinity``, which the driver sets to the instance's host).  A
        halted VM of another host's instance is not ours to count."""
        out = {}
        host = self._ctx.host_ref
        for ref, rec in self._ctx.cache.get_all('VM').items():
            oc = rec.get('other_config') or {}
            if dc.OC_ROLE not in oc:
                continue
            resident = rec.get('resident_on')
            if resident == host or (
                    resident in ('OpaqueRef:NULL', '', None)
                    and rec.get('affinity') == host):
                out[ref] = rec
        return out

    # -- SR ---------------------------------------------------------------
    def _srs_on_this_host(self) -> Dict[str, dict]:
        """SRs with a PBD of this host: another host's local SR (same
        name_label "Local storage" on every host) is never ours."""
        host = self._ctx.host_ref
        plugged = {p.get('SR') for p in self._ctx.cache.get_all('PBD').values()
                   if p.get('host') == host}
        return {ref: sr for ref, sr in self._ctx.cache.get_all('SR').items()
                if ref in plugged}

    def select_sr(self) -> Optional[str]:
        """The SR for instance disks ([xen_stubdom] sr_matching_filter)."""
        flt = self._ctx.conf.xen_stubdom.sr_matching_filter
        kind, _, value = flt.partition(':')
        if kind == 'default-sr' and value == 'true':
            srs = self._ctx.cache.get_all('SR')
            for pool in self._ctx.cache.get_all('pool').values():
                ref = pool.get('default_SR')
                if ref in srs:
                    return ref
            return None
        srs = self._srs_on_this_host()
        if kind == 'other-config':
            key, _, want = value.partition('=')
            for ref, sr in sorted(srs.items()):
                if (sr.get('other_config') or {}).get(key) == want:
                    return ref
            return None
        if kind == 'name-label':
            for ref, sr in sorted(srs.items()):
                if sr.get('name_label') == value:
                    return ref
            return None
        LOG.error('[xen_stubdom] sr_matching_filter %r: unknown form', flt)
        return None

    # -- resources --------------------------------------------------------
    def _memory_mb(self) -> Dict[str, int]:
        host = self._host()
        metrics = self._metrics()
        total = _int(metrics.get('memory_total')) // dc.MiB
        free = _int(metrics.get('memory_free')) // dc.MiB
        # NOTE(driver): Xen itself and dom0 are not guest memory
        overhead = _int(host.get('memory_overhead')) // dc.MiB
        dom0 = 0
        ctrl = self._ctx.cache.get('VM', host.get('control_domain'))
        if ctrl:
            dom0 = _int(ctrl.get('memory_static_max')) // dc.MiB
        stubdoms = 0
        guests = 0
        for rec in self._our_vms().values():
            mem = _int(rec.get('memory_static_max')) // dc.MiB
            if rec['other_config'].get(dc.OC_ROLE) == dc.ROLE_STUBDOM:
                stubdoms += mem
            else:
                guests += mem
        return {'physical': total, 'free': free,
                'usable': max(total - overhead - dom0, 0),
                'stubdoms': stubdoms, 'guests': guests}

    def _disk_gb(self) -> dict:
        sr = self._ctx.cache.get('SR', self.select_sr()) or {}
        size = _int(sr.get('physical_size'))
        used = _int(sr.get('physical_utilisation'))
        # XAPI's SR.shared: one SR, a PBD on every host of the pool
        return {'total': size // dc.GiB, 'used': math.ceil(used / dc.GiB),
                'free': max(size - used, 0) // dc.GiB,
                'shared_uuid': sr.get('uuid') if sr.get('shared') else None}

    def _vcpus(self) -> int:
        host = self._host()
        count = _int((host.get('cpu_info') or {}).get('cpu_count'))
        return count or len(host.get('host_CPUs') or [])

    def hypervisor_version(self) -> int:
        sv = self._host().get('software_version') or {}
        ver = sv.get('xen') or sv.get('product_version') or '0'
        parts = [_int(p) for p in ver.split('-')[0].split('.')[:3]]
        parts += [0] * (3 - len(parts))
        return parts[0] * 1000000 + parts[1] * 1000 + parts[2]

    def cpu_info(self) -> str:
        info = self._host().get('cpu_info') or {}
        count = self._vcpus()
        return jsonutils.dumps({
            'arch': obj_fields.Architecture.X86_64,
            'model': info.get('modelname', ''),
            'vendor': info.get('vendor', ''),
            'topology': {'sockets': _int(info.get('socket_count'), 1),
                         'cores': count // max(_int(info.get('socket_count'),
                                                    1), 1),
                         'threads': 1},
            'features': sorted((info.get('flags') or '').split()),
        })

    def nodename(self) -> str:
        return self._host().get('name_label') or self._ctx.host_name

    def get_available_resource(self, nodename: str) -> dict:
        mem = self._memory_mb()
        disk = self._disk_gb()
        return {
            'vcpus': self._vcpus(),
            'memory_mb': mem['usable'],
            'local_gb': disk['total'],
            'vcpus_used': 0,
            'memory_mb_used': mem['guests'] + mem['stubdoms'],
            'local_gb_used': disk['used'],
            'hypervisor_type': obj_fields.HVType.XEN,
            'hypervisor_version': self.hypervisor_version(),
            'hypervisor_hostname': nodename,
            'cpu_info': self.cpu_info(),
            'disk_available_least': disk['free'],
            'supported_instances': [(obj_fields.Architecture.X86_64,
                                     obj_fields.HVType.XEN,
                                     obj_fields.VMMode.HVM)],
            'numa_topology': None,
        }

    def update_provider_tree(self, provider_tree, nodename: str,
                             allocation_ratios: Dict[str, float],
                             allocations: Optional[dict] = None) -> None:
        mem = self._memory_mb()
        disk = self._disk_gb()
        conf = self._conf
        # NOTE(driver): each guest's stub domain costs host memory that no
        # flavor allocation accounts for: it is reserved.
        mem_reserved = conf.reserved_host_memory_mb + mem['stubdoms']
        inventory = {
            orc.VCPU: {
                'total': self._vcpus(), 'min_unit': 1,
                'max_unit': self._vcpus(), 'step_size': 1,
                'allocation_ratio': allocation_ratios[orc.VCPU],
                'reserved': conf.reserved_host_cpus,
            },
            orc.MEMORY_MB: {
                'total': mem['usable'], 'min_unit': 1,
                'max_unit': mem['usable'], 'step_size': 1,
                'allocation_ratio': allocation_ratios[orc.MEMORY_MB],
                'reserved': min(mem_reserved, mem['usable']),
            },
        }
        shared = None
        if (disk['total'] > 0 and self._ctx.conf.xen_stubdom.
                shared_sr_inventory == 'sharing-provider'):
            shared = disk['shared_uuid']
        if shared:
            # NOTE(driver): the pool's shared SR is reported once, on its
            # sharing provider; reserved_host_disk_mb is a host's own
            # reservation and has no meaning there
            sharedsr.update(provider_tree, nodename, shared,
                            self._disk_inventory(disk, allocation_ratios, 0),
                            self._known_sr_uuids(), allocations)
        else:
            sharedsr.update(provider_tree, nodename, None, None,
                            self._known_sr_uuids(), allocations)
            if disk['total'] > 0:
                inventory[orc.DISK_GB] = self._disk_inventory(
                    disk, allocation_ratios,
                    math.ceil(conf.reserved_host_disk_mb / 1024))
        provider_tree.update_inventory(nodename, inventory)

    @staticmethod
    def _disk_inventory(disk: dict, allocation_ratios: Dict[str, float],
                        reserved_gb: int) -> dict:
        return {'total': disk['total'], 'min_unit': 1,
                'max_unit': disk['total'], 'step_size': 1,
                'allocation_ratio': allocation_ratios[orc.DISK_GB],
                'reserved': min(reserved_gb, disk['total'])}

    def _known_sr_uuids(self) -> List[str]:
        return [sr.get('uuid') for sr in
                self._ctx.cache.get_all('SR').values() if sr.get('uuid')]

    # -- misc -------------------------------------------------------------
    def host_ip(self) -> str:
        return self._host().get('address') or self._conf.my_ip

    def uptime(self) -> str:
        boot = (self._host().get('other_config') or {}).get('boot_time')
        now = time.time()
        try:
            secs = max(int(now - float(boot)), 0)
        except (TypeError, ValueError):
            return 'up (boot time unknown)'
        days, rem = divmod(secs, 86400)
        hours, rem = divmod(rem, 3600)
        return '%s up %d days, %2d:%02d' % (
            time.strftime('%H:%M:%S', time.gmtime(now)), days, hours,
            rem // 60)

    def node_available(self) -> bool:
        host = self._host()
        metrics = self._metrics()
        return bool(host.get('enabled', True)) and bool(
            metrics.get('live', True))

    def traits(self) -> List[str]:
        return []
