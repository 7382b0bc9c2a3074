"""The degraded (no-keystone) cloud used when keystone/tempest cannot be
installed: its nova-api pipeline and the REST checks' refusals."""
import io
import json

import pytest

from nova_xen_stubdom.cloud import cli
from nova_xen_stubdom.cloud import configs
from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs
from nova_xen_stubdom.cloud import rest_checks

# the two pipelines of Nova 34's api-paste.ini that carry authtoken
PASTE = """[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log \
sizelimit osprofiler authtoken keystonecontext osapi_compute_app_v21

[composite:openstack_compute_api_v21_legacy_v2_compatible]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log \
sizelimit osprofiler authtoken keystonecontext legacy_v2_compatible \
osapi_compute_app_v21

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
"""


@pytest.fixture
def lay(tmp_path):
    venv = tmp_path / 'venv'
    (venv / 'etc' / 'nova').mkdir(parents=True)
    (venv / 'etc' / 'nova' / 'api-paste.ini').write_text(PASTE)
    lay = L.Layout.create(str(tmp_path / 'cloud'), str(venv),
                          str(tmp_path / 'ks'))
    lay.mkdirs()
    return lay


def _pipelines(text):
    return [ln for ln in text.splitlines() if ln.startswith('keystone =')]


def test_no_keystone_pipeline_drops_authtoken_only(lay):
    configs.write_all(lay, 'xen_stubdom', 'http://127.0.0.1:9363',
                      keystone=False)
    text = (lay.etc / 'nova' / 'api-paste.ini').read_text()
    pipes = _pipelines(text)
    assert len(pipes) == 2
    for pipe in pipes:
        assert ' authtoken ' not in pipe
        # the context still comes from the identity headers
        assert ' keystonecontext ' in pipe
    # the filter's definition is untouched, only no pipeline uses it
    assert '[filter:authtoken]' in text


def test_stock_pipeline_keeps_authtoken(lay):
    configs.write_all(lay, 'xen_stubdom', 'http://127.0.0.1:9363')
    pipes = _pipelines((lay.etc / 'nova' / 'api-paste.ini').read_text())
    assert pipes and all(' authtoken ' in p for p in pipes)


def test_paste_without_any_authtoken_pipeline_is_an_error():
    with pytest.raises(procs.CloudError):
        configs.paste_without_authtoken('[app:x]\nuse = egg:x\n')


def test_cli_accepts_no_keystone_and_rest_checks():
    args = cli._parser().parse_args(['up', '--no-keystone'])
    assert args.no_keystone
    assert not cli._parser().parse_args(['up']).no_keystone
    assert cli._parser().parse_args(['rest-checks', '-k', 'live']).only == \
        'live'


def test_rest_checks_refuse_a_cloud_that_is_not_up(lay):
    out = io.StringIO()
    assert rest_checks.main(lay, '', out) == 1
    assert 'not up' in out.getvalue()


def test_rest_checks_refuse_a_cloud_with_keystone(lay):
    lay.state_file.parent.mkdir(parents=True, exist_ok=True)
    lay.state_file.write_text(json.dumps({
        'keystone': 'http://127.0.0.1:5000/v3', 'xapi_url': 'http://x'}))
    out = io.StringIO()
    assert rest_checks.main(lay, '', out) == 1
    assert 'use tempest' in out.getvalue()


def test_rest_checks_cover_the_plugin_scenarios():
    names = rest_checks.Checks.__dict__
    for scenario in ('hvm_guest_served_by_linked_stubdom',
                     'default_stubdom_size', 'reboot_stop_start_pause',
                     'delete_leaves_nothing_on_the_host',
                     'live_migration_moves_guest_and_stubdom',
                     'valid_extra_specs_accepted',
                     'bad_extra_specs_refused',
                     'cold_migration_and_confirm'):
        assert 'check_' + scenario in names


class _FakeChecks:
    """Stands in for rest_checks.Checks (no cloud, no XAPI)."""

    def __init__(self, facts, default_stub_mb):
        self.cleaned = 0

    def close(self):
        pass

    names = rest_checks.Checks.names

    def cleanup(self):
        self.cleaned += 1
        return ['server s1: still there'] if self.cleaned == 3 else []

    def check_passes(self):
        pass

    def check_refused(self):
        rest_checks.expect(False, 'bad extra spec accepted', {'k': 'v'})

    def check_crashes(self):
        raise KeyError('OS-EXT-SRV-ATTR:host')


def test_rest_checks_count_failures_and_cleanup_problems(monkeypatch):
    monkeypatch.setattr(rest_checks, 'Checks', _FakeChecks)
    out = io.StringIO()
    passed, failed = rest_checks.run({}, 128, '', out)
    text = out.getvalue()
    # crashes (alphabetical: first), passes, refused (+ its cleanup)
    assert (passed, failed) == (1, 3)
    assert 'FAIL crashes' in text and 'KeyError' in text
    assert "FAIL refused" in text and 'bad extra spec accepted' in text
    assert 'FAIL cleanup after refused: server s1' in text
    assert 'ok   passes' in text


def test_rest_checks_only_runs_the_named(monkeypatch):
    monkeypatch.setattr(rest_checks, 'Checks', _FakeChecks)
    out = io.StringIO()
    assert rest_checks.run({}, 128, 'pass', out) == (1, 0)
