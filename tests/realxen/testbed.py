"""Host side of the realxen tier: boot real Xen 4.17 under QEMU, watch it.

The Xen testbed (``../shared/xen-testbed`` beside the checkout, or
``$XEN_TESTBED``) is only read.  One boot runs every scenario: the
testbed's scripts unpack its artifacts into a private work directory, build
dom0's initramfs with our overlay (``EXTRA_DOM0_ROOT``) and our scenario
scripts (``EXTRA_TESTS``, ``SUITE=`` leaves the testbed's own suite out),
and boot Xen + dom0 under ``qemu-system-x86_64`` (TCG).  dom0 reports
through ``XENPROBE <uptime> <MARKER> key=value ...`` lines on the serial log
and hands files back through ``/out`` (a raw disk the boot script untars).

TCG-nested Xen occasionally stalls as a whole (testbed README, "Known
limits"): in-guest timeouts then never fire.  The host therefore watches
the serial log: no new output for ``stall_s`` seconds kills QEMU by PID,
the stall is reported with the log's last lines and the boot is retried
once; a second stall is a failure.  Whatever happens, no process started
here survives ``run()`` and the work directory (~0.5 GB) is deleted; the
small logs are copied to ``keep_dir`` first.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
MARKER_RE = re.compile(
    r'XENPROBE ([0-9.]+) ([A-Z0-9][A-Z0-9-]*)((?: [^\r\n]*)?)'
)
# Files dom0 returns in /out above this size are not kept (save streams).
KEEP_MAX_BYTES = 4 << 20
# Debian packages the testbed's scripts take from apt's cache, with the
# same files in the testbed's debs/ for machines without them.
_DEBS = {
    'BUSYBOX_DEB': 'busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb',
    'GUEST_KERNEL_DEB': 'linux-image-6.1.0-53-cloud-amd64_6.1.187-1_amd64.deb',
}
APT_CACHE = '/var/cache/apt/archives'
# dom0's userland and tools are copied from / linked against the host.
HOST_NEEDS = (
    '/usr/bin/python3.11',
    '/usr/lib/python3.11/ctypes/__init__.py',
    '/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17',
    '/usr/lib/x86_64-linux-gnu/libxenctrl.so.4.17',
    '/usr/lib/x86_64-linux-gnu/libxenstore.so.4',
    '/usr/lib/x86_64-linux-gnu/libyajl.so.2',
)


class HarnessError(Exception):
    """The testbed could not be prepared or booted (not a scenario result)."""


class Terminated(HarnessError):
    """SIGTERM arrived during a run (CI's timeout): cleaned up, then raised."""


def _on_sigterm(signum, frame):
    raise Terminated('terminated by signal %d during a testbed run' % signum)


class Marker:
    __slots__ = ('name', 'uptime', 'args', 'raw')

    def __init__(self, name: str, uptime: float, rest: str):
        self.name = name
        self.uptime = uptime
        self.raw = rest.strip()
        self.args: Dict[str, str] = {}
        for word in self.raw.split():
            key, sep, value = word.partition('=')
            self.args[key] = value if sep else ''

    @property
    def failed(self) -> bool:
        rc = self.args.get('rc')
        return 'FAILED' in self.args or (rc not in (None, '0'))

    def __repr__(self) -> str:
        return '%s@%.1f %s' % (self.name, self.uptime, self.raw)


class Attempt:
    """One boot: how it ended, its markers, where its logs were kept."""

    def __init__(self, number: int):
        self.number = number
        self.stalled = False
        self.timed_out = False
        self.wall_s = 0.0
        self.rc: Optional[int] = None
        self.markers: List[Marker] = []
        self.last_lines: List[str] = []
        self.logs: Optional[str] = None

    @property
    def powered_off(self) -> bool:
        return any(m.name == 'POWEROFF' for m in self.markers)

    def describe(self) -> str:
        how = (
            'STALLED' if self.stalled else
            'TIMED OUT' if self.timed_out else
            'powered off' if self.powered_off else
            'ended without POWEROFF (rc=%s)' % self.rc
        )
        return 'boot %d: %s after %.0f s, %d markers, logs in %s' % (
            self.number, how, self.wall_s, len(self.markers), self.logs)


class BootResult:
    def __init__(self, attempts: List[Attempt], prepare_s: float):
        self.attempts = attempts
        self.prepare_s = prepare_s

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    @property
    def ok(self) -> bool:
        a = self.final
        return not a.stalled and not a.timed_out and a.powered_off

    def marker(self, name: str) -> Optional[Marker]:
        for m in self.final.markers:
            if m.name == name:
                return m
        return None

    def out_file(self, name: str) -> Optional[str]:
        if self.final.logs is None:
            return None
        path = os.path.join(self.final.logs, 'out', name)
        return path if os.path.exists(path) else None

    def summary(self) -> str:
        return '; '.join(a.describe() for a in self.attempts)


def locate(root: str = ROOT) -> str:
    """The testbed directory ($XEN_TESTBED, else ../shared/xen-testbed)."""
    return os.environ.get('XEN_TESTBED') or os.path.normpath(
        os.path.join(root, '..', 'shared', 'xen-testbed')
    )


def deb_env(tb: str) -> Dict[str, str]:
    """BUSYBOX_DEB/GUEST_KERNEL_DEB: apt's cache first, the testbed's copy
    otherwise (it carries the same files, checked by debs/SHA256SUMS)."""
    env = {}
    for var, name in _DEBS.items():
        for d in (APT_CACHE, os.path.join(tb, 'debs')):
            if os.path.isfile(os.path.join(d, name)):
                env[var] = os.path.join(d, name)
                break
    return env


def unavailable(tb: str) -> Optional[str]:
    """Why the tier cannot run on this machine, or None."""
    for rel in ('scripts/unpack.sh', 'scripts/build-initramfs.sh',
                'scripts/boot-xen-qemu.sh', 'bin/SHA256SUMS',
                'verifier/verify-stream-v2'):
        if not os.path.exists(os.path.join(tb, rel)):
            return 'Xen testbed not found or incomplete: no %s' % (
                os.path.join(tb, rel))
    missing = [v for v in _DEBS if v not in deb_env(tb)]
    if missing:
        return 'Debian packages %s in neither %s nor %s/debs' % (
            ', '.join(_DEBS[v] for v in missing), APT_CACHE, tb)
    for path in HOST_NEEDS:
        if not os.path.exists(path):
            return ('%s missing on the host (Debian bookworm python3.11 and '
                    'the Xen 4.17 libraries, tools/apt-packages.txt)' % path)
    if shutil.which('qemu-system-x86_64') is None:
        return 'qemu-system-x86_64 not installed (Debian qemu-system-x86)'
    return None


def _session_pids(sid: int) -> List[int]:
    """PIDs in session sid (the boot script, `timeout` and QEMU)."""
    pids = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(')') + 2:].split()
        if int(fields[3]) == sid:  # state ppid pgrp session
            pids.append(int(name))
    return pids


