"""Waiting for XAPI tasks (the ``Async.*`` messages).

Polls ``task.get_status`` with a growing interval (bounded), like Nova's
ironic driver polls with a ``FixedIntervalLoopingCall``; on timeout the task
is cancelled, and the task record is destroyed in every case so none leak
on the host.
"""
import time
import xmlrpc.client
from typing import TYPE_CHECKING

from oslo_log import log as logging

from nova_xen_stubdom.xapi import constants
from nova_xen_stubdom.xapi import errors

if TYPE_CHECKING:  # pragma: no cover
    from nova_xen_stubdom.xapi.client import XAPIClient

LOG = logging.getLogger(__name__)

#: first and largest poll intervals, seconds
POLL_MIN = 0.05
POLL_MAX = 0.5
#: seconds to wait for a cancelled task to settle before destroying it
CANCEL_GRACE = 10.0


def decode_result(result: str):
    """Decode ``task.result``: XAPI stores the value XML-RPC encoded
    (``<value>OpaqueRef:…</value>``); void tasks have an empty result."""
    if not result:
        return ''
    text = result.strip()
    if not text.startswith('<value'):
        return text
    try:
        (value,), _ = xmlrpc.client.loads(
            '<?xml version="1.0"?><methodResponse><params><param>%s'
            '</param></params></methodResponse>' % text)
    except Exception:   # not XML-RPC after all: hand the text back
        return text
    return value


def _poll_until_done(client: 'XAPIClient', task: str, deadline: float,
                     method: str) -> str:
    """Return the task's final status, or 'pending' at *deadline*."""
    interval = POLL_MIN
    while True:
        status = client.call('task.get_status', task)
        if status in constants.TASK_FINISHED_STATES:
            return status
        now = time.monotonic()
        if now >= deadline:
            return status
        LOG.debug('XAPI task %(task)s (%(method)s) is %(status)s',
                  {'task': task, 'method': method, 'status': status})
        time.sleep(min(interval, max(deadline - now, 0)))
        interval = min(interval * 2, POLL_MAX)


def _destroy(client: 'XAPIClient', task: str) -> None:
    try:
        client.call('task.destroy', task)
    except errors.HandleInvalid:
        pass
    except errors.XAPIException as exc:
        LOG.warning('Could not destroy XAPI task %(task)s: %(exc)s',
                    {'task': task, 'exc': exc})


def wait(client: 'XAPIClient', task: str, method: str, timeout: float):
    """Wait for *task* up to *timeout* seconds; see
    :meth:`XAPIClient.wait_task`."""
    try:
        status = _poll_until_done(client, task, time.monotonic() + timeout,
                                  method)
        if status == constants.TASK_SUCCESS:
            return decode_result(client.call('task.get_result', task))
        if status in (constants.TASK_FAILURE, constants.TASK_CANCELLED):
            info = client.call('task.get_error_info', task)
            if not info:
                info = ['TASK_CANCELLED', task] if \
                    status == constants.TASK_CANCELLED else \
                    ['INTERNAL_ERROR', 'task %s failed without error_info'
                     % task]
            raise errors.from_failure(info, method=method)
        # Still pending or cancelling: give up on it.
        LOG.warning('XAPI task %(task)s (%(method)s) did not finish within '
                    '%(timeout)ss; cancelling it',
                    {'task': task, 'method': method, 'timeout': timeout})
        try:
            client.call('task.cancel', task)
        except errors.XAPIError as exc:
            # e.g. OPERATION_NOT_ALLOWED: the operation is not cancellable.
            LOG.warning('XAPI refused to cancel task %(task)s: %(exc)s',
                        {'task': task, 'exc': exc})
        status = _poll_until_done(client, task,
                                  time.monotonic() + CANCEL_GRACE, method)
        if status == constants.TASK_SUCCESS:
            # It finished while we were cancelling: its effect happened.
            return decode_result(client.call('task.get_result', task))
        raise errors.XAPITaskTimeout(task, method, timeout)
    finally:
        _destroy(client, task)
