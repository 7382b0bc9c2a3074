"""What a restarted dom0 daemon must know about the jobs it was running.

A migration runs on a daemon thread; if the daemon dies (kill -9, OOM,
a package upgrade), the thread is gone but the guest is not.  Each job
writes one small JSON file under ``<state_dir>/jobs/`` (atomically:
temporary file + rename) when it starts, when it passes a phase that
changes what recovery must do, and when it ends.  At start the daemon
:func:`recover` s every job that was still running:

* a sending job before "go": log-dirty off, the device model resumed if
  its state had been saved, the guest unpaused if this job paused it --
  the guest keeps running here (the migration failed cleanly);
* a sending job after "go" was journaled: nothing is touched -- the guest
  may be running on the destination, so the source stays paused and the
  job reports ``unknown`` (the driver puts the instance in ERROR with both
  copies kept);
* a receiving job before "go": failed; the paused domain belongs to XAPI
  and the driver's rollback removes it;
* a receiving job that journaled "go": ``running`` when the guest runs
  here (its domain is unpaused, or the job journaled "running"),
  ``unknown`` otherwise -- the guest may have started, so the source must
  not be resumed on this host's word;
* a save (``save_image``): the guest runs again -- the state disk is
  detached and its file removed, a device model that had saved its state
  resumed, the guest unpaused if the save paused it -- and the entry is
  dropped (the caller already got ``DAEMON_UNAVAILABLE``).

A job that was running when the daemon died answers every later status
call with its recovered state instead of "no such job".
"""
import json
import logging
import os
import tempfile
from typing import Callable, Dict, Optional

from nova_xen_stubdom.dom0 import guest_suspend

LOG = logging.getLogger(__name__)

RESTARTED = 'the dom0 daemon restarted while this job ran'


class JobJournal:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _path(self, job_id: str) -> str:
        if not job_id or '/' in job_id or job_id.startswith('.'):
            raise ValueError('bad job id %r' % job_id)
        return os.path.join(self.directory, job_id + '.json')

    def write(self, job_id: str, **fields) -> None:
        entry = self.read(job_id) or {}
        entry.update(fields)
        entry['id'] = job_id
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix='.tmp-')
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(entry, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self._path(job_id))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def read(self, job_id: str) -> Optional[Dict]:
        try:
            with open(self._path(job_id)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def remove(self, job_id: str) -> None:
        try:
            os.unlink(self._path(job_id))
        except OSError:
            pass

    def entries(self) -> Dict[str, Dict]:
        out = {}
        for name in sorted(os.listdir(self.directory)):
            if name.startswith('.tmp-'):
                # a write the crash cut short: the previous state stands
                os.unlink(os.path.join(self.directory, name))
                continue
            if name.endswith('.json'):
                entry = self.read(name[:-5])
                if entry is not None:
                    out[name[:-5]] = entry
        return out


def recover(journal: JobJournal, backend,
            resume_device: Optional[Callable[[int], None]] = None
            ) -> Dict[str, str]:
    """Settle every job that was running when the daemon stopped.

    :returns: job id -> the state it was given.
    """
    settled = {}
    for job_id, entry in journal.entries().items():
        if entry.get('state') != 'running':
            continue
        kind, phase = entry.get('kind'), entry.get('phase', '')
        domid = entry.get('domid')
        state, error = 'failed', RESTARTED
        if kind == 'send' and phase == 'go':
            state = 'unknown'
            error = (RESTARTED + ' after the switch-over was sent; the '
                     'source guest stays paused')
        elif kind == 'send' and domid is not None:
            undo_send(backend, int(domid), phase, resume_device)
        elif kind == 'receive' and phase in ('go', 'running'):
            state, error = _settle_receive(backend, domid, phase)
        elif kind == 'save' and domid is not None:
            _undo_save(backend, entry, resume_device)
        LOG.warning('job %s (%s of domain %s, phase %s) was running when '
                    'the daemon stopped: %s', job_id, kind, domid,
                    phase or '-', state)
        settled[job_id] = state
        if kind == 'save':
            # nobody asks after a save later: its caller got
            # DAEMON_UNAVAILABLE when the daemon died
            journal.remove(job_id)
        else:
            journal.write(job_id, state=state, error=error)
    return settled


def _settle_receive(backend, domid, phase: str):
    if phase == 'running':
        return 'running', None
    try:
        runs = domid is not None and \
            not backend.domain_info(int(domid)).paused
    except Exception as exc:        # the domain is gone or unreadable
        LOG.warning('receiving job: domain %s unreadable: %s', domid, exc)
        runs = False
    if runs:
        return 'running', None
    return 'unknown', (RESTARTED + ' after "go" arrived; the guest may '
                       'have started on this host')


def _undo_save(backend, entry: Dict,
               resume_device: Optional[Callable[[int], None]]) -> None:
    """A save_image cut short: the guest runs again, as after a save that
    failed in the daemon (migration_calls.save_image's rollback), and its
    state disk is gone; the partial image is the caller's to discard."""
    from nova_xen_stubdom.dom0 import device_state
    domid = int(entry['domid'])
    steps = []
    if entry.get('phase') == 'device-saving':
        steps.append(('clear the state disk', lambda: device_state.abandon(
            backend, domid, resume_device)))
    if not entry.get('paused_before'):
        # a guest with PV drivers suspended itself: resume it cooperatively
        steps.append(('unpause', lambda: guest_suspend.start_again(backend,
                                                                   domid)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:        # the domain may be gone: go on
            LOG.warning('recovering domain %d after a cut save: %s failed: '
                        '%s', domid, what, exc)


def undo_send(backend, domid: int, phase: str,
              resume_device: Optional[Callable[[int], None]]) -> None:
    """Give domain *domid* back the run state a send job that reached
    *phase* took from it: log-dirty off, the device model resumed once
    its state was saved, the guest unpaused once this job paused it."""
    steps = [('disable_logdirty', lambda: backend.disable_logdirty(domid))]
    if phase == 'device-saved' and resume_device is not None:
        steps.append(('resume the device model',
                      lambda: resume_device(domid)))
    if phase in ('pausing', 'device-saved'):
        steps.append(('unpause', lambda: backend.unpause(domid)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:        # the domain may be gone: go on
            LOG.warning('recovering domain %d: %s failed: %s', domid, what,
                        exc)
