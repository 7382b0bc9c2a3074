"""A small in-test XAPI endpoint for the client layer's unit tests.

Real XML-RPC over HTTP on loopback (so the client and the SDK run their real
code paths), XAPI's result envelope, and just enough behaviour: sessions,
VM records and power state, tasks, event.from, and knobs to inject faults
(fail the next N calls, drop connections, delay or block calls, refuse
logins with HOST_IS_SLAVE, expire sessions). The project's full simulator
lives in nova_xen_stubdom.sim; this one stays tiny and deterministic.
"""
import http.server
import itertools
import socketserver
import ssl
import threading
import time
import uuid
import xmlrpc.client

REF = 'OpaqueRef:'


class FakeXAPI:
    def __init__(self, username='root', password='secret', vms=2,
                 master_address=None, https_context=None):
        self.username = username
        self.password = password
        self.master_address = master_address   # set: we are a pool member
        self.lock = threading.Condition()
        self.sessions = {}
        self.logins = 0
        self.logouts = 0
        self.in_flight = 0
        self.in_flight_by = {}       # method -> calls being served
        self.peak_in_flight = 0
        self.peak_sessions = 0
        self.calls = []              # (method, params without session)
        self.fail_next = {}          # method -> [ErrorDescription, ...]
        self.drop_next = {}          # method -> count
        self.delay = {}              # method -> seconds
        self.gates = {}              # method -> threading.Event
        self.task_delay = 0.0
        self.task_cancellable = True
        self.tasks = {}
        self.vdi_data = {}
        self.connections = set()
        self.host_addresses = []     # host.get_all_records' addresses
        self.http_requests = []
        self.events = []             # (id, class, op, ref, snapshot)
        self.event_id = itertools.count(1)
        self.vms = {}
        with self.lock:
            for i in range(vms):
                self._add_vm('vm%d' % i)
        handler = _make_handler(self)
        self.httpd = _Server(('127.0.0.1', 0), handler)
        if https_context is not None:
            self.httpd.socket = https_context.wrap_socket(
                self.httpd.socket, server_side=True)
        scheme = 'https' if https_context is not None else 'http'
        self.port = self.httpd.server_address[1]
        self.url = '%s://127.0.0.1:%d' % (scheme, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    # -- helpers used by tests ------------------------------------------
    def stop(self):
        """Stop serving and cut open connections: the host is gone."""
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self.connections):
            try:
                conn.shutdown(2)
            except OSError:
                pass

    @property
    def open_sessions(self):
        with self.lock:
            return len(self.sessions)

    def count(self, method):
        with self.lock:
            return sum(1 for m, _ in self.calls if m == method)

    def expire_sessions(self):
        with self.lock:
            self.sessions.clear()

    def inject(self, method, description, times=1):
        with self.lock:
            self.fail_next.setdefault(method, []).extend(
                [list(description)] * times)

    def block(self, method):
        gate = threading.Event()
        self.gates[method] = gate
        return gate

    def wait_until(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.05))
            return True

    def _add_vm(self, name):
        ref = REF + uuid.uuid4().hex
        rec = {'uuid': str(uuid.uuid4()), 'name_label': name,
               'power_state': 'Halted', 'other_config': {},
               'memory_static_max': '1073741824'}
        self.vms[ref] = rec
        self._event('vm', 'add', ref, rec)
        return ref

    def _event(self, cls, op, ref, snapshot):
        self.events.append((next(self.event_id), cls, op, ref,
                            dict(snapshot) if snapshot else None))
        self.lock.notify_all()

    # -- dispatch ------------------------------------------------------
    def dispatch(self, method, params):
        """Return an envelope, or None to drop the connection."""
        with self.lock:
            self.calls.append((method, params[1:] if not method.startswith(
                'session.login') else params[:1]))
            self.in_flight += 1
            self.in_flight_by[method] = self.in_flight_by.get(method, 0) + 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.lock.notify_all()
        try:
            with self.lock:
                if self.drop_next.get(method):
                    self.drop_next[method] -= 1
                    return None
            if method in self.delay:
                time.sleep(self.delay[method])
            gate = self.gates.get(method)
            if gate is not None:
                gate.wait(30)
            with self.lock:
                queue = self.fail_next.get(method)
                if queue:
                    return _fail(*queue.pop(0))
            try:
                return {'Status': 'Success',
                        'Value': self._handle(method, params)}
            except _Failure as exc:
                return _fail(*exc.args)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.in_flight_by[method] -= 1
                self.lock.notify_all()

    def _handle(self, method, params):
        if method == 'session.login_with_password':
            if self.master_address:
                raise _Failure('HOST_IS_SLAVE', self.master_address)
            user, password = params[0], params[1]
            if (user, password) != (self.username, self.password):
                raise _Failure('SESSION_AUTHENTICATION_FAILED', user,
                               'Authentication failure')
            with self.lock:
                ref = REF + uuid.uuid4().hex
                self.sessions[ref] = user
                self.logins += 1
                self.peak_sessions = max(self.peak_sessions,
                                         len(self.sessions))
            return ref
        session, args = params[0], params[1:]
        with self.lock:
            if session not in self.sessions:
                raise _Failure('SESSION_INVALID', session)
        if method == 'session.logout':
            with self.lock:
                del self.sessions[session]
                self.logouts += 1
            return ''
        if method.startswith('Async.'):
            return self._start_task(method[len('Async.'):], args)
        return self._op(method, args)

    def _op(self, method, args):
        with self.lock:
            if method == 'host.get_all_records':
                return {REF + 'host%d' % i: {'address': a, 'name_label':
                                             'host%d' % i}
                        for i, a in enumerate(self.host_addresses)}
            if method == 'VM.get_all':
                return list(self.vms)
            if method == 'VM.get_all_records':
                return {r: dict(v) for r, v in self.vms.items()}
            if method.startswith('VM.') and args:
                vm = self.vms.get(args[0])
                if vm is None and not method.startswith('VM.create'):
                    raise _Failure('HANDLE_INVALID', 'VM', args[0])
            if method == 'VM.get_record':
                return dict(vm)
            if method == 'VM.get_power_state':
                return vm['power_state']
            if method == 'VM.set_name_label':
                vm['name_label'] = args[1]
                self._event('vm', 'mod', args[0], vm)
                return ''
            if method == 'VM.set_memory_static_max':
                if not isinstance(args[1], str):
                    raise _Failure('FIELD_TYPE_ERROR', 'memory_static_max')
                vm['memory_static_max'] = args[1]
                return ''
            if method == 'VM.add_to_other_config':
                vm['other_config'][args[1]] = args[2]
                self._event('vm', 'mod', args[0], vm)
                return ''
            if method == 'VM.start':
                if vm['power_state'] != 'Halted':
                    raise _Failure('VM_BAD_POWER_STATE', args[0], 'halted',
                                   vm['power_state'].lower())
                vm['power_state'] = 'Running'
                self._event('vm', 'mod', args[0], vm)
                return ''
            if method == 'VM.hard_shutdown':
                vm['power_state'] = 'Halted'
                self._event('vm', 'mod', args[0], vm)
                return ''
            if method == 'VM.destroy':
                del self.vms[args[0]]
                self._event('vm', 'del', args[0], None)
                return ''
            if method == 'VM.clone':
                return self._add_vm(args[1])
            if method.startswith('task.'):
                return self._task_op(method, args)
            if method == 'event.from':
                return self._event_from(*args)
        raise _Failure('MESSAGE_METHOD_UNKNOWN', method)

    # tasks
    def _start_task(self, method, args):
        ref = REF + 'task-' + uuid.uuid4().hex
        task = {'status': 'pending', 'result': '', 'error_info': [],
                'method': method}
        with self.lock:
            self.tasks[ref] = task

        def run():
            deadline = time.monotonic() + self.task_delay
            while time.monotonic() < deadline:
                with self.lock:
                    if task['status'] != 'pending':
                        return
                time.sleep(0.01)
            try:
                value = self._op(method, args)
                with self.lock:
                    if task['status'] == 'pending':
                        task['status'] = 'success'
                        task['result'] = xmlrpc.client.dumps(
                            (value,)).split('<param>')[1].split(
                                '</param>')[0].strip() if value else ''
            except _Failure as exc:
                with self.lock:
                    task['status'] = 'failure'
                    task['error_info'] = list(exc.args)
        threading.Thread(target=run, daemon=True).start()
        return ref

    def _task_op(self, method, args):
        task = self.tasks.get(args[0])
        if task is None:
            raise _Failure('HANDLE_INVALID', 'task', args[0])
        if method == 'task.get_status':
            return task['status']
        if method == 'task.get_result':
            return task['result']
        if method == 'task.get_error_info':
            return task['error_info']
        if method == 'task.cancel':
            if not self.task_cancellable:
                raise _Failure('OPERATION_NOT_ALLOWED', 'not cancellable')
            if task['status'] == 'pending':
                task['status'] = 'cancelled'
                task['error_info'] = ['TASK_CANCELLED', args[0]]
            return ''
        if method == 'task.destroy':
            del self.tasks[args[0]]
            return ''
        raise _Failure('MESSAGE_METHOD_UNKNOWN', method)

    # events (called with self.lock held)
    def _event_from(self, classes, token, timeout):
        classes = {c.lower() for c in classes}
        if token == '':
            return {'events': [], 'valid_ref_counts': {},
                    'token': str(self.events[-1][0] if self.events else 0)}
        try:
            since = int(token)
        except ValueError:
            raise _Failure('EVENT_FROM_TOKEN_PARSE_FAILURE', token)
        deadline = time.monotonic() + float(timeout)
        while True:
            if self.events and since < self.events[0][0] - 1:
                raise _Failure('EVENTS_LOST')
            batch = [e for e in self.events
                     if e[0] > since and e[1] in classes]
            left = deadline - time.monotonic()
            if batch or left <= 0:
                break
            self.lock.wait(left)
        last = self.events[-1][0] if self.events else 0
        return {'events': [{'id': str(e[0]), 'class': e[1],
                            'operation': e[2], 'ref': e[3],
                            'timestamp': '0',
                            **({'snapshot': e[4]} if e[4] else {})}
                           for e in batch],
                'valid_ref_counts': {}, 'token': str(last)}

    def drop_events_before(self, event_id):
        with self.lock:
            self.events = [e for e in self.events if e[0] >= event_id]


