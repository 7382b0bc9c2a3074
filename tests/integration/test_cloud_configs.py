"""The test cloud's generated configuration, without starting anything."""
import configparser
import sys

import pytest

from nova_xen_stubdom.cloud import configs
from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import tempest_conf


@pytest.fixture
def lay(tmp_path):
    venv = tmp_path / 'venv'
    (venv / 'etc' / 'nova').mkdir(parents=True)
    (venv / 'etc' / 'nova' / 'api-paste.ini').write_text(
        '[composite:osapi_compute]\nuse = egg:Paste#urlmap\n')
    lay = L.Layout.create(str(tmp_path / 'cloud'), str(venv),
                          str(tmp_path / 'ks'))
    lay.mkdirs()
    return lay


def _read(path):
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(path)
    return cp


def test_every_file_is_generated(lay):
    files = configs.write_all(lay, 'xen_stubdom', 'http://127.0.0.1:9363')
    assert sorted(files) == ['compute-host1', 'compute-host2', 'keystone',
                             'nova', 'placement']
    for path in files.values():
        assert path.read_text().startswith(configs.HEADER)
    # the stock paste pipeline, copied, not written by hand
    assert (lay.etc / 'nova' / 'api-paste.ini').read_text().startswith(
        '[composite:osapi_compute]')


def test_compute_conf_runs_our_driver_without_database_access(lay):
    files = configs.write_all(lay, 'xen_stubdom', 'http://127.0.0.1:9363')
    for host, xapi_host in L.XAPI_HOSTS.items():
        cp = _read(files['compute-' + host])
        assert cp['DEFAULT']['compute_driver'] == \
            'xen_stubdom.XenStubdomDriver'
        assert cp['DEFAULT']['host'] == host
        assert cp['xen_stubdom']['connection_url'] == \
            'http://127.0.0.1:9363'
        assert cp['xen_stubdom']['host_name'] == xapi_host
        # nova-compute talks to the database only through the conductor
        assert not cp.has_section('database')
        assert not cp.has_section('api_database')
    # each compute has its own state and lock directories
    states = {_read(files['compute-' + h])['DEFAULT']['state_path']
              for h in L.COMPUTE_HOSTS}
    assert len(states) == len(L.COMPUTE_HOSTS)


def test_pci_alias_and_device_spec_agree_with_the_simulated_gpu(lay):
    import json
    from nova_xen_stubdom.sim import pci
    gpu = [d for d in pci.host_devices(L.SIM_PCI_SET)
           if d.class_id >> 16 == 0x03][0]
    files = configs.write_all(lay, 'xen_stubdom', 'http://127.0.0.1:9363')
    ctl = _read(files['nova'])
    alias = json.loads(ctl['pci']['alias'])
    assert (alias['vendor_id'], alias['product_id']) == (
        '%04x' % gpu.vendor_id, '%04x' % gpu.device_id)
    assert 'PciPassthroughFilter' in \
        ctl['filter_scheduler']['enabled_filters'].split(',')
    for host in L.COMPUTE_HOSTS:
        cp = _read(files['compute-' + host])
        spec = json.loads(cp['pci']['device_spec'])
        assert (spec['vendor_id'], spec['product_id']) == (
            alias['vendor_id'], alias['product_id'])
        assert json.loads(cp['pci']['alias']) == alias


def test_fake_driver_has_no_xapi_section(lay):
    files = configs.write_all(lay, 'fake', 'http://127.0.0.1:9363')
    cp = _read(files['compute-host1'])
    assert cp['DEFAULT']['compute_driver'] == configs.DRIVERS['fake']
    assert not cp.has_section('xen_stubdom')


def test_controller_conf_points_at_the_cloud(lay):
    files = configs.write_all(lay, 'xen_stubdom', 'http://127.0.0.1:9363')
    cp = _read(files['nova'])
    assert cp['database']['connection'] == lay.db_url('nova')
    assert cp['api_database']['connection'] == lay.db_url('nova_api')
    assert cp['DEFAULT']['transport_url'] == lay.transport_url()
    assert cp['keystone_authtoken']['auth_url'] == lay.url('keystone')
    assert cp['wsgi']['api_paste_config'] == str(
        lay.etc / 'nova' / 'api-paste.ini')


def test_missing_nova_venv_is_a_clear_error(tmp_path):
    from nova_xen_stubdom.cloud import procs
    lay = L.Layout.create(str(tmp_path / 'c'), str(tmp_path / 'nope'))
    with pytest.raises(procs.CloudError, match='api-paste.ini'):
        configs.write_all(lay, 'xen_stubdom', 'http://x')


def test_layout_defaults_to_the_running_venv(tmp_path):
    lay = L.Layout.create(str(tmp_path))
    assert str(lay.nova_venv) == str(type(lay.nova_venv)(sys.prefix)
                                     .resolve())
    assert lay.keystone_venv == tmp_path.resolve() / 'venv-keystone'
    assert lay.glance_venv == tmp_path.resolve() / 'venv-glance'


FACTS = {
    'driver': configs.DRIVERS['xen_stubdom'],
    'keystone': 'http://127.0.0.1:5000/v3',
    'xapi_url': 'http://127.0.0.1:9363', 'xapi_username': 'root',
    'xapi_password': 'pw', 'image_id': 'img',
    'flavors': {'tempest.small': '1', 'tempest.medium': '2'},
    'compute_hosts': ['host1', 'host2'],
    'xapi_hosts': {'host1': 'sim-host-0-0', 'host2': 'sim-host-0-1'},
    'admin_password': 'admin',
}


def test_tempest_conf_enables_the_plugin_for_our_driver(tmp_path):
    conf = tempest_conf.tempest_conf(FACTS, tmp_path)
    assert conf['service_available']['xen_stubdom'] is True
    assert conf['xen_stubdom']['xapi_url'] == 'http://127.0.0.1:9363'
    assert conf['xen_stubdom']['host_map'] == \
        'host1:sim-host-0-0,host2:sim-host-0-1'
    assert conf['compute']['flavor_ref'] == '1'
    assert conf['compute']['flavor_ref_alt'] == '2'
    assert conf['compute']['min_compute_nodes'] == 2
    assert conf['xen_stubdom']['pci_alias'] == L.PCI_ALIAS['name']
    for feature in ('live_migration', 'cold_migration', 'resize', 'suspend',
                    'console_output', 'pause'):
        assert conf['compute-feature-enabled'][feature] is True, feature
    # the pool's disks are shared: the driver refuses block migration
    assert conf['compute-feature-enabled'][
        'block_migration_for_live_migration'] is False


def test_tempest_conf_disables_the_plugin_for_the_fake_driver(tmp_path):
    facts = dict(FACTS, driver=configs.DRIVERS['fake'], xapi_url=None)
    conf = tempest_conf.tempest_conf(facts, tmp_path)
    assert conf['service_available']['xen_stubdom'] is False
    assert 'xen_stubdom' not in conf


def test_nothing_is_written_outside_the_cloud_dir(lay):
    """Every path in every generated file lies under the cloud's dir (or
    the venvs): keystone's receipt keys once landed in /etc/keystone."""
    files = configs.write_all(lay, 'xen_stubdom', 'http://127.0.0.1:9363')
    allowed = (str(lay.root), str(lay.nova_venv), str(lay.keystone_venv))
    for path in files.values():
        for section in _read(path).values():
            for value in section.values():
                if value.startswith('/'):
                    assert value.startswith(allowed), (path, value)
    ks = _read(files['keystone'])
    assert ks['fernet_receipts']['key_repository'].startswith(str(lay.root))
