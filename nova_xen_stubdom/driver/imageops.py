"""What goes into a new VDI: a Glance image, or a swap signature.

Both travel through XAPI's HTTP import, ``PUT /import_raw_vdi?vdi=REF&
format=raw`` on the pool master.
"""
import io
import os
import struct
import tempfile
import uuid as uuidlib

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


#: Linux's swap header (include/linux/swap.h, union swap_header): after
#: 1024 boot bytes, version, last_page, nr_badpages, uuid[16], label[16];
#: the magic ends the first page
SWAP_PAGE = 4096
SWAP_MAGIC = b'SWAPSPACE2'
SWAP_LABEL = b'nova-swap'


def swap_header(size_bytes: int, uuid: bytes) -> bytes:
    """The first page ``mkswap`` writes on a swap area of *size_bytes*."""
    pages = size_bytes // SWAP_PAGE
    if pages < 10:
        raise ValueError('a swap area needs at least 10 pages, not %d'
                         % pages)
    page = bytearray(SWAP_PAGE)
    struct.pack_into('<III16s16s', page, 1024, 1, pages - 1, 0, uuid,
                     SWAP_LABEL)
    page[SWAP_PAGE - len(SWAP_MAGIC):] = SWAP_MAGIC
    return bytes(page)


def format_swap(ctx, instance, vdi_ref: str, size_bytes: int) -> None:
    """Make *vdi_ref* (fresh, zero-filled) a swap area the guest can
    ``swapon`` at once, as Nova's other drivers do with ``mkswap``: only
    the header page is written, through the same HTTP import as images."""
    header = swap_header(size_bytes, uuidlib.UUID(instance.uuid).bytes)
    ctx.http_put('/import_raw_vdi', io.BytesIO(header), len(header),
                 vdi=vdi_ref, format='raw')
    LOG.debug('swap signature written on VDI %s (%d MiB)', vdi_ref,
              size_bytes >> 20, instance=instance)
