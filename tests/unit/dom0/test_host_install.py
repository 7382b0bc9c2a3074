"""The installer's host steps (dom0/host_install.py, dom0/xenopsd_conf.py)
in a scratch root: the device-model wrapper registered in xenopsd.conf,
the stock wrapper recorded in agent.conf, and both files restored exactly.

Runs under Python 3.6 too (tools/ci/tier-dom0py36.sh).  The xenopsd.conf
stand-in follows XCP-ng 8.3's layout (xcp-ng-rpms/xapi
``SOURCES/xenopsd-64-conf``: no line sets the wrapper, a ``search-path``
with ``/usr/lib64/xen/bin``, where ``xapi.spec`` installs
``qemu-wrapper``); its text is our own.
"""
import configparser
import json
import os
import shutil
import tempfile

import pytest

from nova_xen_stubdom.dom0 import config
from nova_xen_stubdom.dom0 import host_install
from nova_xen_stubdom.dom0 import xenopsd_conf

STOCK = '/usr/lib64/xen/bin/qemu-wrapper'
XENOPSD_CONF = (
    '# xenopsd settings of a test host\n'
    'inventory=/etc/xensource-inventory\n'
    '\n'
    'search-path=/usr/libexec/xen/bin:/usr/lib64/xen/bin:'
    '/usr/libexec/xenopsd\n'
    'worker-pool-size=16\n'
    'qemu-system-i386=/bin/false\n'
    '# upstream-compat-qemu-dm-wrapper=/commented/out\n'
    'sockets-group=wheel\n')
AGENT_CONF = '# ours\n[agent]\n#backend = xen\n'


