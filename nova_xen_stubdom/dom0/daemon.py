"""The dom0 daemon: one per host, owner of everything with a lifetime.

XAPI runs a host plugin as a fresh process per ``host.call_plugin``
(xapi-project/xen-api ``ocaml/xapi/xapi_plugins.ml`` ``call_plugin`` forks
``/etc/xapi.d/plugins/<name>``; ``XenAPIPlugin.dispatch`` handles one call
and exits), so nothing a plugin process starts -- a migration's sender
thread, a listening socket -- survives the call.  The daemon
(``nova-xen-stubdom-agent.service``) holds them instead: the plugin
(:mod:`.xapi_plugin`) and the device-model wrapper forward each call over
the daemon's root-only unix socket (:mod:`.daemon_protocol`), and the
daemon runs it through the same :mod:`.registry` on its one
:class:`HostAgent`, so a job started by one call is found by the next.

State directory (``state_dir``, 0700):

* ``daemon.lock`` -- ``flock``ed for the daemon's life: a second daemon
  started by mistake exits with a clear error (the kernel drops the lock
  when the holder dies, kill -9 included, so a crash never blocks a
  restart);
* ``locks/<key>.lock`` -- per-domain ``flock``s (:meth:`HostAgent.lock`),
  shared with the wrapper processes;
* ``jobs/<id>.json`` -- the job journal (:mod:`.job_journal`), which
  :func:`.job_journal.recover` settles at start.

Run: ``python3 -m nova_xen_stubdom.dom0.daemon [--config agent.conf]``.
"""
import argparse
import logging
import os
import select
import socket
import stat
import struct
import sys
import threading
from typing import List, Optional

from nova_xen_stubdom.dom0 import config as config_mod
from nova_xen_stubdom.dom0 import constants
from nova_xen_stubdom.dom0 import daemon_protocol as proto
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import host as host_mod
from nova_xen_stubdom.dom0 import job_journal
from nova_xen_stubdom.dom0 import logs
from nova_xen_stubdom.dom0 import registry

LOG = logging.getLogger(__name__)

#: struct ucred of SO_PEERCRED: pid, uid, gid
_UCRED = struct.Struct('3i')


class AlreadyRunning(errors.AgentError):
    msg_fmt = ('another nova-xen-stubdom daemon holds %(lock)s; one daemon '
               'per host')
    code = 'DAEMON_ALREADY_RUNNING'


