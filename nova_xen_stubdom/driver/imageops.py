"""Image → VDI: Glance download, then XAPI's HTTP import (``/import_raw_vdi``)."""
import http.client
import os
import tempfile
import urllib.parse

from oslo_log import log as logging

from nova import exception
from nova.image import glance

from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)

CHUNK = 1024 * 1024


def _http_put_fallback(client, path: str, fileobj, length: int,
                       **query) -> None:
    # NOTE(driver): used until the client layer offers http_put; same pool,
    # same session accounting, recorded like a call.
    sess = client.pool.acquire()
    try:
        client._record('HTTP PUT ' + path, [])
        url = urllib.parse.urlsplit(sess.url)
        query = dict(query, session_id=sess.ref)
        target = '%s?%s' % (path, urllib.parse.urlencode(query))
        conn_cls = (http.client.HTTPSConnection if url.scheme == 'https'
                    else http.client.HTTPConnection)
        conn = conn_cls(url.hostname, url.port, timeout=client.call_timeout)
        try:
            conn.putrequest('PUT', target)
            conn.putheader('Content-Length', str(length))
            conn.endheaders()
            while True:
                chunk = fileobj.read(CHUNK)
                if not chunk:
                    break
                conn.send(chunk)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status // 100 != 2:
            raise xapi_errors.XAPIError(
                'HTTP_%d' % resp.status,
                [path, body.decode('utf-8', 'replace')[:200]])
    finally:
        client._release(sess)


def http_put(client, path: str, fileobj, length: int, **query) -> None:
    put = getattr(client, 'http_put', None)
    if put is not None:
        put(path, fileobj, length, **query)
    else:
        _http_put_fallback(client, path, fileobj, length, **query)


def import_image(context, client, instance, image_meta, vdi_ref: str,
                 max_bytes: int) -> int:
    """Write the instance's image into *vdi_ref*; return the bytes written.

    :raises ImageUnacceptable: the image is not raw or larger than the disk.
    """
    image_id = image_meta.id
    disk_format = image_meta.disk_format if 'disk_format' in image_meta \
        else 'raw'
    if disk_format not in ('raw', None):
        raise exception.ImageUnacceptable(
            image_id=image_id,
            reason='disk_format %s: this driver imports raw images only'
                   % disk_format)
    fd, path = tempfile.mkstemp(prefix='nova-xen-stubdom-image-')
    os.close(fd)
    try:
        glance.API().download(context, image_id, dest_path=path)
        size = os.path.getsize(path)
        if size > max_bytes:
            raise exception.FlavorDiskSmallerThanImage(
                flavor_size=max_bytes, image_size=size)
        with open(path, 'rb') as f:
            http_put(client, '/import_raw_vdi', f, size, vdi=vdi_ref,
                     format='raw')
        LOG.debug('imported image %(image)s (%(size)d bytes) into VDI '
                  '%(vdi)s', {'image': image_id, 'size': size,
                              'vdi': vdi_ref}, instance=instance)
        return size
    finally:
        os.unlink(path)
