"""The README's first command: ``nova-xen-stubdom demo`` runs to the end."""
import os
import subprocess
import sys


def test_demo_runs_and_reports():
    env = dict(os.environ)
    env.pop('OS_NOVA_DISABLE_EVENTLET_PATCHING', None)
    out = subprocess.run(
        [sys.executable, '-m', 'nova_xen_stubdom.cmd.main', 'demo'],
        capture_output=True, text=True, timeout=480, env=env)
    text = out.stdout
    assert out.returncode == 0, (text[-4000:], out.stderr[-4000:])
    assert 'demo OK' in text
    assert 'is ACTIVE on host' in text
    assert 'device model state: running' in text
    assert 'device models in dom0: 0' in text
    assert 'stopped: server SHUTOFF, guest Halted, stub domain Halted' in text
    assert 'started again: ACTIVE' in text
    assert 'guest and stub domain gone from XAPI: True' in text
    assert 'XAPI calls per spawn' in text and 'XAPI calls per destroy' in text
    assert 'left behind            nothing' in text
