"""Real Glance in the test cloud, without starting it: its configuration,
the image it is given, the uwsgi command line, and the glance stand-in
that replaces it when Glance cannot be installed."""
import configparser
import hashlib
import io
import json
import threading
import urllib.request

import pytest
from oslo_utils.imageutils import format_inspector

from nova_xen_stubdom.cloud import cli
from nova_xen_stubdom.cloud import glance
from nova_xen_stubdom.cloud import hvm_image
from nova_xen_stubdom.cloud import keystone
from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs
from nova_xen_stubdom.cloud import services
from nova_xen_stubdom.cloud import standins

PASTE = '[composite:glance-api-keystone]\nuse = egg:Paste#urlmap\n'


@pytest.fixture
def lay(tmp_path):
    gv = tmp_path / 'venv-glance'
    (gv / 'etc' / 'glance').mkdir(parents=True)
    (gv / 'etc' / 'glance' / 'glance-api-paste.ini').write_text(PASTE)
    lay = L.Layout.create(str(tmp_path / 'cloud'), str(tmp_path / 'venv'),
                          str(tmp_path / 'ks'), str(gv))
    lay.mkdirs()
    return lay


def _read(path):
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(path)
    return cp


def test_config_file_store_db_and_keystone(lay):
    path = glance.write_config(lay)['glance']
    cp = _read(path)
    assert cp['DEFAULT']['enabled_backends'] == 'file:file'
    assert cp['glance_store']['default_backend'] == 'file'
    assert cp['database']['connection'] == lay.db_url('glance')
    assert cp['paste_deploy']['flavor'] == 'keystone'
    assert cp['keystone_authtoken']['username'] == 'glance'
    assert cp['keystone_authtoken']['auth_url'] == lay.url('keystone')
    # the stock paste file, copied next to glance-api.conf
    assert (lay.etc / 'glance' / 'glance-api-paste.ini').read_text() == PASTE
    assert cp['paste_deploy']['config_file'] == str(
        lay.etc / 'glance' / 'glance-api-paste.ini')


def test_every_glance_path_lies_under_the_cloud_dir(lay):
    """The file store, staging and tasks stores and locks: nothing in
    /tmp/staging (Glance's single-store default) or /var/lib/glance."""
    cp = _read(glance.write_config(lay)['glance'])
    paths = [v for s in cp.values() for v in s.values() if v.startswith('/')]
    assert len(paths) >= 5
    for p in paths:
        assert p.startswith(str(lay.root)), p
    for store in ('file', 'os_glance_staging_store', 'os_glance_tasks_store'):
        d = cp[store]['filesystem_store_datadir']
        assert d.startswith(str(lay.data / 'glance'))
        assert (lay.root / d).is_dir()


def test_each_up_starts_with_empty_stores(lay):
    glance.write_config(lay)
    old = lay.data / 'glance' / 'images' / 'an-earlier-run'
    old.write_bytes(b'x')
    glance.write_config(lay)
    assert not old.exists()
    assert (lay.data / 'glance' / 'images').is_dir()


def test_real_glance_needs_keystone(lay):
    """Glance's no-auth pipeline is refused add_image by its policies:
    the no-keystone cloud must use the stand-in, and says so."""
    from nova_xen_stubdom.cloud import cloud
    with pytest.raises(procs.CloudError, match='--glance-standin'):
        cloud.up(lay, 'xen_stubdom', cloud.Progress(io.StringIO()),
                 with_keystone=False, real_glance=True)


def test_missing_glance_venv_is_a_clear_error(tmp_path):
    lay = L.Layout.create(str(tmp_path / 'c'), glance_venv=str(
        tmp_path / 'nope'))
    with pytest.raises(procs.CloudError, match='--glance-standin'):
        glance.write_config(lay)


def test_glance_runs_under_uwsgi_from_its_own_venv(lay, monkeypatch):
    argv = []
    monkeypatch.setattr(procs, 'start',
                        lambda lay, name, a, **kw: argv.extend(a))
    services.start_glance(lay)
    assert argv[argv.index('--module') + 1] == 'glance.wsgi.api:application'
    assert argv[argv.index('--virtualenv') + 1] == str(lay.glance_venv)
    assert argv[argv.index('--http-socket') + 1] == '127.0.0.1:%d' % \
        L.PORTS['glance']
    assert 'OS_GLANCE_CONFIG_DIR=%s' % (lay.etc / 'glance') in argv
    # Glance waits for each chunk of a streamed upload this long
    assert argv[argv.index('--socket-timeout') + 1] == '30'
    # and takes glanceclient's 1 MiB chunks whole
    assert int(argv[argv.index('--chunked-input-limit') + 1]) > 1 << 20


