"""The QMP endpoint xenopsd talks to for a guest whose QEMU runs in a stub
domain.

xenopsd starts QEMU with two QMP servers on its command line
(``-qmp unix:/var/run/xen/qmp-libxl-<domid>,server,nowait`` and
``-qmp unix:/var/run/xen/qmp-event-<domid>,server,nowait``; xen-api
``ocaml/xenopsd/xc/device.ml`` ``Make_qemu_upstream.Dm.qemu_args``).  For our
guests the device-model wrapper serves both sockets itself: the stub
domain's QEMU speaks QMP only to the stub domain's init (a local pipe, see
``stubdom/init.sh``) and no channel carries QMP out of the stub domain.

Every command xenopsd can send is in :data:`ANSWERS` with what this
endpoint does about it (the catalogue, ``doc/source/xapi-behaviour.rst``
"The device-model wrapper's QMP", cites where xenopsd sends each one):

* answered from what dom0 sees -- ``qmp_capabilities``, ``cont`` (the stub
  domain's QEMU runs without ``-S``: already running), ``query-status``
  (the guest domain's paused flag and the stub QEMU's xenstore state),
  ``query-chardev`` (this endpoint's own monitor sockets; no ``serial0``
  pty, so xenopsd writes no serial console path), ``query-version``,
  ``query-commands``, ``quit``;
* refused with a ``GenericError`` saying why -- ``query-migratable``
  (xenopsd then records the reason in ``data/cant_suspend_reason`` and
  refuses XAPI's own suspend/migration of the guest: the stub domain would
  not follow; Nova migrates it through the dom0 daemon), and the commands
  that need QEMU itself or a file descriptor passed into it (``add-fd``,
  ``remove-fd``, ``stop``, ``xen-save-devices-state``, ``eject``,
  ``blockdev-change-medium``, ``device_add``, ``device_del``, ``qom-list``,
  ``query-hotpluggable-cpus``);
* anything else: ``CommandNotFound``, as QEMU answers an unknown command.

A reply always echoes the request's ``id`` (xenopsd matches replies by id,
``Device_common.qmp_send_cmd_internal``); a reply to a message without one
carries none (``Qmp_protocol.negotiate`` expects exactly
``{"return": {}}``).  A file descriptor xenopsd passes with ``add-fd``
(``SCM_RIGHTS`` on a one-byte message before the command) is not taken:
the kernel closes a descriptor nobody receives.
"""
import json
import logging
import os
import socket
import threading
from typing import Callable, Dict, List

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import stubdom_link as stubdom

LOG = logging.getLogger(__name__)

#: commands this endpoint answers with a result
ANSWERED = ('qmp_capabilities', 'cont', 'query-status', 'query-chardev',
            'query-version', 'query-commands', 'quit')

#: commands xenopsd sends that need QEMU itself or an fd passed into it
#: -> why they are refused
REFUSED = {
    'query-migratable': 'suspend and migration of this guest are done by '
                        'nova-xen-stubdom (the stub domain must follow its '
                        'guest), not by xenopsd',
    'add-fd': 'file descriptors cannot be passed into a stub domain',
    'remove-fd': 'no file descriptor sets: add-fd is refused',
    'stop': 'device state is saved through nova-xen-stubdom, not xenopsd',
    'xen-save-devices-state': 'device state is saved through '
                              'nova-xen-stubdom, not xenopsd',
    'xen-load-devices-state': 'device state is restored through '
                              'nova-xen-stubdom, not xenopsd',
    'eject': 'removable media of this guest are not managed by xenopsd',
    'blockdev-change-medium': 'removable media of this guest are not '
                              'managed by xenopsd',
    'device_add': 'devices of this guest are plugged by nova-xen-stubdom',
    'device_del': 'devices of this guest are unplugged by nova-xen-stubdom',
    'qom-list': 'the QEMU object tree is inside the stub domain',
    'query-hotpluggable-cpus': 'vCPU hot-plug through QMP is not bridged '
                               'into the stub domain',
}

