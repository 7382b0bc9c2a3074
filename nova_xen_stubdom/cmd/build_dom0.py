"""``nova-xen-stubdom build-dom0 --output DIR``: the dom0 package.

Builds, from one staged tree of files (the root layout below):

* ``nova-xen-stubdom-dom0-<version>.tar.gz`` (+ ``.sha256``) with
  ``install.sh``, a POSIX shell script for hosts without rpm
  (``DESTDIR=/scratch`` installs into a scratch root, ``--uninstall``
  removes what it installed);
* ``nova-xen-stubdom-dom0-<version>-<release>.x86_64.rpm`` for XCP-ng 8.3
  with ``rpmbuild`` and ``tools/dom0/nova-xen-stubdom-dom0.spec``
  (:mod:`dom0_rpm`); without ``rpmbuild`` the RPM is reported as not
  built, with the reason, and the tarball is still built.

Both run ``/usr/libexec/nova-xen-stubdom/dom0-setup install`` after
copying (``uninstall`` before removing): it registers the device-model
wrapper in ``/etc/xenopsd.conf``, records the stock wrapper in agent.conf,
enables the daemon (``nova_xen_stubdom/dom0/host_install.py``).

Files installed (relative to the root)::

    usr/lib/nova-xen-stubdom/python/nova_xen_stubdom/...   the payload
    etc/xapi.d/plugins/nova_xen_stubdom                     XAPI plugin
    usr/lib/systemd/system/nova-xen-stubdom-agent.service   the daemon
    usr/libexec/nova-xen-stubdom/dm-wrapper                 the wrapper
    usr/libexec/nova-xen-stubdom/dom0-setup                 host steps
    etc/nova-xen-stubdom/agent.conf                         (kept if there)
    var/lib/xcp/guest/nova-xen-stubdom-kernel, -rootfs.cpio.gz
                                                            (--stubdom-dir)
"""
import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, List, Optional, Sequence

from nova_xen_stubdom.cmd import dom0_rpm
from nova_xen_stubdom.cmd import dom0_templates as tpl
from nova_xen_stubdom.dom0 import constants as dom0_constants
from nova_xen_stubdom.stubdom import image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PKG = os.path.join(ROOT, 'nova_xen_stubdom')
LIBDIR = tpl.LIBDIR
STUBDOM_FILES = (image.KERNEL_NAME, image.ROOTFS_NAME)
#: what --stubdom-dir must hold: the image and build-stubdom's manifest, which
#: the agent's stubdom_image reads what the image's QEMU lacks from (no PCI
#: pass-through on a testbed-QEMU image: doc/source/pci.rst)
STUBDOM_INPUTS = STUBDOM_FILES + (image.MANIFEST_NAME,)
#: XAPI direct-boots PV kernels only from there (not /boot/guest/ since
#: XAPI 24.20: doc/source/xapi-behaviour.rst), where the driver's
#: [xen_stubdom] stubdom_kernel/_ramdisk point by default
GUEST_BOOT_DIR = image.GUEST_BOOT_DIR.strip('/')


