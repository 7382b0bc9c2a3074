"""Instance snapshots: the guest's root disk, uploaded to Glance as raw.

How, on XAPI's terms:

1. ``VDI.snapshot`` of the root VDI while the guest runs: a crash-consistent
   point-in-time copy taken by the storage manager (xapi-project/xen-api
   ``ocaml/xapi/xapi_vdi.ml``, ``snapshot``, which calls the SR backend's
   ``VDI.snapshot``; the new VDI has ``is_a_snapshot`` and ``snapshot_of``
   set).  One disk, so no ``VM.snapshot``: that would also copy the VM
   record (a template object to clean up) and every other disk, while Nova
   images hold the root disk only -- as the removed XenAPI driver did
   (``vm_utils.snapshot_attached_here``, root VDI chain only).
2. The snapshot streams out through XAPI's HTTP handler
   ``GET /export_raw_vdi?vdi=REF&format=raw``
   (``ocaml/xapi/export_raw_vdi.ml``) into a temporary file, then goes to
   Glance as ``disk_format=raw``, ``container_format=bare`` -- what
   :mod:`imageops` imports on spawn.
3. The snapshot VDI and the file are removed on every path; the guest is
   never paused or stopped.

Nova's task states move as the libvirt driver moves them:
``image_snapshot`` (set by the API) -> ``image_pending_upload`` once the
point-in-time copy exists -> ``image_uploading`` before the upload.
"""
import os
import tempfile
from typing import Callable

from oslo_log import log as logging

from nova.compute import task_states
from nova.image import glance

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc

LOG = logging.getLogger(__name__)


class SnapshotOps(common.InstanceOps):
    def root_vdi(self, guest_ref: str) -> str:
        """The VDI behind the guest's disk at userdevice 0."""
        root = str(dc.DISK_USERDEVICE['root'])
        for vbd in self._call('VM.get_VBDs', guest_ref):
            rec = self._call('VBD.get_record', vbd)
            if rec['type'] == 'Disk' and rec['userdevice'] == root and \
                    not rec['empty']:
                return rec['VDI']
        raise dexc.XenStubdomDriverError(
            reason='the guest VM %s has no root disk (userdevice %s)'
                   % (guest_ref, root))

    def snapshot(self, context, instance, image_id: str,
                 update_task_state: Callable) -> None:
        with self._vmops._operation(instance, 'snapshot'):
            guest_ref = self._vmops._require(instance).guest
            snap = self._call('VDI.snapshot', self.root_vdi(guest_ref), {})
            try:
                update_task_state(
                    task_state=task_states.IMAGE_PENDING_UPLOAD)
                self._upload(context, instance, image_id, snap,
                             update_task_state)
            finally:
                self._destroy_snapshot(instance, snap)
        LOG.info('snapshot uploaded as image %s', image_id,
                 instance=instance)

    def _upload(self, context, instance, image_id: str, snap: str,
                update_task_state: Callable) -> None:
        fd, path = tempfile.mkstemp(prefix='nova-xen-stubdom-snapshot-')
        try:
            with os.fdopen(fd, 'w+b') as f:
                size = self._ctx.http_get('/export_raw_vdi', f, vdi=snap,
                                          format='raw')
                f.flush()
                f.seek(0)
                update_task_state(
                    task_state=task_states.IMAGE_UPLOADING,
                    expected_state=task_states.IMAGE_PENDING_UPLOAD)
                metadata = {
                    'disk_format': 'raw', 'container_format': 'bare',
                    'properties': {'image_location': 'snapshot',
                                   'image_state': 'available',
                                   'owner_id': instance.project_id}}
                glance.API().update(context, image_id, metadata, f,
                                    purge_props=False)
                LOG.debug('uploaded %(size)d bytes of snapshot VDI %(vdi)s',
                          {'size': size, 'vdi': snap}, instance=instance)
        finally:
            os.unlink(path)

    def _destroy_snapshot(self, instance, snap: str) -> None:
        try:
            self._call('VDI.destroy', snap)
        except Exception as exc:
            # never hide the operation's own error behind this one; the
            # leftover is is_a_snapshot of the instance's root VDI
            LOG.error('could not destroy snapshot VDI %(vdi)s: %(exc)s',
                      {'vdi': snap, 'exc': exc}, instance=instance)
