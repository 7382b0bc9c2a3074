"""The registry of plugin functions: what ``host.call_plugin`` reaches.

XAPI runs ``/etc/xapi.d/plugins/<plugin>`` with string arguments and returns
its string result; the simulator calls :func:`call` in process.  Functions
are registered by the module that implements them::

    from nova_xen_stubdom.dom0 import registry as plugin

    @plugin.register('link_stubdom')
    def link_stubdom(agent, args):      # args: dict[str, str]
        ...
        return json.dumps(result)

Modules that register functions are imported on the first call (see
:data:`EXTENSION_MODULES`), so importing this module stays cheap and a
feature that is not installed yet only makes its functions unknown.
"""
import importlib
import logging
import threading
from typing import Callable, Dict, Tuple

from nova_xen_stubdom.dom0 import constants
from nova_xen_stubdom.dom0 import errors

LOG = logging.getLogger(__name__)

#: the plugin name the driver passes to host.call_plugin
PLUGIN = constants.PLUGIN

#: functions only the device-model wrapper asks the daemon for
DM_PLUGIN = constants.PLUGIN + '.dm'

#: modules that register plugin functions when imported
EXTENSION_MODULES = (
    'nova_xen_stubdom.dom0.stubdom_link',
    'nova_xen_stubdom.dom0.device_model',
    'nova_xen_stubdom.dom0.console',
    'nova_xen_stubdom.dom0.guest_exit',
    'nova_xen_stubdom.dom0.pci_grants',
    'nova_xen_stubdom.dom0.migration_calls',
    'nova_xen_stubdom.dom0.cpu_calls',
    'nova_xen_stubdom.dom0.image_manifest',
)

PluginFn = Callable[..., str]

_REGISTRY: Dict[Tuple[str, str], PluginFn] = {}
_loaded = False
_load_lock = threading.Lock()


def register(fn_name: str, plugin: str = PLUGIN) -> Callable[[PluginFn],
                                                             PluginFn]:
    """Decorator: expose ``f(agent, args) -> str`` as *plugin*.*fn_name*."""
    def decorator(func: PluginFn) -> PluginFn:
        key = (plugin, fn_name)
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not func and (
                existing.__module__, existing.__qualname__) != (
                func.__module__, func.__qualname__):
            raise ValueError('plugin function %s.%s registered twice (%s.%s)'
                             % (plugin, fn_name, existing.__module__,
                                existing.__qualname__))
        _REGISTRY[key] = func
        return func
    return decorator


def _load_extensions() -> None:
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for name in EXTENSION_MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                # only "this feature module does not exist"; a missing
                # dependency *inside* an existing module is a real error
                if exc.name != name:
                    raise
                LOG.debug('agent extension %s not installed', name)
        _loaded = True


def functions(plugin: str = PLUGIN) -> Dict[str, PluginFn]:
    """Registered functions of *plugin* (name -> callable)."""
    _load_extensions()
    return {fn: f for (p, fn), f in _REGISTRY.items() if p == plugin}


def call(host_agent, plugin: str, fn: str, args: Dict[str, str]) -> str:
    """Run *plugin*.*fn* on *host_agent* (the body of ``host.call_plugin``).

    :raises AgentError: every failure, unknown functions included.
    """
    _load_extensions()
    func = _REGISTRY.get((plugin, fn))
    if func is None:
        raise errors.UnknownPluginFunction(plugin=plugin, fn=fn)
    for key, value in args.items():
        # XAPI's wire type for call_plugin args is (string -> string) map
        if not isinstance(key, str) or not isinstance(value, str):
            raise errors.InvalidArgument(name=key, value=value,
                                         reason='plugin arguments are '
                                                'strings')
    try:
        result = func(host_agent, dict(args))
    except errors.AgentError:
        raise
    except Exception as exc:
        LOG.exception('agent plugin %s.%s failed', plugin, fn)
        raise errors.AgentError('%s.%s failed: %s: %s' % (
            plugin, fn, type(exc).__name__, exc))
    if not isinstance(result, str):
        raise errors.AgentError('%s.%s returned %s, not a string' % (
            plugin, fn, type(result).__name__))
    return result