class _Failure(Exception):
    pass


def _fail(*description):
    return {'Status': 'Failure', 'ErrorDescription': list(description)}


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass        # clients dropping connections is what tests do


def _make_handler(fake):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            fake.connections.add(self.connection)

        def finish(self):
            fake.connections.discard(self.connection)
            super().finish()

        def _http_handler(self):
            import urllib.parse
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            fake.http_requests.append((self.command, url.path, q))
            with fake.lock:
                ok = q.get('session_id') in fake.sessions
            if not ok:
                return 401, b'bad session'
            if url.path == '/import_raw_vdi' and self.command == 'PUT':
                n = int(self.headers.get('Content-Length', 0))
                fake.vdi_data[q['vdi']] = self.rfile.read(n)
                return 200, b''
            if url.path == '/export_raw_vdi' and self.command == 'GET':
                if q.get('vdi') not in fake.vdi_data:
                    return 404, b'no such vdi'
                return 200, fake.vdi_data[q['vdi']]
            return 404, b'no handler'

        def _answer(self):
            status, body = self._http_handler()
            self.send_response(status)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = _answer
        do_GET = _answer

        def do_POST(self):
            length = int(self.headers.get('Content-Length', 0))
            params, method = xmlrpc.client.loads(self.rfile.read(length))
            envelope = fake.dispatch(method, list(params))
            if envelope is None:
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            body = xmlrpc.client.dumps((envelope,), methodresponse=True,
                                       allow_none=True).encode()
            self.send_response(200)
            self.send_header('Content-Type', 'text/xml')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    return Handler


def self_signed_context(tmpdir, hostname='127.0.0.1'):
    """Server SSL context with a fresh self-signed cert; returns
    (context, cert_path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         'fake-xapi')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(hostname))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = str(tmpdir / 'cert.pem')
    key_path = str(tmpdir / 'key.pem')
    with open(cert_path, 'wb') as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, 'wb') as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_path
