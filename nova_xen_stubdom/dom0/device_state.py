"""QEMU's device state in and out of a stub domain, through a disk.

For a save, dom0 creates a small disk, attaches it to the stub domain
(dom0's blkback; removed again afterwards), writes its name to
``D/state-disk`` and ``save`` to ``D/command`` (``D`` =
``/local/domain/<stub>/device-model/<guest>``).  QEMU stops emulating, writes
its state in the state-disk format (:mod:`nova_xen_stubdom.stubdom.statedisk`:
magic, length, sha256) and sets ``D/state = saved``.  ``continue`` resumes
it after a failed save; ``restore`` loads a state from such a disk.  The
guest's memory never passes through the stub domain.
"""
import glob
import logging
import os
import tempfile
import time
from typing import Callable, Optional

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import statedisk

LOG = logging.getLogger(__name__)

#: frontend name of the state disk inside the stub domain
STATE_DISK_DEVID = 'xvdz'
#: the state disk's dom0 file: <tmpdir>/nxs-state-<stub domid>-XXXX.img
_STATE_FILE_PREFIX = 'nxs-state-%d-'


class DeviceStateError(errors.AgentError):
    msg_fmt = ('device state of domain %(guest)s (stub domain %(stub)s): '
               '%(reason)s')
    code = 'DEVICE_STATE_FAILED'


def dm_path(stub_domid: int, guest_domid: int) -> str:
    return '/local/domain/%d/device-model/%d' % (stub_domid, guest_domid)


def stubdom_of(backend, guest_domid: int) -> int:
    """The stub domain running *guest_domid*'s device model."""
    val = backend.xs_read('/local/domain/%d/image/device-model-domid'
                          % guest_domid)
    if not val:
        raise DeviceStateError(guest=guest_domid, stub='?',
                               reason='the guest has no stub domain')
    return int(val)


class _StateDisk:
    """A dom0 file attached to the stub domain for one save or restore."""

    def __init__(self, backend, stub_domid: int, size: int,
                 content: bytes = b'') -> None:
        self.backend = backend
        self.stub = stub_domid
        fd, self.path = tempfile.mkstemp(
            prefix=_STATE_FILE_PREFIX % stub_domid, suffix='.img')
        with os.fdopen(fd, 'r+b') as f:
            # (seek: eventlet's green files leave the position at the end
            # after a truncate)
            f.truncate(max(size, len(content)))
            f.seek(0)
            f.write(content)
        self.attached = False

    def __enter__(self):
        try:
            self.backend.attach_disk(self.stub, self.path, STATE_DISK_DEVID)
        except Exception:
            os.unlink(self.path)
            raise
        self.attached = True
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.backend.detach_disk(self.stub, STATE_DISK_DEVID)
        except Exception:
            LOG.exception('could not detach the state disk from stub domain '
                          '%d', self.stub)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _command(backend, stub: int, guest: int, cmd: str, want: str,
             timeout: float) -> None:
    d = dm_path(stub, guest)
    backend.xs_rm(d + '/error')
    backend.xs_write(d + '/command', cmd)
    deadline = time.monotonic() + timeout
    while True:
        state = backend.xs_read(d + '/state')
        pending = backend.xs_read(d + '/command')
        if state == want and not pending:
            return
        if state == 'error':
            raise DeviceStateError(
                guest=guest, stub=stub,
                reason='%s failed: %s' % (cmd, backend.xs_read(d + '/error')
                                          or 'no reason given'))
        if time.monotonic() > deadline:
            backend.xs_rm(d + '/command')
            raise DeviceStateError(
                guest=guest, stub=stub,
                reason='no answer to %r within %.0f s (state %r)'
                % (cmd, timeout, state))
        time.sleep(0.002)


def save(backend, guest_domid: int, disk_bytes: int,
         timeout: float) -> bytes:
    """Stop the guest's QEMU and return its device state."""
    stub = stubdom_of(backend, guest_domid)
    with _StateDisk(backend, stub, disk_bytes) as disk:
        d = dm_path(stub, guest_domid)
        backend.xs_write(d + '/state-disk', STATE_DISK_DEVID)
        try:
            _command(backend, stub, guest_domid, 'save', 'saved', timeout)
            with open(disk.path, 'rb') as f:
                try:
                    return statedisk.read_state(f)
                except statedisk.StateDiskError as e:
                    raise DeviceStateError(guest=guest_domid, stub=stub,
                                           reason=str(e))
        finally:
            backend.xs_rm(d + '/state-disk')


def abandon(backend, guest_domid: int,
            resume_device: Optional[Callable[[int], None]] = None) -> None:
    """Clear what a save cut short by the daemon's death left behind.

    Run by a restarted daemon (:func:`job_journal.recover`) before it
    serves anything, so no other save of this host is in flight: the
    pending command and state-disk nodes go, the state disk is detached
    (its loop device with it) and its dom0 file removed; a QEMU that had
    already saved its state (``saved``) is told to continue.
    """
    stub = stubdom_of(backend, guest_domid)
    d = dm_path(stub, guest_domid)
    backend.xs_rm(d + '/command')
    backend.xs_rm(d + '/state-disk')
    try:
        backend.detach_disk(stub, STATE_DISK_DEVID)
    except errors.InvalidArgument:
        pass                    # died before the disk was attached
    for path in glob.glob(os.path.join(tempfile.gettempdir(),
                                       _STATE_FILE_PREFIX % stub + '*')):
        os.unlink(path)
    if backend.xs_read(d + '/state') == 'saved' and resume_device:
        resume_device(guest_domid)


def resume(backend, guest_domid: int, timeout: float) -> None:
    """QEMU runs again after a save that was not followed by a teardown."""
    stub = stubdom_of(backend, guest_domid)
    _command(backend, stub, guest_domid, 'continue', 'running', timeout)


def restore(backend, guest_domid: int, state: bytes, timeout: float) -> None:
    """Load *state* into the QEMU of the guest's (new) stub domain."""
    stub = stubdom_of(backend, guest_domid)
    image = statedisk.build_image(state)
    with _StateDisk(backend, stub, len(image), image):
        d = dm_path(stub, guest_domid)
        backend.xs_write(d + '/state-disk', STATE_DISK_DEVID)
        try:
            _command(backend, stub, guest_domid, 'restore', 'running',
                     timeout)
        finally:
            backend.xs_rm(d + '/state-disk')
