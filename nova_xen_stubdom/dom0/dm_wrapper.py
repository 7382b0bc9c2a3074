"""The device-model wrapper process: what xenopsd runs instead of QEMU.

The host is configured to run ``nova-xen-stubdom-dm-wrapper`` (or
``python3 -m nova_xen_stubdom.dom0.dm_wrapper``) as the HVM device
model.  It receives QEMU's command line and:

1. finds the guest domain (``-xen-domid N``; a leading bare domid, as
   xenopsd's qemu-wrapper convention passes it, is accepted too) and its
   VM uuid (``-uuid`` or the domain's handle);
2. asks the host's dom0 daemon (``dm_launch``; in process when no daemon
   runs) for :func:`device_model.launch`: a guest with a linked stub domain
   gets nothing started in dom0; without one it is refused (exit status 1)
   unless the host allows dom0 device models, in which case the real QEMU
   (``[agent] dom0_qemu``) is exec'd with the same arguments;
3. waits for the QEMU inside the stub domain to report ``running``
   (``/local/domain/<stub>/device-model/<guest>/state``) and mirrors the
   state to ``/local/domain/0/device-model/<guest>/state``, where a dom0
   QEMU would have written it;
4. listens on every QMP socket of the command line (``-chardev
   socket,id=X,path=P,server...`` used by ``-mon chardev=X,mode=control``,
   or ``-qmp unix:P,server``) until ``quit``, SIGTERM, or the guest domain
   going away; then undoes the link (``dm_stop``, :func:`device_model.stop`);
5. meanwhile runs dom0's end of the guest's VNC bridge
   (:mod:`vnc_bridge`: ``/var/run/xen/vnc-<domid>``, where xenopsd tells
   XAPI's console proxy to connect).

About the QMP endpoint: the stub domain's QEMU speaks QMP only to the stub
domain's init (a local pipe; see ``stubdom/init.sh``), and no channel
carries QMP out of the stub domain.  So the wrapper answers QMP itself from
what dom0 can see -- greeting, ``qmp_capabilities``, ``query-status``
(the guest domain's paused flag), ``query-version``, ``query-commands``,
``quit`` -- and refuses everything else with a ``GenericError`` naming the
stub domain.  Save/restore of device state goes through the agent's stub
domain channel (``stubdom/channel.py``), not through this socket.
"""
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

from nova_xen_stubdom.dom0 import daemon_protocol
from nova_xen_stubdom.dom0 import device_model as dm_wrapper
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import logs
from nova_xen_stubdom.dom0 import registry
from nova_xen_stubdom.dom0 import stubdom_link as stubdom
from nova_xen_stubdom.dom0 import vnc_bridge

LOG = logging.getLogger(__name__)

DEFAULT_DOM0_QEMU = '/usr/lib64/xen/bin/qemu-system-i386'
DOM0_STATE_PATH = '/local/domain/0/device-model/%d/state'
QMP_COMMANDS = ('qmp_capabilities', 'query-status', 'query-version',
                'query-commands', 'quit')


class DmArgs:
    def __init__(self, domid: int, qmp_paths: List[str],
                 vm_uuid: Optional[str], argv: List[str]):
        self.domid = domid
        self.qmp_paths = qmp_paths
        self.vm_uuid = vm_uuid
        self.argv = argv


def _opts(spec: str) -> Dict[str, str]:
    """``socket,id=x,path=/p,server=on`` -> {'': 'socket', 'id': 'x', ...}"""
    out = {}
    for i, part in enumerate(spec.split(',')):
        key, eq, value = part.partition('=')
        if i == 0 and not eq:
            out[''] = part
        else:
            out[key] = value if eq else 'on'
    return out


