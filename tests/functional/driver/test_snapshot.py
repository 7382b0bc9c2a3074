"""Instance snapshots through Nova (createImage): the root VDI's
point-in-time copy reaches the image service, boots a new server, and a
fault at any step leaves the instance ACTIVE with nothing behind."""
from tests.functional import base  # noqa: I100 (first: eventlet decision)

import hashlib
import os

from nova import exception

from nova_xen_stubdom.sim import storage
from nova_xen_stubdom.sim.errors import XapiError
from tests import waiting

MARKER = b'nova-xen-stubdom snapshot marker\n'
MARKER_OFFSET = 512 * 1024 * 1024        # mid-disk, past the test image


class TestSnapshot(base.XenStubdomTestBase):
    SIM_HOSTS = 1
    COMPUTES = ('host1',)
    MAX_ATTEMPTS = 1

    def setUp(self):
        super().setUp()
        # Nova's image-service fixture keeps metadata but drops the bytes
        # an update uploads; keep them, as Glance does, so the snapshot can
        # be read back and booted
        self.uploads = {}
        self.fail_upload = False
        real_update = self.glance.update

        def update(context, image_id, metadata, data=None,
                   purge_props=False):
            if self.fail_upload and data is not None:
                raise exception.ImageNotAuthorized(image_id=image_id)
            if data is not None:
                blob = data.read()
                self.uploads[image_id] = hashlib.sha256(blob).hexdigest()
                self.glance._imagedata[image_id] = blob
            return real_update(context, image_id, metadata, None,
                               purge_props)
        self.glance.update = update

    # -- helpers ----------------------------------------------------------
    def _root_vdi_path(self, server):
        x = self.xapi()
        guest, _stub = self.xapi_vms(server, x)
        for vbd in guest['VBDs']:
            rec = x.VBD.get_record(vbd)
            if rec['userdevice'] == '0':
                uuid = x.VDI.get_uuid(rec['VDI'])
                return storage.vdi_path(self.sim.pools[0], uuid)
        self.fail('no root disk')

    def _snapshot(self, server, name='snap'):
        resp = self.api.post_server_action(
            server['id'], {'createImage': {'name': name}})
        image_id = resp['image_id']
        # 1 GiB through XAPI's HTTP export on a loaded machine: a limit,
        # not a timing assertion
        server = waiting.wait_until(
            lambda: self._settled(server['id']),
            'the snapshot of %s to finish' % server['id'], timeout=300,
            interval=0.2)
        return server, image_id

    def _settled(self, server_id):
        server = self.api.get_server(server_id)
        return server if server['OS-EXT-STS:task_state'] is None else None

    def _snapshot_vdis(self):
        x = self.xapi()
        return [r for r, rec in x.VDI.get_all_records().items()
                if rec['is_a_snapshot']]

    def _fail(self, method):
        def check(name, host):
            if name == method:
                raise XapiError('INTERNAL_ERROR', 'injected fault in %s'
                                % method)
            return self._orig_check(name, host)
        self.sim.faults.check_fail = check

    def _snapshot_temp_files(self):
        import tempfile
        return [f for f in os.listdir(tempfile.gettempdir())
                if f.startswith('nova-xen-stubdom-snapshot-')]

    # -- tests ------------------------------------------------------------
    def test_snapshot_uploads_the_root_disk_and_boots(self):
        self.api.microversion = '2.45'          # createImage returns the id
        server = self._create_server(networks='none')
        path = self._root_vdi_path(server)
        with open(path, 'r+b') as f:
            f.seek(MARKER_OFFSET)
            f.write(MARKER)
        with open(path, 'rb') as f:
            want = hashlib.sha256(f.read()).hexdigest()

        server, image_id = self._snapshot(server)
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual(want, self.uploads[image_id])
        meta = self.glance.show(None, image_id)
        self.assertEqual(('raw', 'bare'), (meta['disk_format'],
                                           meta['container_format']))
        # the point-in-time copy is gone; the guest never stopped
        self.assertEqual([], self._snapshot_vdis())
        self.assertEqual([], self._snapshot_temp_files())
        guest, _stub = self.xapi_vms(server)
        self.assertEqual('Running', guest['power_state'])

        # a new server from the snapshot carries the marker
        clone = self._create_server(name='from-snapshot',
                                    image_uuid=image_id, networks='none')
        with open(self._root_vdi_path(clone), 'rb') as f:
            f.seek(MARKER_OFFSET)
            self.assertEqual(MARKER, f.read(len(MARKER)))
        self._delete_server(clone)
        self._delete_server(server)

    def test_fault_at_each_step_leaves_the_instance_active(self):
        self.api.microversion = '2.45'
        server = self._create_server(networks='none')
        for method in ('VBD.get_record', 'VDI.snapshot', 'upload',
                       'VDI.destroy'):
            if method == 'upload':
                self.fail_upload = True
            else:
                self._fail(method)
            try:
                server, image_id = self._snapshot(server, 'snap-' + method)
            finally:
                self.sim.faults.check_fail = self._orig_check
                self.fail_upload = False
            self.assertEqual('ACTIVE', server['status'], method)
            guest, _stub = self.xapi_vms(server)
            self.assertEqual('Running', guest['power_state'], method)
            self.assertEqual([], self._snapshot_temp_files(), method)
            if method != 'VDI.destroy':
                # the failure reached Nova, which deletes the image of a
                # failed snapshot (delete_image_on_error)
                waiting.wait_until(
                    lambda: image_id not in self.glance.images,
                    'Nova to delete the image of the failed snapshot')
                self.assertNotIn(image_id, self.uploads, method)
                self.assertEqual([], self._snapshot_vdis(), method)
            else:
                # uploaded: only the clean-up failed, which is logged
                self.assertIn(image_id, self.uploads)
        # the snapshot VDI that could not be destroyed carries the root
        # VDI's name and other_config (XAPI copies both): deleting the
        # instance removes it, so the leak check passes
        self.assertEqual(1, len(self._snapshot_vdis()))
        self._delete_server(server)

    def test_shelve_offload_and_unshelve_keep_the_disk(self):
        """Shelve is a snapshot plus power-off; offload destroys the guest
        and its stub domain; unshelve spawns from the shelved image."""
        server = self._create_server(networks='none')
        with open(self._root_vdi_path(server), 'r+b') as f:
            f.seek(MARKER_OFFSET)
            f.write(MARKER)
        self.api.post_server_action(server['id'], {'shelve': {}})
        server = waiting.wait_until(
            lambda: self._status(server['id'], 'SHELVED_OFFLOADED'),
            'the server to be shelved and offloaded', timeout=300,
            interval=0.2)
        x = self.xapi()
        self.assertEqual((None, None), self.xapi_vms(server, x))
        self.assertEqual([], self._snapshot_vdis())
        self.api.post_server_action(server['id'], {'unshelve': None})
        server = waiting.wait_until(
            lambda: self._status(server['id'], 'ACTIVE'),
            'the server to be unshelved', timeout=300, interval=0.2)
        with open(self._root_vdi_path(server), 'rb') as f:
            f.seek(MARKER_OFFSET)
            self.assertEqual(MARKER, f.read(len(MARKER)))
        self._delete_server(server)

    def _status(self, server_id, status):
        server = self.api.get_server(server_id)
        if server['status'] == status and \
                server['OS-EXT-STS:task_state'] is None:
            return server
        return None
