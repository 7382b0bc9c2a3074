"""Xen's own stream validator, verify-stream-v2, for the tests.

Where it comes from, in order:
1. ``XEN_VERIFY_STREAM`` / ``XEN_PYTHONPATH`` (set by tools/ci/tier-native.sh
   to whichever copy it found);
2. Debian's ``xen-utils-4.17`` unpacked under ``build/`` by the native tier;
3. the Xen 4.17.7 copy that ``../shared/xen-testbed/verifier`` carries for
   machines where the Debian package cannot be downloaded.

When none is there the check is skipped with the reason, or fails when
``REQUIRE_XEN_VERIFIER=1`` says CI expects it.
"""

import os
import subprocess
import sys
from typing import List, Optional, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBIAN = os.path.join(ROOT, 'build', 'xen-utils-4.17', 'usr', 'lib',
                      'xen-4.17')
SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'xen-testbed',
                      'verifier')


def _candidates() -> List[Tuple[str, str]]:
    found = []
    if os.environ.get('XEN_VERIFY_STREAM'):
        found.append((os.environ['XEN_VERIFY_STREAM'],
                      os.environ.get('XEN_PYTHONPATH', '')))
    found.append((os.path.join(DEBIAN, 'bin', 'verify-stream-v2'),
                  os.path.join(DEBIAN, 'lib', 'python')))
    found.append((os.path.join(SHARED, 'verify-stream-v2'), SHARED))
    return found


def locate() -> Optional[Tuple[str, str]]:
    """(script, PYTHONPATH holding ``xen.migration``) or None."""
    for exe, pypath in _candidates():
        if os.path.isfile(exe) and os.path.isdir(
                os.path.join(pypath, 'xen', 'migration')):
            return exe, pypath
    return None


def require() -> Tuple[str, str]:
    """The verifier, or skip (fail when CI requires it) naming the reason."""
    where = locate()
    if where is not None:
        return where
    tried = ', '.join(exe for exe, _ in _candidates())
    if os.environ.get('REQUIRE_XEN_VERIFIER') == '1':
        pytest.fail('verify-stream-v2 not found (tried %s)' % tried)
    pytest.skip('VERIFY-STREAM-V2 NOT RUN: Xen verify-stream-v2 not found '
                '(tried %s; tools/ci/tier-native.sh fetches it)' % tried)


def verify(path: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the verifier on a libxl-framed stream file."""
    exe, pypath = require()
    env = dict(os.environ, PYTHONPATH=pypath)
    # Xen's modules need nothing beyond the stdlib: any python3 runs them
    # (the dom0 tests run this on Python 3.6: no capture_output/text)
    return subprocess.run([sys.executable, exe, '-v', '-f', 'libxl', '-i',
                           str(path)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout)
