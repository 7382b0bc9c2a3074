"""XAPI tasks behind every ``Async.*`` call.

A task runs in its own thread; ``status`` goes pending -> success | failure
| cancelled, ``result`` holds the XML-RPC encoding of the return value
(``<value>...</value>``, empty for void), ``error_info`` the
``ErrorDescription`` of a failure.  ``task.cancel`` sets ``cancelling``; a
message checks for it at its cancellation points (before it changes
anything) and ends ``cancelled`` with ``TASK_CANCELLED``.
"""
import logging
import threading
from typing import Callable

from nova_xen_stubdom.sim import api, wire
from nova_xen_stubdom.sim.errors import XapiError

LOG = logging.getLogger(__name__)


class Tasks:
    def __init__(self, pool):
        self.pool = pool
        self.lock = threading.Lock()
        self._cancel = set()
        self._threads = {}

    def create(self, name: str, host_ref: str, session: str) -> str:
        return self.pool.db.create('task', {
            'name_label': name, 'name_description': '',
            'status': 'pending', 'progress': 0.0, 'created': wire.now(),
            'resident_on': host_ref, 'allowed_operations': ['cancel'],
            'other_config': {}, 'session': session})

    def submit(self, ctx: 'api.Context', fn: Callable, args: list) -> str:
        task = self.create('Async.%s' % ctx.message.wire_name, ctx.host.ref,
                           ctx.session)
        ctx.task = task
        t = threading.Thread(target=self._run, args=(ctx, fn, args),
                             name='sim-task', daemon=True)
        with self.lock:
            self._threads[task] = t
        t.start()
        return task

    def _run(self, ctx, fn, args) -> None:
        task = ctx.task
        db = self.pool.db
        try:
            ctx.check_cancel()
            result = api.run_in_task(ctx, fn, args)
            fields = {'status': 'success', 'result': result, 'progress': 1.0}
        except XapiError as e:
            api._log_error(self.pool, 'Async.' + ctx.message.wire_name, e)
            status = 'cancelled' if e.code == 'TASK_CANCELLED' else 'failure'
            fields = {'status': status, 'error_info': e.description,
                      'progress': 1.0}
        except Exception as e:
            LOG.exception('task %s', task)
            fields = {'status': 'failure', 'progress': 1.0,
                      'error_info': ['INTERNAL_ERROR', '%s: %s' % (
                          type(e).__name__, e)]}
        fields['finished'] = wire.now()
        fields['allowed_operations'] = []
        with self.lock:
            self._cancel.discard(task)
            self._threads.pop(task, None)
        if db.exists('task', task):
            db.set('task', task, **fields)

    def cancel_requested(self, task: str) -> bool:
        with self.lock:
            return task in self._cancel

    def cancel(self, task: str) -> None:
        db = self.pool.db
        with db.lock:
            rec = db.get('task', task)
            if rec['status'] != 'pending':
                raise XapiError('OPERATION_NOT_ALLOWED',
                                'task is not pending (%s)' % rec['status'])
            with self.lock:
                self._cancel.add(task)
            db.set('task', task, status='cancelling')

    def progress(self, task: str, fraction: float) -> None:
        if self.pool.db.exists('task', task):
            self.pool.db.set('task', task, progress=float(fraction))

    def join_all(self, timeout: float = 5.0) -> None:
        with self.lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)