class Daemon:
    """Serve *agent*'s plugin functions on *socket_path*.

    :param agent: the host's agent; its ``journal`` and ``lock_dir`` are
        set from *state_dir* if it has none.
    """

    def __init__(self, agent: host_mod.HostAgent, socket_path: str,
                 state_dir: str) -> None:
        self.agent = agent
        self.socket_path = socket_path
        self.state_dir = state_dir
        self._lock_fd: Optional[int] = None
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        #: stop() writes a byte here to end the accept loop; set when the
        #: loop has returned
        self._wake_fds: Optional[tuple] = None
        self._accept_done = threading.Event()
        self.recovered = {}

    # -- lifetime ---------------------------------------------------------
    def start(self) -> None:
        """Take the host's daemon lock, recover, then listen."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        lock_path = os.path.join(self.state_dir, 'daemon.lock')
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(lock=lock_path)
        self._lock_fd = fd
        try:
            if self.agent.journal is None:
                self.agent.journal = job_journal.JobJournal(
                    os.path.join(self.state_dir, 'jobs'))
            if self.agent.lock_dir is None:
                self.agent.lock_dir = os.path.join(self.state_dir, 'locks')
                os.makedirs(self.agent.lock_dir, mode=0o700, exist_ok=True)
            self.recovered = job_journal.recover(
                self.agent.journal, self.agent.backend, self._resume_device)
            self._listen()
        except BaseException:
            self.stop()
            raise
        self._wake_fds = os.pipe()
        self._thread = threading.Thread(target=self._accept_loop,
                                        name='dom0-daemon', daemon=True)
        self._thread.start()
        LOG.info('dom0 daemon for host %s listening on %s (%d jobs '
                 'recovered)', self.agent.host_uuid, self.socket_path,
                 len(self.recovered))

    def _resume_device(self, domid: int) -> None:
        from nova_xen_stubdom.dom0 import device_state
        device_state.resume(self.agent.backend, domid,
                            self.agent.config.device_state_timeout)

    def _listen(self) -> None:
        parent = os.path.dirname(self.socket_path)
        if parent:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            pass
        else:
            # we hold the daemon lock: a socket file here is a dead
            # daemon's (kill -9 leaves it); anything else is not ours
            if not stat.S_ISSOCK(st.st_mode):
                raise errors.AgentError('%s exists and is not a socket'
                                        % self.socket_path)
            os.unlink(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)           # root-only from the first moment
        try:
            sock.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        sock.listen(64)
        self._listener = sock

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            # wake the accept loop through its pipe and let it return
            # *before* the listener is closed: under eventlet (Nova's
            # functional harness runs the simulator so) a green accept is
            # woken through epoll, which forgets a closed socket, so
            # shutdown/close alone left it asleep and Thread.join waited
            # its full timeout -- 10 s per simulated host per test.  Not a
            # connection to our own socket: its file may be gone (a test's
            # temporary directory removed first).  An Event, not join: join
            # blocks on a native lock under eventlet.
            os.write(self._wake_fds[1], b'x')
            self._accept_done.wait(10)
            self._thread = None
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
        if self._wake_fds is not None and self._thread is None:
            for fd in self._wake_fds:
                os.close(fd)
            self._wake_fds = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)     # releases the flock
            self._lock_fd = None

    def wait(self) -> None:
        self._stopping.wait()

    # -- serving ------------------------------------------------------------
    def _accept_loop(self) -> None:
        try:
            self._accept_until_stopped()
        finally:
            self._accept_done.set()

    def _accept_until_stopped(self) -> None:
        listener, wake = self._listener, self._wake_fds[0]
        while not self._stopping.is_set() and listener is not None:
            try:
                ready, _, _ = select.select([listener, wake], [], [])
                if wake in ready or self._stopping.is_set():
                    break
                conn, _ = listener.accept()
            except OSError:
                break
            threading.Thread(target=self._serve, args=(conn,),
                             name='dom0-call', daemon=True).start()

    def _peer_allowed(self, conn: socket.socket) -> bool:
        try:
            _, uid, _ = _UCRED.unpack(conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        except OSError:
            return False
        return uid in (0, os.getuid())

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not self._peer_allowed(conn):
                    proto.send_message(conn, {'error': {
                        'code': 'PERMISSION_DENIED',
                        'message': 'only root may call the dom0 daemon'}})
                    return
                conn.settimeout(60)
                request = proto.recv_message(conn)
                conn.settimeout(None)
                reply = self.handle(request)
                proto.send_message(conn, reply)
            except (OSError, EOFError, ValueError) as exc:
                LOG.warning('dom0 daemon: bad or broken request: %s', exc)

    def handle(self, request: dict) -> dict:
        fn, args = request.get('fn'), request.get('args')
        plugin = request.get('plugin', registry.PLUGIN)
        if not isinstance(fn, str) or not isinstance(args, dict) or \
                plugin not in (registry.PLUGIN, registry.DM_PLUGIN):
            return {'error': {'code': 'INVALID_ARGUMENT',
                              'message': 'request needs fn (string), args '
                                         '(object) and a known plugin'}}
        try:
            return {'ok': registry.call(self.agent, plugin, fn, args)}
        except errors.AgentError as exc:
            return {'error': {'code': exc.code, 'message': str(exc)}}
        except Exception as exc:        # registry.call wraps; belt and braces
            LOG.exception('dom0 daemon: %s failed', fn)
            return {'error': {'code': type(exc).__name__,
                              'message': str(exc)}}


def build(cfg: config_mod.AgentConfig,
          inventory: Optional[str] = None) -> Daemon:
    """The daemon this host's configuration describes."""
    from nova_xen_stubdom.dom0 import hypervisor
    from nova_xen_stubdom.dom0 import xapi_plugin
    agent = host_mod.HostAgent(
        hypervisor.load_backend(cfg.backend),
        xapi_plugin.host_uuid(inventory or constants.INVENTORY), config=cfg)
    return Daemon(agent, cfg.socket_path, cfg.state_dir)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='nova-xen-stubdom-agent',
        description='the nova-xen-stubdom dom0 daemon (one per host)')
    parser.add_argument('--config', default=constants.AGENT_CONF)
    parser.add_argument('--inventory', default=constants.INVENTORY)
    opts = parser.parse_args(argv)
    logs.setup('nova-xen-stubdom-agent')
    try:
        daemon = build(config_mod.load(opts.config), opts.inventory)
        daemon.start()
    except errors.AgentError as exc:
        sys.stderr.write('nova-xen-stubdom-agent: %s\n' % exc)
        return 1
    import signal
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    # ready for systemd (Type=simple) and for tests waiting on the socket
    sys.stdout.write('ready %s\n' % daemon.socket_path)
    sys.stdout.flush()
    daemon.wait()
    daemon.stop()
    backend_close = getattr(daemon.agent.backend, 'close', None)
    if backend_close:
        backend_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
