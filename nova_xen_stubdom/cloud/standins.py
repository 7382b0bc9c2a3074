"""STAND-INS for neutron (always) and glance (only when real Glance cannot
be installed) in the test cloud.  Not real services.

The test cloud runs no real neutron.  Nova nevertheless calls it even for
servers booted with ``networks='none'`` (port, network, security-group and
extension listings on show, migrate and delete).  This module answers
exactly those calls:

* neutron: every ``GET`` of a collection answers an empty list, quotas are
  unlimited; anything else is a 404;
* glance, only with ``--glance-port`` (the cloud runs real Glance unless
  its venv could not be had): the version document, ``GET
  /v2/images[/ID]``, the image schema and ``GET /v2/images/ID/file`` (the
  same disk and properties ``cloud up`` uploads to real Glance).

Each request is logged, one line, to ``--log`` so that what Nova asked of
them can be read after a run.  Run: ``python -m
nova_xen_stubdom.cloud.standins --neutron-port 9696 [--glance-port 9292]``.
"""
import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Sequence, Tuple

from nova_xen_stubdom.cloud import hvm_image

# The stand-in's fixed id (real Glance assigns its own, recorded by ``up``).
IMAGE_ID = '6d0c3a6e-6a3b-4d4f-9a53-58c8b7a5e001'
IMAGE_SIZE = hvm_image.SIZE
_CREATED = '2026-01-01T00:00:00Z'


def image_record() -> Dict[str, Any]:
    record = {
        'id': IMAGE_ID, 'name': hvm_image.NAME, 'status': 'active',
        'visibility': 'public', 'protected': False, 'os_hidden': False,
        'container_format': hvm_image.CONTAINER_FORMAT,
        'disk_format': hvm_image.DISK_FORMAT,
        'min_disk': 0, 'min_ram': 0, 'size': IMAGE_SIZE,
        'virtual_size': IMAGE_SIZE, 'checksum': None,
        'os_hash_algo': None, 'os_hash_value': None,
        'owner': 'admin', 'tags': [], 'created_at': _CREATED,
        'updated_at': _CREATED,
        'file': '/v2/images/%s/file' % IMAGE_ID,
        'self': '/v2/images/%s' % IMAGE_ID, 'schema': '/v2/schemas/image',
    }
    record.update(hvm_image.PROPERTIES)
    return record


def image_schema() -> Dict[str, Any]:
    return {'name': 'image', 'additionalProperties': {'type': 'string'},
            'properties': {k: {} for k in image_record()},
            'links': [{'rel': 'self', 'href': '{self}'},
                      {'rel': 'enclosure', 'href': '{file}'},
                      {'rel': 'describedby', 'href': '{schema}'}]}


def image_bytes() -> bytes:
    return hvm_image.disk_bytes()


Reply = Tuple[int, Any]


def glance_route(method: str, path: str) -> Reply:
    if path in ('/', '/versions'):
        return (300 if path == '/' else 200), {'versions': [{
            'id': 'v2.16', 'status': 'CURRENT',
            'links': [{'rel': 'self', 'href': '/v2/'}]}]}
    if method not in ('GET', 'HEAD'):
        return 403, {'message': 'glance stand-in is read-only'}
    if path == '/v2/schemas/image':
        return 200, image_schema()
    if path == '/v2/images':
        return 200, {'images': [image_record()], 'first': '/v2/images',
                     'schema': '/v2/schemas/images'}
    m = re.fullmatch(r'/v2/images/([^/]+)(/file)?', path)
    if m and m.group(1) == IMAGE_ID:
        return (200, image_bytes()) if m.group(2) else (200, image_record())
    return 404, {'message': 'no such image or call (glance stand-in)'}


def neutron_route(method: str, path: str) -> Reply:
    if path in ('/', ''):
        return 200, {'versions': [{'id': 'v2.0', 'status': 'CURRENT',
                                   'links': []}]}
    if method == 'GET' and re.fullmatch(r'/v2\.0/quotas/[^/]+(\.json)?',
                                        path):
        return 200, {'quota': {'port': -1, 'network': -1, 'subnet': -1,
                               'security_group': -1, 'floatingip': -1}}
    m = re.fullmatch(r'/v2\.0/([a-z_-]+)(\.json)?', path)
    if method == 'GET' and m:
        return 200, {m.group(1).replace('-', '_'): []}
    return 404, {'NeutronError': {
        'type': 'NotFound', 'detail': '',
        'message': 'neutron stand-in answers only list GETs, not %s %s'
                   % (method, path)}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    service = ''
    route = staticmethod(glance_route)
    log_file: Optional[Any] = None
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split('?', 1)[0]
        status, obj = self.route(self.command, path)
        if isinstance(obj, bytes):
            body, ctype = obj, 'application/octet-stream'
        else:
            body, ctype = json.dumps(obj).encode(), 'application/json'
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
        if self.log_file:
            with self.lock:
                self.log_file.write('%s %s %s %s %d\n' % (
                    time.strftime('%H:%M:%S'), self.service, self.command,
                    self.path, status))
                self.log_file.flush()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


def serve(glance_port: int, neutron_port: int, log_path: str,
          host: str = '127.0.0.1') -> None:
    """Serve neutron on *neutron_port* and, unless *glance_port* is 0,
    the glance stand-in on *glance_port*."""
    log = open(log_path, 'a') if log_path else None
    neutron = type('Neutron', (_Handler,), {
        'service': 'neutron', 'route': staticmethod(neutron_route),
        'log_file': log})
    servers = [ThreadingHTTPServer((host, neutron_port), neutron)]
    if glance_port:
        glance = type('Glance', (_Handler,), {
            'service': 'glance', 'route': staticmethod(glance_route),
            'log_file': log})
        servers.append(ThreadingHTTPServer((host, glance_port), glance))
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers[0].serve_forever()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description='neutron (and optionally glance) STAND-INS for the '
                    'nova-xen-stubdom test cloud (not real services)')
    p.add_argument('--glance-port', type=int, default=0,
                   help='also serve the glance stand-in here (default: no)')
    p.add_argument('--neutron-port', type=int, default=9696)
    p.add_argument('--log', default='')
    args = p.parse_args(argv)
    serve(args.glance_port, args.neutron_port, args.log)
    return 0


if __name__ == '__main__':
    sys.exit(main())
