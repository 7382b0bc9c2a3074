"""``build-dom0``'s output installed as an operator would, into scratch
roots (no real host): the tarball's install.sh and the RPM's payload and
scriptlets; every file where XCP-ng expects it, the device-model wrapper
registered in xenopsd.conf and the file restored byte for byte, the daemon
and the XAPI plugin run from the installed files on Python 3.6 (a
stand-in XenAPIPlugin, an in-memory hypervisor), and ``rpm -qlp`` lists
exactly what doc/source/install.rst says.  Run by tools/ci/tier-dom0py36.sh.
"""
import fnmatch
import glob
import json
import os
import re
import select
import shutil
import subprocess
import tarfile
import tempfile
import xmlrpc.client

import pytest

from nova_xen_stubdom.cmd import build_dom0
from nova_xen_stubdom.stubdom import cpio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STAND_IN = os.path.join(ROOT, 'nova_xen_stubdom', 'sim', 'dom0_host')
INSTALL_RST = os.path.join(ROOT, 'doc', 'source', 'install.rst')
HOST_UUID = '0b7ef0a6-6d0c-4a8e-9a55-0f3c1d8e2a11'
LIB = 'usr/lib/nova-xen-stubdom/python'
PLUGIN = 'etc/xapi.d/plugins/nova_xen_stubdom'
SETUP = 'usr/libexec/nova-xen-stubdom/dom0-setup'
STOCK = 'usr/lib64/xen/bin/qemu-wrapper'
WRAPPER = '/usr/libexec/nova-xen-stubdom/dm-wrapper'
EXPECTED = [
    'etc/nova-xen-stubdom/agent.conf',
    PLUGIN,
    LIB + '/nova_xen_stubdom/dom0/daemon.py',
    LIB + '/nova_xen_stubdom/dom0/xapi_plugin.py',
    LIB + '/nova_xen_stubdom/dom0/__pycache__/daemon.cpython-36.pyc',
    'usr/lib/systemd/system/nova-xen-stubdom-agent.service',
    'usr/libexec/nova-xen-stubdom/dm-wrapper',
    SETUP,
    'var/lib/xcp/guest/nova-xen-stubdom-kernel',
    'var/lib/xcp/guest/nova-xen-stubdom-rootfs.cpio.gz',
    'var/lib/xcp/guest/nova-xen-stubdom-manifest.json',
    'etc/systemd/system/multi-user.target.wants/'
    'nova-xen-stubdom-agent.service',
]
# a stand-in of XCP-ng 8.3's /etc/xenopsd.conf (our text; its layout is
# xcp-ng-rpms/xapi SOURCES/xenopsd-64-conf: the wrapper key is not set)
XENOPSD_CONF = ('inventory=/etc/xensource-inventory\n'
                'search-path=/usr/libexec/xen/bin:/usr/lib64/xen/bin\n'
                'qemu-system-i386=/bin/false\n')


@pytest.fixture(scope='module')
def python36():
    try:
        return build_dom0._find_python36(None)
    except SystemExit as exc:
        pytest.skip('NOT RUN: %s' % exc)


@pytest.fixture(scope='module')
def built(python36):
    out = tempfile.mkdtemp(prefix='nxs-dom0pkg-out-')
    stub = os.path.join(out, 'stubdom')
    os.makedirs(stub)
    for name in build_dom0.STUBDOM_INPUTS:
        with open(os.path.join(stub, name), 'wb') as f:
            f.write(b'stand-in ' + name.encode())
    result = build_dom0.build_all(os.path.join(out, 'pkg'), python36, stub)
    result['python36'] = python36
    yield result
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix='nxs-dom0pkg-')
    root = os.path.join(d, 'root')
    for rel, text in (('etc/xenopsd.conf', XENOPSD_CONF),
                      (STOCK, '#!/bin/sh\n')):
        os.makedirs(os.path.join(root, os.path.dirname(rel)))
        with open(os.path.join(root, rel), 'w') as f:
            f.write(text)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _files(root):
    """Every file and link under *root* (a dangling link is a file here)."""
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def _check_installed(root):
    for rel in EXPECTED:
        assert os.path.lexists(os.path.join(root, rel)), rel
    assert glob.glob(os.path.join(root, LIB, 'nova_xen_stubdom',
                                  '_emucore.cpython-36m*.so'))
    for rel in (PLUGIN, SETUP, 'usr/libexec/nova-xen-stubdom/dm-wrapper'):
        assert os.access(os.path.join(root, rel), os.X_OK), rel
    with open(os.path.join(root, 'etc/xenopsd.conf')) as f:
        text = f.read()
    assert text.startswith(XENOPSD_CONF)
    assert text.splitlines()[-1] == \
        'upstream-compat-qemu-dm-wrapper=%s' % WRAPPER
    with open(os.path.join(root, 'etc/nova-xen-stubdom/agent.conf')) as f:
        assert 'stock_dm_wrapper = /%s\n' % STOCK in f.read()


