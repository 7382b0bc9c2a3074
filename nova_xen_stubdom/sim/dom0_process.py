"""A simulated host's dom0 as XCP-ng runs it: daemon + plugin processes.

XAPI runs a host plugin as a fresh process per ``host.call_plugin``
(xapi-project/xen-api ``ocaml/xapi/xapi_plugins.ml``: the plugin file under
``/etc/xapi.d/plugins`` is forked with the XML-RPC call as its argument and
its printed XML-RPC response is the result).  With this model on, the
simulator does the same: each host gets the real dom0 daemon
(:class:`nova_xen_stubdom.dom0.daemon.Daemon`, on the host's own
``HostAgent`` over its simulated hypervisor, a real unix socket and state
directory), and each call runs the real plugin launcher
(``devstack/files/nova_xen_stubdom.xapi-plugin``) in a fresh Python process
with the stand-in ``XenAPIPlugin`` (:mod:`.dom0_host`), which forwards to
the daemon.  A job one call starts is found by the next.

The daemon runs inside the simulator process (it needs the simulated
hypervisor's memory and xenstore, which live there; doc/source/
simulator.rst says what a daemon process of its own would take); the
plugin is a separate process.  On where ``HostRuntime.plugin_process`` is
True -- the functional tier sets it for every host unless
``NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=0`` -- or, where it is None, where
that variable is ``1``.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import xmlrpc.client
from typing import Dict

from nova_xen_stubdom.dom0 import config as dom0_config
from nova_xen_stubdom.dom0 import daemon as dom0_daemon
from nova_xen_stubdom.sim.errors import XapiError

ENV = 'NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, 'devstack', 'files',
                        'nova_xen_stubdom.xapi-plugin')
STAND_IN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'dom0_host')
#: a plugin call that takes longer is reported as a plugin failure
CALL_TIMEOUT = 600

_lock = threading.Lock()


def enabled(host) -> bool:
    flag = getattr(host, 'plugin_process', None)
    return bool(flag) if flag is not None else os.environ.get(ENV) == '1'


class HostDom0:
    """The daemon of one simulated host, its socket and agent.conf."""

    def __init__(self, host) -> None:
        # AF_UNIX paths are short: a private directory under /tmp
        self.run_dir = tempfile.mkdtemp(prefix='nxs-dom0-')
        sock = os.path.join(self.run_dir, 'agent.sock')
        state = os.path.join(self.run_dir, 'state')
        self.conf = os.path.join(self.run_dir, 'agent.conf')
        with open(self.conf, 'w') as f:
            f.write('[agent]\nsocket_path = %s\nstate_dir = %s\n'
                    % (sock, state))
        self.daemon = dom0_daemon.Daemon(host.agent(), sock, state)
        try:
            self.daemon.start()
        except BaseException:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def stop(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def dom0_of(host) -> HostDom0:
    with _lock:
        dom0 = getattr(host, 'dom0_process', None)
        if dom0 is None:
            dom0 = host.dom0_process = HostDom0(host)
        return dom0


def stop(host) -> None:
    """Stop *host*'s daemon (the simulator is shutting down)."""
    with _lock:
        dom0 = getattr(host, 'dom0_process', None)
        host.dom0_process = None
    if dom0 is not None:
        dom0.stop()


def call(host, fn: str, args: Dict[str, str]) -> str:
    """``host.call_plugin`` through a fresh plugin process."""
    dom0 = dom0_of(host)
    request = xmlrpc.client.dumps(('OpaqueRef:sim-plugin-session',
                                   dict(args)), fn)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [STAND_IN, ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH')
                            else []))
    env[dom0_config.CONF_ENV] = dom0.conf
    # -S: no site.  dom0's python3 starts in ~15 ms; this venv's site runs
    # the editable install's finder and the .pth hooks of the Nova side
    # (~55 ms a process), which the plugin does not need: PYTHONPATH names
    # the package and the stand-in XenAPIPlugin.
    if os.path.exists(LAUNCHER):
        argv = [sys.executable, '-S', LAUNCHER, request]
    else:       # an installed package without the source tree
        argv = [sys.executable, '-S', '-c', 'import sys; from '
                'nova_xen_stubdom.dom0 import xapi_plugin; '
                'sys.exit(xapi_plugin.main())', request]
    try:
        out = subprocess.run(argv, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=CALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise XapiError('XENAPI_PLUGIN_FAILURE', 'TIMEOUT', '',
                        'plugin call %s took over %d s' % (fn, CALL_TIMEOUT))
    try:
        (response,), _ = xmlrpc.client.loads(out.stdout)
    except Exception:
        # XAPI reports a plugin that printed no response the same way
        raise XapiError('XENAPI_PLUGIN_FAILURE', 'exit %d' % out.returncode,
                        out.stdout[-2000:], out.stderr[-2000:])
    if response.get('Status') == 'Success':
        return response.get('Value')
    desc = [str(d) for d in response.get('ErrorDescription') or
            ['XENAPI_PLUGIN_FAILURE', 'no error description']]
    raise XapiError(*desc)
