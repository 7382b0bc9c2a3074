"""The harness's stall handling, against a fake testbed (no Xen, seconds).

The fake boot script behaves like the testbed's boot-xen-qemu.sh: it runs
a "QEMU" (sleep, exec'd under the name qemu-system-x86_64) under timeout in
the background, follows it and untars nothing.  Its serial log goes quiet
after one line, so the host must find the stall, kill QEMU by PID, retry
once and leave no process behind.
"""

import os
import stat
import textwrap

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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