def parse_argv(argv: List[str]) -> DmArgs:
    """Pick what the wrapper needs out of QEMU's command line.

    :raises InvalidArgument: no (or a bad) ``-xen-domid``.
    """
    args = list(argv)
    leading = None
    if args and args[0].isdigit():
        leading = int(args.pop(0))
    domid = None
    vm_uuid = None
    chardevs: Dict[str, str] = {}
    monitors: List[str] = []
    qmp: List[str] = []
    i = 0
    while i < len(args):
        opt = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if opt == '-xen-domid' and value is not None:
            try:
                domid = int(value)
            except ValueError:
                raise errors.InvalidArgument(name='-xen-domid', value=value,
                                             reason='not an integer')
        elif opt == '-uuid' and value is not None:
            vm_uuid = value
        elif opt == '-chardev' and value is not None:
            o = _opts(value)
            if o.get('') == 'socket' and o.get('path') and 'id' in o:
                chardevs[o['id']] = o['path']
        elif opt == '-mon' and value is not None:
            o = _opts(value)
            if o.get('mode') == 'control' and o.get('chardev'):
                monitors.append(o['chardev'])
        elif opt == '-qmp' and value is not None:
            target = _opts(value).get('', '')
            if target.startswith('unix:'):
                qmp.append(target[len('unix:'):])
        else:
            i += 1
            continue
        i += 2
    if domid is None:
        domid = leading
    if domid is None:
        raise errors.InvalidArgument(name='-xen-domid', value=None,
                                     reason='missing from the device model '
                                            'command line')
    paths = [chardevs[m] for m in monitors if m in chardevs] + qmp
    return DmArgs(domid, paths, vm_uuid, list(argv))


