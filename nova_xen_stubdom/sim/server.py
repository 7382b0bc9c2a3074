"""The simulator server: pools of hosts serving XAPI over HTTP on loopback.

    sim = SimServer(hosts=2, pools=1, username='root', password='secret')
    sim.start()
    XenAPI.Session(sim.url).login_with_password('root', 'secret', '2.0', 'x')
    ...
    sim.stop()

Host *k* (counting across pools from 0) listens on ``127.0.0.<k+1>`` and the
same port for all hosts.  Each connection is served by its own thread.
Besides XML-RPC on ``/`` each host answers ``PUT /import_raw_vdi`` and
``GET /export_raw_vdi`` (``?vdi=<ref|uuid>&session_id=<ref>``),
``CONNECT /console?uuid=..&session_id=..`` (:mod:`.console_proxy`) and the
side-channel ``sim.*`` XML-RPC methods (:mod:`nova_xen_stubdom.sim.control`).
"""
import errno
import http.server
import logging
import os
import socket
import socketserver
import threading
import urllib.parse
import xmlrpc.client
from typing import Dict, List, Optional, Sequence

from nova_xen_stubdom.sim import api, control, faults as faultslib
from nova_xen_stubdom.sim import hostfail, persist, storage
# importing registers the hand-written messages
from nova_xen_stubdom.sim import copies, devices, handlers, vm  # noqa: F401
from nova_xen_stubdom.sim import iscsi
from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.sim.pool import HostConfig, HostRuntime, Pool

LOG = logging.getLogger(__name__)
_CHUNK = 1 << 20


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            return      # the client went away mid-answer: its business
        LOG.exception('simulator HTTP handler failed for %s',
                      client_address)

    def __init__(self, addr, handler, sim, host):
        self.sim = sim
        self.host = host
        super().__init__(addr, handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'nova-xen-stubdom-sim/1'

    def setup(self):
        super().setup()
        # answers are written as headers + body: without NODELAY every
        # call waits for the client's delayed ACK (~40 ms)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # keep test output quiet
        LOG.debug('%s %s', self.address_string(), fmt % args)

    # -- XML-RPC -----------------------------------------------------------
    def do_POST(self):
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length)
        path = urllib.parse.urlsplit(self.path).path
        sim, host = self.server.sim, self.server.host
        try:
            if path == '/jsonrpc':
                return self._jsonrpc(body)
            params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        except Exception as e:
            return self._reply(400, b'bad request: %s' % str(e).encode())
        try:
            if method.startswith('sim.'):
                result = control.call(sim, method, params)
            else:
                result = api.dispatch(host.pool, host, method, params,
                                      client=self.client_address[0])
        except faultslib.DropConnection:
            self._drop()
            return
        out = xmlrpc.client.dumps((result,), methodresponse=True,
                                  allow_none=True).encode()
        self._reply(200, out, 'text/xml')

    def _jsonrpc(self, body):
        import json
        host = self.server.host
        try:
            req = json.loads(body)
            method, params = req['method'], req.get('params', [])
        except (ValueError, KeyError, TypeError) as e:
            return self._reply(400, b'bad request: %s' % str(e).encode())
        try:
            env = api.dispatch(host.pool, host, method, params,
                               client=self.client_address[0])
        except faultslib.DropConnection:
            self._drop()
            return
        out = {'id': req.get('id')}
        if req.get('jsonrpc') == '2.0':
            out['jsonrpc'] = '2.0'
        if env['Status'] == 'Success':
            out['result'] = _jsonable(env['Value'])
        else:
            desc = env['ErrorDescription']
            out['error'] = {'code': 1, 'message': desc[0], 'data': desc[1:]}
        self._reply(200, json.dumps(out).encode(), 'application/json')

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reply(self, code, body: bytes, ctype='text/plain'):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # -- VDI import / export -------------------------------------------------
    def _vdi_request(self, role_message: str):
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
            self.path).query))
        host = self.server.host
        pool = host.pool
        try:
            pool.faults.before_call(role_message, host)
            session = pool.sessions.check(q.get('session_id', ''), host)
            pool.sessions.check_role(session,
                                     pool.db.schema.message(role_message))
            ref = q.get('vdi', '')
            if not pool.db.exists('VDI', ref):
                ref = pool.db.by_uuid('VDI', ref)
            pool.faults.check_fail(role_message, host)
        except faultslib.DropConnection:
            self._drop()
            return None
        except XapiError as e:
            code = {'SESSION_INVALID': 401,
                    'RBAC_PERMISSION_DENIED': 403,
                    'UUID_INVALID': 404}.get(e.code, 500)
            self._reply(code, (' '.join(e.description)).encode())
            return None
        fmt = q.get('format', 'raw')
        if fmt != 'raw':
            self._reply(400, b'unsupported format %r (the simulator stores '
                        b'raw images)' % fmt.encode())
            return None
        task = q.get('task_id', '')
        self._task = task if pool.db.exists('task', task) else None
        rec = pool.db.snapshot('VDI', ref)
        return pool, ref, rec, storage.vdi_path(pool, rec['uuid'])

    def _finish_task(self, pool, error=None):
        task = getattr(self, '_task', None)
        if task and pool.db.exists('task', task):
            from nova_xen_stubdom.sim import wire
            fields = {'progress': 1.0, 'finished': wire.now()}
            if error:
                fields.update(status='failure', error_info=error)
            else:
                fields.update(status='success', result='')
            pool.db.set('task', task, **fields)

    def do_CONNECT(self):
        # XAPI's console proxy (ocaml/xapi/console.ml handler)
        from nova_xen_stubdom.sim import console_proxy
        if urllib.parse.urlsplit(self.path).path != '/console':
            self.close_connection = True
            return self._reply(404, b'not found')
        console_proxy.handle(self)

    def do_PUT(self):
        path = urllib.parse.urlsplit(self.path).path
        if path != '/import_raw_vdi':
            return self._reply(404, b'not found')
        # reading the body before answering keeps the connection usable
        got = self._vdi_request('VDI.create')
        if got is None:
            self.close_connection = True
            return
        pool, ref, rec, file = got
        size = rec['virtual_size']
        written = 0
        try:
            with open(file, 'r+b') as f:
                for chunk in self._body_chunks():
                    if written + len(chunk) > size:
                        self.close_connection = True
                        self._finish_task(pool, ['INTERNAL_ERROR',
                                                 'more data than the VDI '
                                                 'holds'])
                        return self._reply(
                            400, b'more data than the VDI holds (%d bytes)'
                            % size)
                    f.write(chunk)
                    written += len(chunk)
        except OSError as e:
            self._finish_task(pool, ['INTERNAL_ERROR', str(e)])
            return self._reply(500, str(e).encode())
        pool.db.set('VDI', ref, physical_utilisation=storage.allocated_bytes(
            file))
        self._finish_task(pool)
        self._reply(200, b'')

    def _body_chunks(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b';')[0], 16)
                if n == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(n)
                self.rfile.readline()
        remaining = int(self.headers.get('Content-Length') or 0)
        while remaining:
            chunk = self.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                raise OSError(errno.EPIPE, 'client closed early')
            remaining -= len(chunk)
            yield chunk

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path != '/export_raw_vdi':
            return self._reply(404, b'not found')
        got = self._vdi_request('VDI.get_record')
        if got is None:
            return
        _pool, _ref, rec, file = got
        size = rec['virtual_size']
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(size))
        self.end_headers()
        with open(file, 'rb') as f:
            left = size
            while left:
                chunk = f.read(min(_CHUNK, left)) or bytes(min(_CHUNK, left))
                self.wfile.write(chunk)
                left -= len(chunk)
        self._finish_task(_pool)


