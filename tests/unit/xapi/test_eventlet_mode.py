"""The pool bound and the cache hold under eventlet monkey patching."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))


def test_pool_and_cache_under_eventlet():
    proc = subprocess.run(
        [sys.executable, '-W', 'ignore', '-m',
         'tests.unit.xapi.eventlet_scenario'],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['green'] is True
    assert out['in_flight_while_blocked'] == 3
    assert out['results'] == 10
    # 3 pool sessions + the cache watcher's
    assert out['peak_in_flight'] <= 4
    assert out['peak_sessions'] == 4
    assert out['cached_power_state'] == 'Running'
    assert out['sessions_before_close'] == 4
    assert out['sessions_after_close'] == 0
