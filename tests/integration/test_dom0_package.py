"""build-dom0's package installed into a scratch root, then run as dom0
would run it: the daemon and the XAPI plugin on Python 3.6 from the
installed files (a stand-in XenAPIPlugin, an in-memory hypervisor)."""
import glob
import json
import os
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xmlrpc.client

import pytest

from nova_xen_stubdom.cmd import build_dom0

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STAND_IN = os.path.join(ROOT, 'nova_xen_stubdom', 'sim', 'dom0_host')
HOST_UUID = '0b7ef0a6-6d0c-4a8e-9a55-0f3c1d8e2a11'
EXPECTED = [
    'etc/nova-xen-stubdom/agent.conf',
    'etc/xapi.d/plugins/nova_xen_stubdom',
    'usr/lib/nova-xen-stubdom/python/nova_xen_stubdom/dom0/daemon.py',
    'usr/lib/nova-xen-stubdom/python/nova_xen_stubdom/dom0/xapi_plugin.py',
    'usr/lib/systemd/system/nova-xen-stubdom-agent.service',
    'usr/libexec/nova-xen-stubdom/dm-wrapper',
]


@pytest.fixture(scope='module')
def python36():
    try:
        return build_dom0._find_python36(None)
    except SystemExit as exc:
        pytest.skip('NOT RUN: %s' % exc)


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix='nxs-dom0pkg-')
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_install_run_on_36_uninstall(python36, scratch):
    tarball = build_dom0.build(os.path.join(scratch, 'out'), python36)
    with tarfile.open(tarball) as tar:
        tar.extractall(os.path.join(scratch, 'pkg'))
    (top,) = glob.glob(os.path.join(scratch, 'pkg', '*'))
    root = os.path.join(scratch, 'root')
    subprocess.run(['sh', os.path.join(top, 'install.sh')], check=True,
                   env=dict(os.environ, DESTDIR=root), timeout=120)
    for rel in EXPECTED:
        assert os.path.isfile(os.path.join(root, rel)), rel
    lib = os.path.join(root, 'usr/lib/nova-xen-stubdom/python')
    assert glob.glob(os.path.join(lib, 'nova_xen_stubdom',
                                  '_emucore.cpython-36m*.so'))
    assert os.access(os.path.join(root, EXPECTED[1]), os.X_OK)

    # the installed payload, on 3.6, with an in-memory hypervisor
    sock = os.path.join(scratch, 'agent.sock')
    conf = os.path.join(scratch, 'agent.conf')
    inv = os.path.join(scratch, 'inventory')
    with open(conf, 'w') as f:
        f.write('[agent]\nbackend = tests.unit.dom0.fakes:FakeBackend\n'
                'socket_path = %s\nstate_dir = %s\n'
                % (sock, os.path.join(scratch, 'state')))
    with open(inv, 'w') as f:
        f.write("INSTALLATION_UUID='%s'\n" % HOST_UUID)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([lib, ROOT]))
    env.pop('PYTHONHOME', None)
    daemon = subprocess.Popen(
        [python36, '-m', 'nova_xen_stubdom.dom0.daemon', '--config', conf,
         '--inventory', inv], env=env, cwd=scratch,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    try:
        ready, _, _ = select.select([daemon.stdout], [], [], 60)
        assert ready and daemon.stdout.readline().startswith('ready ')
        call = xmlrpc.client.dumps(('OpaqueRef:s', {'stubdom_domid': '0'}),
                                   'stubdom_wiring')
        code = ('import nova_xen_stubdom.dom0 as d, sys; '
                'assert d.__file__.startswith(%r), d.__file__' % lib)
        subprocess.run([python36, '-c', code], env=env, check=True,
                       cwd=scratch, timeout=60)
        plugin = subprocess.run(
            [python36, os.path.join(root, EXPECTED[1]), call],
            env=dict(env, PYTHONPATH=os.pathsep.join([STAND_IN, lib, ROOT]),
                     NOVA_XEN_STUBDOM_AGENT_CONF=conf),
            cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=120)
        (response,), _ = xmlrpc.client.loads(plugin.stdout)
        assert response['Status'] == 'Success', (response, plugin.stderr)
        assert json.loads(response['Value'])['stubdom_domid'] == 0
    finally:
        daemon.terminate()
        daemon.wait(60)
        daemon.stdout.close()
        daemon.stderr.close()

    subprocess.run(['sh', os.path.join(top, 'install.sh'), '--uninstall'],
                   check=True, env=dict(os.environ, DESTDIR=root),
                   timeout=120)
    left = [os.path.relpath(os.path.join(d, f), root)
            for d, _, fs in os.walk(root) for f in fs]
    assert left == [], left
    assert sys.version_info >= (3, 6)