def _comm(pid: int) -> str:
    try:
        with open('/proc/%d/comm' % pid) as f:
            return f.read().strip()
    except OSError:
        return ''


def _kill(pids: List[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tail(path: str, n: int = 25) -> List[str]:
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return []
    return [ln.rstrip('\r') for ln in text.splitlines()[-n:]]


def parse_markers(path: str) -> List[Marker]:
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace').replace('\r', '')
    except OSError:
        return []
    return [
        Marker(m.group(2), float(m.group(1)), m.group(3))
        for m in MARKER_RE.finditer(text)
    ]


class Testbed:
    """Boots the testbed with our overlay and scenario scripts."""

    def __init__(self, tb: str, keep_dir: str, log=print):
        self.tb = tb
        self.keep_dir = keep_dir
        self.log = log

    def _script(self, name: str, work: str, env: Dict[str, str],
                timeout: int) -> None:
        path = os.path.join(self.tb, 'scripts', name)
        try:
            proc = subprocess.run(
                ['bash', path, work], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise HarnessError('%s did not finish in %d s' % (name, timeout))
        if proc.returncode:
            raise HarnessError('%s failed (rc=%d):\n%s' % (
                name, proc.returncode,
                proc.stdout.decode('utf-8', 'replace')[-3000:]))

    def run(self, tests: List[str], overlay: str, suite: str = '',
            timeout_s: int = 900, stall_s: int = 120, retries: int = 1,
            extra_env: Optional[Dict[str, str]] = None) -> BootResult:
        for path in tests + [overlay]:
            if re.search(r'[\s,]', path):
                raise HarnessError(
                    '%r: the testbed takes space-separated paths without '
                    "',' (QEMU option strings)" % path)
        work = tempfile.mkdtemp(prefix='realxen.')
        # A SIGTERM (the tier's outer timeout) must still run the clean-up
        # below: Python's default action would kill us with QEMU alive.
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
        env = dict(os.environ)
        env.update(deb_env(self.tb))
        env.update(SUITE=suite, EXTRA_TESTS=' '.join(tests),
                   EXTRA_DOM0_ROOT=overlay, TIMEOUT=str(timeout_s))
        env.update(extra_env or {})
        attempts: List[Attempt] = []
        try:
            t0 = time.monotonic()
            self._script('unpack.sh', work, env, 300)
            self._script('build-initramfs.sh', work, env, 300)
            prepare_s = time.monotonic() - t0
            self.log('realxen: testbed unpacked and initramfs built in '
                     '%.1f s (%s)' % (prepare_s, work))
            for n in range(1, retries + 2):
                attempt = self._boot(work, env, n, timeout_s, stall_s)
                attempts.append(attempt)
                self.log('realxen: ' + attempt.describe())
                if attempt.stalled:
                    self.log('realxen: stall, last serial lines:\n  ' +
                             '\n  '.join(attempt.last_lines))
                    continue
                break
            return BootResult(attempts, prepare_s)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            signal.signal(signal.SIGTERM, old_term)

    def _boot(self, work: str, env: Dict[str, str], number: int,
              timeout_s: int, stall_s: int) -> Attempt:
        attempt = Attempt(number)
        run = os.path.join(work, 'run')
        serial = os.path.join(run, 'serial.log')
        boot_out = open(os.path.join(work, 'boot.out'), 'wb')
        t0 = time.monotonic()
        # Its own session: every process it starts (timeout, QEMU) can be
        # found by session id and killed by PID, whatever their groups.
        proc = subprocess.Popen(
            ['bash', os.path.join(self.tb, 'scripts', 'boot-xen-qemu.sh'),
             work], env=env, stdout=boot_out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            size, progress = -1, time.monotonic()
            while proc.poll() is None:
                try:
                    now_size = os.path.getsize(serial)
                except OSError:
                    now_size = 0
                now = time.monotonic()
                if now_size != size:
                    size, progress = now_size, now
                if now - progress > stall_s:
                    attempt.stalled = True
                elif now - t0 > timeout_s + 60:
                    attempt.timed_out = True
                if attempt.stalled or attempt.timed_out:
                    attempt.last_lines = _tail(serial)
                    # QEMU first: the boot script then unpacks /out.
                    _kill([p for p in _session_pids(proc.pid)
                           if _comm(p).startswith('qemu-system')])
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        pass
                    break
                time.sleep(1)  # polling the log for progress, not a wait
            attempt.rc = proc.poll()
        finally:
            if proc.poll() is None:
                # QEMU first, so that `timeout` and the boot script reap
                # their children and exit (no orphans); then what is left.
                _kill([p for p in _session_pids(proc.pid)
                       if _comm(p).startswith('qemu-system')])
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            _kill(_session_pids(proc.pid))
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            boot_out.close()
        attempt.wall_s = time.monotonic() - t0
        attempt.markers = parse_markers(serial)
        if not attempt.last_lines:
            attempt.last_lines = _tail(serial)
        if 'TIMEOUT: QEMU killed' in open(
                os.path.join(work, 'boot.out'), errors='replace').read():
            attempt.timed_out = True
        attempt.logs = self._keep(work, number)
        return attempt

    def _keep(self, work: str, number: int) -> str:
        """Copy the boot's small logs and /out files to keep_dir/bootN."""
        dest = os.path.join(self.keep_dir, 'boot%d' % number)
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(os.path.join(dest, 'out'))
        run = os.path.join(work, 'run')
        for name in ('serial.log', 'markers.txt', 'host-timeline.txt',
                     'cmd.txt', 'qemu.out'):
            if os.path.exists(os.path.join(run, name)):
                shutil.copy(os.path.join(run, name), dest)
        shutil.copy(os.path.join(work, 'boot.out'), dest)
        out = os.path.join(run, 'out')
        for dirpath, _, files in os.walk(out):
            for f in files:
                src = os.path.join(dirpath, f)
                if os.path.isfile(src) and \
                        os.path.getsize(src) <= KEEP_MAX_BYTES:
                    rel = os.path.relpath(src, out)
                    os.makedirs(os.path.dirname(
                        os.path.join(dest, 'out', rel)), exist_ok=True)
                    shutil.copy(src, os.path.join(dest, 'out', rel))
        return dest
