"""The dom0 helpers on the host, against the testbed's real xl save stream.

Runs tests/realxen/dom0/s4_interchange.py exactly as dom0 does, on the
``xl save`` file of a 64 MiB HVM guest shipped in the testbed, so a broken
helper shows up in seconds instead of after a Xen boot.  Also the harness's
marker parser.  Skipped with the reason when the testbed is missing.
"""

import json
import lzma
import os
import shutil
import subprocess
import sys

import pytest

from tests.realxen import testbed

HERE = os.path.dirname(os.path.abspath(__file__))
STREAM = os.path.join(
    testbed.locate(), 'streams', 'hvm-guest-64M.xl-save.xz'
)


@pytest.mark.skipif(
    not os.path.exists(STREAM), reason='no xl stream at ' + STREAM
)
def test_s4_helper_on_shipped_xl_stream(tmp_path):
    src = tmp_path / 'xl.save'
    with lzma.open(STREAM) as f, open(src, 'wb') as out:
        shutil.copyfileobj(f, out)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, 'dom0', 's4_interchange.py'),
         str(src), str(tmp_path), str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=testbed.ROOT),
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res['ok'] and all(res['checks'].values())
    assert res['rewritten']['identical_to_xl']
    assert res['read']['pages'] == 16380
    assert res['from_memory']['pages'] == 16380
    verifier = os.path.join(testbed.locate(), 'verifier', 'verify-stream-v2')
    for name in ('ours-rewritten.save', 'ours-from-memory.save'):
        v = subprocess.run(
            [sys.executable, verifier, '-f', 'xl', '-i',
             str(tmp_path / name)],
            env=dict(os.environ, PYTHONPATH=os.path.dirname(verifier)),
            capture_output=True, text=True, timeout=300,
        )
        assert v.returncode == 0, (name, v.stderr[-2000:])
    # The sparse guest-memory files were unlinked at once.
    assert sorted(os.listdir(tmp_path)) == [
        'ours-from-memory.save', 'ours-rewritten.save', 'xl.save']


def test_marker_parser(tmp_path):
    log = tmp_path / 'serial.log'
    log.write_bytes(
        b'(XEN) noise\r\n'
        b'XENPROBE 5.10 DOM0-SHELL-UP kernel=6.1.20\r\n'
        b'[  1.0] XENPROBE 9.5 S4-XL-SAVE rc=0 bytes=42 took=1.5\r\n'
        b'XENPROBE 12.0 S4-GUEST-UP FAILED rc=1 after=3\n'
        b'XENPROBE-INFO xen_version : 4.17.7\n'
    )
    ms = testbed.parse_markers(str(log))
    assert [m.name for m in ms] == [
        'DOM0-SHELL-UP', 'S4-XL-SAVE', 'S4-GUEST-UP']
    assert ms[1].args == {'rc': '0', 'bytes': '42', 'took': '1.5'}
    assert ms[1].uptime == 9.5 and not ms[1].failed
    assert ms[2].failed and not ms[0].failed
