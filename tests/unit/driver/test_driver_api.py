"""The façade against Nova's ComputeDriver: signatures, exception map,
records checked against the XAPI datamodel, guest configuration."""
import inspect
import json
import os
import struct
import traceback

import pytest

from nova import exception
from nova import objects
from nova.virt import driver as nova_driver

from nova_xen_stubdom.driver import coldmigrationops
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import driver
from nova_xen_stubdom.driver import events
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import imageops
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.xapi import errors as xapi_errors

objects.register_all()
SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))),
    'nova_xen_stubdom', 'datamodel', 'schema.json')


def _public_methods(cls):
    return {n: m for n, m in vars(cls).items()
            if not n.startswith('_') and callable(m)}


def test_signatures_match_compute_driver():
    for name, method in _public_methods(driver.XenStubdomDriver).items():
        base = getattr(nova_driver.ComputeDriver, name, None)
        if base is None:
            continue
        ours = inspect.signature(inspect.unwrap(method))
        theirs = inspect.signature(base)
        assert list(ours.parameters) == list(theirs.parameters), name


def test_translation_keeps_the_failing_frame():
    @dexc.translating
    class Facade:
        def go(self):
            raise xapi_errors.XAPIError('VM_BAD_POWER_STATE',
                                        ['OpaqueRef:x', 'halted', 'running'])
    with pytest.raises(dexc.XenStubdomDriverError) as info:
        Facade().go()
    assert 'VM_BAD_POWER_STATE' in str(info.value)
    assert isinstance(info.value.__cause__, xapi_errors.XAPIError)
    frames = [f.name for f in traceback.extract_tb(info.tb)]
    assert 'go' in frames


def test_translation_table():
    t = dexc.translate
    assert isinstance(t(xapi_errors.XAPIConnectionError(
        'http://h', 'VM.start', OSError('refused'))),
        exception.HypervisorUnavailable)
    nova_exc = exception.InstanceNotFound(instance_id='x')
    assert t(nova_exc) is nova_exc
    # Nova's manager reports NotImplementedError as "not supported"
    nie = NotImplementedError('not implemented yet')
    assert t(nie) is nie


class _Flavor:
    def __init__(self, specs=None, swap=0, ephemeral_gb=0):
        self.extra_specs = specs or {}
        self.memory_mb = 512
        self.vcpus = 2
        self.root_gb = 3
        self.ephemeral_gb = ephemeral_gb
        self.swap = swap
        self.name = 'f'


def _image(**props):
    return objects.ImageMeta.from_dict({'id': 'img', 'disk_format': 'raw',
                                        'properties': props})


def test_guest_config_defaults_and_overrides():
    cfg = guest_config.resolve(_Flavor(), _image())
    assert (cfg.video, cfg.disk_bus, cfg.vif_model, cfg.firmware) == (
        'std', 'ide', 'e1000', 'bios')
    assert cfg.stubdom_memory_mb == 128 and cfg.stubdom_vcpus == 1
    cfg = guest_config.resolve(
        _Flavor({'xen_stubdom:memory_mb': '256', 'xen_stubdom:vcpus': '2',
                 'xen_stubdom:viridian': 'true'}),
        _image(hw_video_model='cirrus', hw_disk_bus='sata',
               hw_vif_model='rtl8139', hw_firmware_type='uefi'))
    assert (cfg.stubdom_memory_mb, cfg.stubdom_vcpus, cfg.viridian) == (
        256, 2, True)
    assert (cfg.video, cfg.disk_bus, cfg.vif_model, cfg.firmware) == (
        'cirrus', 'sata', 'rtl8139', 'uefi')


@pytest.mark.parametrize('specs', [
    {'xen_stubdom:memory_mb': 'x'}, {'xen_stubdom:memory_mb': '8'},
    {'xen_stubdom:vcpus': '99'}, {'xen_stubdom:viridian': 'perhaps'}])
def test_guest_config_bad_extra_specs(specs):
    with pytest.raises(exception.InvalidRequest):
        guest_config.resolve(_Flavor(specs), _image())


@pytest.mark.parametrize('props', [
    {'hw_video_model': 'qxl'}, {'hw_disk_bus': 'virtio'},
    {'hw_vif_model': 'virtio'}, {'hw_architecture': 'aarch64'},
    {'img_hv_type': 'kvm'}])
