"""XAPI's console proxy: ``CONNECT /console?uuid=..&session_id=..``.

Modelled on xen-api ``ocaml/xapi/console.ml`` ``handler`` (registered as
``connect_console`` in ``ocaml/xapi/xapi.ml``; datamodel.ml gives it the
``_R_VM_OP`` role) and ``ocaml/xapi/xapi_http.ml`` ``with_context``:

* the session comes from ``session_id`` (query or cookie); an unknown one
  answers 401 (``validate_session`` -> ``Http.Unauthorised``);
* ``console_of_request``: ``uuid`` names a VM (its default, i.e. ``rfb``,
  console: ``default_console_of_vm``) or a console; ``ref`` a VM or console
  ref; neither -> failure;
* ``check_vm_is_running_here``: the console's VM must be Running and
  resident on the host that got the request;
* ``address_of_console``: xenopsd's ``VM.stat`` lists the domain's consoles;
  for an HVM guest (``qemu-upstream-compat``) the rfb one is the unix socket
  ``/var/run/xen/vnc-<domid>`` (``ocaml/xenopsd/xc/device.ml``
  ``Dm_Common.vnc_socket_path``), reported while the device model runs
  (``Service.Qemu.is_running``); none -> 404;
* ``real_proxy'``: ``200 OK`` is sent *before* connecting to the console, then
  bytes are copied both ways until one side closes.

XAPI answers a failure raised inside the handler by dropping the connection;
the simulator sends a status line first so tests can tell the cases apart.
"""
import http.cookies
import select
import socket
import urllib.parse
from typing import Optional

from nova_xen_stubdom.sim import devicemodel
from nova_xen_stubdom.sim.errors import XapiError

#: bytes per copy
_CHUNK = 64 * 1024


class ConsoleRefused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _session_id(handler, query) -> str:
    if query.get('session_id'):
        return query['session_id']
    cookie = http.cookies.SimpleCookie(handler.headers.get('Cookie', ''))
    morsel = cookie.get('session_id')
    return morsel.value if morsel else ''


def _console_of_request(db, query) -> str:
    """``console.ml console_of_request`` + ``default_console_of_vm``."""
    if 'uuid' in query:
        refs = db.find('VM', uuid=query['uuid'])
        ref = refs[0] if refs else (db.find('console', uuid=query['uuid'])
                                    or [''])[0]
    elif 'ref' in query:
        ref = query['ref']
    else:
        raise ConsoleRefused(400, "console request lacks 'ref' or 'uuid'")
    if db.exists('VM', ref):
        for c in db.get('VM', ref)['consoles']:
            if db.get('console', c)['protocol'] == 'rfb':
                return c
        raise ConsoleRefused(404, 'no VNC console for VM %s' % ref)
    if db.exists('console', ref):
        return ref
    raise ConsoleRefused(404, '%s is neither a VM nor a console' % ref)


def address(host, console: dict, vm: dict) -> Optional[str]:
    """``address_of_console``: the dom0 unix socket of an rfb console."""
    if console['protocol'] != 'rfb' or vm['domid'] < 0:
        return None
    return devicemodel.vnc_socket(host.hypervisor, vm['domid'])


def open_console(host, query, session: str) -> str:
    """Check a request like XAPI does; the socket path to proxy to."""
    pool = host.pool
    db = pool.db
    try:
        sess = pool.sessions.check(session, host)
        pool.sessions.check_role(sess, db.schema.message('VM.start'))
    except XapiError as e:
        raise ConsoleRefused(401 if e.code == 'SESSION_INVALID' else 403,
                             ' '.join(e.description))
    console = _console_of_request(db, query)
    rec = db.get('console', console)
    vm = db.get('VM', rec['VM'])
    if vm['power_state'] != 'Running' or vm['resident_on'] != host.ref:
        raise ConsoleRefused(
            503, 'VM %s is not running on this host' % rec['VM'])
    path = address(host, rec, vm)
    if path is None:
        raise ConsoleRefused(404, 'no address for console %s' % console)
    return path


def handle(handler) -> None:
    """Serve one CONNECT on *handler* (http.server request handler)."""
    url = urllib.parse.urlsplit(handler.path)
    query = dict(urllib.parse.parse_qsl(url.query))
    host = handler.server.host
    handler.close_connection = True
    try:
        path = open_console(host, query, _session_id(handler, query))
    except ConsoleRefused as e:
        handler.send_response(e.status, e.reason)
        handler.send_header('Content-Length', '0')
        handler.end_headers()
        return
    handler.send_response(200, 'OK')
    handler.end_headers()
    handler.wfile.flush()
    try:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(path)
    except OSError:
        return      # real_proxy': logged, the client sees the close
    try:
        _copy(handler.connection, upstream)
    finally:
        upstream.close()


def _copy(a: socket.socket, b: socket.socket) -> None:
    ends = {a: b, b: a}
    while True:
        ready, _, _ = select.select(list(ends), [], [], 60)
        if not ready:
            return
        for src in ready:
            try:
                data = src.recv(_CHUNK)
            except OSError:
                return
            if not data:
                return
            try:
                ends[src].sendall(data)
            except OSError:
                return