def test_glance_is_in_the_catalog_with_a_service_user():
    assert keystone.SERVICES['image'] == ('glance', 'glance', '')
    assert 'glance' in keystone.SERVICE_USERS
    assert 'glance' in L.DATABASES
    assert 'glance-api' in services.ALL_PROCESSES


def test_cli_glance_options():
    args = cli._parser().parse_args(['--glance-venv', '/v', 'up',
                                     '--glance-standin'])
    assert args.glance_venv == '/v' and args.glance_standin
    assert not cli._parser().parse_args(['up']).glance_standin


def _inspect(data):
    wrapper = format_inspector.InspectWrapper(io.BytesIO(data))
    while wrapper.read(65536):
        pass
    wrapper.close()
    return wrapper.format


def test_test_image_passes_glances_upload_inspection():
    """What Glance's upload path (glance/location.py) does with every
    bare image: detect the format and run its safety checks."""
    data = hvm_image.disk_bytes()
    assert len(data) == hvm_image.SIZE
    inspector = _inspect(data)
    # an MBR disk: Glance accepts it as disk_format raw
    assert str(inspector) in ('raw', 'gpt')
    inspector.safety_check()


def test_a_bare_boot_signature_would_be_refused():
    """Why the image has a partition: the old stand-in image (signature
    only) fails Glance's 'mbr' safety check."""
    disk = bytearray(hvm_image.SIZE)
    disk[510:512] = b'\x55\xaa'
    with pytest.raises(format_inspector.SafetyCheckFailed):
        _inspect(bytes(disk)).safety_check()


def test_standin_serves_the_same_image(monkeypatch):
    assert standins.image_bytes() == hvm_image.disk_bytes()
    rec = standins.image_record()
    for k, v in hvm_image.PROPERTIES.items():
        assert rec[k] == v
    assert rec['size'] == hvm_image.SIZE


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_standins_serve_glance_only_when_asked(tmp_path, monkeypatch):
    """Without --glance-port only neutron listens."""
    servers = []
    real = standins.ThreadingHTTPServer

    class Recording(real):
        def __init__(self, addr, handler):
            super().__init__(addr, handler)
            servers.append(self)

    monkeypatch.setattr(standins, 'ThreadingHTTPServer', Recording)
    neutron_port = _free_port()
    t = threading.Thread(target=standins.serve, daemon=True,
                         args=(0, neutron_port, ''))
    t.start()
    try:
        from tests import waiting
        waiting.wait_until(lambda: servers and procs.port_open(neutron_port),
                           'the neutron stand-in listening')
        with urllib.request.urlopen('http://127.0.0.1:%d/v2.0/ports'
                                    % neutron_port, timeout=5) as r:
            assert json.loads(r.read()) == {'ports': []}
        assert len(servers) == 1
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        t.join(10)


def test_upload_checks_what_glance_reports(lay, monkeypatch):
    """upload_image creates, uploads, then refuses an image whose record
    does not match what was sent."""
    data = hvm_image.disk_bytes()
    calls = []

    class R:
        def __init__(self, status, body=None):
            self.status_code = status
            self._body = body or {}
            self.text = json.dumps(self._body)

        def json(self):
            return self._body

        def raise_for_status(self):
            pass

    record = dict(hvm_image.PROPERTIES, id='abc', status='active',
                  size=len(data), os_hash_algo='sha512',
                  os_hash_value=hashlib.sha512(data).hexdigest())

    def post(url, json=None, headers=None, timeout=None):
        calls.append(('POST', url, json, headers))
        return R(201, {'id': 'abc'})

    def put(url, data=None, headers=None, timeout=None):
        calls.append(('PUT', url, len(data), headers))
        return R(204)

    def get(url, headers=None, timeout=None):
        return R(200, record)

    monkeypatch.setattr(glance.requests, 'post', post)
    monkeypatch.setattr(glance.requests, 'put', put)
    monkeypatch.setattr(glance.requests, 'get', get)
    assert glance.upload_image(lay, 'tok') == 'abc'
    body = calls[0][2]
    assert body['disk_format'] == 'raw' and body['visibility'] == 'public'
    assert body['vm_mode'] == 'hvm' and body['hw_firmware_type'] == 'bios'
    assert calls[0][3] == {'X-Auth-Token': 'tok'}
    assert calls[1][1].endswith('/v2/images/abc/file')
    assert calls[1][2] == len(data)
    # a record that lost a property (or data) is refused
    record['vm_mode'] = None
    with pytest.raises(procs.CloudError, match='not what was uploaded'):
        glance.upload_image(lay, 'tok')
