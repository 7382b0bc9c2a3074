"""A simulated host's dom0 as XCP-ng runs it: daemon + plugin processes.

XAPI runs a host plugin as a fresh process per ``host.call_plugin``
(xapi-project/xen-api ``ocaml/xapi/xapi_plugins.ml``: the plugin file under
``/etc/xapi.d/plugins`` is forked with the XML-RPC call as its argument and
its printed XML-RPC response is the result).  With this model on, the
simulator does the same: each host gets the real dom0 daemon
(:mod:`nova_xen_stubdom.dom0.daemon`, on a real unix socket and state
directory), and each call runs the real plugin launcher
(``devstack/files/nova_xen_stubdom.xapi-plugin``) in a fresh Python process
with the stand-in ``XenAPIPlugin`` (:mod:`.dom0_host`), which forwards to
the daemon.  A job one call starts is found by the next.

The daemon is a process of its own, as ``nova-xen-stubdom-agent.service``
on a real host: ``python -m nova_xen_stubdom.sim.dom0_daemon`` (the real
daemon's ``main``, tied to the simulator by a lifeline pipe) with an
agent.conf naming :class:`.hypervisor_channel.RemoteSimBackend`, which
reaches this host's simulated hypervisor over a socket pair served here
(guest memory is mapped from its ``/dev/shm`` file, not copied).  The
simulator starts it on the host's first plugin call, restarts it when it
died (the unit's ``Restart=on-failure``) and stops it with the host.

On where ``HostRuntime.plugin_process`` is True -- the functional tier
sets it for every host unless ``NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=0`` --
or, where it is None, where that variable is ``1``.  The host's
in-process agent (``host.agent()``: what the simulated device-model
wrapper runs) then takes its per-domain locks in the daemon's lock
directory, as the wrapper and the daemon share them on a real host.
doc/source/simulator.rst "The daemon's process" has the whole picture.
"""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from typing import Dict, Iterator, Optional

from nova_xen_stubdom.dom0 import config as dom0_config
from nova_xen_stubdom.dom0 import host as dom0_host
from nova_xen_stubdom.sim import hypervisor_channel
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
#: limits (not expectations) for a daemon to say "ready" and to stop
START_TIMEOUT = 60
STOP_TIMEOUT = 10

_lock = threading.Lock()


def enabled(host) -> bool:
    flag = getattr(host, 'plugin_process', None)
    return bool(flag) if flag is not None else os.environ.get(ENV) == '1'


def _python_path() -> str:
    extra = os.environ.get('PYTHONPATH')
    return os.pathsep.join([ROOT] + ([extra] if extra else []))