def _run_daemon_and_plugin(python36, root, scratch):
    """The installed payload on 3.6, with an in-memory hypervisor."""
    lib = os.path.join(root, LIB)
    sock = os.path.join(scratch, 'agent.sock')
    conf = os.path.join(scratch, 'agent.conf')
    inv = os.path.join(scratch, 'inventory')
    with open(conf, 'w') as f:
        f.write('[agent]\nbackend = tests.unit.dom0.fakes:FakeBackend\n'
                'socket_path = %s\nstate_dir = %s\n'
                'stock_dm_wrapper = /%s\n'
                % (sock, os.path.join(scratch, 'state'), STOCK))
    with open(inv, 'w') as f:
        f.write("INSTALLATION_UUID='%s'\n" % HOST_UUID)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([lib, ROOT]),
               PYTHONDONTWRITEBYTECODE='1')
    env.pop('PYTHONHOME', None)
    daemon = subprocess.Popen(
        [python36, '-m', 'nova_xen_stubdom.dom0.daemon', '--config', conf,
         '--inventory', inv], env=env, cwd=scratch,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    try:
        ready, _, _ = select.select([daemon.stdout], [], [], 60)
        assert ready and daemon.stdout.readline().startswith('ready ')
        code = ('import nova_xen_stubdom.dom0 as d, sys; '
                'assert d.__file__.startswith(%r), d.__file__' % lib)
        subprocess.run([python36, '-c', code], env=env, check=True,
                       cwd=scratch, timeout=60)
        call = xmlrpc.client.dumps(('OpaqueRef:s', {'stubdom_domid': '0'}),
                                   'stubdom_wiring')
        plugin = subprocess.run(
            [python36, os.path.join(root, PLUGIN), call],
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


def test_tarball_install_run_on_36_uninstall(built, scratch):
    python36 = built['python36']
    with tarfile.open(built['tarball']) as tar:
        tar.extractall(os.path.join(scratch, 'pkg'))
    (top,) = glob.glob(os.path.join(scratch, 'pkg', '*'))
    root = os.path.join(scratch, 'root')
    before = _files(root)
    env = dict(os.environ, DESTDIR=root, PYTHON3=python36)
    out = subprocess.run(['sh', os.path.join(top, 'install.sh')],
                         env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout
    assert 'systemctl restart xenopsd-xc' in out.stdout
    _check_installed(root)
    # a second install is refused and changes nothing
    again = subprocess.run(['sh', os.path.join(top, 'install.sh')], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=120)
    assert again.returncode == 1 and 'already installed' in again.stdout

    _run_daemon_and_plugin(python36, root, scratch)

    out = subprocess.run(['sh', os.path.join(top, 'install.sh'),
                          '--uninstall'], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout
    assert _files(root) == before
    with open(os.path.join(root, 'etc/xenopsd.conf')) as f:
        assert f.read() == XENOPSD_CONF


def test_tarball_install_failure_rolls_back(built, scratch):
    with tarfile.open(built['tarball']) as tar:
        tar.extractall(os.path.join(scratch, 'pkg'))
    (top,) = glob.glob(os.path.join(scratch, 'pkg', '*'))
    root = os.path.join(scratch, 'root')
    os.unlink(os.path.join(root, STOCK))      # no stock wrapper: refused
    before = _files(root)
    out = subprocess.run(['sh', os.path.join(top, 'install.sh')],
                         env=dict(os.environ, DESTDIR=root,
                                  PYTHON3=built['python36']),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, timeout=120)
    assert out.returncode == 1
    assert 'qemu-wrapper' in out.stdout and 'removed again' in out.stdout
    assert _files(root) == before


def _rpm(built):
    if not built['rpm']:
        pytest.skip('NOT RUN: the RPM was not built: %s'
                    % built['rpm_not_built'])
    return built['rpm']


def _query(rpm, *args):
    return subprocess.run(['rpm', '-qp'] + list(args) + [rpm],
                          stdout=subprocess.PIPE, check=True,
                          universal_newlines=True, timeout=60).stdout


def _documented():
    """The list of installed files in doc/source/install.rst."""
    with open(INSTALL_RST) as f:
        text = f.read()
    block = text.split('.. rpm-qlp-begin', 1)[1].split('.. rpm-qlp-end')[0]
    return [line.split()[0] for line in block.splitlines()
            if line.strip().startswith('/')]


def test_rpm_lists_what_the_docs_say(built):
    listed = _query(_rpm(built), '-l').split()
    documented = _documented()
    assert documented, 'no file list in install.rst'
    unmatched = [p for p in listed
                 if not any(fnmatch.fnmatchcase(p, d) for d in documented)]
    assert not unmatched, 'rpm -qlp lists what install.rst does not: %s' \
        % unmatched
    unused = [d for d in documented
              if not any(fnmatch.fnmatchcase(p, d) for p in listed)]
    assert not unused, 'install.rst lists what the RPM lacks: %s' % unused


def test_rpm_payload_is_the_tarball_tree(built):
    payload = subprocess.run(['rpm2cpio', _rpm(built)],
                             stdout=subprocess.PIPE, check=True,
                             timeout=60).stdout
    in_rpm = {}
    for name, mode, _ in cpio.read_newc(payload):
        if mode & 0o170000 == 0o100000:
            in_rpm[name.lstrip('./')] = mode & 0o777
    in_tar = {}
    with tarfile.open(built['tarball']) as tar:
        for m in tar.getmembers():
            parts = m.name.split('/', 2)
            if m.isfile() and parts[1:2] == ['files']:
                in_tar[parts[2]] = m.mode & 0o777
    assert in_rpm == in_tar


def test_rpm_requires_dom0_python_and_old_glibc(built):
    requires = _query(_rpm(built), '-R').splitlines()
    assert 'python(abi) = 3.6' in requires
    assert 'xenopsd-xc' in requires
    assert not [r for r in requires if 'libpython' in r], requires
    glibc = [tuple(int(x) for x in m.group(1).split('.'))
             for m in (re.search(r'GLIBC_([\d.]+)', r) for r in requires)
             if m]
    assert glibc and max(glibc) <= (2, 17), requires


def test_rpm_scriptlets_run_the_shared_setup(built, scratch):
    """%post and %preun as rpm would run them on the host, against a
    scratch root holding the RPM's payload."""
    rpm = _rpm(built)
    root = os.path.join(scratch, 'root')
    payload = subprocess.run(['rpm2cpio', rpm], stdout=subprocess.PIPE,
                             check=True, timeout=60).stdout
    for name, mode, data in cpio.read_newc(payload):
        path = os.path.join(root, name.lstrip('./'))
        if mode & 0o170000 == 0o040000:
            os.makedirs(path, exist_ok=True)
        elif mode & 0o170000 == 0o100000:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(data)
            os.chmod(path, mode & 0o777)
    agent = os.path.join(root, 'etc/nova-xen-stubdom/agent.conf')
    with open(agent, 'rb') as f:
        packaged = f.read()

    def scriptlet(tag, arg):
        body = _query(rpm, '--qf', '%%{%s}' % tag)
        assert '/' + SETUP in body
        body = body.replace('/' + SETUP, '%s %s' % (
            built['python36'], os.path.join(root, SETUP)))
        out = subprocess.run(['sh', '-ec', body, tag, arg],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=120)
        assert out.returncode == 0, out.stdout
        return out.stdout

    assert 'systemctl restart xenopsd-xc' in scriptlet('POSTIN', '1')
    _check_installed(root)
    scriptlet('POSTIN', '2')                     # an upgrade: no change
    _check_installed(root)
    scriptlet('PREUN', '1')                      # the old one of an upgrade
    _check_installed(root)
    scriptlet('PREUN', '0')                      # erase
    with open(os.path.join(root, 'etc/xenopsd.conf')) as f:
        assert f.read() == XENOPSD_CONF
    with open(agent, 'rb') as f:
        assert f.read() == packaged              # rpm -e then removes it
