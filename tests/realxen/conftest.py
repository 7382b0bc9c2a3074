"""The realxen tier's one boot, shared by every scenario test.

``realxen_boot`` boots the Xen testbed once per session with our overlay in
dom0 (the emucore package and its C extension for dom0's Python 3.11,
Xen's verify-stream-v2, the dom0 helpers) and every scenario script in
``SCENARIOS``; each test then asserts on its scenario's markers and files.
With the testbed or its inputs missing the tests are skipped with the
reason, and tools/ci/tier-realxen.sh prints it as NOT RUN.
"""

import glob
import os
import shutil
import sys
import tempfile
import time

import pytest

from tests.realxen import testbed

HERE = os.path.dirname(os.path.abspath(__file__))
DOM0 = os.path.join(HERE, 'dom0')
# dom0 scenario scripts, run in this order in one boot.
SCENARIOS = ['s4-interchange.sh']
# dom0 runs the testbed's python3.11: the extension must be built for it.
DOM0_EXT = 'cpython-311-x86_64-linux-gnu.so'


def _emucore_extension() -> str:
    found = glob.glob(os.path.join(
        testbed.ROOT, 'nova_xen_stubdom', '_emucore.' + DOM0_EXT))
    return found[0] if found else ''


def build_overlay(dest: str, tb: str) -> str:
    """The tree copied over dom0's root (EXTRA_DOM0_ROOT)."""
    pkg = os.path.join(dest, 'opt', 'realxen', 'pkg', 'nova_xen_stubdom')
    os.makedirs(os.path.join(pkg, 'emucore'))
    src = os.path.join(testbed.ROOT, 'nova_xen_stubdom')
    shutil.copy(os.path.join(src, '__init__.py'), pkg)
    shutil.copy(_emucore_extension(), pkg)
    for f in glob.glob(os.path.join(src, 'emucore', '*.py')):
        shutil.copy(f, os.path.join(pkg, 'emucore'))
    shutil.copytree(os.path.join(tb, 'verifier'),
                    os.path.join(dest, 'opt', 'realxen', 'verifier'),
                    ignore=shutil.ignore_patterns('__pycache__'))
    for f in glob.glob(os.path.join(DOM0, '*.py')):
        shutil.copy(f, os.path.join(dest, 'opt', 'realxen'))
    os.makedirs(os.path.join(dest, 'etc', 'realxen'))
    shutil.copy(os.path.join(DOM0, 'lib.sh'),
                os.path.join(dest, 'etc', 'realxen', 'lib.sh'))
    return dest


def _log(msg: str) -> None:
    sys.stderr.write(msg + '\n')
    sys.stderr.flush()


@pytest.fixture(scope='session')
def realxen_boot():
    tb = testbed.locate()
    reason = testbed.unavailable(tb)
    if reason is None and not _emucore_extension():
        reason = ('nova_xen_stubdom/_emucore.%s not built (dom0 runs Python '
                  '3.11: python3.11 setup.py build_ext --inplace)' % DOM0_EXT)
    if reason:
        pytest.skip('NOT RUN: ' + reason)
    keep = os.environ.get('REALXEN_LOGS') or os.path.join(
        testbed.ROOT, 'build', 'realxen')
    tmp = tempfile.mkdtemp(prefix='realxen-overlay.')
    try:
        overlay = build_overlay(os.path.join(tmp, 'root'), tb)
        t0 = time.monotonic()
        result = testbed.Testbed(tb, keep, log=_log).run(
            [os.path.join(DOM0, s) for s in SCENARIOS], overlay,
            timeout_s=int(os.environ.get('REALXEN_TIMEOUT', '900')),
            stall_s=int(os.environ.get('REALXEN_STALL_S', '120')),
        )
        result.total_s = time.monotonic() - t0
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
