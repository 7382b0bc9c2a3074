"""The XAPI host plugin on a real host.

Installed as ``/etc/xapi.d/plugins/nova_xen_stubdom``.

XAPI runs the plugin file once per ``host.call_plugin`` with the XML-RPC
call on its command line; ``XenAPIPlugin.dispatch`` (dom0's boilerplate
module) decodes it, calls ``handler(session, args)`` and prints the result.
The installed file (``devstack/files/nova_xen_stubdom.xapi-plugin``) only
calls :func:`main`, so everything testable lives here.

Each call builds one :class:`HostAgent` over the ``xen`` backend (one call
per process) and runs the function through :func:`plugin.call`.  Failures
are raised as ``XenAPIPlugin.Failure('XENAPI_PLUGIN_FAILURE', [code, '',
message])``: XAPI passes a plugin's ErrorDescription through unchanged, so
the driver sees ``XENAPI_PLUGIN_FAILURE [status, stdout, stderr]`` exactly
as the simulator reports it, with the agent error's ``code`` as status.

Host policy comes from an optional ini file,
``/etc/nova-xen-stubdom/agent.conf``::

    [agent]
    # refuse QEMU in dom0 for guests without a stub domain (default)
    allow_dom0_device_model = false
    # device-model wrapper: the dom0 QEMU (only used when allowed) and how
    # long to wait for the stub domain's QEMU to report "running"
    dom0_qemu = /usr/lib64/xen/bin/qemu-system-i386
    dm_start_timeout = 60
"""
import configparser
import logging
import sys
from typing import Callable, Dict, List, Optional

from nova_xen_stubdom.dom0 import hypervisor as backend_mod
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import host
from nova_xen_stubdom.dom0 import registry as plugin

LOG = logging.getLogger(__name__)

INVENTORY = '/etc/xensource-inventory'
AGENT_CONF = '/etc/nova-xen-stubdom/agent.conf'
PLUGIN_FAILURE = 'XENAPI_PLUGIN_FAILURE'


def host_uuid(inventory: str = INVENTORY) -> str:
    """This host's XAPI uuid (``INSTALLATION_UUID`` of the inventory)."""
    try:
        with open(inventory) as f:
            for line in f:
                key, _, value = line.strip().partition('=')
                if key == 'INSTALLATION_UUID':
                    return value.strip().strip('\'"')
    except OSError as exc:
        raise errors.AgentError('cannot read %s: %s (not a XAPI host?)'
                                % (inventory, exc))
    raise errors.AgentError('no INSTALLATION_UUID in %s' % inventory)


def agent_config(path: str = AGENT_CONF) -> Dict[str, object]:
    """Host policy from *path*; a missing file means the defaults."""
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        return {
            'allow_dom0_device_model': parser.getboolean(
                'agent', 'allow_dom0_device_model', fallback=False),
            'backend': parser.get('agent', 'backend', fallback='xen'),
            # device-model wrapper (dm_wrapper_main)
            'dom0_qemu': parser.get('agent', 'dom0_qemu', fallback=''),
            'dm_start_timeout': parser.getfloat(
                'agent', 'dm_start_timeout', fallback=60.0),
        }
    except (configparser.Error, ValueError) as exc:
        raise errors.AgentError('bad agent configuration %s: %s'
                                % (path, exc))


def make_agent(inventory: Optional[str] = None,
               conf: Optional[str] = None) -> host.HostAgent:
    cfg = agent_config(conf or AGENT_CONF)
    return host.HostAgent(
        backend_mod.load_backend(cfg['backend']),
        host_uuid(inventory or INVENTORY),
        allow_dom0_device_model=cfg['allow_dom0_device_model'])


def handler(fn: str, failure_cls,
            agent_factory: Optional[Callable[[], host.HostAgent]] = None
            ) -> Callable:
    """``handler(session, args) -> str`` for ``XenAPIPlugin.dispatch``."""
    def handle(_session, args: Dict[str, str]) -> str:
        agent = None
        try:
            agent = (agent_factory or make_agent)()
            return plugin.call(agent, plugin.PLUGIN, fn, dict(args))
        except errors.AgentError as exc:
            LOG.warning('%s.%s failed: %s', plugin.PLUGIN, fn, exc)
            raise failure_cls(PLUGIN_FAILURE, [exc.code, '', str(exc)])
        except Exception as exc:        # keep XAPI's three-field shape
            LOG.exception('%s.%s failed', plugin.PLUGIN, fn)
            raise failure_cls(PLUGIN_FAILURE, [type(exc).__name__, '',
                                               str(exc)])
        finally:
            close = getattr(getattr(agent, 'backend', None), 'close', None)
            if close is not None:
                try:
                    close()
                except Exception:
                    LOG.exception('closing the hypervisor backend failed')
    handle.__name__ = fn
    return handle


def main(argv: Optional[List[str]] = None) -> int:
    """Entry of the installed plugin file: dispatch one XAPI call."""
    try:
        import XenAPIPlugin
    except ImportError:
        sys.stderr.write('nova_xen_stubdom XAPI plugin: XenAPIPlugin is not '
                         'importable; this runs under XAPI in dom0 '
                         '(/etc/xapi.d/plugins)\n')
        return 2
    if argv is not None:
        # XenAPIPlugin.dispatch reads the call from sys.argv[1]
        sys.argv[1:] = argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    XenAPIPlugin.dispatch({fn: handler(fn, XenAPIPlugin.Failure)
                           for fn in sorted(plugin.functions())})
    return 0


if __name__ == '__main__':
    sys.exit(main())
