"""Image → VDI: Glance download, then XAPI's HTTP import.

The import is ``PUT /import_raw_vdi?vdi=REF&format=raw`` on the pool master.
"""
import os
import tempfile

from oslo_log import log as logging

from nova import exception
from nova.image import glance

LOG = logging.getLogger(__name__)


def import_image(context, ctx, instance, image_meta, vdi_ref: str,
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
            ctx.http_put('/import_raw_vdi', f, size, vdi=vdi_ref,
                         format='raw')
        LOG.debug('imported image %(image)s (%(size)d bytes) into VDI '
                  '%(vdi)s', {'image': image_id, 'size': size,
                              'vdi': vdi_ref}, instance=instance)
        return size
    finally:
        os.unlink(path)
