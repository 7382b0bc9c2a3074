"""Errors of the dom0 agent: one base with a ``msg_fmt`` (os-vif style).

Every failure an agent entry point reports is an :class:`AgentError`; its
``code`` travels to the caller as the status of XAPI's
``XENAPI_PLUGIN_FAILURE`` so the driver can tell failures apart without
parsing messages.
"""


class AgentError(Exception):
    """Base of every agent failure."""

    msg_fmt = 'dom0 agent failure'
    code = 'AGENT_ERROR'

    def __init__(self, message: str = None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError):
                # a wrong kwarg must not hide the original failure
                message = '%s (%s)' % (self.msg_fmt, kwargs)
        super().__init__(message)


class InvalidArgument(AgentError):
    msg_fmt = 'invalid argument %(name)s=%(value)r: %(reason)s'
    code = 'INVALID_ARGUMENT'


class UnknownPluginFunction(AgentError):
    msg_fmt = 'plugin %(plugin)s has no function %(fn)s'
    code = 'UNKNOWN_FUNCTION'


class DomainNotFound(AgentError):
    msg_fmt = 'no domain %(domid)s on this host'
    code = 'DOMAIN_NOT_FOUND'


class StubdomLinkError(AgentError):
    msg_fmt = 'cannot link stub domain %(stub)s to its guest: %(reason)s'
    code = 'STUBDOM_LINK_FAILED'


class DeviceModelRefused(AgentError):
    msg_fmt = ('refusing to start a device model in dom0 for domain '
               '%(domid)s (VM %(vm_uuid)s): it has no linked stub domain and '
               'allow_dom0_device_model is off')
    code = 'DOM0_DEVICE_MODEL_REFUSED'


class XenUnavailable(AgentError):
    """The ``xen`` backend was asked for outside a Xen dom0."""
    msg_fmt = ('the xen backend only works in a Xen dom0 (with Xen 4.17 '
               'libraries and %(privcmd)s): %(reason)s')
    code = 'XEN_UNAVAILABLE'


class HypervisorCallFailed(AgentError):
    """A Xen library call failed; names the call and its errno."""
    msg_fmt = '%(call)s failed: errno %(errno)d (%(strerror)s)%(detail)s'
    code = 'HYPERVISOR_CALL_FAILED'
