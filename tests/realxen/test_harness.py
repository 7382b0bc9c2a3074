"""The harness's stall handling, against a fake testbed (no Xen, seconds).

The fake boot script behaves like the testbed's boot-xen-qemu.sh: it runs
a "QEMU" (sleep, exec'd under the name qemu-system-x86_64) under timeout in
the background, follows it and untars nothing.  Its serial log goes quiet
after one line, so the host must find the stall, kill QEMU by PID, retry
once and leave no process behind.
"""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

from tests.realxen import testbed

BOOT = textwrap.dedent('''\
    #!/bin/bash
    # fake boot-xen-qemu.sh WORKDIR; env FAKE_STATE: pid files, boot counter
    W=$1; R=$W/run; rm -rf "$R"; mkdir -p "$R/out"
    n=$(( $(cat "$FAKE_STATE/boots" 2>/dev/null || echo 0) + 1 ))
    echo $n > "$FAKE_STATE/boots"
    timeout 600 "$FAKE_STATE/qemu-system-x86_64" 300 &
    TPID=$!
    echo "XENPROBE 1.0 DOM0-SHELL-UP" > "$R/serial.log"
    sleep 0.2; pgrep -P $TPID >> "$FAKE_STATE/qemu-pids"
    if [ "$n" -ge "${FAKE_OK_FROM:-99}" ]; then
        echo "XENPROBE 2.0 POWEROFF" >> "$R/serial.log"
        kill $TPID
    fi
    while kill -0 $TPID 2>/dev/null; do sleep 0.2; done
    wait $TPID
    exit 0
    ''')


def _fake_testbed(tmp_path):
    tb = tmp_path / 'tb'
    (tb / 'scripts').mkdir(parents=True)
    for name, text in (('unpack.sh', '#!/bin/bash\nexit 0\n'),
                       ('build-initramfs.sh', '#!/bin/bash\nexit 0\n'),
                       ('boot-xen-qemu.sh', BOOT)):
        path = tb / 'scripts' / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / 'state'
    state.mkdir()
    os.symlink('/bin/sleep', str(state / 'qemu-system-x86_64'))
    overlay = tmp_path / 'overlay'
    overlay.mkdir()
    return str(tb), state, str(overlay)


def _alive(pid):
    """Running (a zombie whose parent was killed too counts as gone)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat_ = f.read()
    except OSError:
        return False
    return stat_[stat_.rfind(')') + 2] != 'Z'


def _run(tmp_path, **env):
    tb, state, overlay = _fake_testbed(tmp_path)
    logs = []
    result = testbed.Testbed(tb, str(tmp_path / 'keep'), log=logs.append).run(
        [], overlay, stall_s=2, timeout_s=60,
        extra_env=dict(FAKE_STATE=str(state), **env),
    )
    pids = [int(p) for p in (state / 'qemu-pids').read_text().split()]
    return result, pids, logs


def test_second_stall_is_a_failure(tmp_path):
    result, pids, logs = _run(tmp_path)
    assert [a.stalled for a in result.attempts] == [True, True]
    assert not result.ok
    assert result.final.last_lines == ['XENPROBE 1.0 DOM0-SHELL-UP']
    assert len(pids) == 2 and not any(_alive(p) for p in pids)
    assert any('STALLED' in line for line in logs)
    assert 'boot 2: STALLED' in result.summary()
    # the work directory is gone, the small logs are kept
    assert os.path.exists(os.path.join(result.final.logs, 'serial.log'))


def test_stall_then_retry_passes(tmp_path):
    result, pids, _ = _run(tmp_path, FAKE_OK_FROM='2')
    assert [a.stalled for a in result.attempts] == [True, False]
    assert result.ok and result.marker('POWEROFF') is not None
    assert not any(_alive(p) for p in pids)


def test_unavailable_reasons(tmp_path):
    reason = testbed.unavailable(str(tmp_path / 'none'))
    assert reason.startswith('Xen testbed not found or incomplete')


TERM_RUNNER = textwrap.dedent('''\
    import sys, tempfile
    sys.path.insert(0, sys.argv[1])
    from tests.realxen import testbed
    tb, state, overlay, keep = sys.argv[2:6]
    tempfile.tempdir = state
    try:
        testbed.Testbed(tb, keep, log=print).run(
            [], overlay, stall_s=300, timeout_s=600,
            extra_env=dict(FAKE_STATE=state))
    except testbed.Terminated as exc:
        print('TERMINATED', exc, flush=True)
        sys.exit(3)
    ''')


def test_sigterm_cleans_up(tmp_path):
    """The tier's outer timeout (SIGTERM) still kills QEMU and the work dir."""
    tb, state, overlay = _fake_testbed(tmp_path)
    runner = tmp_path / 'runner.py'
    runner.write_text(TERM_RUNNER)
    proc = subprocess.Popen(
        [sys.executable, str(runner), testbed.ROOT, tb, str(state), overlay,
         str(tmp_path / 'keep')], stdout=subprocess.PIPE, text=True)
    pids = state / 'qemu-pids'
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)  # polling for the fake QEMU to start
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and 'TERMINATED' in out
    qemu = int(pids.read_text().split()[0])
    assert not _alive(qemu)
    assert not [d for d in os.listdir(str(state))
                if d.startswith('realxen.')]
