"""``host.call_plugin``: dispatch to this project's dom0 plugin.

The simulator runs the real dom0 agent in process, one per host:
``nova_xen_stubdom.dom0.host.HostAgent(backend=SimBackend(host), ...)`` and
``nova_xen_stubdom.dom0.registry.call(agent, plugin, fn, args) -> str``.  Both
belong to the agent; tests may replace either per host
(``HostRuntime.agent_factory`` / ``HostRuntime.plugin_dispatch``).  Plugin
errors become ``XENAPI_PLUGIN_FAILURE [status, stdout, stderr]`` as XAPI
defines it: status = the agent error's ``code`` (else the exception type),
stdout empty, stderr = the message.

With ``HostRuntime.plugin_process = True`` (the functional tier's
default) or ``NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=1`` a call instead runs
the real plugin launcher as a fresh process that forwards to the host's
dom0 daemon, itself a process of its own (:mod:`.dom0_process`), exactly
as XAPI runs host plugins.
"""
import atexit
import importlib
import logging
import os
import threading

from nova_xen_stubdom.sim import pki
from nova_xen_stubdom.sim.errors import XapiError

LOG = logging.getLogger(__name__)

#: this project's plugin (``/etc/xapi.d/plugins/nova_xen_stubdom``)
PLUGIN = 'nova_xen_stubdom'


def agent_settings(host) -> dict:
    """agent.conf of a simulated host's dom0: its ``HostConfig.allow_dom0_dm``
    is its allow_dom0_device_model, its migration TLS certificate comes
    from this simulator's CA (one per cloud, :mod:`.pki`), and as every
    simulated host lives on this machine (``127.0.0.<n>``) it accepts
    loopback listen addresses."""
    settings = {'migration_allow_loopback': True,
                'allow_dom0_device_model': bool(host.config.allow_dom0_dm)}
    if host.config.stubdom_manifest:
        settings['stubdom_manifest'] = host.config.stubdom_manifest
    try:
        ca = cloud_pki()
        settings.update(migration_tls_cert=ca.host(host.uuid),
                        migration_tls_ca=ca.ca)
    except (pki.PkiUnavailable, OSError, RuntimeError) as e:
        # migrations then fail naming the missing certificate
        LOG.warning('simulated host %s has no migration certificate: %s',
                    host.uuid, e)
    return settings


def default_agent(host):
    """The real dom0 agent over this host's simulated hypervisor, set up as
    :func:`agent_settings` says (the agent would otherwise read
    [xen_stubdom] of this process)."""
    from nova_xen_stubdom.dom0 import config as dom0_config
    from nova_xen_stubdom.dom0.host import HostAgent
    from nova_xen_stubdom.sim.backend import SimBackend
    return HostAgent(backend=SimBackend(host), host_uuid=host.uuid,
                     config=dom0_config.AgentConfig(**agent_settings(host)))


_PKI = None
_PKI_LOCK = threading.Lock()


def cloud_pki() -> 'pki.Pki':
    """This simulator's CA (made on first use, removed at exit; made again
    if its directory went, e.g. with a test's temporary directory)."""
    global _PKI
    with _PKI_LOCK:
        if _PKI is None or not os.path.exists(_PKI.ca):
            _PKI = pki.Pki(name='nova-xen-stubdom simulator CA')
            atexit.register(_PKI.remove)
        return _PKI


def call_plugin(host, plugin: str, fn: str, args: dict) -> str:
    dispatch = host.plugin_dispatch
    if dispatch is None and plugin == PLUGIN:
        from nova_xen_stubdom.sim import dom0_process
        if dom0_process.enabled(host):
            # as XAPI: the plugin is a fresh process, the daemon keeps jobs
            return dom0_process.call(host, fn, args)
    if dispatch is None:
        try:
            dispatch = importlib.import_module(
                'nova_xen_stubdom.dom0.registry').call
        except ImportError:
            raise XapiError('XENAPI_PLUGIN_FAILURE', 'ImportError', '',
                            'no dom0 plugin installed on this host')
    try:
        result = dispatch(host.agent(), plugin, fn, args)
    except XapiError:
        raise
    except Exception as e:
        LOG.info('plugin %s.%s failed: %s', plugin, fn, e)
        raise XapiError('XENAPI_PLUGIN_FAILURE',
                        getattr(e, 'code', None) or type(e).__name__, '',
                        str(e))
    if not isinstance(result, str):
        raise XapiError('XENAPI_PLUGIN_FAILURE', 'TypeError', '',
                        '%s.%s returned %s, not a string'
                        % (plugin, fn, type(result).__name__))
    return result
