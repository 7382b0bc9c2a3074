"""xenopsd's reaction to a managed domain changing outside its operations.

What real xenopsd does (xapi-project/xen-api, tag v26.4.0, commit ba43e00d;
the same logic at v24.19.2, the XAPI 24.x line XCP-ng 8.3 ships; see
doc/source/xapi-behaviour.rst, "Domains changed outside xenopsd"):

* ``ocaml/libs/ezxenstore/watch/ez_xenstore_watch.ml``
  ``watch_xenstore``: on ``@introduceDomain``/``@releaseDomain``,
  ``look_for_different_domains`` diffs the domain list with
  ``domain_looks_different`` -- a domain that appeared or disappeared, or
  whose ``shutdown`` flag or ``shutdown_code`` changed.  The ``paused`` flag
  is not compared: a domain paused by someone else raises no event.
* ``ocaml/xenopsd/xc/xenops_server_xen.ml`` ``unmanaged_domain``: a domain
  whose handle (the VM uuid) xenopsd's DB does not hold is ignored;
  ``found_running_domain`` queues ``Dynamic.Vm`` for the others.
* ``ocaml/xenopsd/lib/xenops_server.ml`` ``internal_event_thread_body``
  turns it into ``VM_check_state`` on the VM's queue (behind whatever
  operation runs there), and ``perform_exn`` ``VM_check_state`` asks
  ``get_domain_action_request`` (xenops_server_xen.ml): no domain ->
  ``Needs_poweroff`` (the VM's ``on_shutdown``, from
  ``actions_after_shutdown``); shut down with code 2 -> ``Needs_suspend``,
  which is hard-coded to ``[Shutdown]`` ("VM %s has unexpectedly
  suspended") whatever the VM's actions say.  ``Shutdown`` is
  ``VM_shutdown``: pause, destroy the device model, unplug the devices,
  destroy the domain -- XAPI then records the VM Halted
  (``ocaml/xapi/xapi_xenops.ml`` ``update_vm``).

The model: one worker per host (xenopsd's event thread; its reaction is
asynchronous, as on a real host) takes every ``shutdown`` or ``destroy`` of
a domain that runs a VM of this pool resident here, and when no lifecycle
operation runs on that VM (XAPI's own operations handle what they cause;
xenopsd's queue would run the check after them and find nothing to do)
applies :func:`guest_actions.actions`.  Domains of no VM (created by a test
or the benchmark directly) are ignored, as xenopsd ignores unmanaged ones.
Not modelled: xenopsd's 15 s delay before a restart, and XAPI's refresh of
``power_state`` to ``Paused`` at the next event of a domain paused from
outside (nothing the driver does depends on it).
"""
import logging
import queue
import threading
import time
from typing import List, Optional, Tuple

LOG = logging.getLogger(__name__)

#: hypervisor events xenopsd's watch reacts to (Hypervisor.listeners)
EVENTS = ('shutdown', 'destroy')


class Xenopsd:
    """The per-host event side of xenopsd: ``VM_check_state``."""

    def __init__(self, host) -> None:
        self.host = host
        self._queue: 'queue.Queue[Optional[Tuple[str, int]]]' = queue.Queue()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        #: (vm uuid, domid, reason, actions) of every check that acted
        self.acted: List[tuple] = []

    # -- the watch ------------------------------------------------------------
    def on_domain(self, dom, event: str) -> None:
        """Hypervisor listener: queue a check for a managed domain."""
        if event not in EVENTS or dom.domid == 0 or self.host.down:
            return
        with self._lock:
            if self._stopped:
                return
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True,
                    name='sim-xenopsd-%s' % self.host.uuid[:8])
                self._thread.start()
        self._queue.put((dom.vm_uuid, dom.domid))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.check_state(*item)
            except Exception:
                LOG.exception('sim xenopsd: VM_check_state for %s failed',
                              item[0])
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued check ran (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=5)

    # -- VM_check_state -------------------------------------------------------
    def check_state(self, vm_uuid: str, domid: int) -> Optional[list]:
        """What xenopsd does once the event for *domid* reaches the VM's
        queue; returns the actions taken (None: nothing to do)."""
        from nova_xen_stubdom.datamodel.schema import load
        from nova_xen_stubdom.sim import api, guest_actions
        from nova_xen_stubdom.sim import vm as vmlib
        from nova_xen_stubdom.sim.errors import XapiError
        host = self.host
        pool = host.pool
        if host.down:
            return None
        refs = pool.db.find('VM', uuid=vm_uuid) if vm_uuid else []
        if not refs:
            return None         # unmanaged_domain: not a VM of this pool
        vm = refs[0]
        ctx = api.Context(pool, host, load().message('VM.hard_shutdown'))
        try:
            with vmlib.operation(ctx, vm, 'hard_shutdown'):
                rec = pool.db.snapshot('VM', vm)
                # xenopsd holds only VMs running on this host; a domain
                # that is no longer the VM's is old news
                if rec['resident_on'] != host.ref or rec['domid'] != domid \
                        or rec['power_state'] not in ('Running', 'Paused'):
                    return None
                dom = host.hypervisor.domains.get(domid)
                if dom is None:
                    reason = 'poweroff'             # Needs_poweroff
                elif dom.shutdown_reason:
                    reason = dom.shutdown_reason
                else:
                    return None     # "not requesting any attention"
                if reason == 'suspend':
                    LOG.warning('sim xenopsd: VM %s has unexpectedly '
                                'suspended', vm_uuid)
                created = dom.created if dom is not None else 0.0
                todo = guest_actions.actions(rec, reason,
                                             time.time() - created)
                guest_actions.perform(ctx, vm, host, todo)
        except XapiError as e:
            if e.code == 'OTHER_OPERATION_IN_PROGRESS':
                return None     # XAPI's own operation deals with the VM
            raise
        self.acted.append((vm_uuid, domid, reason, todo))
        LOG.info('sim xenopsd: VM %s domain %d (%s): %s', vm_uuid, domid,
                 'gone' if reason == 'poweroff' and dom is None else reason,
                 todo)
        return todo
