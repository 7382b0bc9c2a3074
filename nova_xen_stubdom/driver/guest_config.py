"""What a guest asks for: flavor extra specs and image properties, checked.

Everything here runs before anything is created on the host, so a bad value
fails the boot with a clear fault and nothing to clean up.  The API already
refuses bad ``xen_stubdom:`` extra specs (``api_validators``); the checks are
repeated here because flavors created before the package was installed, or
with validation off, still reach the driver.
"""
import dataclasses
from typing import List, Optional, Tuple

from nova import exception
from nova.i18n import _

from nova_xen_stubdom import conf as xconf
from nova_xen_stubdom.driver.constants import DISK_USERDEVICE

EXTRA_SPEC_NS = 'xen_stubdom'

#: image property -> {Nova value: what the stub domain's QEMU gets}
VIDEO_MODELS = {'vga': 'std', 'cirrus': 'cirrus', 'none': 'none'}
DISK_BUSES = {'ide': 'ide', 'sata': 'sata', 'xen': 'xen'}
VIF_MODELS = {'e1000': 'e1000', 'rtl8139': 'rtl8139', 'netfront': 'netfront'}
FIRMWARE_TYPES = {'bios': 'bios', 'uefi': 'uefi'}
ARCHITECTURES = ('x86_64', 'i686')

STUBDOM_MEMORY_MIN, STUBDOM_MEMORY_MAX = 32, 4096
STUBDOM_VCPUS_MIN, STUBDOM_VCPUS_MAX = 1, 8


@dataclasses.dataclass(frozen=True)
class GuestConfig:
    """The guest's virtual hardware, resolved from flavor + image + conf."""
    memory_mb: int
    vcpus: int
    root_gb: int
    ephemeral_gb: int
    stubdom_memory_mb: int
    stubdom_vcpus: int
    video: str = 'std'
    disk_bus: str = 'ide'
    vif_model: str = 'e1000'
    firmware: str = 'bios'
    viridian: bool = False
    swap_mb: int = 0

    def disks(self) -> List[Tuple[str, int]]:
        """``(disk, userdevice)`` of every disk the flavor gives the
        guest, in device order (the stub domain mirrors the same numbers)."""
        out = [('root', DISK_USERDEVICE['root'])]
        if self.ephemeral_gb:
            out.append(('ephemeral', DISK_USERDEVICE['ephemeral']))
        if self.swap_mb:
            out.append(('swap', DISK_USERDEVICE['swap']))
        return out


def _int_spec(extra_specs: dict, key: str, lo: int, hi: int,
              default: int) -> int:
    name = '%s:%s' % (EXTRA_SPEC_NS, key)
    raw = extra_specs.get(name)
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise exception.InvalidRequest(
            _('flavor extra spec %(name)s=%(raw)r is not an integer')
            % {'name': name, 'raw': raw})
    if not lo <= value <= hi:
        raise exception.InvalidRequest(
            _('flavor extra spec %(name)s=%(v)d is outside %(lo)d..%(hi)d')
            % {'name': name, 'v': value, 'lo': lo, 'hi': hi})
    return value


def _bool_spec(extra_specs: dict, key: str, default: bool) -> bool:
    name = '%s:%s' % (EXTRA_SPEC_NS, key)
    raw = extra_specs.get(name)
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value in ('true', '1', 'yes'):
        return True
    if value in ('false', '0', 'no'):
        return False
    raise exception.InvalidRequest(
        _('flavor extra spec %(name)s=%(raw)r is not a boolean')
        % {'name': name, 'raw': raw})


def _image_choice(image_meta, prop: str, table: dict,
                  default: str) -> str:
    value = image_meta.properties.get(prop, None) if image_meta else None
    if value is None:
        return default
    value = str(value)
    if value not in table:
        raise exception.ImageUnacceptable(
            image_id=getattr(image_meta, 'id', '?'),
            reason=_('image property %(prop)s=%(value)s is not supported by '
                     'the Xen stub-domain driver (supported: %(ok)s)')
            % {'prop': prop, 'value': value,
               'ok': ', '.join(sorted(table))})
    return table[value]


def stubdom_memory_mb(flavor, conf=None) -> int:
    conf = conf or xconf.CONF
    return _int_spec(flavor.extra_specs or {}, 'memory_mb',
                     STUBDOM_MEMORY_MIN, STUBDOM_MEMORY_MAX,
                     conf.xen_stubdom.stubdom_memory_mb)


def resolve(flavor, image_meta: Optional[object], conf=None) -> GuestConfig:
    """Check flavor extra specs and image properties; return the hardware.

    :raises InvalidRequest: a bad ``xen_stubdom:`` extra spec.
    :raises ImageUnacceptable: an image property this driver cannot honour.
    """
    conf = conf or xconf.CONF
    specs = flavor.extra_specs or {}
    if image_meta is not None:
        arch = image_meta.properties.get('hw_architecture', None)
        if arch is not None and str(arch) not in ARCHITECTURES:
            raise exception.ImageUnacceptable(
                image_id=getattr(image_meta, 'id', '?'),
                reason=_('image architecture %s: this driver runs x86 HVM '
                         'guests only') % arch)
        hv_type = image_meta.properties.get('img_hv_type', None)
        if hv_type is not None and str(hv_type) != 'xen':
            raise exception.ImageUnacceptable(
                image_id=getattr(image_meta, 'id', '?'),
                reason=_('image hypervisor type %s is not xen') % hv_type)
    return GuestConfig(
        memory_mb=int(flavor.memory_mb),
        vcpus=int(flavor.vcpus),
        root_gb=int(flavor.root_gb),
        ephemeral_gb=int(flavor.ephemeral_gb or 0),
        swap_mb=int(flavor.swap or 0),
        stubdom_memory_mb=stubdom_memory_mb(flavor, conf),
        stubdom_vcpus=_int_spec(specs, 'vcpus', STUBDOM_VCPUS_MIN,
                                STUBDOM_VCPUS_MAX,
                                conf.xen_stubdom.stubdom_vcpus),
        video=_image_choice(image_meta, 'hw_video_model', VIDEO_MODELS,
                            'std'),
        disk_bus=_image_choice(image_meta, 'hw_disk_bus', DISK_BUSES,
                               'ide'),
        vif_model=_image_choice(image_meta, 'hw_vif_model', VIF_MODELS,
                                'e1000'),
        firmware=_image_choice(image_meta, 'hw_firmware_type',
                               FIRMWARE_TYPES, 'bios'),
        viridian=_bool_spec(specs, 'viridian', False),
    )
