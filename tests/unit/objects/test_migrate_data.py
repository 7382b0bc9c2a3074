"""XenStubdomLiveMigrateData: versioned, fingerprinted, known everywhere."""
import json
import subprocess
import sys

from oslo_versionedobjects import fixture

from nova.objects import base as obj_base
from nova_xen_stubdom.objects import migrate_data

#: Change a field -> bump VERSION and update the fingerprint here.
EXPECTED = {
    'XenStubdomLiveMigrateData': '1.0-c2369cf1d9ea4fcf253304da937cb7ae',
}


def _sample():
    md = migrate_data.XenStubdomLiveMigrateData(
        dest_address='192.0.2.7', dest_port=49512,
        migration_key='ab' * 32, dest_host_uuid='host-2',
        dest_free_memory=8 << 30, guest_memory=1 << 30,
        dest_cpu_info='GenuineIntel', block_migration=True)
    md.is_volume_backed = False
    return md


def test_fingerprint():
    checker = fixture.ObjectVersionChecker(
        {'XenStubdomLiveMigrateData':
         [migrate_data.XenStubdomLiveMigrateData]})
    expected, actual = checker.test_hashes(EXPECTED)
    assert expected == actual, (
        'XenStubdomLiveMigrateData changed: bump its VERSION and set the '
        'fingerprint to %s' % actual)


def test_registered_in_novas_registry():
    classes = obj_base.NovaObjectRegistry.obj_classes()
    assert migrate_data.XenStubdomLiveMigrateData in \
        classes['XenStubdomLiveMigrateData']


def test_round_trip_through_novas_serializer():
    ser = obj_base.NovaObjectSerializer()
    prim = ser.serialize_entity(None, _sample())
    back = ser.deserialize_entity(None, json.loads(json.dumps(prim)))
    assert isinstance(back, migrate_data.XenStubdomLiveMigrateData)
    assert back.dest_port == 49512
    assert back.migration_key == 'ab' * 32
    assert back.block_migration is True


def test_key_is_masked_when_printed():
    assert 'ab' * 32 not in repr(_sample())


def test_deserialised_by_a_process_that_never_loads_the_driver():
    """What the conductor does: only nova.objects.register_all(), then the
    RPC serializer.  The .pth hook must have registered the class."""
    prim = obj_base.NovaObjectSerializer().serialize_entity(None, _sample())
    code = '''
import json, sys
import nova.objects
nova.objects.register_all()
from nova.objects import base
assert 'nova_xen_stubdom.objects.migrate_data' in sys.modules
md = base.NovaObjectSerializer().deserialize_entity(None, json.load(sys.stdin))
print(json.dumps([md.obj_name(), md.dest_address, md.dest_port]))
'''
    out = subprocess.run([sys.executable, '-c', code], input=json.dumps(prim),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        'XenStubdomLiveMigrateData', '192.0.2.7', 49512]
