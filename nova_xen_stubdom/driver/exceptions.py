"""One exception map: XAPI and agent failures become Nova exceptions.

Applied once, by :func:`translating` on the driver façade (compute-hyperv's
habit), so ops modules raise what the client layer raised and Nova sees its
own exception types.  The original exception is chained (``raise ... from``)
and its traceback is kept, so the frame that failed is still in the log.
"""
import functools
import inspect
import sys

from nova import exception
from nova.i18n import _

from nova_xen_stubdom.xapi import errors as xapi_errors


class XenStubdomDriverError(exception.NovaException):
    msg_fmt = _('Xen stub-domain driver: %(reason)s')


class StubdomStartFailed(XenStubdomDriverError):
    msg_fmt = _('the device-model stub domain of instance %(uuid)s did not '
                'start: %(reason)s')


class SwitchoverUnknown(XenStubdomDriverError):
    """A live migration's "go" went unconfirmed and the destination could
    not tell whether the guest runs there: both copies are kept."""
    msg_fmt = _('live migration switch-over outcome unknown: %(reason)s')


class AgentCallFailed(XenStubdomDriverError):
    msg_fmt = _('dom0 agent %(fn)s failed on host %(host)s: %(reason)s')


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def translate(exc: BaseException) -> BaseException:
    """The Nova exception for *exc* (*exc* itself if it already is one)."""
    if isinstance(exc, (exception.NovaException, NotImplementedError)):
        return exc
    if isinstance(exc, xapi_errors.HostNotEnoughFreeMemory):
        return exception.InsufficientFreeMemory(uuid='?')
    if isinstance(exc, xapi_errors.XAPITaskTimeout):
        return XenStubdomDriverError(
            reason=_('XAPI task timed out: %s') % _reason(exc))
    if isinstance(exc, xapi_errors.XAPIConnectionError):
        return exception.HypervisorUnavailable(host=_reason(exc))
    if isinstance(exc, xapi_errors.XAPIError):
        return XenStubdomDriverError(
            reason=_('XAPI %(code)s %(params)s') % {
                'code': exc.code, 'params': list(exc.params)})
    if isinstance(exc, xapi_errors.XAPIException):
        return XenStubdomDriverError(reason=_reason(exc))
    return exc


def _wrap(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            new = translate(exc)
            if new is exc:
                raise
            # keep the failing frame: the traceback of the XAPI error
            raise new.with_traceback(sys.exc_info()[2]) from exc
    return wrapper


def translating(cls):
    """Class decorator: translate exceptions of every public method."""
    for name, member in list(vars(cls).items()):
        if name.startswith('_') or not inspect.isfunction(member):
            continue
        setattr(cls, name, _wrap(member))
    return cls
