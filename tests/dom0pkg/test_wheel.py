"""_emucore as a cp36 wheel (tools/dom0/build_emucore.py --wheel, built
with pyenv's CPython 3.6) passes ``auditwheel show`` as
``manylinux_2_17_x86_64`` (manylinux2014) or older: XCP-ng 8.3's dom0
has glibc 2.17.  auditwheel comes from PyPI into a cache venv
(tools/dom0/auditwheel-venv.sh); when it cannot be installed the test is
skipped with the reason.  Run by tools/ci/tier-dom0py36.sh.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from nova_xen_stubdom.cmd import build_dom0

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
#: manylinux_2_17 is what glibc 2.17 (CentOS 7, XCP-ng 8.3 dom0) runs
MAX_GLIBC = (2, 17)


@pytest.fixture(scope='module')
def auditwheel():
    out = subprocess.run([os.path.join(ROOT, 'tools', 'dom0',
                                       'auditwheel-venv.sh')],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=600)
    if out.returncode == 3:
        pytest.skip('NOT RUN: auditwheel not installable: %s'
                    % out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope='module')
def wheel():
    try:
        python36 = build_dom0._find_python36(None)
    except SystemExit as exc:
        pytest.skip('NOT RUN: %s' % exc)
    work = tempfile.mkdtemp(prefix='nxs-wheel36-')
    try:
        out = subprocess.run(
            [python36, os.path.join(ROOT, 'tools', 'dom0',
                                    'build_emucore.py'), '--wheel', work],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            universal_newlines=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:]
        (whl,) = glob.glob(os.path.join(work, '*.whl'))
        yield whl
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_cp36_wheel_is_manylinux2014_or_older(auditwheel, wheel):
    assert os.path.basename(wheel).endswith('-cp36-cp36m-linux_x86_64.whl')
    out = subprocess.run([auditwheel, 'show', wheel],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, timeout=300)
    assert out.returncode == 0, out.stdout
    text = ' '.join(out.stdout.split())
    m = re.search(r'consistent with the following platform tag: '
                  r'"manylinux_(\d+)_(\d+)_x86_64"', text)
    assert m, text
    assert (int(m.group(1)), int(m.group(2))) <= MAX_GLIBC, text
    # linked as manylinux asks: nothing but libc (no libpython, no rpath)
    assert 'external shared libraries' not in text, text
