"""keystone for the test cloud: bootstrap, serve under uwsgi, catalog.

Users, services and endpoints are registered through keystone's own REST
API with the bootstrap admin, as an operator's tooling would.
"""
from typing import Dict, Tuple

import requests

from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs

# service type -> (name, layout port name, URL path)
SERVICES: Dict[str, Tuple[str, str, str]] = {
    'compute': ('nova', 'nova-api', '/v2.1'),
    'placement': ('placement', 'placement', ''),
    'image': ('glance', 'glance', ''),
    'network': ('neutron', 'neutron', ''),    # STAND-IN
}
SERVICE_USERS = ('nova', 'placement', 'glance')


def bootstrap(lay: L.Layout) -> None:
    conf = ['--config-file', str(lay.etc / 'keystone' / 'keystone.conf')]
    manage = [lay.keystone_bin('keystone-manage')] + conf
    log = lay.log('keystone-manage')
    procs.run(manage + ['db_sync'], log)
    for what in ('fernet_setup', 'credential_setup'):
        procs.run(manage + [what, '--keystone-user', 'root',
                            '--keystone-group', 'root'], log)
    url = lay.url('keystone', '/v3')
    procs.run(manage + [
        'bootstrap', '--bootstrap-password', L.ADMIN_PASSWORD,
        '--bootstrap-username', 'admin', '--bootstrap-project-name', 'admin',
        '--bootstrap-role-name', 'admin',
        '--bootstrap-service-name', 'keystone',
        '--bootstrap-region-id', 'RegionOne',
        '--bootstrap-admin-url', url, '--bootstrap-public-url', url,
        '--bootstrap-internal-url', url], log)


def admin_token(lay: L.Layout) -> str:
    auth = {'auth': {
        'identity': {'methods': ['password'], 'password': {'user': {
            'name': 'admin', 'domain': {'id': 'default'},
            'password': L.ADMIN_PASSWORD}}},
        'scope': {'project': {'name': 'admin',
                              'domain': {'id': 'default'}}}}}
    r = requests.post(lay.url('keystone', '/v3/auth/tokens'), json=auth,
                      timeout=30)
    r.raise_for_status()
    return r.headers['X-Subject-Token']


class _Keystone:
    def __init__(self, lay: L.Layout) -> None:
        self.base = lay.url('keystone', '/v3')
        self.headers = {'X-Auth-Token': admin_token(lay)}

    def find_or_create(self, collection: str, key: str, body: dict,
                       **filters: str) -> dict:
        r = requests.get('%s/%s' % (self.base, collection),
                         headers=self.headers, params=filters, timeout=30)
        r.raise_for_status()
        found = r.json()[collection]
        if found:
            return found[0]
        r = requests.post('%s/%s' % (self.base, collection),
                          headers=self.headers, json={key: body}, timeout=30)
        r.raise_for_status()
        return r.json()[key]

    def grant(self, project: str, user: str, role: str) -> None:
        requests.put('%s/projects/%s/users/%s/roles/%s' % (
            self.base, project, user, role), headers=self.headers,
            timeout=30).raise_for_status()


def register_catalog(lay: L.Layout) -> None:
    ks = _Keystone(lay)
    for stype, (name, port_name, path) in SERVICES.items():
        svc = ks.find_or_create('services', 'service',
                                {'type': stype, 'name': name}, type=stype)
        for iface in ('public', 'internal', 'admin'):
            ks.find_or_create('endpoints', 'endpoint', {
                'service_id': svc['id'], 'interface': iface,
                'url': lay.url(port_name, path), 'region_id': 'RegionOne'},
                service_id=svc['id'], interface=iface)
    project = ks.find_or_create('projects', 'project', {
        'name': 'service', 'domain_id': 'default'}, name='service')
    roles = {n: ks.find_or_create('roles', 'role', {'name': n}, name=n)
             for n in ('admin', 'member', 'reader', 'service')}
    for user in SERVICE_USERS:
        u = ks.find_or_create('users', 'user', {
            'name': user, 'password': user, 'domain_id': 'default'},
            name=user)
        for role in ('admin', 'service'):
            ks.grant(project['id'], u['id'], roles[role]['id'])
