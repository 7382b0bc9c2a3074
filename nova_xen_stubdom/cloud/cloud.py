"""Bring the test cloud up, report on it, take it down."""
import json
import shutil
import threading
import time
from typing import Callable, Dict, List, Optional, TextIO

import requests

from nova_xen_stubdom.cloud import configs
from nova_xen_stubdom.cloud import glance
from nova_xen_stubdom.cloud import infra
from nova_xen_stubdom.cloud import keystone
from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs
from nova_xen_stubdom.cloud import services
from nova_xen_stubdom.cloud import standins

# The flavors tempest's own tests boot with (flavor_ref, flavor_ref_alt).
TEMPEST_FLAVORS = (('tempest.small', 512, 1, 1),
                   ('tempest.medium', 1024, 1, 2))


class Progress:
    """One line per step, with the seconds since ``up``/``down`` began."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        with self.lock:
            self.out.write('[cloud %6.1fs] %s\n'
                           % (time.monotonic() - self.t0, msg))
            self.out.flush()

    def step(self, what: str, fn: Callable[[], object]) -> object:
        t = time.monotonic()
        res = fn()
        self('%s (%.1f s)' % (what, time.monotonic() - t))
        return res


def _running(lay: L.Layout) -> List[str]:
    return [n for n in services.ALL_PROCESSES
            if procs.read_pid(lay.pidfile(n))]


def _dead_of(lay: L.Layout, names) -> Callable[[], Optional[str]]:
    return lambda: procs.first_dead(lay, names)


def _log_tail(lay: L.Layout, name: str, lines: int = 15) -> str:
    out = []
    for path in (lay.log(name), lay.logs / ('%s.out' % name)):
        if path.exists():
            text = path.read_text(errors='replace').splitlines()[-lines:]
            out.append('--- %s\n%s' % (path, '\n'.join(text)))
    return '\n'.join(out)


def _nova_manage(lay: L.Layout, *args: str) -> None:
    procs.run([lay.nova_bin('nova-manage'), '--config-file',
               str(lay.etc / 'nova' / 'nova.conf')] + list(args),
              lay.log('nova-manage'))


def _db_sync(lay: L.Layout) -> None:
    procs.run([lay.nova_bin('placement-manage'), '--config-file',
               str(lay.etc / 'placement' / 'placement.conf'), 'db', 'sync'],
              lay.log('placement-manage'))
    _nova_manage(lay, 'api_db', 'sync')
    _nova_manage(lay, 'cell_v2', 'map_cell0', '--database_connection',
                 lay.db_url('nova_cell0'))
    _nova_manage(lay, 'cell_v2', 'create_cell', '--name', 'cell1')
    _nova_manage(lay, 'db', 'sync')


class _Background:
    """A start-up step run beside the others; ``join`` re-raises its error
    in the caller's thread."""

    def __init__(self, name: str, fn: Callable[[], None]) -> None:
        self.error: Optional[BaseException] = None

        def run() -> None:
            try:
                fn()
            except BaseException as e:      # re-raised by join()
                self.error = e

        self.thread = threading.Thread(target=run, name=name)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def _glance_up(lay: L.Layout, progress: Progress) -> None:
    progress.step('glance: db_sync', lambda: glance.db_sync(lay))
    services.start_glance(lay)
    progress.step('glance-api answering', lambda: procs.wait_for(
        'glance-api', lambda: procs.http_answers(lay.url('glance')), 120,
        _dead_of(lay, ['glance-api'])))


def _keystone_up(lay: L.Layout, progress: Progress) -> None:
    progress.step('keystone: db_sync, fernet keys, bootstrap',
                  lambda: keystone.bootstrap(lay))
    services.start_keystone(lay)
    procs.wait_for('keystone', lambda: procs.http_answers(
        lay.url('keystone', '/v3')), 120, _dead_of(lay, ['keystone']))
    progress.step('keystone answering; catalog and service users',
                  lambda: keystone.register_catalog(lay))


def _resource_providers() -> List[dict]:
    try:
        r = requests.get('http://%s:%d/resource_providers' % (
            L.HOST, L.PORTS['placement']),
            headers={'X-Auth-Token': 'admin'}, timeout=5)
        return r.json()['resource_providers'] if r.ok else []
    except (requests.RequestException, ValueError, KeyError):
        return []


