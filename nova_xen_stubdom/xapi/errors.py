"""One exception hierarchy for everything the XAPI client layer raises.

Server-side failures (XAPI's ``ErrorDescription``) become :class:`XAPIError`
or the subclass registered for their code, so callers can catch either the
specific class or test ``err.code``. Client-side failures (timeouts, network,
use after close) are siblings under :class:`XAPIException`.
"""
from typing import Optional, Sequence


class XAPIException(Exception):
    """Base of every exception of the client layer."""


class XAPIError(XAPIException):
    """XAPI answered ``{"Status": "Failure", "ErrorDescription": [...]}``.

    :ivar code: the error's wire name (``ErrorDescription[0]``).
    :ivar params: the remaining items, as XAPI sent them (strings).
    :ivar method: the XAPI message that failed, when known.
    """

    #: set by subclasses; the code they stand for.
    CODE: Optional[str] = None

    def __init__(self, code: str, params: Sequence = (),
                 method: Optional[str] = None) -> None:
        self.code = code
        self.params = list(params)
        self.method = method
        super().__init__(code, self.params)

    def matches(self, *codes: str) -> bool:
        """True if this error's code is one of *codes*."""
        return self.code in codes

    def param(self, index: int, default=None):
        """Parameter *index*, or *default* when XAPI sent fewer."""
        if index < len(self.params):
            return self.params[index]
        return default

    def __str__(self) -> str:
        where = ' (from %s)' % self.method if self.method else ''
        if self.params:
            return '%s: %s%s' % (self.code, ', '.join(map(str, self.params)),
                                 where)
        return self.code + where

    def __reduce__(self):
        return (from_failure, ([self.code] + self.params, self.method))


_BY_CODE: dict = {}


def _register(cls):
    _BY_CODE[cls.CODE] = cls
    return cls


@_register
class SessionInvalid(XAPIError):
    CODE = 'SESSION_INVALID'


@_register
class SessionAuthenticationFailed(XAPIError):
    CODE = 'SESSION_AUTHENTICATION_FAILED'


@_register
class HostIsSlave(XAPIError):
    CODE = 'HOST_IS_SLAVE'

    @property
    def master_address(self) -> Optional[str]:
        """The pool master's address XAPI named."""
        return self.param(0)


@_register
class HandleInvalid(XAPIError):
    CODE = 'HANDLE_INVALID'

    @property
    def cls(self) -> Optional[str]:
        return self.param(0)

    @property
    def ref(self) -> Optional[str]:
        return self.param(1)


@_register
class UuidInvalid(XAPIError):
    CODE = 'UUID_INVALID'


@_register
class VMBadPowerState(XAPIError):
    CODE = 'VM_BAD_POWER_STATE'

    @property
    def vm(self) -> Optional[str]:
        return self.param(0)

    @property
    def expected(self) -> Optional[str]:
        return self.param(1)

    @property
    def actual(self) -> Optional[str]:
        return self.param(2)


@_register
class OtherOperationInProgress(XAPIError):
    CODE = 'OTHER_OPERATION_IN_PROGRESS'


@_register
class HostNotEnoughFreeMemory(XAPIError):
    CODE = 'HOST_NOT_ENOUGH_FREE_MEMORY'


@_register
class RBACPermissionDenied(XAPIError):
    CODE = 'RBAC_PERMISSION_DENIED'


@_register
class MessageMethodUnknown(XAPIError):
    CODE = 'MESSAGE_METHOD_UNKNOWN'


@_register
class MessageParameterCountMismatch(XAPIError):
    CODE = 'MESSAGE_PARAMETER_COUNT_MISMATCH'


@_register
class FieldTypeError(XAPIError):
    CODE = 'FIELD_TYPE_ERROR'


@_register
class NoHostsAvailable(XAPIError):
    CODE = 'NO_HOSTS_AVAILABLE'


@_register
class TaskCancelled(XAPIError):
    CODE = 'TASK_CANCELLED'


@_register
class EventsLost(XAPIError):
    CODE = 'EVENTS_LOST'


@_register
class MapDuplicateKey(XAPIError):
    CODE = 'MAP_DUPLICATE_KEY'


def from_failure(description: Sequence,
                 method: Optional[str] = None) -> XAPIError:
    """Build the exception for an XAPI ``ErrorDescription`` list."""
    description = list(description or ['INTERNAL_ERROR'])
    code = str(description[0])
    cls = _BY_CODE.get(code, XAPIError)
    return cls(code, description[1:], method=method)


def error_class(code: str) -> type:
    """The class :func:`from_failure` uses for *code*."""
    return _BY_CODE.get(code, XAPIError)


class XAPITimeout(XAPIException):
    """A wait (task, cache condition, session checkout) ran out of time."""


class XAPITaskTimeout(XAPITimeout):
    """An ``Async.*`` task did not finish in time; it was cancelled.

    :ivar task: the task reference.
    :ivar method: the asynchronous message.
    :ivar timeout: the limit, in seconds.
    """

    def __init__(self, task: str, method: str, timeout: float) -> None:
        self.task = task
        self.method = method
        self.timeout = timeout
        super().__init__('XAPI task %s (%s) did not finish within %ss; '
                         'cancelled' % (task, method, timeout))


class XAPIConnectionError(XAPIException):
    """The XAPI endpoint could not be reached or dropped the connection
    (after the configured retries)."""

    def __init__(self, url: str, method: str, reason: BaseException) -> None:
        self.url = url
        self.method = method
        self.reason = reason
        super().__init__('XAPI %s unreachable during %s: %s'
                         % (url, method, reason))


class XAPIProtocolError(XAPIException):
    """The server answered something that is not XAPI's result envelope."""


class XAPIClosed(XAPIException):
    """The client was closed; no further calls are possible."""
