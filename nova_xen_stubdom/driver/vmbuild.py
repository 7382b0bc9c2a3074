"""XAPI records the driver creates: guest VM, stub domain VM, VDI, VBD, VIF,
and :class:`Built`, the refs of what one operation created from them.

Pure functions (no XAPI calls) so the records are unit-testable and the
datamodel check can compare their keys with the constructor's fields.
"""
import dataclasses
from typing import Callable, Dict, List, Optional

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import guest_config as gconf
from nova_xen_stubdom.stubdom import image as stubdom_image


@dataclasses.dataclass
class Built:
    """XAPI objects of one instance (as far as they exist)."""
    guest: Optional[str] = None
    stubdom: Optional[str] = None
    guest_uuid: Optional[str] = None
    vdis: List[str] = dataclasses.field(default_factory=list)
    vbds: List[str] = dataclasses.field(default_factory=list)
    vifs: List[str] = dataclasses.field(default_factory=list)
    #: volume SRs this operation connected (forgotten on rollback when
    #: unused)
    srs: List[str] = dataclasses.field(default_factory=list)

    def empty(self) -> bool:
        return not (self.guest or self.stubdom or self.vdis)


def direct(step: str, fn: Callable, *args, **kwargs):
    """Run a step outside spawn's bookkeeping.

    Steps are ``do(step, fn, *args)`` so that spawn and rebuild can name
    the step that failed; callers with nothing to name pass this one.
    """
    return fn(*args, **kwargs)


def _vm_common(name: str, memory_mb: int, vcpus: int, host_ref: str,
               other_config: Dict[str, str]) -> dict:
    mem = str(memory_mb * dc.MiB)
    return {
        'name_label': name,
        'name_description': '',
        'user_version': '1',
        'is_a_template': False,
        'affinity': host_ref,
        'memory_static_max': mem,
        'memory_dynamic_max': mem,
        'memory_dynamic_min': mem,
        'memory_static_min': mem,
        'VCPUs_params': {},
        'VCPUs_max': str(vcpus),
        'VCPUs_at_startup': str(vcpus),
        'actions_after_shutdown': 'destroy',
        # NOTE(driver): a guest reboot must rebuild its stub domain too
        # (set_target binds one domid), so XAPI may not restart it alone:
        # the VM halts and the driver rebuilds both (driver/events.py,
        # told reboot from poweroff by the dom0 side's guest_exit record)
        'actions_after_reboot': 'destroy',
        'actions_after_crash': 'destroy',
        'PV_bootloader': '',
        'PV_kernel': '',
        'PV_ramdisk': '',
        'PV_args': '',
        'PV_bootloader_args': '',
        'PV_legacy_args': '',
        'HVM_boot_policy': '',
        'HVM_boot_params': {},
        'platform': {},
        'PCI_bus': '',
        'other_config': other_config,
        'recommendations': '',
    }


def guest_record(instance, cfg: gconf.GuestConfig, host_ref: str) -> dict:
    """The HVM guest. Its device model runs in the stub domain."""
    rec = _vm_common(instance.name, cfg.memory_mb, cfg.vcpus, host_ref, {
        dc.OC_NOVA_UUID: instance.uuid,
        dc.OC_ROLE: dc.ROLE_GUEST,
    })
    rec['name_description'] = 'Nova instance %s (%s)' % (
        instance.uuid, instance.display_name or '')
    rec['HVM_boot_policy'] = 'BIOS order'
    rec['HVM_boot_params'] = {'order': 'cd', 'firmware': cfg.firmware}
    rec['platform'] = {
        'acpi': '1', 'apic': 'true', 'pae': 'true', 'nx': 'true',
        'viridian': 'true' if cfg.viridian else 'false',
        'vga': cfg.video, 'videoram': '8',
        'device-model': 'qemu-upstream-compat',
        'timeoffset': '0',
    }
    # marks the guest as ours for the dom0 device-model wrapper (see
    # constants.XS_MANAGED): never a dom0 QEMU for it, link or not
    rec['xenstore_data'] = {dc.XS_MANAGED: instance.uuid}
    return rec


def stubdom_record(instance, cfg: gconf.GuestConfig, host_ref: str,
                   guest_uuid: str, kernel: str, ramdisk: str) -> dict:
    """The PV stub domain VM running the guest's QEMU."""
    rec = _vm_common(instance.name + dc.STUBDOM_SUFFIX,
                     cfg.stubdom_memory_mb, cfg.stubdom_vcpus, host_ref, {
                         dc.OC_NOVA_UUID: instance.uuid,
                         dc.OC_ROLE: dc.ROLE_STUBDOM,
                         dc.OC_TARGET: guest_uuid,
                         # no vncterm in dom0 for the stub domain's text
                         # console, so no console records either (xen-api
                         # xapi_xenops.ml: vncterm unless this key is set)
                         dc.OC_DISABLE_PV_VNC: 'true',
                     })
    rec['name_description'] = 'device model of %s' % instance.name
    rec['PV_kernel'] = kernel
    rec['PV_ramdisk'] = ramdisk
    rec['PV_args'] = stubdom_image.KERNEL_CMDLINE
    rec['platform'] = {'nx': 'true'}
    return rec


def vdi_record(instance, sr_ref: str, size_bytes: int, disk: str) -> dict:
    return {
        'name_label': '%s-%s' % (instance.name, disk),
        'name_description': 'disk %s of Nova instance %s' % (
            disk, instance.uuid),
        'SR': sr_ref,
        'virtual_size': str(size_bytes),
        'type': 'user',
        # NOTE(driver): the guest (PV path) and its stub domain (emulated
        # path) both attach the disk, as with libxl stub domains
        'sharable': True,
        'read_only': False,
        'other_config': {dc.OC_NOVA_UUID: instance.uuid, dc.OC_DISK: disk},
        'xenstore_data': {},
        'sm_config': {},
        'tags': [],
    }


def vbd_record(vm_ref: str, vdi_ref: str, userdevice: int, bootable: bool,
               other_config: Dict[str, str]) -> dict:
    return {
        'VM': vm_ref,
        'VDI': vdi_ref,
        'userdevice': str(userdevice),
        'bootable': bootable,
        'mode': 'RW',
        'type': 'Disk',
        'unpluggable': False,
        'empty': False,
        'other_config': other_config,
        'qos_algorithm_type': '',
        'qos_algorithm_params': {},
    }


def vif_record(vm_ref: str, network_ref: str, device: int, mac: str,
               mtu: int, other_config: Dict[str, str]) -> dict:
    return {
        'device': str(device),
        'network': network_ref,
        'VM': vm_ref,
        'MAC': mac,
        'MTU': str(mtu),
        'other_config': other_config,
        'qos_algorithm_type': '',
        'qos_algorithm_params': {},
    }