class QmpFacade:
    """QMP servers on *paths* answering for guest *domid* (see module doc)."""

    def __init__(self, agent, domid: int, stub_domid: int,
                 paths: List[str]):
        self.agent = agent
        self.domid = domid
        self.stub_domid = stub_domid
        self.paths = paths
        self.quit = threading.Event()
        self._socks: List[socket.socket] = []
        self._threads: List[threading.Thread] = []

    def start(self) -> None:
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            sock.listen(4)
            sock.settimeout(0.5)
            self._socks.append(sock)
            t = threading.Thread(target=self._accept, args=(sock,),
                                 name='qmp-%s' % path, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self.quit.set()
        for t in self._threads:
            t.join(5)
        for sock, path in zip(self._socks, self.paths):
            sock.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _accept(self, sock: socket.socket) -> None:
        while not self.quit.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _version(self) -> Dict:
        return {'qemu': {'major': 0, 'minor': 0, 'micro': 0},
                'package': 'nova-xen-stubdom dom0 bridge (device model in '
                           'stub domain %d)' % self.stub_domid}

    def handle(self, msg: Dict) -> Dict:
        """One QMP command -> its reply (``return`` or ``error``)."""
        cmd = msg.get('execute')
        reply: Dict = {}
        if cmd == 'qmp_capabilities' or cmd == 'quit':
            reply = {'return': {}}
        elif cmd == 'query-status':
            try:
                paused = self.agent.domain_info(self.domid).paused
            except errors.DomainNotFound:
                paused = True
            state = stubdom.dm_state(self.agent, self.stub_domid,
                                     self.domid)
            running = not paused and state == 'running'
            reply = {'return': {'status': 'running' if running else
                                'paused', 'running': running,
                                'singlestep': False}}
        elif cmd == 'query-version':
            reply = {'return': self._version()}
        elif cmd == 'query-commands':
            reply = {'return': [{'name': c} for c in QMP_COMMANDS]}
        else:
            reply = {'error': {
                'class': 'GenericError',
                'desc': 'command %r is not available: the device model of '
                        'domain %d runs in stub domain %d and this dom0 '
                        'endpoint answers only %s' % (
                            cmd, self.domid, self.stub_domid,
                            ', '.join(QMP_COMMANDS))}}
        if 'id' in msg:
            reply['id'] = msg['id']
        return reply

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._session(conn.makefile('rwb'))
        except OSError as exc:      # the client went away: its business
            LOG.debug('QMP client of domain %d: %s', self.domid, exc)

    def _session(self, f) -> None:
        greeting = {'QMP': {'version': self._version(), 'capabilities': []}}
        f.write(json.dumps(greeting).encode() + b'\r\n')
        f.flush()
        for line in f:
            if not line.strip():
                continue
            msg = None
            try:
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError('not an object')
            except ValueError as exc:
                reply = {'error': {'class': 'GenericError',
                                   'desc': 'JSON parse error: %s' % exc}}
            else:
                reply = self.handle(msg)
            f.write(json.dumps(reply).encode() + b'\r\n')
            f.flush()
            if isinstance(msg, dict) and msg.get('execute') == 'quit':
                self.quit.set()
                return


def wait_running(agent, stub: int, guest: int, timeout: float,
                 poll: float = 0.2) -> str:
    """Wait for the stub domain's QEMU; its final state (``running``,
    ``error``, or the last seen state on timeout)."""
    deadline = time.monotonic() + timeout
    state = None
    while True:
        state = stubdom.dm_state(agent, stub, guest)
        if state in ('running', 'error') or time.monotonic() >= deadline:
            return state or 'absent'
        time.sleep(poll)


def serve(agent, parsed: DmArgs, vm_uuid: str, launched: Dict, *,
          start_timeout: float = 60.0, poll: float = 1.0,
          stop_event: Optional[threading.Event] = None) -> int:
    """Stub domain mode: wait for QEMU, answer QMP, tear down at the end."""
    stub = launched['stubdom_domid']
    guest = parsed.domid
    backend = agent.backend
    facade = QmpFacade(agent, guest, stub, parsed.qmp_paths or
                       [launched['qmp']])
    bridge = None
    try:
        state = wait_running(agent, stub, guest, start_timeout)
        if state != 'running':
            sys.stderr.write(
                'device model of domain %d in stub domain %d did not '
                'start: state %s\n' % (guest, stub, state))
            return 1
        backend.xs_write(DOM0_STATE_PATH % guest, 'running')
        facade.start()
        bridge = vnc_bridge.start(stub, guest)
        LOG.info('domain %d: device model in stub domain %d, QMP on %s',
                 guest, stub, ', '.join(facade.paths))
        stop_event = stop_event or threading.Event()
        while not (facade.quit.is_set() or stop_event.is_set()):
            try:
                agent.domain_info(guest)
            except errors.DomainNotFound:
                LOG.info('domain %d is gone', guest)
                break
            facade.quit.wait(poll)
        return 0
    finally:
        facade.close()
        vnc_bridge.stop(bridge)
        try:
            backend.xs_rm(DOM0_STATE_PATH % guest)
        finally:
            _stop(agent, guest, vm_uuid)


def _daemon_socket(agent) -> Optional[str]:
    """The host daemon's socket when it runs: the daemon, which owns links
    and PCI grants, makes and revokes them; without it (a host set up
    without the daemon, the tests) the wrapper does the work itself."""
    path = agent.config.socket_path
    return path if os.path.exists(path) else None


def _launch(agent, domid: int, vm_uuid: str) -> Dict:
    sock = _daemon_socket(agent)
    if sock is None:
        return dm_wrapper.launch(agent, domid, vm_uuid)
    return json.loads(daemon_protocol.call(
        sock, 'dm_launch', {'guest_domid': str(domid),
                            'guest_vm_uuid': vm_uuid},
        plugin=registry.DM_PLUGIN))


def _stop(agent, domid: int, vm_uuid: str) -> None:
    sock = _daemon_socket(agent)
    if sock is None:
        dm_wrapper.stop(agent, domid, vm_uuid)
        return
    daemon_protocol.call(sock, 'dm_stop', {'guest_domid': str(domid),
                                           'guest_vm_uuid': vm_uuid},
                         plugin=registry.DM_PLUGIN)


def main(argv: Optional[List[str]] = None, *, agent=None,
         execv: Callable = os.execv,
         stop_event: Optional[threading.Event] = None) -> int:
    """Process entry; *agent*, *execv* and *stop_event* are for tests."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logs.setup('nova-xen-stubdom-dm-wrapper')
    from nova_xen_stubdom.dom0 import xapi_plugin
    try:
        parsed = parse_argv(argv)
        agent = agent or xapi_plugin.make_agent()
        cfg = agent.config
        vm_uuid = parsed.vm_uuid or agent.domain_info(parsed.domid).vm_uuid
        launched = _launch(agent, parsed.domid, vm_uuid)
    except errors.AgentError as exc:
        sys.stderr.write('nova-xen-stubdom device-model wrapper: %s\n' % exc)
        return 1
    if launched['mode'] == 'dom0':
        qemu = cfg.dom0_qemu or DEFAULT_DOM0_QEMU
        LOG.info('domain %d: QEMU in dom0 (%s), allowed by host policy',
                 parsed.domid, qemu)
        execv(qemu, [qemu] + argv)
        return 0        # only reached with a test's execv
    if stop_event is None:
        stop_event = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    return serve(agent, parsed, vm_uuid, launched,
                 start_timeout=cfg.dm_start_timeout,
                 stop_event=stop_event)


if __name__ == '__main__':
    sys.exit(main())
