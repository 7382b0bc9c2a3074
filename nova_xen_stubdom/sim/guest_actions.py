"""A guest that shuts itself down, and what xenopsd then does with its VM.

The guest makes ``SCHEDOP_shutdown`` with a reason (xen/include/public/
sched.h ``SHUTDOWN_*``); the domain stays, shut down, until the toolstack
acts.  xenopsd's ``VM_check_state`` (xen-api
``ocaml/xenopsd/lib/xenops_server.ml``) takes the VM's action list for the
reason -- ``Needs_reboot`` -> ``on_reboot``, ``Needs_poweroff`` ->
``on_shutdown``, ``Needs_crashdump`` -> ``on_crash`` (with ``Start`` turned
into ``Shutdown`` when the VM crashed less than 120 s after it started),
``Needs_suspend`` -> ``Shutdown`` -- which XAPI built from the VM's
``actions_after_*`` (``ocaml/xapi/xapi_xenops.ml`` ``of_vm``
``on_action_behaviour``: ``destroy`` -> ``[Shutdown]``, ``restart`` /
``rename_restart`` -> ``[Start]``, ``coredump_and_*`` -> ``[Coredump;
...]``, ``preserve`` -> ``[Pause]``, ``soft_reboot`` -> ``[Softreboot]``).
``Shutdown`` is xenopsd's ``VM_shutdown`` (device model destroyed while the
domain exists, then devices, then the domain): the VM goes Halted and XAPI
records nothing about why.  ``Start`` is ``VM_reboot``: a new domain (new
domid), the VM stays Running and ``VM_metrics.start_time`` moves.

A domain that shuts down or disappears outside any operation gets the same
treatment from the simulator's xenopsd event side (``sim/xenopsd_events.py``).

The simulator does not model xenopsd's 15 s delay for a VM that reboots
less than ``minimum_reboot_delay`` after it started, nor core dumps.
"""
import time

from nova_xen_stubdom.datamodel.schema import load
from nova_xen_stubdom.sim import api, vm as vmlib

#: SCHEDOP_shutdown reasons a simulated guest can give
REASONS = ('poweroff', 'reboot', 'crash', 'suspend')

_BEHAVIOUR = {
    'destroy': ['shutdown'], 'coredump_and_destroy': ['shutdown'],
    'restart': ['start'], 'rename_restart': ['start'],
    'coredump_and_restart': ['start'], 'preserve': ['pause'],
    'soft_reboot': ['start'],
}

#: xenops_server.ml VM_check_state: a crash this soon after start halts
CRASH_TOO_QUICK_S = 120.0


def actions(rec: dict, reason: str, run_time: float) -> list:
    """xenopsd's action list for a guest that shut down with *reason*."""
    if reason == 'reboot':
        out = _BEHAVIOUR.get(rec['actions_after_reboot'], ['shutdown'])
    elif reason == 'poweroff':
        out = _BEHAVIOUR.get(rec['actions_after_shutdown'], ['shutdown'])
    elif reason == 'crash':
        out = _BEHAVIOUR.get(rec['actions_after_crash'], ['shutdown'])
        if run_time < CRASH_TOO_QUICK_S:
            out = ['shutdown' if a == 'start' else a for a in out]
    else:
        out = ['shutdown']
    return list(out)


def guest_shutdown(host, domid: int, reason: str) -> list:
    """Domain *domid* on *host* shuts itself down with *reason*; xenopsd
    acts on its VM.  Returns the actions taken."""
    if reason not in REASONS:
        raise ValueError('reason must be one of %s, not %r'
                         % (', '.join(REASONS), reason))
    hv = host.hypervisor
    dom = hv.domain(domid)              # KeyError: no such domain
    pool = host.pool
    refs = pool.db.find('VM', uuid=dom.vm_uuid)
    if not refs:
        raise ValueError('domain %d runs no VM of this pool' % domid)
    vm = refs[0]
    rec = pool.db.snapshot('VM', vm)
    todo = actions(rec, reason, time.time() - dom.created)
    ctx = api.Context(pool, host, load().message('VM.hard_shutdown'))
    with vmlib.operation(ctx, vm, 'hard_shutdown'):
        # inside the operation: the event this raises finds it running and
        # leaves the VM to it (sim/xenopsd_events.py)
        hv.domain_shutdown(domid, reason)
        perform(ctx, vm, host, todo)
    return todo


def perform(ctx, vm: str, host, todo: list) -> None:
    """Carry out xenopsd's actions for *vm* (``VM_check_state``'s
    ``operations_of_action``), inside a lifecycle operation on it."""
    for action in todo:
        if action == 'shutdown':
            # VM_shutdown's atomics begin with Best_effort (VM_pause id)
            domid = ctx.db.get('VM', vm)['domid']
            if domid in host.hypervisor.domains:
                host.hypervisor.pause(domid)
            vmlib.teardown(ctx, vm)
        elif action == 'start':
            vmlib.teardown(ctx, vm)
            vmlib.boot(ctx, vm, host, False, reason='reboot')
        elif action == 'pause':
            ctx.db.set('VM', vm, power_state='Paused')
