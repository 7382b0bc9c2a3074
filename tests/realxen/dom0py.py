"""dom0's Python for our payload in the realxen tier.

XCP-ng 8.3's dom0 runs Python 3.6, so the daemon, the plugin launcher, the
device-model wrapper, the xen backend and the engine run on CPython 3.6 in
the testbed's dom0 too where the machine has one (REALXEN_DOM0_PY36=0
turns it off) (``$PYTHON36``, else pyenv's 3.6, as tools/dom0/py36-venv.sh
finds it): the interpreter, a trimmed standard library and the cp36
_emucore go into the dom0 overlay, and the scenario scripts call it as
``$RX_PYTHON`` (/etc/realxen/env).  Otherwise dom0 runs the payload on the
testbed's python3.11, and the tier reports "dom0 on Python 3.6" as NOT
RUN (tests/realxen/test_d1_daemon.py).

The interpreter keeps its build prefix in dom0 (pyenv's is linked with
RUNPATH <prefix>/lib for libpython3.6m, which the testbed's copylibs then
copies there with every other ldd dependency), so it finds its stdlib as
on the host.
"""

import compileall
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional, Tuple

#: the testbed's interpreter, the fallback (/usr/bin/python3 -> python3.11)
FALLBACK = 'python3'
#: the stdlib dom0 does without: tests, GUIs, packaging, build files, and
#: the extension modules whose libraries dom0 lacks or our payload never
#: imports (keeps the initramfs small: 25 MB of it instead of 150)
STDLIB_SKIP = (
    'test', 'tests', 'idlelib', 'tkinter', 'turtledemo', 'ensurepip',
    'lib2to3', 'pydoc_data', 'distutils', 'site-packages', 'config-3.6m*',
    'sqlite3', 'curses', 'dbm', 'msilib', 'venv', '__pycache__',
    '_tkinter*', '_curses*', 'readline*', '_sqlite3*', 'nis*', '_dbm*',
    '_gdbm*', 'ossaudiodev*', '_test*', '_ctypes_test*', 'xxlimited*',
    'audioop*', '*.exe',
)


def locate_py36() -> Optional[str]:
    """The machine's CPython 3.6, or None (same order as py36-venv.sh)."""
    for c in [os.environ.get('PYTHON36', '')] + sorted(glob.glob(
            os.path.expanduser('~/.pyenv/versions/3.6*/bin/python3.6'))) + [
            shutil.which('python3.6') or '']:
        if c and os.access(c, os.X_OK):
            return c
    return None


#: REALXEN_DOM0_PY36=0 keeps the testbed's python3.11 in dom0 (a quicker
#: local run); by default dom0 runs our payload on 3.6 where there is one
OPT_OUT = 'REALXEN_DOM0_PY36'


def choose() -> Tuple[str, str]:
    """(the 3.6 dom0 runs our payload on, '') or ('', why it is 3.11)."""
    if os.environ.get(OPT_OUT) == '0':
        return '', 'turned off with %s=0' % OPT_OUT
    py = locate_py36()
    if not py:
        return '', 'no CPython 3.6 on this machine ($PYTHON36 or pyenv 3.6)'
    return py, ''


def prefix(py: str) -> str:
    """sys.base_prefix of *py* (a venv's too; where it is in dom0)."""
    return subprocess.run(
        [py, '-c', 'import sys; print(sys.base_prefix)'], check=True,
        capture_output=True, text=True).stdout.strip()


def install(dest: str, py: str, root: str) -> str:
    """Put *py* (a CPython 3.6) at its own prefix under the overlay *dest*,
    build the cp36 _emucore into the overlay's package, compile the
    overlay's modules with it; returns the interpreter's path in dom0."""
    pfx = prefix(py)
    exe = os.path.join(pfx, 'bin', 'python3.6')
    os.makedirs(dest + os.path.dirname(exe), exist_ok=True)
    shutil.copy(os.path.realpath(exe), dest + exe)
    shutil.copytree(os.path.join(pfx, 'lib', 'python3.6'),
                    dest + os.path.join(pfx, 'lib', 'python3.6'),
                    ignore=shutil.ignore_patterns(*STDLIB_SKIP))
    build = tempfile.mkdtemp(prefix='realxen-emucore36.')
    try:
        subprocess.run([py, os.path.join('tools', 'dom0', 'build_emucore.py'),
                        '--check', build], cwd=root, check=True,
                       stdout=subprocess.DEVNULL)
        so, = glob.glob(os.path.join(build, 'nova_xen_stubdom', '_emucore*'))
        shutil.copy(so, os.path.join(dest, 'opt', 'realxen', 'pkg',
                                     'nova_xen_stubdom'))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    # each fresh dom0 process would compile every module it imports at
    # start otherwise: seconds per plugin call under TCG
    for d in (dest + os.path.join(pfx, 'lib', 'python3.6'),
              os.path.join(dest, 'opt', 'realxen')):
        subprocess.run([py, '-m', 'compileall', '-q', d], check=True,
                       stdout=subprocess.DEVNULL)
    return exe


def compile_for_fallback(dest: str) -> None:
    """Without 3.6: compile for dom0's python3.11 if this is a 3.11."""
    if sys.version_info[:2] == (3, 11):
        compileall.compile_dir(os.path.join(dest, 'opt', 'realxen'), quiet=1)