#: qmp-<kind>-<domid> sockets as QEMU names their chardevs
_MONITOR_LABEL = 'compat_monitor%d'


class QmpFacade:
    """QMP servers on *paths* answering for guest *domid* (module doc)."""

    def __init__(self, agent, domid: int, stub_domid: int,
                 paths: List[str]):
        self.agent = agent
        self.domid = domid
        self.stub_domid = stub_domid
        self.paths = paths
        self.quit = threading.Event()
        self._socks: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._handlers: Dict[str, Callable[[Dict], object]] = {
            'qmp_capabilities': lambda _m: {},
            # the stub domain's QEMU starts without -S: already running
            'cont': lambda _m: {},
            'quit': lambda _m: {},
            'query-status': lambda _m: self._status(),
            'query-chardev': lambda _m: self._chardevs(),
            'query-version': lambda _m: self._version(),
            'query-commands': lambda _m: [{'name': c} for c in ANSWERED],
        }

    # -- sockets ------------------------------------------------------------
    def start(self) -> None:
        """Listen on every path (a stale socket file is replaced)."""
        try:
            for path in self.paths:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._socks.append(sock)
                sock.bind(path)
                sock.listen(4)
                sock.settimeout(0.5)
                t = threading.Thread(target=self._accept, args=(sock,),
                                     name='qmp-%s' % path, daemon=True)
                t.start()
                self._threads.append(t)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        self.quit.set()
        for t in self._threads:
            t.join(5)
        for sock in self._socks:
            sock.close()
        for path in self.paths:
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
            conn.settimeout(None)
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    # -- answers ------------------------------------------------------------
    def _version(self) -> Dict:
        return {'qemu': {'major': 0, 'minor': 0, 'micro': 0},
                'package': 'nova-xen-stubdom dom0 bridge (device model in '
                           'stub domain %d)' % self.stub_domid}

    def _status(self) -> Dict:
        try:
            paused = self.agent.domain_info(self.domid).paused
        except errors.DomainNotFound:
            paused = True
        state = stubdom.dm_state(self.agent, self.stub_domid, self.domid)
        running = not paused and state == 'running'
        return {'status': 'running' if running else 'paused',
                'running': running, 'singlestep': False}

    def _chardevs(self) -> List[Dict]:
        # what a dom0 QEMU started with these -qmp options lists: its
        # monitors; never a "serial0" pty (the guest's serial console is
        # the stub domain's), so xenopsd writes no serial/0/tty
        return [{'label': _MONITOR_LABEL % i,
                 'filename': 'unix:%s,server=on' % path,
                 'frontend-open': True}
                for i, path in enumerate(self.paths)]

    def handle(self, msg: Dict) -> Dict:
        """One QMP command -> its reply (``return`` or ``error``)."""
        cmd = msg.get('execute')
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is not None:
            reply = {'return': handler(msg)}    # type: Dict
        elif cmd in REFUSED:
            reply = {'error': {
                'class': 'GenericError',
                'desc': '%s is not available for domain %d, whose device '
                        'model runs in stub domain %d: %s' % (
                            cmd, self.domid, self.stub_domid,
                            REFUSED[cmd])}}
        else:
            # QEMU's own answer to an unknown command
            reply = {'error': {'class': 'CommandNotFound',
                               'desc': 'The command %s has not been found'
                                       % cmd}}
        if 'id' in msg:
            reply['id'] = msg['id']
        if 'error' in reply:
            LOG.info('QMP for domain %d: %s -> %s', self.domid, cmd,
                     reply['error']['class'])
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
                msg = json.loads(line.decode('utf-8'))
                if not isinstance(msg, dict):
                    raise ValueError('not an object')
            except ValueError as exc:
                msg = None
                reply = {'error': {'class': 'GenericError',
                                   'desc': 'JSON parse error: %s' % exc}}
            else:
                reply = self.handle(msg)
            f.write(json.dumps(reply).encode() + b'\r\n')
            f.flush()
            if msg is not None and msg.get('execute') == 'quit':
                self.quit.set()
                return
