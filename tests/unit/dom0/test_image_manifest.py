"""The agent's stubdom_image: what the host's stub-domain image lacks."""
import json
import types

from nova_xen_stubdom.dom0 import config as dom0_config
from nova_xen_stubdom.dom0 import constants
from nova_xen_stubdom.dom0 import image_manifest
from nova_xen_stubdom.dom0 import registry
from nova_xen_stubdom.stubdom import image


def _call(path):
    agent = types.SimpleNamespace(
        config=dom0_config.AgentConfig(stubdom_manifest=str(path)))
    return json.loads(registry.call(agent, registry.PLUGIN,
                                    'stubdom_image', {}))


def test_testbed_image_lacks_passthrough(tmp_path):
    path = tmp_path / 'm.json'
    # what builder.py records for --device-model testbed (the builder
    # side, stubdom/offline.py, is not dom0 code: its Python 3.7+ is
    # checked against this in tests/unit/driver/test_pciops.py)
    path.write_text(json.dumps({'device_model': {
        'source': 'testbed', 'lacks': ['xen-pci-passthrough']}}))
    out = _call(path)
    assert out == {'manifest': str(path), 'present': True,
                   'lacks': ['xen-pci-passthrough'],
                   'device_model': 'testbed', 'error': ''}


def test_debian_image_lacks_nothing(tmp_path):
    path = tmp_path / 'm.json'
    path.write_text(json.dumps({'device_model': {'source': 'debian'}}))
    assert _call(path)['lacks'] == [] and _call(path)['present']


def test_absent_manifest_is_not_an_error(tmp_path):
    out = _call(tmp_path / 'none.json')
    assert out['present'] is False and out['error'] == ''


def test_malformed_manifest_is_named(tmp_path):
    for text in ('{oops', '[1]', '{"device_model": "testbed"}',
                 '{"device_model": {"lacks": "xen-pci-passthrough"}}'):
        path = tmp_path / 'm.json'
        path.write_text(text)
        out = image_manifest.read_manifest(str(path))
        assert out['error'] and str(path) in out['error']


def test_default_path_is_beside_the_image():
    assert dom0_config.AgentConfig().stubdom_manifest == \
        constants.STUBDOM_MANIFEST
    assert constants.STUBDOM_MANIFEST.startswith(image.GUEST_BOOT_DIR)
