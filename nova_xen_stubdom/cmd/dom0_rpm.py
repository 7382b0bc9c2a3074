"""The dom0 package as an RPM for XCP-ng 8.3: ``rpmbuild`` (Debian's
``rpm`` package) over the staged tree with
``tools/dom0/nova-xen-stubdom-dom0.spec``.

RPM's Version takes the package's release number (``0.0.1`` of
``0.0.1.dev245``); the Release says which commit (``0.dev245.g<sha>``),
so that two builds of different commits never share a name.
"""
import glob
import os
import re
import shutil
import subprocess
from typing import Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, 'tools', 'dom0', 'nova-xen-stubdom-dom0.spec')
NAME = 'nova-xen-stubdom-dom0'


class NotBuilt(Exception):
    """The RPM cannot be built here (the reason is the message)."""


def rpm_version(describe: str) -> Tuple[str, str]:
    """RPM ``(Version, Release)`` for this checkout; *describe* is ``git
    describe --always --dirty``."""
    try:
        from importlib import metadata
        dist = metadata.version('nova-xen-stubdom')
    except Exception:   # not installed: a bare checkout
        dist = '0.0.0'
    m = re.match(r'(\d+(?:\.\d+)*)(?:\.?(dev|a|b|rc)(\d+))?', dist)
    version = m.group(1) if m else '0.0.0'
    release = ['0']
    if m and m.group(2):
        release.append('%s%s' % (m.group(2), m.group(3)))
    # rpm allows letters, digits, '.', '_', '+', '~', '^' in a release
    release.append('g' + re.sub(r'[^A-Za-z0-9.]+', '.', describe))
    return version, '.'.join(release)


def build(stage: str, output: str, describe: str, stubdom: bool,
          work: str) -> str:
    """Build the RPM of *stage* into *output*; its path.  Raises
    :class:`NotBuilt` when ``rpmbuild`` is missing."""
    rpmbuild = shutil.which('rpmbuild')
    if rpmbuild is None:
        raise NotBuilt('rpmbuild not found (Debian package "rpm", listed '
                       'in tools/apt-packages.txt)')
    version, release = rpm_version(describe)
    cmd = [rpmbuild, '-bb', '--quiet',
           '--define', '_topdir %s' % work,
           '--define', '_nxs_stage %s' % stage,
           '--define', '_nxs_version %s' % version,
           '--define', '_nxs_release %s' % release,
           # no rpm database of the build machine is needed or read
           '--define', '_dbpath %s' % os.path.join(work, 'db'),
           '--nodeps']
    if stubdom:
        cmd += ['--define', '_nxs_stubdom 1']
    out = subprocess.run(cmd + [SPEC], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True,
                         timeout=600)
    built = glob.glob(os.path.join(work, 'RPMS', '*', '%s-*.rpm' % NAME))
    if out.returncode != 0 or len(built) != 1:
        raise SystemExit('build-dom0: rpmbuild failed (%d):\n%s'
                         % (out.returncode, out.stdout[-4000:]))
    target = os.path.join(output, os.path.basename(built[0]))
    shutil.copy(built[0], target)
    return target