def test_guest_config_bad_image_properties(props):
    with pytest.raises(exception.ImageUnacceptable):
        guest_config.resolve(_Flavor(), _image(**props))


def test_disks_in_device_order():
    def disks(**kw):
        return guest_config.resolve(_Flavor(**kw), _image()).disks()
    assert disks() == [('root', 0)]
    assert disks(swap=512) == [('root', 0), ('swap', 2)]
    assert disks(swap=512, ephemeral_gb=1) == [
        ('root', 0), ('ephemeral', 1), ('swap', 2)]


def test_swap_header_is_what_mkswap_writes():
    uuid = bytes(range(16))
    page = imageops.swap_header(512 << 20, uuid)
    assert len(page) == 4096 and page.endswith(b'SWAPSPACE2')
    version, last_page, bad, got_uuid, label = struct.unpack_from(
        '<III16s16s', page, 1024)
    assert (version, last_page, bad, got_uuid) == (1, 131071, 0, uuid)
    assert label.rstrip(b'\0') == b'nova-swap'
    assert page[:1024] == bytes(1024)       # boot sector untouched
    with pytest.raises(ValueError, match='10 pages'):
        imageops.swap_header(8 * 4096, uuid)


def _resize_flavor(root_gb=3, ephemeral_gb=0, swap=0):
    f = _Flavor(swap=swap, ephemeral_gb=ephemeral_gb)
    f.root_gb = root_gb
    return f


@pytest.mark.parametrize('old,new,why', [
    ({}, {}, None),
    ({}, {'root_gb': 5}, None),
    ({'ephemeral_gb': 1}, {'ephemeral_gb': 2}, None),
    ({'swap': 512}, {'swap': 512, 'root_gb': 4}, None),
    ({'root_gb': 5}, {'root_gb': 3}, 'shrinking the root disk'),
    ({'ephemeral_gb': 2}, {'ephemeral_gb': 1}, 'ephemeral disk can grow'),
    ({}, {'ephemeral_gb': 1}, 'ephemeral disk can grow'),
    ({'ephemeral_gb': 1}, {}, 'ephemeral disk can grow'),
    ({'swap': 512}, {'swap': 1024}, 'changing the swap disk'),
    ({}, {'swap': 512}, 'changing the swap disk'),
])
def test_resize_refusal(old, new, why):
    got = coldmigrationops.resize_refusal(_resize_flavor(**old),
                                          _resize_flavor(**new))
    if why is None:
        assert got is None
    else:
        assert why in got


def _required_fields(cls_name):
    """Constructor fields without a default, and all fields, of *cls_name*
    (from the datamodel-derived schema shipped with the simulator)."""
    with open(SCHEMA) as f:
        fields = json.load(f)['classes'][cls_name]['fields']
    required = {name for name, spec in fields.items()
                if spec[1] in ('RW', 'RO/constructor') and len(spec) < 4}
    return required, set(fields)


class _Instance:
    uuid = '6a2d7d5c-5d4f-4bd4-a3c5-4d5b5c6e7f80'
    name = 'instance-00000001'
    display_name = 'vm'


def test_records_have_the_constructor_fields():
    cfg = guest_config.resolve(_Flavor(), _image())
    records = {
        'VM': [vmbuild.guest_record(_Instance, cfg, 'OpaqueRef:h'),
               vmbuild.stubdom_record(_Instance, cfg, 'OpaqueRef:h', 'g',
                                      '/k', '/r')],
        'VDI': [vmbuild.vdi_record(_Instance, 'OpaqueRef:sr', 1 << 30,
                                   'root')],
        'VBD': [vmbuild.vbd_record('OpaqueRef:vm', 'OpaqueRef:vdi', 0, True,
                                   {})],
        'VIF': [vmbuild.vif_record('OpaqueRef:vm', 'OpaqueRef:n', 0,
                                   'fa:16:3e:00:00:01', 1500, {})],
    }
    for cls_name, recs in records.items():
        required, fields = _required_fields(cls_name)
        assert required, cls_name
        for rec in recs:
            assert required <= set(rec), (cls_name, required - set(rec))
            assert set(rec) <= fields, (cls_name, set(rec) - fields)