@pytest.fixture
def root():
    d = tempfile.mkdtemp(prefix='nxs-hostinst-')
    for rel, text in (('etc/xenopsd.conf', XENOPSD_CONF),
                      (STOCK.lstrip('/'), '#!/bin/sh\n'),
                      ('etc/nova-xen-stubdom/agent.conf', AGENT_CONF)):
        os.makedirs(os.path.join(d, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(d, rel), 'w') as f:
            f.write(text)
    os.chmod(os.path.join(d, 'etc/xenopsd.conf'), 0o640)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _read(root, rel):
    with open(os.path.join(root, rel), 'rb') as f:
        return f.read()


def _effective(root):
    text = _read(root, 'etc/xenopsd.conf').decode()
    found = xenopsd_conf.settings(text, xenopsd_conf.KEY)
    return found[-1][1] if found else None


def test_parse_line_follows_xcp_service_config_file():
    # ocaml/xapi-idl/lib/xcp_service.ml: Config_file.parse_line
    p = xenopsd_conf.parse_line
    assert p('a=b') == ('a', 'b')
    assert p('  a \t=  "b c"  # note') == ('a', 'b c')
    assert p("a='b'") == ('a', 'b')
    assert p('# a=b') is None
    assert p('just words') is None
    assert p('a=') == ('a', '')


def test_search_path_later_lines_first():
    text = 'search-path=/a:/b\nsearch-path=/c\n'
    assert xenopsd_conf.search_path(text) == ['/c', '/a', '/b']


def test_install_registers_and_records_stock(root):
    before = _read(root, 'etc/xenopsd.conf')
    say = host_install.install(root)
    assert _effective(root) == host_install.WRAPPER
    # only lines added: the file is otherwise untouched, mode kept
    after = _read(root, 'etc/xenopsd.conf')
    assert after.startswith(before)
    assert os.stat(os.path.join(root, 'etc/xenopsd.conf')).st_mode & 0o777 \
        == 0o640
    cfg = config.load(os.path.join(root, 'etc/nova-xen-stubdom/agent.conf'))
    assert cfg.stock_dm_wrapper == STOCK
    assert any(xenopsd_conf.RESTART in line for line in say)
    assert 'systemctl restart xenopsd-xc' in xenopsd_conf.RESTART
    link = os.path.join(root, host_install.WANTS_LINK.lstrip('/'))
    assert os.readlink(link) == host_install.UNIT_FILE
    # a second run (an RPM upgrade's %post) changes nothing
    host_install.install(root)
    assert _read(root, 'etc/xenopsd.conf') == after


def test_uninstall_restores_byte_identical(root):
    conf, agent = (_read(root, 'etc/xenopsd.conf'),
                   _read(root, 'etc/nova-xen-stubdom/agent.conf'))
    host_install.install(root)
    host_install.uninstall(root)
    assert _read(root, 'etc/xenopsd.conf') == conf
    assert _read(root, 'etc/nova-xen-stubdom/agent.conf') == agent
    assert not os.path.exists(os.path.join(
        root, host_install.RECORD.lstrip('/')))
    assert not os.path.lexists(os.path.join(
        root, host_install.WANTS_LINK.lstrip('/')))


def test_existing_setting_replaced_in_place_and_restored(root):
    text = XENOPSD_CONF + 'upstream-compat-qemu-dm-wrapper = "qemu-wrapper"\n'
    with open(os.path.join(root, 'etc/xenopsd.conf'), 'w') as f:
        f.write(text)
    host_install.install(root)
    assert _effective(root) == host_install.WRAPPER
    cfg = config.load(os.path.join(root, 'etc/nova-xen-stubdom/agent.conf'))
    assert cfg.stock_dm_wrapper == STOCK        # the relative name resolved
    host_install.uninstall(root)
    assert _read(root, 'etc/xenopsd.conf').decode() == text


def test_file_changed_since_only_our_line_undone(root):
    host_install.install(root)
    path = os.path.join(root, 'etc/xenopsd.conf')
    with open(path, 'a') as f:
        f.write('worker-pool-size=32\n')
    say = host_install.uninstall(root)
    assert _read(root, 'etc/xenopsd.conf').decode() == \
        XENOPSD_CONF + 'worker-pool-size=32\n'
    assert any('only our line' in line for line in say)


def test_absolute_stock_value_kept_as_is(root):
    text = XENOPSD_CONF + \
        'upstream-compat-qemu-dm-wrapper=/opt/site/qemu-wrapper\n'
    with open(os.path.join(root, 'etc/xenopsd.conf'), 'w') as f:
        f.write(text)
    host_install.install(root)
    parser = configparser.ConfigParser()
    parser.read(os.path.join(root, 'etc/nova-xen-stubdom/agent.conf'))
    assert parser.get('agent', 'stock_dm_wrapper') == \
        '/opt/site/qemu-wrapper'


def test_stock_wrapper_not_found_refused_nothing_changed(root):
    os.unlink(os.path.join(root, STOCK.lstrip('/')))
    conf = _read(root, 'etc/xenopsd.conf')
    with pytest.raises(xenopsd_conf.ConfError, match='qemu-wrapper'):
        host_install.install(root)
    assert _read(root, 'etc/xenopsd.conf') == conf
    assert not os.path.exists(os.path.join(
        root, host_install.RECORD.lstrip('/')))


def test_override_in_conf_d_refused_nothing_changed(root):
    frag = os.path.join(root, 'etc/xenopsd-xc.conf.d')
    os.makedirs(frag)
    with open(os.path.join(frag, '50-site.conf'), 'w') as f:
        f.write('upstream-compat-qemu-dm-wrapper=/opt/other\n')
    conf = _read(root, 'etc/xenopsd.conf')
    with pytest.raises(xenopsd_conf.ConfError, match='50-site.conf'):
        host_install.install(root)
    assert _read(root, 'etc/xenopsd.conf') == conf


def test_failure_mid_way_rolls_back(root, monkeypatch):
    conf = _read(root, 'etc/xenopsd.conf')
    agent = _read(root, 'etc/nova-xen-stubdom/agent.conf')
    real = host_install._write

    def failing(path, text, like=None):
        if path.endswith('agent.conf') and 'stock_dm_wrapper' in text:
            raise OSError('disk full')
        real(path, text, like)
    monkeypatch.setattr(host_install, '_write', failing)
    with pytest.raises(OSError):
        host_install.install(root)
    assert _read(root, 'etc/xenopsd.conf') == conf
    assert _read(root, 'etc/nova-xen-stubdom/agent.conf') == agent
    assert not os.path.exists(os.path.join(
        root, host_install.RECORD.lstrip('/')))


def test_no_xenopsd_conf_registers_nothing(root):
    os.unlink(os.path.join(root, 'etc/xenopsd.conf'))
    say = host_install.install(root)
    assert any('NOT registered' in line for line in say)
    assert host_install.uninstall(root)


def test_agent_conf_without_section_or_file(root):
    assert host_install.set_agent_key('', '/x') == \
        '[agent]\nstock_dm_wrapper = /x\n'
    text = '[agent]\nstock_dm_wrapper = /old\nbackend = xen\n'
    assert host_install.set_agent_key(text, '/x') == \
        '[agent]\nstock_dm_wrapper = /x\nbackend = xen\n'
    os.unlink(os.path.join(root, 'etc/nova-xen-stubdom/agent.conf'))
    host_install.install(root)
    host_install.uninstall(root)
    assert not os.path.exists(os.path.join(
        root, 'etc/nova-xen-stubdom/agent.conf'))


def test_record_is_json_with_originals(root):
    host_install.install(root)
    with open(os.path.join(root, host_install.RECORD.lstrip('/'))) as f:
        record = json.load(f)
    assert record['xenopsd_conf']['original'] == XENOPSD_CONF
    assert record['xenopsd_conf']['edit']['stock'] == STOCK


def test_main_reports_refusal(root, capsys):
    os.unlink(os.path.join(root, STOCK.lstrip('/')))
    assert host_install.main(['install', '--root', root]) == 1
    assert 'nothing changed' in capsys.readouterr().err
    assert host_install.main(['status', '--root', root]) == 0
