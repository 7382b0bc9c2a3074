"""The XAPI host plugin on a real host.

Installed as ``/etc/xapi.d/plugins/nova_xen_stubdom``.

XAPI runs the plugin file once per ``host.call_plugin`` with the XML-RPC
call on its command line; ``XenAPIPlugin.dispatch`` (dom0's boilerplate
module) decodes it, calls ``handler(session, args)`` and prints the result.
The installed file (``devstack/files/nova_xen_stubdom.xapi-plugin``) only
calls :func:`main`, so everything testable lives here.

The plugin is a thin forwarder: each call goes, unchanged, to the host's
dom0 daemon (:mod:`.daemon`) over its root-only unix socket
(:mod:`.daemon_protocol`), because XAPI runs the plugin as a fresh process
per call and anything with a lifetime (a migration job) must outlive it.
It imports only the standard library and the protocol, never the engine.
Failures are raised as ``XenAPIPlugin.Failure('XENAPI_PLUGIN_FAILURE',
[code, '', message])``: XAPI passes a plugin's ErrorDescription through
unchanged, so the driver sees ``XENAPI_PLUGIN_FAILURE [status, stdout,
stderr]`` exactly as the simulator reports it, with the agent error's
``code`` as status (``DAEMON_UNAVAILABLE`` when the daemon is down).

Host policy comes from ``/etc/nova-xen-stubdom/agent.conf`` (see
:mod:`nova_xen_stubdom.dom0.config`).

Start-up cost: XAPI forks this per call, so a call costs an interpreter
start plus what it imports.  The module itself imports only :mod:`os`,
:mod:`sys` and the import-free :mod:`.constants` and :mod:`.errors`;
a call loads
:mod:`.config` and :mod:`.daemon_protocol` (``configparser``, ``json``,
``socket``), and :mod:`logging` only when there is a failure to log
(``logging.handlers`` alone costs more than the rest of the call).
``tests/unit/dom0/test_xapi_plugin.py`` checks the set of modules a
successful call loads; ``doc/source/simulator.rst`` has the figures.
"""
import os
import sys

from nova_xen_stubdom.dom0 import constants
from nova_xen_stubdom.dom0 import errors

MYPY = False
if MYPY:    # annotations only: importing typing costs a plugin process ~5 ms
    from typing import Callable, Dict, List, Optional  # noqa: F401

INVENTORY = constants.INVENTORY
AGENT_CONF = constants.AGENT_CONF
PLUGIN_FAILURE = constants.PLUGIN_FAILURE


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


def make_agent(inventory: 'Optional[str]' = None,
               conf: 'Optional[str]' = None):
    """A :class:`HostAgent` in this process (the device-model wrapper's);
    it shares the daemon's per-domain file locks when the daemon's state
    directory exists."""
    from nova_xen_stubdom.dom0 import config as config_mod
    from nova_xen_stubdom.dom0 import host
    from nova_xen_stubdom.dom0 import hypervisor
    cfg = config_mod.load(conf or AGENT_CONF)
    lock_dir = os.path.join(cfg.state_dir, 'locks')
    return host.HostAgent(hypervisor.load_backend(cfg.backend),
                          host_uuid(inventory or INVENTORY), config=cfg,
                          lock_dir=lock_dir if os.path.isdir(lock_dir)
                          else None)


def forward(fn: str, args: 'Dict[str, str]') -> str:
    """Run *fn* in the host's daemon (the socket agent.conf names)."""
    from nova_xen_stubdom.dom0 import config as config_mod
    from nova_xen_stubdom.dom0 import daemon_protocol
    cfg = config_mod.load(os.environ.get(config_mod.CONF_ENV) or AGENT_CONF)
    return daemon_protocol.call(cfg.socket_path, fn, args)


def _log_failure(fn: str, exc: BaseException, expected: bool) -> None:
    """Log a failed call to syslog; logging is loaded only here."""
    import logging
    from nova_xen_stubdom.dom0 import logs
    logs.setup('nova-xen-stubdom-plugin')
    log = logging.getLogger(__name__)
    if expected:
        log.warning('%s.%s failed: %s', constants.PLUGIN, fn, exc)
    else:
        log.error('%s.%s failed', constants.PLUGIN, fn, exc_info=exc)


def handler(fn: str, failure_cls,
            send: 'Optional[Callable[[str, Dict[str, str]], str]]' = None
            ) -> 'Callable':
    """``handler(session, args) -> str`` for ``XenAPIPlugin.dispatch``."""
    def handle(_session, args: 'Dict[str, str]') -> str:
        try:
            return (send or forward)(fn, dict(args))
        except errors.AgentError as exc:
            _log_failure(fn, exc, True)
            raise failure_cls(PLUGIN_FAILURE, [exc.code, '', str(exc)])
        except Exception as exc:        # keep XAPI's three-field shape
            _log_failure(fn, exc, False)
            raise failure_cls(PLUGIN_FAILURE, [type(exc).__name__, '',
                                               str(exc)])
    handle.__name__ = fn
    return handle


def main(argv: 'Optional[List[str]]' = None) -> int:
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
    XenAPIPlugin.dispatch({fn: handler(fn, XenAPIPlugin.Failure)
                           for fn in constants.PLUGIN_FUNCTIONS})
    return 0


if __name__ == '__main__':
    sys.exit(main())