def _jsonable(v):
    if isinstance(v, xmlrpc.client.DateTime):
        return v.value
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


class SimServer:
    """Pools of simulated XAPI hosts, served on loopback."""

    def __init__(self, hosts: int = 1, pools: int = 1, port: int = 0,
                 username: str = 'root', password: str = 'password',
                 users: Optional[Dict[str, tuple]] = None,
                 state_dir: Optional[str] = None,
                 host_configs: Optional[Sequence[HostConfig]] = None,
                 session_timeout: float = 24 * 3600):
        if hosts < 1 or pools < 1 or pools > hosts:
            raise ValueError('need 1 <= pools <= hosts (got %d pools, %d '
                             'hosts)' % (pools, hosts))
        self.n_hosts = hosts
        self.n_pools = pools
        self.port = port
        self.users = {username: (password, 'pool-admin')}
        for name, (pw, role) in (users or {}).items():
            self.users[name] = (pw, role)
        self.state_dir = state_dir
        self.faults = faultslib.Faults()
        configs = list(host_configs or [])
        configs += [HostConfig() for _ in range(hosts - len(configs))]
        self.host_configs = configs
        self.session_timeout = session_timeout
        self.pools: List[Pool] = []
        self._servers: List[_HTTPServer] = []
        self._threads: List[threading.Thread] = []
        self._persister: Optional[persist.Persister] = None

    # -- topology ------------------------------------------------------------
    def _make_pools(self) -> None:
        per = [self.n_hosts // self.n_pools + (1 if i < self.n_hosts %
                                               self.n_pools else 0)
               for i in range(self.n_pools)]
        k = 0
        for p, count in enumerate(per):
            addrs = ['127.0.0.%d' % (k + i + 1) for i in range(count)]
            cfgs = self.host_configs[k:k + count]
            sdir = os.path.join(self.state_dir, 'pool%d' % p) \
                if self.state_dir else None
            pool = Pool(p, addrs, cfgs, self.users, self.faults,
                        state_dir=sdir)
            pool.sessions.idle_timeout = self.session_timeout
            self.pools.append(pool)
            k += count

    @property
    def hosts(self) -> List[HostRuntime]:
        return [h for p in self.pools for h in p.hosts]

    def host(self, index: int) -> HostRuntime:
        return self.hosts[index]

    def host_by_uuid(self, uuid: str) -> HostRuntime:
        for h in self.hosts:
            if h.uuid == uuid:
                return h
        raise KeyError(uuid)

    @property
    def url(self) -> str:
        """URL of the first pool's master."""
        return self.pools[0].master.url

    @property
    def urls(self) -> List[str]:
        """URL of each pool's master."""
        return [p.master.url for p in self.pools]

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> 'SimServer':
        self._make_pools()
        for pool in self.pools:
            if not (pool.state_dir and persist.load(pool)):
                pool.build()
            pool.boot()
        self._bind()
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever,
                                 kwargs={'poll_interval': 0.2},
                                 name='sim-http-%s' % srv.host.address,
                                 daemon=True)
            t.start()
            self._threads.append(t)
        if self.state_dir:
            self._persister = persist.Persister(self.pools)
            self._persister.start()
        LOG.info('XAPI simulator: %d host(s) in %d pool(s) at %s',
                 self.n_hosts, self.n_pools, self.url)
        return self

    def _bind(self) -> None:
        for attempt in range(50):
            servers = []
            port = self.port
            try:
                for h in self.hosts:
                    srv = _HTTPServer((h.address, port), _Handler, self, h)
                    port = srv.server_address[1]
                    servers.append(srv)
            except OSError:
                for srv in servers:
                    srv.server_close()
                if self.port:
                    raise
                continue
            for h in self.hosts:
                h.port = port
            self._servers = servers
            return
        raise OSError('could not find a port free on every host address')

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        self._servers = []
        if self._persister is not None:
            self._persister.stop()
            self._persister = None
        iscsi.close_arrays(self.pools)
        for pool in self.pools:
            pool.shutdown()
            if getattr(pool, 'vdi_dir_is_temp', False):
                import shutil
                shutil.rmtree(pool.vdi_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- operations for tests (also reachable through sim.* over XML-RPC) ----
    def restart_toolstack(self, host: HostRuntime) -> None:
        """XAPI restarts on *host*: its sessions die, domains keep running."""
        host.toolstack_epoch += 1
        pool = host.pool
        with pool.sessions.lock:
            dead = [r for r, s in pool.sessions.live.items()
                    if s['host'] == host.ref]
        for r in dead:
            pool.sessions.expire(r)
        pool.toolstack_started(host)

    def crash_host(self, host: HostRuntime) -> None:
        """A member dies: its domains vanish, XAPI keeps its VMs Running
        and resident on it, calls forwarded to it fail HOST_OFFLINE."""
        hostfail.crash(host.pool, host)

    def host_comes_back(self, host: HostRuntime) -> None:
        """The dead member boots again: live, its former VMs Halted."""
        hostfail.come_back(host.pool, host)

    def expire_sessions(self) -> int:
        return sum(p.sessions.expire() for p in self.pools)

    def leaks(self) -> Dict[str, object]:
        """What a clean test leaves nothing of: non-system VMs, VDIs, VBDs,
        VIFs, sessions, domains, memory files, device models, PCI grants."""
        out = {}
        for p in self.pools:
            db = p.db
            vms = [r for r in db.all_refs('VM')
                   if not db.get('VM', r)['is_control_domain']
                   and not db.get('VM', r)['is_a_template']]
            out['pool%d' % p.index] = {
                'VM': vms, 'VDI': [r for r in db.all_refs('VDI')
                                   if db.get('VDI', r)['type'] != 'iso'],
                'VBD': db.all_refs('VBD'), 'VIF': db.all_refs('VIF'),
                'sessions': p.sessions.count(),
                'pending_tasks': db.find('task', status='pending'),
            }
            out['pool%d' % p.index].update(iscsi.leaks(p))
            for h in p.hosts:
                hv = h.hypervisor
                out['host%s' % h.address] = {
                    'domains': [d for d in hv.domains if d != 0],
                    'memory_files': sorted(
                        f for f in os.listdir(hv.mem_dir)
                        if f.endswith('.mem')),
                    'device_models': dict(hv.device_models),
                    'qemus': {g: q.domid for g, q in hv.qemus.items()},
                    'pci_clean': h.pci.is_clean(),
                }
        return out
