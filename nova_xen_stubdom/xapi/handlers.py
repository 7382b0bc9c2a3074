"""XAPI's HTTP handlers (``/import_raw_vdi``, ``/export_raw_vdi``).

Disk contents do not go through XML-RPC: XAPI serves them over plain HTTP
requests authenticated by a ``session_id`` query parameter. The transfer
runs on a pooled session (so it counts against
``[xen_stubdom] connection_concurrent``), uses the client's TLS context
(``ca_file`` honoured) and is recorded like a call.
"""
import http.client
import urllib.parse
from typing import Optional

from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import session as xsession
from nova_xen_stubdom.xapi import transport as xtransport

#: bytes per read/write
CHUNK = 1 << 20

#: handlers the project uses, with the query keys XAPI takes for them
HANDLERS = {
    '/import_raw_vdi': ('session_id', 'vdi', 'format', 'task_id', 'chunked'),
    '/export_raw_vdi': ('session_id', 'vdi', 'format', 'base', 'task_id'),
}


def _connect(client, sess) -> http.client.HTTPConnection:
    url = urllib.parse.urlsplit(sess.url)
    if url.scheme == 'https':
        return http.client.HTTPSConnection(
            url.hostname, url.port, timeout=client.call_timeout,
            context=client._ssl_context)
    return http.client.HTTPConnection(url.hostname, url.port,
                                      timeout=client.call_timeout)


def transfer(client, verb: str, path: str, query: dict, send=None,
             length: Optional[int] = None, sink=None) -> int:
    """One request to an XAPI HTTP handler.

    :param verb: 'PUT' (with *send*, a file object, and *length*) or 'GET'
        (answer written to *sink*).
    :returns: bytes sent (PUT) or received (GET).
    :raises XAPIError: code ``HTTP_<status>`` for a non-2xx answer.
    :raises XAPIConnectionError: the connection failed.
    """
    query = {k: v for k, v in query.items() if v is not None}
    client._record('HTTP %s %s' % (verb, path), [query])
    sess = client.pool.acquire()
    try:
        target = '%s?%s' % (path, urllib.parse.urlencode(
            dict(query, session_id=sess.ref)))
        conn = _connect(client, sess)
        moved = 0
        try:
            conn.putrequest(verb, target)
            if send is not None:
                conn.putheader('Content-Length', str(length))
            conn.endheaders()
            if send is not None:
                while True:
                    chunk = send.read(CHUNK)
                    if not chunk:
                        break
                    conn.send(chunk)
                    moved += len(chunk)
            resp = conn.getresponse()
            if resp.status // 100 != 2:
                body = resp.read(512).decode('utf-8', 'replace')
                raise errors.XAPIError('HTTP_%d' % resp.status,
                                       [path, body], method=path)
            if sink is not None:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    sink.write(chunk)
                    moved += len(chunk)
            else:
                resp.read()
        except xsession.CONNECTION_ERRORS as exc:
            raise errors.XAPIConnectionError(
                xtransport.redact_url(sess.url), path, exc) from exc
        finally:
            conn.close()
    finally:
        client._release(sess)
    return moved
