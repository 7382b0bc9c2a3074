"""Process bookkeeping of the test cloud: start, stop and PIDs."""
import socket
import sys

import pytest

from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs
from tests import waiting


@pytest.fixture
def lay(tmp_path):
    lay = L.Layout.create(str(tmp_path), sys.prefix, str(tmp_path / 'ks'))
    lay.mkdirs()
    return lay


SLEEPER = [sys.executable, '-c', 'import time; time.sleep(60)']
# a parent that ignores SIGTERM and has a child: the stop must escalate
STUBBORN = [sys.executable, '-c', '''
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
time.sleep(60)
''']


def test_start_records_pid_and_stop_ends_it(lay):
    pid = procs.start(lay, 'sleeper', SLEEPER)
    assert procs.read_pid(lay.pidfile('sleeper')) == pid
    line = procs.stop(lay, 'sleeper', timeout=10)
    assert line == 'sleeper: pid %d stopped' % pid
    assert procs.read_pid(lay.pidfile('sleeper')) is None
    assert not lay.pidfile('sleeper').exists()


def test_stop_kills_what_ignores_sigterm_and_its_children(lay):
    pid = procs.start(lay, 'stubborn', STUBBORN)
    procs.wait_for('the child', lambda: 'ready' in (
        lay.logs / 'stubborn.out').read_text(), 30)
    kids = procs.children(pid)
    assert len(kids) == 1
    line = procs.stop(lay, 'stubborn', timeout=1)
    assert 'killed' in line
    waiting.wait_until(
        lambda: all(procs._starttime(p) is None for p in [pid] + kids),
        'the killed process and its child to be gone')


def test_second_start_is_refused(lay):
    procs.start(lay, 'sleeper', SLEEPER)
    try:
        with pytest.raises(procs.CloudError, match='already running'):
            procs.start(lay, 'sleeper', SLEEPER)
    finally:
        procs.stop(lay, 'sleeper')


def test_a_recycled_pid_is_never_signalled(lay):
    pid = procs.start(lay, 'sleeper', SLEEPER)
    try:
        # the pid file now claims another start time: not our process
        lay.pidfile('sleeper').write_text('%d 1\n' % pid)
        assert procs.read_pid(lay.pidfile('sleeper')) is None
        assert procs.stop(lay, 'sleeper') is None
        assert procs._starttime(pid) is not None      # still running
    finally:
        procs.record_pid(lay.pidfile('sleeper'), pid)
        procs.stop(lay, 'sleeper')


def test_listening_ports_sees_a_listener():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert port in procs.listening_ports()
        assert procs.port_open(port)


def test_wait_for_fails_early_when_a_process_died():
    with pytest.raises(procs.CloudError, match='nova-api died'):
        procs.wait_for('x', lambda: False, 30, dead=lambda: 'nova-api')


def test_run_reports_the_log_on_failure(lay):
    with pytest.raises(procs.CloudError, match='exited 3'):
        procs.run([sys.executable, '-c', 'import sys; sys.exit(3)'],
                  lay.log('x'))
    assert lay.log('x').read_text().startswith('+ ')


def test_rss_counts_the_cloud_and_the_named_trees(lay, capsys):
    from nova_xen_stubdom.cloud import cli
    assert cli.main(['--dir', str(lay.root), 'rss']) == 0
    assert float(capsys.readouterr().out) == 0.0      # nothing running
    # a sleeper that says when its interpreter is up: measured earlier,
    # the tree was a half-started process (0.7 MiB, a failed CI run)
    pid = procs.start(lay, 'sleeper', [
        sys.executable, '-c',
        'import time; print("up", flush=True); time.sleep(60)'])
    out = lay.logs / 'sleeper.out'
    waiting.wait_until(lambda: out.exists() and b'up' in out.read_bytes(),
                       'the sleeper to start')
    try:
        assert cli.main(['--dir', str(lay.root), 'rss']) == 0
        assert float(capsys.readouterr().out) == 0.0  # not a cloud process
        from nova_xen_stubdom.cloud import services
        assert services.all_pids(lay) == []
        assert cli.main(['--dir', str(lay.root), 'rss', '--tree',
                         str(pid)]) == 0
        assert float(capsys.readouterr().out) > 1.0
    finally:
        procs.stop(lay, 'sleeper')