# What authtoken would have put on an admin request: nova-api's pipeline
# without authtoken (``up(keystone=False)``) takes the caller's word for it.
NOAUTH_PROJECT = '6f70656e737461636b20726f636b7321'
NOAUTH_HEADERS = {'X-User-Id': 'admin', 'X-Project-Id': NOAUTH_PROJECT,
                  'X-Roles': 'admin,member,reader', 'X-Auth-Token': 'none',
                  'Content-Type': 'application/json'}


def _create_flavors(lay: L.Layout, with_keystone: bool = True
                    ) -> Dict[str, str]:
    if with_keystone:
        h = {'X-Auth-Token': keystone.admin_token(lay),
             'Content-Type': 'application/json'}
    else:
        h = dict(NOAUTH_HEADERS)
    base = lay.url('nova-api', '/v2.1')
    existing = {f['name']: f['id'] for f in requests.get(
        base + '/flavors', headers=h, timeout=60).json()['flavors']}
    out = {}
    for name, ram, vcpus, disk in TEMPEST_FLAVORS:
        if name not in existing:
            r = requests.post(base + '/flavors', headers=h, timeout=60,
                              json={'flavor': {'name': name, 'ram': ram,
                                               'vcpus': vcpus,
                                               'disk': disk}})
            r.raise_for_status()
            existing[name] = r.json()['flavor']['id']
        out[name] = existing[name]
    return out


def up(lay: L.Layout, driver: str, progress: Progress,
       with_keystone: bool = True,
       real_glance: bool = True) -> Dict[str, object]:
    """Start everything; returns the facts also written to ``cloud.json``.

    *with_keystone* False is the DEGRADED cloud for when keystone cannot be
    installed: no keystone process, nova-api without authtoken (requests
    carry ``NOAUTH_HEADERS``), placement on noauth2 as always.
    *real_glance* False serves the test image from the glance STAND-IN
    instead (for when Glance's venv cannot be had, and always without
    keystone: Glance's own unauthenticated pipeline is refused image
    creation by its default policies).
    """
    if real_glance and not with_keystone:
        raise procs.CloudError('real glance needs keystone: with '
                               '--no-keystone add --glance-standin')
    running = _running(lay)
    if running:
        raise procs.CloudError('already running: %s (run "nova-xen-stubdom '
                               'cloud down" first)' % ', '.join(running))
    infra.check_installed()
    lay.mkdirs()
    # every run starts with empty logs: what logs/ holds is this run's
    shutil.rmtree(lay.logs)
    lay.logs.mkdir()
    sim_url = lay.url('xapi-sim')
    configs.write_all(lay, driver, sim_url, keystone=with_keystone)
    if real_glance:
        glance.write_config(lay)
    progress('config files written under %s' % lay.etc)

    infra.start_mariadb(lay)
    infra.start_rabbitmq(lay)
    waited = procs.wait_for('mariadb', lambda: infra.mariadb_ready(lay), 60,
                            _dead_of(lay, ['mariadb']))
    progress('mariadb answering (%.1f s)' % waited)
    progress.step('databases created', lambda: infra.create_databases(lay))

    # keystone's and glance's setup and Nova's schema migrations are
    # independent: overlap them
    background = []
    if with_keystone:
        background.append(_Background(
            'keystone-setup', lambda: _keystone_up(lay, progress)))
    else:
        progress('keystone NOT STARTED (degraded: nova-api without '
                 'authtoken)')
    if real_glance:
        background.append(_Background(
            'glance-setup', lambda: _glance_up(lay, progress)))
    else:
        progress('glance NOT STARTED: the glance STAND-IN serves the test '
                 'image')
    try:
        progress.step('rabbitmq answering', lambda: infra.wait_rabbitmq(lay))
        progress.step('placement and nova schemas, cells',
                      lambda: _db_sync(lay))
    finally:
        for job in background:
            job.thread.join()
    for job in background:
        job.join()

    services.start_standins(lay, glance=not real_glance)
    if driver == 'xen_stubdom':
        services.start_sim(lay)
        progress.step('XAPI simulator answering', lambda: procs.wait_for(
            'XAPI simulator', lambda: procs.port_open(L.PORTS['xapi-sim']),
            60, _dead_of(lay, ['xapi-sim'])))
    services.start_placement(lay)
    services.start_nova(lay)
    started = [n for n in services.NOVA_SERVICES
               if driver == 'xen_stubdom' or n != 'xapi-sim']
    dead = _dead_of(lay, started)
    progress.step('placement-api answering', lambda: procs.wait_for(
        'placement-api', lambda: procs.http_answers(lay.url('placement')),
        120, dead))
    progress.step('nova-api answering', lambda: procs.wait_for(
        'nova-api', lambda: procs.http_answers(lay.url('nova-api')), 180,
        dead))
    progress.step('both computes registered in placement',
                  lambda: procs.wait_for(
                      'compute resource providers',
                      lambda: len(_resource_providers()) >= len(
                          L.COMPUTE_HOSTS), 180, dead))
    progress.step('cell_v2 discover_hosts',
                  lambda: _nova_manage(lay, 'cell_v2', 'discover_hosts'))
    flavors = progress.step('tempest flavors',
                            lambda: _create_flavors(lay, with_keystone))
    if real_glance:
        image_id = progress.step(
            'test image uploaded through glance', lambda: glance.upload_image(
                lay, keystone.admin_token(lay)))
        dead = _dead_of(lay, started + ['glance-api'])
    else:
        image_id = standins.IMAGE_ID
    gone = dead()
    if gone:
        raise procs.CloudError('%s died during start-up' % gone)
    facts = {
        'driver': configs.DRIVERS[driver],
        'keystone': lay.url('keystone', '/v3') if with_keystone else None,
        'auth': 'keystone' if with_keystone else 'none (degraded)',
        'compute': lay.url('nova-api', '/v2.1'),
        'placement': lay.url('placement'),
        'xapi_url': sim_url if driver == 'xen_stubdom' else None,
        'xapi_username': L.XAPI_USER,
        'xapi_password': L.XAPI_PASSWORD,
        'image': lay.url('glance'),
        'glance': 'real' if real_glance else 'stand-in',
        'image_id': image_id,
        'flavors': flavors,
        'compute_hosts': list(L.COMPUTE_HOSTS),
        'xapi_hosts': dict(L.XAPI_HOSTS),
        'admin_password': L.ADMIN_PASSWORD,
    }
    lay.state_file.write_text(json.dumps(facts, indent=2) + '\n')
    progress('cloud up: %d processes (%s)' % (
        len(_running(lay)), ', '.join(_running(lay))))
    return facts


