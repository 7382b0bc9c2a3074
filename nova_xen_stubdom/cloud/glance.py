"""Real Glance for the test cloud: its config, schema, and the test image.

glance-api runs under uwsgi (``glance.wsgi.api:application``: Glance no
longer has a standalone server, its ``glance-api`` console script only says
so) from its own venv, with a file store under ``DIR/data/glance``, its
database on the cloud's MariaDB and keystone auth.  ``cloud up`` uploads
the test image (``hvm_image``) through Glance's v2 API, as an operator
would, and records the id Glance gave it.
"""
import hashlib
import shutil
from typing import Dict

import requests

from nova_xen_stubdom.cloud import configs
from nova_xen_stubdom.cloud import hvm_image
from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs

# The file store's name in ``enabled_backends`` (Glance's multi-store
# configuration: it is also what puts the staging and tasks stores under
# our directory instead of the single-store default /tmp/staging).
STORE = 'file'


def conf_dir(lay: L.Layout) -> str:
    return str(lay.etc / 'glance')


def glance_api_conf(lay: L.Layout) -> configs.Sections:
    data = lay.data / 'glance'
    return {
        'DEFAULT': {
            'debug': False,
            'enabled_backends': '%s:file' % STORE,
            # the version document's links, and where another worker would
            # reach this one (Glance wants it set under a WSGI server)
            'public_endpoint': lay.url('glance'),
            'worker_self_reference_url': lay.url('glance'),
        },
        'database': {'connection': lay.db_url('glance')},
        'glance_store': {'default_backend': STORE},
        STORE: {'filesystem_store_datadir': data / 'images'},
        'os_glance_staging_store': {
            'filesystem_store_datadir': data / 'staging'},
        'os_glance_tasks_store': {
            'filesystem_store_datadir': data / 'tasks'},
        'oslo_concurrency': {'lock_path': data / 'locks'},
        # authtoken + context.  Glance's unauthenticated pipeline is no
        # use without keystone: its context has no project and no roles,
        # and Glance's default policies refuse it add_image (measured).
        'paste_deploy': {
            'config_file': lay.etc / 'glance' / 'glance-api-paste.ini',
            'flavor': 'keystone',
        },
        'keystone_authtoken': configs.keystone_authtoken(lay, 'glance'),
    }


def write_config(lay: L.Layout) -> Dict[str, object]:
    """glance-api.conf, the stock paste file and empty stores; returns
    name -> path."""
    paste = lay.glance_venv / 'etc' / 'glance' / 'glance-api-paste.ini'
    if not paste.exists():
        raise procs.CloudError(
            '%s not found: is %s a venv with glance installed? (build it '
            'with tools/cloud/make-venvs.sh, or run "up --glance-standin")'
            % (paste, lay.glance_venv))
    (lay.etc / 'glance').mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paste, lay.etc / 'glance' / 'glance-api-paste.ini')
    # every up starts Glance on an empty database: the files of an earlier
    # run's images would be orphans
    shutil.rmtree(lay.data / 'glance', ignore_errors=True)
    for d in ('images', 'staging', 'tasks', 'locks'):
        (lay.data / 'glance' / d).mkdir(parents=True, exist_ok=True)
    return {'glance': configs.write(lay.etc / 'glance' / 'glance-api.conf',
                                    glance_api_conf(lay))}


def db_sync(lay: L.Layout) -> None:
    procs.run([lay.glance_bin('glance-manage'), '--config-file',
               str(lay.etc / 'glance' / 'glance-api.conf'), 'db_sync'],
              lay.log('glance-manage'))


def upload_image(lay: L.Layout, token: str) -> str:
    """Create the test image through Glance's API and upload its bytes.

    *token* is a keystone token of the admin project.  Returns the image's
    id once Glance reports it ``active`` with the size, hash and properties
    of what was sent; raises ``CloudError`` otherwise.
    """
    base = lay.url('glance', '/v2/images')
    headers = {'X-Auth-Token': token}
    body: Dict[str, object] = {
        'name': hvm_image.NAME, 'visibility': 'public',
        'disk_format': hvm_image.DISK_FORMAT,
        'container_format': hvm_image.CONTAINER_FORMAT,
    }
    body.update(hvm_image.PROPERTIES)
    r = requests.post(base, json=body, headers=headers, timeout=60)
    if r.status_code != 201:
        raise procs.CloudError('glance: creating the image: HTTP %d %s'
                               % (r.status_code, r.text[:400]))
    image_id = r.json()['id']
    data = hvm_image.disk_bytes()
    r = requests.put('%s/%s/file' % (base, image_id), data=data,
                     headers=dict(headers, **{
                         'Content-Type': 'application/octet-stream'}),
                     timeout=120)
    if r.status_code != 204:
        raise procs.CloudError('glance: uploading image %s: HTTP %d %s'
                               % (image_id, r.status_code, r.text[:400]))
    r = requests.get('%s/%s' % (base, image_id), headers=headers, timeout=60)
    r.raise_for_status()
    image = r.json()
    want = {'status': 'active', 'size': len(data),
            'os_hash_value': hashlib.new(
                image.get('os_hash_algo') or 'sha512', data).hexdigest()}
    want.update(hvm_image.PROPERTIES)
    got = {k: image.get(k) for k in want}
    if got != want:
        raise procs.CloudError('glance: image %s is not what was uploaded: '
                               '%r, expected %r' % (image_id, got, want))
    return image_id
