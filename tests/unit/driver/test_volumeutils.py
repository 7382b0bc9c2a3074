"""Cinder connection_info and block_device_info as volumeutils reads them:
what is accepted, and the clear error for everything else."""
import pytest

from nova import exception

from nova_xen_stubdom.driver import volumeutils

VOL = 'c8f5e54c-8f6e-4a5c-9a4d-2b7f7b0b7a01'


def _info(**data):
    base = {'target_portal': '192.0.2.20:3260',
            'target_iqn': 'iqn.2010-10.org.openstack:volume-1',
            'target_lun': 1, 'volume_id': VOL}
    base.update(data)
    return {'driver_volume_type': 'iscsi',
            'data': {k: v for k, v in base.items() if v is not None}}


def test_lvm_iscsi_connection_info():
    t = volumeutils.parse_connection_info(_info(
        auth_method='CHAP', auth_username='u', auth_password='p'))
    assert (t.address, t.port, t.lun, t.volume_id) == \
        ('192.0.2.20', '3260', 1, VOL)
    assert t.device_config() == {
        'target': '192.0.2.20', 'port': '3260',
        'targetIQN': 'iqn.2010-10.org.openstack:volume-1',
        'chapuser': 'u', 'chappassword': 'p'}
    # one SR per target: same target, same SR uuid, whatever the LUN
    assert t.sr_uuid == volumeutils.parse_connection_info(
        _info(target_lun=2)).sr_uuid
    assert t.sr_uuid != volumeutils.parse_connection_info(
        _info(target_iqn='iqn.other')).sr_uuid


def test_ipv6_portal_and_default_port():
    t = volumeutils.parse_connection_info(
        _info(target_portal='[2001:db8::1]:3261'))
    assert (t.address, t.port) == ('2001:db8::1', '3261')
    t = volumeutils.parse_connection_info(_info(target_portal='192.0.2.1'))
    assert (t.address, t.port) == ('192.0.2.1', '3260')


@pytest.mark.parametrize('info,exc', [
    ({'driver_volume_type': 'rbd', 'data': {}},
     exception.VolumeDriverNotFound),
    (_info(target_iqn=None), exception.InvalidVolume),
    (_info(volume_id=None), exception.InvalidVolume),
    (_info(target_lun='x'), exception.InvalidVolume),
    (_info(target_lun=-1), exception.InvalidVolume),
    (_info(target_portal='192.0.2.1:port'), exception.InvalidVolume),
    (_info(auth_method='kerberos'), exception.InvalidVolume),
    (_info(access_mode='ro'), exception.InvalidVolume),
    (_info(encrypted=True), exception.VolumeEncryptionNotSupported),
    ('not a dict', exception.InvalidVolume),
])
def test_bad_connection_info_is_refused(info, exc):
    with pytest.raises(exc):
        volumeutils.parse_connection_info(info)


@pytest.mark.parametrize('dev,n', [('/dev/xvdb', 1), ('/dev/vdc', 2),
                                   ('sdd', 3), ('/dev/hda', 0)])
def test_userdevice_of(dev, n):
    assert volumeutils.userdevice_of(dev) == n


@pytest.mark.parametrize('dev', ['', '/dev/vdb1', '/dev/nvme0n1', 'vdz'])
def test_userdevice_of_bad_names(dev):
    with pytest.raises(exception.InvalidDevicePath):
        volumeutils.userdevice_of(dev)


def test_plan_boot_volume_and_data_volume():
    bdi = {'root_device_name': '/dev/vda', 'block_device_mapping': [
        {'connection_info': _info(volume_id='v2', target_lun=2),
         'mount_device': '/dev/vdd', 'boot_index': None},
        {'connection_info': _info(), 'mount_device': '/dev/vda',
         'boot_index': 0}]}
    plan = volumeutils.plan(bdi, taken=[])
    assert [(v.userdevice, v.target.volume_id) for v in plan] == \
        [(0, VOL), (3, 'v2')]


def test_plan_refuses_a_slot_of_the_flavor_disks():
    bdi = {'block_device_mapping': [
        {'connection_info': _info(), 'mount_device': '/dev/vdb'}]}
    with pytest.raises(exception.InvalidBDM):
        volumeutils.plan(bdi, taken=[1])
    assert volumeutils.plan(None, taken=[1]) == []
