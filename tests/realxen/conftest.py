"""The realxen tier's one boot, shared by every scenario test.

``realxen_boot`` boots the Xen testbed once per session with our overlay in
dom0 (the emucore package and its C extension for dom0's Python: 3.6
as XCP-ng's dom0 where the machine has one, tests/realxen/dom0py.py,
else the testbed's 3.11; Xen's verify-stream-v2, the dom0 helpers,
scenario 1's stub kernel), the stub-domain overlay in the guest
initramfs, and every scenario script in ``SCENARIOS``; each test then
asserts on its scenario's markers and files.
With the testbed or its inputs missing the tests are skipped with the
reason, and tools/ci/tier-realxen.sh prints it as NOT RUN.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.realxen import dom0py
from tests.realxen import ourstub
from tests.realxen import testbed

HERE = os.path.dirname(os.path.abspath(__file__))
DOM0 = os.path.join(HERE, 'dom0')
# dom0 scenario scripts, run in this order in one boot.
SCENARIOS = ['s4-interchange.sh', 's1-stubdom.sh', 'd1-daemon.sh',
             's3-saverestore.sh', 's5-migrate.sh']
# Scenarios 1+2 and 3 with our image, wrapper and daemon, and scenario 6
# (tests/realxen/ourstub.py prepares what they need in dom0).
OURSTUB_SCENARIOS = ('s1-ourstub.sh', 's3-ourstub.sh', 's6-pcigrants.sh')
SCENARIOS += list(OURSTUB_SCENARIOS)
# Scenarios whose stub domain needs our guest-initramfs overlay.
STUB_SCENARIOS = ('s1-stubdom.sh',)
# Without Python 3.6, dom0 runs our payload on the testbed's python3.11:
# the in-place extension must be built for it.
DOM0_EXT = 'cpython-311-x86_64-linux-gnu.so'
LOSETUP = '/usr/sbin/losetup'


def _emucore_extension() -> str:
    found = glob.glob(os.path.join(
        testbed.ROOT, 'nova_xen_stubdom', '_emucore.' + DOM0_EXT))
    return found[0] if found else ''


def build_overlay(dest: str, tb: str, py36: str = '') -> str:
    """The tree copied over dom0's root (EXTRA_DOM0_ROOT); with py36 (a
    CPython 3.6) our payload runs on it in dom0, else on python3.11."""
    pkg = os.path.join(dest, 'opt', 'realxen', 'pkg', 'nova_xen_stubdom')
    os.makedirs(os.path.join(pkg, 'emucore'))
    src = os.path.join(testbed.ROOT, 'nova_xen_stubdom')
    shutil.copy(os.path.join(src, '__init__.py'), pkg)
    if not py36:
        shutil.copy(_emucore_extension(), pkg)
    for f in glob.glob(os.path.join(src, 'emucore', '*.py')):
        shutil.copy(f, os.path.join(pkg, 'emucore'))
    # The dom0 payload (daemon, plugin, backends, engine), the installed
    # XAPI plugin launcher and the stand-in of dom0's XenAPIPlugin module
    # (nova_xen_stubdom/sim/dom0_host: what the simulator runs it with).
    os.makedirs(os.path.join(pkg, 'dom0'))
    for f in glob.glob(os.path.join(src, 'dom0', '*.py')):
        shutil.copy(f, os.path.join(pkg, 'dom0'))
    xapi = os.path.join(dest, 'opt', 'realxen', 'xapi')
    os.makedirs(xapi)
    shutil.copy(os.path.join(src, 'sim', 'dom0_host', 'XenAPIPlugin.py'),
                xapi)
    plugins = os.path.join(dest, 'etc', 'xapi.d', 'plugins')
    os.makedirs(plugins)
    shutil.copy(os.path.join(testbed.ROOT, 'devstack', 'files',
                             'nova_xen_stubdom.xapi-plugin'),
                os.path.join(plugins, 'nova_xen_stubdom'))
    os.chmod(os.path.join(plugins, 'nova_xen_stubdom'), 0o755)
    # util-linux losetup (XCP-ng's dom0 has it; busybox's lacks --find
    # --show, which the xen backend's state disk uses)
    if os.path.exists(LOSETUP):
        os.makedirs(os.path.join(dest, 'usr', 'local', 'bin'))
        shutil.copy(LOSETUP, os.path.join(dest, 'usr', 'local', 'bin'))
    shutil.copytree(os.path.join(tb, 'verifier'),
                    os.path.join(dest, 'opt', 'realxen', 'verifier'),
                    ignore=shutil.ignore_patterns('__pycache__'))
    for f in glob.glob(os.path.join(DOM0, '*.py')):
        shutil.copy(f, os.path.join(dest, 'opt', 'realxen'))
    # Scenario 1's stub kernel (doc/source/realxen.rst: the guest kernel's
    # XSA-482 privcmd refuses libxendevicemodel 4.17's probe).
    shutil.copy(os.path.join(tb, 'bin', 'vmlinuz-6.1.20-xenprobe-dom0'),
                os.path.join(dest, 'opt', 'realxen', 'stub-vmlinuz'))
    os.makedirs(os.path.join(dest, 'etc', 'realxen'))
    shutil.copy(os.path.join(DOM0, 'lib.sh'),
                os.path.join(dest, 'etc', 'realxen', 'lib.sh'))
    # Knobs for by-hand runs, read by lib.sh in dom0: REALXEN_STUB_KERNEL=
    # /guest/vmlinuz boots scenario 1's stub on the Debian guest kernel
    # (reproduces the XSA-482 finding, doc/source/realxen.rst).
    with open(os.path.join(dest, 'etc', 'realxen', 'env'), 'w') as f:
        for var in ('REALXEN_STUB_KERNEL', 'REALXEN_HVMMEM'):
            value = os.environ.get(var, '')
            if value and value.replace('/', '').replace('.', '').isalnum():
                f.write('RX_%s=%s\n' % (var[len('REALXEN_'):], value))
        # the one interpreter the scenario scripts run our payload with
        f.write('RX_PYTHON=%s\n' % (
            dom0py.install(dest, py36, testbed.ROOT) if py36
            else dom0py.FALLBACK))
    if not py36:
        dom0py.compile_for_fallback(dest)
    _s35_inputs(os.path.join(dest, 'opt', 'realxen'))
    return dest


#: the host UUID (XAPI's INSTALLATION_UUID) of dom0 in scenarios 3 and 5:
#: its migration certificate names it (sim/pki.py, XAPI's pool certificates)
S35_HOST_UUID = '5a1e0000-0000-4000-8000-0000000035a5'


def _s35_inputs(dest: str) -> None:
    """Scenarios 3 and 5: their guest's disk (s35-guest.S assembled as the
    testbed's mbr.S is) and this test's CA + host certificate for the
    loopback migration's TLS (made with openssl, as sim/pki.py does for the
    simulator; the key is in the host's .pem, as XAPI's pool certificate)."""
    from nova_xen_stubdom.sim import pki
    build = tempfile.mkdtemp(prefix='realxen-s35.')
    try:
        obj, binary = os.path.join(build, 'g.o'), os.path.join(build, 'g.bin')
        subprocess.run(['as', '--32', '-o', obj,
                        os.path.join(DOM0, 's35-guest.S')], check=True)
        subprocess.run(['ld', '-m', 'elf_i386', '-Ttext', '0x7c00',
                        '--oformat', 'binary', '-o', binary, obj], check=True)
        with open(binary, 'rb') as f:
            sector = f.read()
        with open(os.path.join(dest, 's35-guest.img'), 'wb') as f:
            f.write(sector.ljust(1 << 20, b'\0'))
        os.makedirs(os.path.join(build, 'pki'))
        ca = pki.Pki(os.path.join(build, 'pki'))
        os.makedirs(os.path.join(dest, 'pki'))
        shutil.copy(ca.ca, os.path.join(dest, 'pki', 'ca.pem'))
        shutil.copy(ca.host(S35_HOST_UUID),
                    os.path.join(dest, 'pki', 'host.pem'))
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _ldd_closure(root: str, elf: str) -> None:
    """Copy the host libraries elf needs (and the loader) under root."""
    out = subprocess.run(['ldd', elf], capture_output=True, text=True,
                         check=True).stdout
    libs = ['/lib64/ld-linux-x86-64.so.2',
            '/lib/x86_64-linux-gnu/libgcc_s.so.1']
    for line in out.splitlines():
        parts = line.split()
        if '=>' in parts and parts[parts.index('=>') + 1].startswith('/'):
            libs.append(parts[parts.index('=>') + 1])
        elif 'not found' in line:
            raise RuntimeError('%s: %s' % (elf, line.strip()))
    for lib in libs:
        dest = root + lib
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(os.path.realpath(lib), dest)


def build_stub_overlay(dest: str, tb: str) -> str:
    """Guest-initramfs overlay (EXTRA_GUEST_ROOT) of scenario 1's stub:
    our stub init, the testbed's QEMU 8.0.3 and vchan-socket-proxy with
    their libraries, xen-gntalloc/xen-blkfront from the guest kernel .deb."""
    os.makedirs(dest)
    for tarball in ('qemu-xen-8.0.3-dm.tar.xz',
                    'xen-tools-4.17.7-dom0.tar.xz'):
        subprocess.run(['tar', '-xJf', os.path.join(tb, 'bin', tarball),
                        '-C', dest], check=True)
    for unwanted in ('usr/sbin', 'usr/lib/xen-4.17', 'usr/share/seabios'):
        shutil.rmtree(os.path.join(dest, unwanted), ignore_errors=True)
    for f in glob.glob(os.path.join(dest, 'usr/bin/xenstore*')):
        os.remove(f)  # the guest has the static client already
    for elf in ('usr/libexec/xen-qemu-system-i386',
                'usr/bin/vchan-socket-proxy'):
        _ldd_closure(dest, os.path.join(dest, elf))
    shutil.copy(os.path.join(tb, 'scripts', 'guest', 'init.sh'),
                os.path.join(dest, 'init.testbed'))
    shutil.copy(os.path.join(HERE, 'stub', 'init'), os.path.join(dest, 'init'))
    os.chmod(os.path.join(dest, 'init'), 0o755)
    os.chmod(os.path.join(dest, 'init.testbed'), 0o755)
    mods = os.path.join(dest, 'lib', 'modules', 'rx')
    os.makedirs(mods)
    deb = testbed.deb_env(tb)['GUEST_KERNEL_DEB']
    tar = subprocess.Popen(['dpkg-deb', '--fsys-tarfile', deb],
                           stdout=subprocess.PIPE)
    subprocess.run(['tar', '-x', '-C', mods, '--strip-components=7',
                    '--wildcards', '*/xen-blkfront.ko', '*/xen-gntalloc.ko'],
                   stdin=tar.stdout, check=True)
    tar.stdout.close()
    tar.wait()
    return dest


def _log(msg: str) -> None:
    sys.stderr.write(msg + '\n')
    sys.stderr.flush()


@pytest.fixture(scope='session')
def realxen_boot():
    tb = testbed.locate()
    reason = testbed.unavailable(tb)
    py36, why_not_py36 = dom0py.choose()
    if reason is None and not py36 and not _emucore_extension():
        reason = ('nova_xen_stubdom/_emucore.%s not built (dom0 runs Python '
                  '3.11: python3.11 setup.py build_ext --inplace)' % DOM0_EXT)
    if reason:
        pytest.skip('NOT RUN: ' + reason)
    keep = os.environ.get('REALXEN_LOGS') or os.path.join(
        testbed.ROOT, 'build', 'realxen')
    tmp = tempfile.mkdtemp(prefix='realxen-overlay.')
    # REALXEN_SCENARIOS="s4-interchange.sh ..." narrows a by-hand run.
    scenarios = [s for s in os.environ.get(
        'REALXEN_SCENARIOS', ' '.join(SCENARIOS)).split()
        if not ourstub.skipped(s)]
    try:
        overlay = build_overlay(os.path.join(tmp, 'root'), tb, py36)
        if set(scenarios) & set(OURSTUB_SCENARIOS):
            why = ourstub.unavailable()
            if why:
                pytest.skip('NOT RUN: ' + why)
            ourstub.overlay(overlay, tb)
        extra = {}
        if set(scenarios) & set(STUB_SCENARIOS):
            extra['EXTRA_GUEST_ROOT'] = build_stub_overlay(
                os.path.join(tmp, 'stub'), tb)
        t0 = time.monotonic()
        result = testbed.Testbed(tb, keep, log=_log).run(
            [os.path.join(DOM0, s) for s in scenarios], overlay,
            timeout_s=int(os.environ.get('REALXEN_TIMEOUT', '1800')),
            stall_s=int(os.environ.get('REALXEN_STALL_S', '120')),
            extra_env=extra,
        )
        result.total_s = time.monotonic() - t0
        # dom0's interpreter of our payload (its path there), '' for 3.11
        result.dom0_py36 = os.path.join(dom0py.prefix(py36), 'bin',
                                        'python3.6') if py36 else ''
        result.why_not_py36 = why_not_py36
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log('realxen: %s; boot + prepare %.0f s' % (
        result.summary(), result.total_s))
    for m in result.final.markers:
        _log('realxen:   %8.1f  %-26s %s' % (m.uptime, m.name, m.raw))
    return result


def scenario_window(result, first: str, last: str) -> float:
    """dom0 seconds from marker first to marker last."""
    a, b = result.marker(first), result.marker(last)
    return b.uptime - a.uptime if a and b else float('nan')