def test_guest_and_stubdom_records():
    cfg = guest_config.resolve(_Flavor(), _image())
    guest = vmbuild.guest_record(_Instance, cfg, 'OpaqueRef:h')
    stub = vmbuild.stubdom_record(_Instance, cfg, 'OpaqueRef:h', 'guuid',
                                  '/k', '/r')
    assert guest['HVM_boot_policy'] == 'BIOS order'
    assert guest['other_config'] == {dc.OC_NOVA_UUID: _Instance.uuid,
                                     dc.OC_ROLE: dc.ROLE_GUEST}
    assert guest['memory_static_max'] == str(512 << 20)
    assert stub['HVM_boot_policy'] == '' and stub['PV_kernel'] == '/k'
    assert stub['VCPUs_max'] == '1'
    assert stub['memory_static_max'] == str(128 << 20)
    assert stub['other_config'][dc.OC_TARGET] == 'guuid'
    assert stub['name_label'] == _Instance.name + dc.STUBDOM_SUFFIX


def test_guest_carries_the_marker_the_dm_wrapper_reads():
    """The guest's VM.xenstore_data key is the one the dom0 device-model
    wrapper classifies by (xenopsd writes it to /local/domain/<d>/, unlike
    platform:stubdom, which XAPI's platform filter drops); the stub domain,
    a PV VM, has no device model and no marker."""
    from nova_xen_stubdom.dom0 import device_model
    cfg = guest_config.resolve(_Flavor(), _image())
    guest = vmbuild.guest_record(_Instance, cfg, 'OpaqueRef:h')
    stub = vmbuild.stubdom_record(_Instance, cfg, 'OpaqueRef:h', 'guuid',
                                  '/k', '/r')
    assert guest['xenstore_data'] == {dc.XS_MANAGED: _Instance.uuid}
    assert dc.XS_MANAGED.startswith('vm-data/')
    assert '/local/domain/%d/' + dc.XS_MANAGED in device_model.MARKER_KEYS
    assert dc.XS_MANAGED not in stub.get('xenstore_data', {})
    assert 'stubdom' not in guest['platform']


def test_no_driver_path_writes_platform_stubdom():
    """XAPI drops platform:stubdom unless the pool has
    No_platform_filter (ocaml/xapi/vm_platform.ml filtered_flags), so no
    path (spawn, rescue, migration) writes it: the xenstore_data marker
    above is the one that reaches xenopsd."""
    import pathlib
    import nova_xen_stubdom.driver as pkg
    callers = [p.name for p in pathlib.Path(pkg.__file__).parent.glob('*.py')
               if 'VM.add_to_platform' in p.read_text()]
    assert callers == []


def test_lifecycle_transitions():
    from nova.virt import event as virtevent
    assert events.transition('Running', 'Halted') == \
        virtevent.EVENT_LIFECYCLE_STOPPED
    assert events.transition('Halted', 'Running') == \
        virtevent.EVENT_LIFECYCLE_STARTED
    assert events.transition('Running', 'Paused') == \
        virtevent.EVENT_LIFECYCLE_PAUSED
    assert events.transition('Paused', 'Running') == \
        virtevent.EVENT_LIFECYCLE_RESUMED
    assert events.transition('Halted', 'Halted') is None


def test_pciops_import_failure_fails_the_driver_loudly(monkeypatch):
    """An instance with claimed PCI devices must never boot without them:
    the driver does not import without its pass-through module (no
    fallback to "no PCI"), and _load_pciops lets any failure through."""
    import importlib
    import sys

    from nova_xen_stubdom.driver import pciops
    pkg = sys.modules['nova_xen_stubdom.driver']
    monkeypatch.delattr(pkg, 'pciops')
    monkeypatch.setitem(sys.modules, 'nova_xen_stubdom.driver.pciops', None)
    monkeypatch.delitem(sys.modules, 'nova_xen_stubdom.driver.driver')
    with pytest.raises(ImportError, match='pciops'):
        importlib.import_module('nova_xen_stubdom.driver.driver')
    monkeypatch.undo()

    def broken(ctx):
        raise ImportError('simulated: a module pciops needs is missing')
    monkeypatch.setattr(pciops, 'PciOps', broken)
    with pytest.raises(ImportError, match='simulated'):
        driver.XenStubdomDriver._load_pciops(object())