class HostDom0:
    """The dom0 daemon process of one simulated host: its run directory
    (agent.conf, inventory, socket, state directory, log), the process and
    the hypervisor channel it is served through."""

    def __init__(self, host) -> None:
        from nova_xen_stubdom.sim import plugins
        self.host = host
        #: the host's in-process agent (the simulated wrapper's): it shares
        #: the daemon's lock directory while the daemon runs
        self.agent = host.agent()
        self.proc: Optional[subprocess.Popen] = None
        self._lifeline = -1         # our (the only) write end of the pipe
        # AF_UNIX paths are short: a private directory under /tmp
        self.run_dir = tempfile.mkdtemp(prefix='nxs-dom0-')
        self.socket_path = os.path.join(self.run_dir, 'agent.sock')
        self.state_dir = os.path.join(self.run_dir, 'state')
        self.conf = os.path.join(self.run_dir, 'agent.conf')
        self.inventory = os.path.join(self.run_dir, 'xensource-inventory')
        self.log_path = os.path.join(self.run_dir, 'daemon.log')
        settings = dict(plugins.agent_settings(host),
                        backend=hypervisor_channel.__name__ +
                        ':RemoteSimBackend',
                        socket_path=self.socket_path,
                        state_dir=self.state_dir)
        with open(self.conf, 'w') as f:
            f.write('[agent]\n' + ''.join('%s = %s\n' % kv
                                          for kv in sorted(settings.items())))
        with open(self.inventory, 'w') as f:
            f.write("INSTALLATION_UUID='%s'\n" % host.uuid)
        try:
            # the wrapper (host.agent(), in the simulator) and the daemon
            # exclude each other with the same flocks, as on a real host
            locks = os.path.join(self.state_dir, 'locks')
            os.makedirs(locks, mode=0o700)
            self.agent.lock_dir = locks
            self.agent.file_lock = polled_file_lock
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def failed(self) -> bool:
        """Exited on its own with a failure (systemd's on-failure)."""
        return self.proc is not None and self.proc.poll() not in (None, 0)

    def start(self) -> None:
        """Start the daemon and wait for its ``ready`` line."""
        ours, theirs = socket.socketpair()
        lifeline_r, lifeline_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=_python_path())
        env[hypervisor_channel.FD_ENV] = str(theirs.fileno())
        try:
            with open(self.log_path, 'a') as log:
                self.proc = subprocess.Popen(
                    [sys.executable, '-m', 'nova_xen_stubdom.sim.dom0_daemon',
                     str(lifeline_r), '--', '--config', self.conf,
                     '--inventory', self.inventory],
                    env=env, cwd=self.run_dir, stdout=subprocess.PIPE,
                    stderr=log, universal_newlines=True,
                    pass_fds=(theirs.fileno(), lifeline_r))
        except BaseException:
            ours.close()
            os.close(lifeline_w)
            raise
        finally:
            theirs.close()
            os.close(lifeline_r)
        self._lifeline = lifeline_w
        hypervisor_channel.serve(ours, self.agent.backend)
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ''
        if not line.startswith('ready '):
            self.stop()
            raise XapiError('INTERNAL_ERROR', 'dom0 daemon of host %s did '
                            'not start: %s' % (self.host.uuid, self.log()))

    def log(self, tail: int = 4000) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-tail:]
        except OSError:
            return ''

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the daemon and reap it (tests: a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM (as systemd stops the unit), SIGKILL past the limit."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1
        # the channel's thread ends on its own: the daemon's end is closed

    def close(self) -> None:
        self.stop()
        if (self.agent.lock_dir or '').startswith(self.run_dir + os.sep):
            self.agent.lock_dir = None
            del self.agent.file_lock
        shutil.rmtree(self.run_dir, ignore_errors=True)


@contextlib.contextmanager
def polled_file_lock(path: str) -> Iterator[None]:
    """The in-process agent's ``flock``: taken without blocking, retried.
    Under eventlet (Nova's functional harness) a blocking ``flock`` would
    stop every green thread of the simulator -- the hypervisor channel the
    daemon holding the lock waits on included -- and never return."""
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(dom0_host.file_lock(path,
                                                        blocking=False))
                break
            except BlockingIOError:
                time.sleep(0.01)
        yield


def dom0_of(host) -> HostDom0:
    """*host*'s running daemon: started on first use, started again when it
    died of a failure (the unit's ``Restart=on-failure``)."""
    with _lock:
        dom0 = getattr(host, 'dom0_process', None)
        if dom0 is None:
            dom0 = host.dom0_process = HostDom0(host)
        elif dom0.proc is None or dom0.failed():
            dom0.stop()
            dom0.start()
        return dom0


def stop(host) -> None:
    """Stop *host*'s daemon (the simulator is shutting down)."""
    with _lock:
        dom0 = getattr(host, 'dom0_process', None)
        host.dom0_process = None
    if dom0 is not None:
        dom0.close()


def call(host, fn: str, args: Dict[str, str]) -> str:
    """``host.call_plugin`` through a fresh plugin process."""
    dom0 = dom0_of(host)
    request = xmlrpc.client.dumps(('OpaqueRef:sim-plugin-session',
                                   dict(args)), fn)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [STAND_IN, _python_path()]))
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