def down(lay: L.Layout, progress: Progress) -> List[int]:
    """Stop everything recorded under ``run/``; returns leftover ports."""
    # computes first (they still talk to the XAPI simulator and the
    # conductor while they shut down), then the other services in parallel,
    # then the infrastructure
    computes = [n for n in services.NOVA_SERVICES
                if n.startswith('nova-compute-')]
    rest = [n for n in services.NOVA_SERVICES if n not in computes]
    for wave in (computes, rest + ['keystone', 'glance-api']):
        for line in procs.stop_many(lay, wave):
            progress(line)
    for line in infra.stop_rabbitmq(lay):
        progress(line)
    line = procs.stop(lay, 'mariadb', timeout=30)
    if line:
        progress(line)
    # anything else we recorded (a process this version no longer knows)
    for pidfile in sorted(lay.run.glob('*.pid')) if lay.run.exists() else []:
        line = procs.stop(lay, pidfile.stem)
        if line:
            progress(line)
    lay.state_file.unlink(missing_ok=True)
    ours = {p for n, p in L.PORTS.items()}
    left = sorted(ours & procs.listening_ports())
    if left:
        progress('still listening on our ports: %s' % left)
    else:
        progress('cloud down: no process left, no listener on %s'
                 % sorted(ours))
    return left


def status(lay: L.Layout, out: TextIO) -> int:
    """Print one line per process; returns how many are not running."""
    missing = 0
    total = 0.0
    listening = procs.listening_ports()
    for name in services.ALL_PROCESSES:
        pid = procs.read_pid(lay.pidfile(name))
        if pid is None:
            if lay.pidfile(name).exists():
                out.write('%-22s DEAD (stale pid file)\n' % name)
                missing += 1
            else:
                out.write('%-22s not started\n' % name)
            continue
        family = [pid] + procs.children(pid)
        mib = procs.rss_mib(family)
        total += mib
        out.write('%-22s pid %-7d %2d procs %7.1f MiB\n'
                  % (name, pid, len(family), mib))
    out.write('%-22s %26.1f MiB\n' % ('TOTAL', total))
    ports = sorted(p for p in L.PORTS.values() if p in listening)
    out.write('listening on: %s\n' % ports)
    return missing
