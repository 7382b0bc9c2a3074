"""Start and stop the cloud's processes, always by the PID we recorded.

A pid file holds ``PID STARTTIME`` (the kernel's start time of the process in
clock ticks, field 22 of ``/proc/PID/stat``), so a PID that the kernel has
since handed to an unrelated process is never signalled.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import (Callable, Dict, Iterable, List, Optional, Sequence, Set,
                    Tuple)

from nova_xen_stubdom.cloud import layout as layout_mod


class CloudError(Exception):
    """A step of bringing the cloud up or down failed."""


def _starttime(pid: int) -> Optional[str]:
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces: split after its closing paren.
    fields = stat[stat.rindex(')') + 2:].split()
    if fields[0] == 'Z':     # a zombie is as good as gone
        return None
    return fields[19]


def read_pid(pidfile: Path) -> Optional[int]:
    """The PID in *pidfile* if that very process still runs, else None."""
    try:
        pid_s, _, start = pidfile.read_text().strip().partition(' ')
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    now = _starttime(pid)
    if now is None or (start and now != start):
        return None
    return pid


def record_pid(pidfile: Path, pid: int) -> None:
    pidfile.write_text('%d %s\n' % (pid, _starttime(pid) or ''))


def children(pid: int) -> List[int]:
    """All descendants of *pid* (uwsgi workers, oslo.service workers)."""
    parents: Dict[int, List[int]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(')') + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: List[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def start(lay: 'layout_mod.Layout', name: str, argv: Sequence[str],
          env: Optional[Dict[str, str]] = None,
          cwd: Optional[Path] = None) -> int:
    """Start *argv* detached (own session), output to ``logs/NAME.out``."""
    pidfile = lay.pidfile(name)
    if read_pid(pidfile):
        raise CloudError('%s is already running (pid file %s)'
                         % (name, pidfile))
    out = open(lay.logs / ('%s.out' % name), 'ab')
    try:
        proc = subprocess.Popen(list(argv), stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env=env or lay.env(),
                                cwd=str(cwd or lay.root),
                                start_new_session=True, close_fds=True)
    finally:
        out.close()
    record_pid(pidfile, proc.pid)
    return proc.pid


def stop(lay: 'layout_mod.Layout', name: str, timeout: float = 15.0,
         sig: int = signal.SIGTERM) -> Optional[str]:
    """Stop the process recorded for *name* and its descendants.

    SIGTERM first; whatever still runs after *timeout* seconds gets
    SIGKILL.  Returns a line for the progress output, None if nothing ran.
    """
    lines = stop_many(lay, [name], timeout, sig)
    return lines[0] if lines else None


def stop_many(lay: 'layout_mod.Layout', names: Sequence[str],
              timeout: float = 15.0, sig: int = signal.SIGTERM) -> List[str]:
    """Stop several recorded processes at once (they shut down in
    parallel); returns one progress line per process that was running."""
    families: Dict[str, List[Tuple[int, Optional[str]]]] = {}
    for name in names:
        pidfile = lay.pidfile(name)
        pid = read_pid(pidfile)
        if pid is None:
            pidfile.unlink(missing_ok=True)
            continue
        families[name] = [(p, _starttime(p)) for p in [pid] + children(pid)]

    def alive(name: str) -> List[int]:
        return [p for p, st in families[name]
                if st is not None and _starttime(p) == st]

    for name, fam in families.items():
        _signal(fam[0][0], sig)
    deadline = time.monotonic() + timeout
    while any(alive(n) for n in families) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = []
    for name, fam in families.items():
        killed = alive(name)
        for p in killed:
            _signal(p, signal.SIGKILL)
        lay.pidfile(name).unlink(missing_ok=True)
        if killed:
            lines.append('%s: pid %d did not stop in %.0f s, killed %s'
                         % (name, fam[0][0], timeout, killed))
        else:
            lines.append('%s: pid %d stopped' % (name, fam[0][0]))
    return lines


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def port_open(port: int, host: str = layout_mod.HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def listening_ports() -> Set[int]:
    """TCP ports in LISTEN state on this machine (IPv4 and IPv6)."""
    ports: Set[int] = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == '0A':        # TCP_LISTEN
                        ports.add(int(cols[1].rsplit(':', 1)[1], 16))
        except OSError:
            continue
    return ports


def wait_for(what: str, check: Callable[[], bool], timeout: float,
             dead: Callable[[], Optional[str]] = lambda: None,
             interval: float = 0.25) -> float:
    """Poll *check* until true; fail early when *dead* names a dead process.

    Returns the seconds waited.
    """
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        gone = dead()
        if gone:
            raise CloudError('%s died while waiting for %s' % (gone, what))
        if time.monotonic() - t0 > timeout:
            raise CloudError('timed out after %.0f s waiting for %s'
                             % (timeout, what))
        time.sleep(interval)


def http_answers(url: str) -> bool:
    """True once *url* answers HTTP at all (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def first_dead(lay: 'layout_mod.Layout',
               names: Iterable[str]) -> Optional[str]:
    for name in names:
        if read_pid(lay.pidfile(name)) is None:
            return name
    return None


def run(argv: Sequence[str], log: Path, env: Optional[Dict[str, str]] = None,
        timeout: float = 300, input_text: Optional[str] = None) -> None:
    """Run a one-shot command, output appended to *log*; raise on failure."""
    with open(log, 'ab') as out:
        out.write(('+ %s\n' % ' '.join(argv)).encode())
        out.flush()
        try:
            res = subprocess.run(list(argv), stdout=out,
                                 stderr=subprocess.STDOUT, env=env,
                                 input=input_text.encode()
                                 if input_text is not None else None,
                                 stdin=None if input_text is not None
                                 else subprocess.DEVNULL,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CloudError('%s timed out after %.0f s (see %s)'
                             % (argv[0], timeout, log))
    if res.returncode:
        raise CloudError('%s exited %d (see %s)'
                         % (' '.join(argv[:3]), res.returncode, log))


def rss_mib(pids: List[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            with open('/proc/%d/status' % pid) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024.0
