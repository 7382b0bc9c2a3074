"""Stopping a guest for the switch-over, and starting it again, as libxl does.

libxl (tools/libs/light/libxl_dom_suspend.c,
``domain_suspend_callback_common``) treats an HVM guest by whether it has PV
drivers (``HVM_PARAM_CALLBACK_IRQ`` non-zero):

* **without**: nothing in the guest needs to take part; the domain is
  stopped from outside (libxl ``xc_domain_shutdown(SHUTDOWN_suspend)``; we
  pause it, which stops it the same way for the hypervisor and keeps the
  HVM context exact) and started again by unpausing;
* **with**: the guest is asked through xenstore -- ``control/shutdown`` =
  ``suspend`` -- and must acknowledge (the node becomes ``""`` or goes) within
  60 s, else the request is cancelled (rewritten to ``""`` unless the guest
  acknowledged at the last moment) and the suspend fails with "guest didn't
  acknowledge suspend"; then it must shut down with reason ``suspend``
  within 60 s (another reason, or none, fails).  Its PV drivers have then
  let go of their backends; a failed migration gives it back with a
  cooperative resume (``libxl__domain_resume`` with ``suspend_cancel``:
  ``xc_domain_resume`` fast, ``xs_resume_domain``), pausing it would leave
  its drivers frozen.  xenopsd does the same in ``Domain.suspend`` /
  ``shutdown_wait_for_ack`` (ocaml/xenopsd/xc/domain.ml).

Only HVM guests are moved by this driver; a PV guest cannot be paused
directly this way and is refused.

**Under xenopsd the handshake is refused.**  Every guest this daemon moves
is a XAPI VM, and xenopsd reacts to a domain of its own reaching
``shutdown(suspend)`` outside its operations by shutting the VM down at
once -- pause, device model destroyed, devices unplugged, domain destroyed
-- and XAPI records it Halted (xen-api ``ocaml/xenopsd/lib/xenops_server.ml``
``VM_check_state``: ``Needs_suspend`` -> ``[Vm.Shutdown]``, "VM %s has
unexpectedly suspended"; no setting changes it).  The last round and the
cooperative resume would race that teardown.  So :func:`stop` refuses a
guest with PV drivers unless the caller says no toolstack manages the
domain (``toolstack_managed=False``: libxl's case, kept and tested for
domains built outside XAPI); the driver refuses the same guests before
anything starts (``driver/pv_guests.py``).
"""
import logging
import threading
import time
from typing import Callable, Optional

from nova_xen_stubdom.dom0 import hypervisor as hv

LOG = logging.getLogger(__name__)

#: xen/include/public/hvm/params.h
HVM_PARAM_CALLBACK_IRQ = 0
#: libxl: pvcontrol.timeout_ms and the wait-for-suspend timer
ACK_TIMEOUT = 60.0
SUSPEND_TIMEOUT = 60.0
#: how the guest was stopped
PAUSED, SUSPENDED = 'paused', 'suspended'
_POLL = 0.01


class SuspendError(Exception):
    """The guest could not be stopped; it runs as before."""


def has_pv_drivers(backend: hv.HypervisorBackend, domid: int) -> bool:
    return bool(backend.get_hvm_param(domid, HVM_PARAM_CALLBACK_IRQ))


def _control(domid: int) -> str:
    return '/local/domain/%d/control/shutdown' % domid


def _wait(what: Callable[[], bool], timeout: float,
          clock: Callable[[], float], pause: Callable[[float], None]) -> bool:
    deadline = clock() + timeout
    while True:
        if what():
            return True
        if clock() >= deadline:
            return what()
        pause(_POLL)


def stop(backend: hv.HypervisorBackend, domid: int, *,
         ack_timeout: Optional[float] = None,
         suspend_timeout: Optional[float] = None,
         clock: Callable[[], float] = time.monotonic,
         pause: Callable[[float], None] = threading.Event().wait,
         toolstack_managed: bool = True) -> str:
    """Stop the running guest *domid*; returns how (:data:`PAUSED` or
    :data:`SUSPENDED`); :func:`start_again` undoes it.

    :raises SuspendError: not an HVM guest; PV drivers loaded in a domain
        a toolstack manages (*toolstack_managed*: xenopsd would halt it);
        or its PV drivers did not acknowledge or did not suspend in time
        (the request is withdrawn).  The guest keeps running in each case.
    """
    ack_timeout = ACK_TIMEOUT if ack_timeout is None else ack_timeout
    suspend_timeout = SUSPEND_TIMEOUT if suspend_timeout is None \
        else suspend_timeout
    info = backend.domain_info(domid)
    if not info.hvm:
        raise SuspendError('domain %d is not an HVM guest: only HVM guests '
                           'are stopped by pausing or PV suspend here'
                           % domid)
    if not has_pv_drivers(backend, domid):
        backend.pause(domid)
        return PAUSED
    if toolstack_managed:
        raise SuspendError(
            'domain %d has PV drivers: it could only be stopped through the '
            'control/shutdown suspend handshake, and xenopsd halts a VM of '
            'its own that suspends outside its operations (VM_check_state, '
            'Needs_suspend -> Shutdown); the guest keeps running -- use '
            'cold migration' % domid)
    path = _control(domid)

    def acked() -> bool:
        return not backend.xs_read(path)

    LOG.info('domain %d has PV drivers: asking it to suspend', domid)
    backend.xs_write(path, 'suspend')
    if not _wait(acked, ack_timeout, clock, pause):
        # withdraw, unless the guest acknowledged at the last moment
        # (libxl does this read-and-clear in one xenstore transaction)
        if not acked():
            backend.xs_write(path, '')
            raise SuspendError(
                'domain %d did not acknowledge the suspend request in %g s '
                '(control/shutdown); request cancelled, the guest keeps '
                'running' % (domid, ack_timeout))

    def suspended() -> bool:
        return backend.domain_info(domid).shutdown is not None

    if not _wait(suspended, suspend_timeout, clock, pause):
        raise SuspendError('domain %d acknowledged the suspend request but '
                           'did not suspend in %g s' % (domid,
                                                        suspend_timeout))
    reason = backend.domain_info(domid).shutdown
    if reason != 'suspend':
        raise SuspendError('domain %d shut down (%s) instead of suspending'
                           % (domid, reason))
    return SUSPENDED


def start_again(backend: hv.HypervisorBackend, domid: int) -> None:
    """Undo :func:`stop`, by what the domain is now (so that a restarted
    daemon's recovery does it right too): a guest that suspended itself is
    resumed cooperatively, any other unpaused."""
    if backend.domain_info(domid).shutdown == 'suspend':
        backend.resume_domain(domid)
    else:
        backend.unpause(domid)