def _version() -> str:
    try:
        out = subprocess.run(['git', 'describe', '--always', '--dirty'],
                             cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL,
                             universal_newlines=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return 'unknown'


def _find_python36(explicit: Optional[str]) -> str:
    for c in [explicit, os.environ.get('PYTHON36')] + sorted(glob.glob(
            os.path.expanduser('~/.pyenv/versions/3.6*/bin/python3.6'))) + [
            shutil.which('python3.6')]:
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit('build-dom0: no Python 3.6 to build _emucore for dom0 '
                     '(--python36 or $PYTHON36)')


def _copy_payload(dest: str) -> None:
    lib = os.path.join(dest, 'nova_xen_stubdom')
    os.makedirs(os.path.join(lib, 'dom0'))
    os.makedirs(os.path.join(lib, 'emucore'))
    shutil.copy(os.path.join(PKG, '__init__.py'), lib)
    for sub in ('dom0', 'emucore'):
        for f in sorted(glob.glob(os.path.join(PKG, sub, '*.py'))):
            shutil.copy(f, os.path.join(lib, sub))


def _build_emucore(python36: str, dest: str, work: str) -> str:
    out = subprocess.run(
        [python36, os.path.join(ROOT, 'tools', 'dom0', 'build_emucore.py'),
         '--check', work], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=900)
    built = glob.glob(os.path.join(work, 'nova_xen_stubdom', '_emucore*.so'))
    if out.returncode != 0 or len(built) != 1:
        raise SystemExit('build-dom0: _emucore did not build for %s:\n%s'
                         % (python36, out.stdout[-4000:]))
    target = os.path.join(dest, 'nova_xen_stubdom',
                          os.path.basename(built[0]))
    shutil.copy(built[0], target)
    return target


def _compile(python36: str, lib: str) -> None:
    """Byte-compile the payload with dom0's Python: the plugin is a fresh
    process per call, and the package then owns every file it leaves."""
    out = subprocess.run([python36, '-m', 'compileall', '-q', lib],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit('build-dom0: byte-compiling for %s failed:\n%s'
                         % (python36, out.stdout[-4000:]))


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)


def stage(files: str, python36: str, stubdom_dir: Optional[str],
          work: str) -> None:
    """Lay the installed tree out under *files* (a root)."""
    def at(rel: str) -> str:
        return os.path.join(files, rel)
    lib = at(LIBDIR)
    _copy_payload(lib)
    _build_emucore(python36, lib, os.path.join(work, 'emucore'))
    _compile(python36, lib)
    _write(at('etc/xapi.d/plugins/nova_xen_stubdom'), tpl.PLUGIN, 0o755)
    _write(at(tpl.LIBEXEC + '/dm-wrapper'), tpl.WRAPPER, 0o755)
    _write(at(tpl.LIBEXEC + '/dom0-setup'), tpl.SETUP, 0o755)
    _write(at('etc/nova-xen-stubdom/agent.conf'), tpl.AGENT_CONF)
    with open(os.path.join(ROOT, 'devstack', 'files',
                           'nova-xen-stubdom-agent.service')) as f:
        unit = f.read().replace(
            '[Service]\n', '[Service]\nEnvironment=PYTHONPATH=/%s\n'
            % LIBDIR)
    _write(at('usr/lib/systemd/system/nova-xen-stubdom-agent.service'), unit)
    if stubdom_dir:
        os.makedirs(at(GUEST_BOOT_DIR))
        for name in STUBDOM_FILES:
            shutil.copy(os.path.join(stubdom_dir, name), at(GUEST_BOOT_DIR))
        shutil.copy(os.path.join(stubdom_dir, image.MANIFEST_NAME),
                    at(dom0_constants.STUBDOM_MANIFEST.lstrip('/')))


def _tarball(output: str, top: str, name: str) -> str:
    tarball = os.path.join(output, name + '.tar.gz')
    with tarfile.open(tarball, 'w:gz') as tar:
        tar.add(top, arcname=name)
    with open(tarball, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    _write(tarball + '.sha256', '%s  %s\n' % (
        digest, os.path.basename(tarball)))
    return tarball


def build_all(output: str, python36: Optional[str] = None,
              stubdom_dir: Optional[str] = None) -> Dict[str, str]:
    """Build into *output*: ``{'tarball': path, 'rpm': path or '',
    'rpm_not_built': reason or ''}``."""
    if stubdom_dir:
        missing = [n for n in STUBDOM_INPUTS
                   if not os.path.isfile(os.path.join(stubdom_dir, n))]
        if missing:
            raise SystemExit('build-dom0: %s lacks %s (build-stubdom '
                             '--output)' % (stubdom_dir, ', '.join(missing)))
    version = _version()
    name = 'nova-xen-stubdom-dom0-%s' % version
    os.makedirs(output, exist_ok=True)
    work = tempfile.mkdtemp(prefix='nxs-build-dom0-')
    try:
        top = os.path.join(work, name)
        files = os.path.join(top, 'files')
        stage(files, _find_python36(python36), stubdom_dir, work)
        _write(os.path.join(top, 'install.sh'), tpl.install_sh(), 0o755)
        result = {'tarball': _tarball(output, top, name), 'rpm': '',
                  'rpm_not_built': ''}
        try:
            result['rpm'] = dom0_rpm.build(
                files, output, version, bool(stubdom_dir),
                os.path.join(work, 'rpm'))
        except dom0_rpm.NotBuilt as exc:
            result['rpm_not_built'] = str(exc)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(output: str, python36: Optional[str] = None,
          stubdom_dir: Optional[str] = None) -> str:
    """Build into *output*; the tarball's path."""
    return build_all(output, python36, stubdom_dir)['tarball']


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='nova-xen-stubdom build-dom0',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--output', required=True)
    p.add_argument('--python36', help='the CPython 3.6 to build _emucore '
                   'with (default: $PYTHON36, pyenv 3.6, python3.6)')
    p.add_argument('--stubdom-dir', help='output of build-stubdom, to ship '
                   'the stub domain kernel and rootfs')
    opts = p.parse_args(list(argv) if argv is not None else None)
    result = build_all(opts.output, opts.python36, opts.stubdom_dir)
    print(result['tarball'])
    if result['rpm']:
        print(result['rpm'])
    else:
        print('RPM NOT BUILT: %s' % result['rpm_not_built'])
    return 0


def files_in(tarball: str) -> List[str]:
    with tarfile.open(tarball) as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


if __name__ == '__main__':
    sys.exit(main())
