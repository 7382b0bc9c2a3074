"""The OpenStack processes of the test cloud and how each one is started."""
import sys
from typing import List, Optional, Sequence

from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs

# Start order; ``down`` stops in the reverse order.
NOVA_SERVICES = ('standins', 'xapi-sim', 'placement-api', 'nova-conductor',
                 'nova-scheduler', 'nova-api') + tuple(
    'nova-compute-%s' % h for h in L.COMPUTE_HOSTS)
ALL_PROCESSES = ('mariadb', 'epmd', 'rabbitmq', 'keystone',
                 'glance-api') + NOVA_SERVICES

# A streamed (chunked) upload, as Nova's snapshot sends, is read by Glance
# itself through uwsgi.chunked_read() (glance/common/wsgi.py), which waits
# for each chunk up to uwsgi's socket timeout: 4 s by default, too short
# for a snapshot streamed from a busy 2-core machine.  (uwsgi's
# --http-chunked-input and friends belong to its HTTP router, not to
# --http-socket: chunked uploads were measured to work without them.)
# Each chunk must also fit uwsgi's chunked-input buffer, whose limit
# (--chunked-input-limit) is 1 MB by default: glanceclient sends 1 MiB
# chunks (glanceclient/common/http.py CHUNKSIZE) plus framing, so every
# Nova snapshot upload failed with "unable to receive chunked part"
# (measured: 64 KiB chunks pass, 1 MiB chunks fail, on this uwsgi).
GLANCE_UWSGI_OPTIONS = ['--socket-timeout', '30',
                        '--chunked-input-limit', str(8 << 20)]


def uwsgi(lay: L.Layout, name: str, port: int, module: str, venv: str,
          env: List[str], extra: Sequence[str] = ()) -> List[str]:
    argv = [lay.nova_bin('uwsgi'), '--master', '--enable-threads',
            '--processes', '1', '--threads', '4', '--die-on-term',
            '--need-app', '--lazy-apps', '--virtualenv', venv,
            # uwsgi's --http-socket closes every connection after one
            # response, while keystoneauth reuses pooled connections: without
            # this header a reused socket fails with ECONNRESET mid-request.
            '--add-header', 'Connection: close',
            '--http-socket', '%s:%d' % (L.HOST, port),
            '--module', module, '--procname-prefix', name + '-']
    for e in env:
        argv += ['--env', e]
    return argv + list(extra)


def nova_cmd(lay: L.Layout, binary: str, name: str,
             conf: Optional[str] = None) -> List[str]:
    return [lay.nova_bin(binary), '--config-file',
            conf or str(lay.etc / 'nova' / 'nova.conf'),
            '--log-file', str(lay.log(name))]


def start_keystone(lay: L.Layout) -> None:
    procs.start(lay, 'keystone', uwsgi(
        lay, 'keystone', L.PORTS['keystone'], 'keystone.wsgi.api:application',
        str(lay.keystone_venv),
        ['OS_KEYSTONE_CONFIG_DIR=%s' % (lay.etc / 'keystone')]))


def start_glance(lay: L.Layout) -> None:
    procs.start(lay, 'glance-api', uwsgi(
        lay, 'glance-api', L.PORTS['glance'], 'glance.wsgi.api:application',
        str(lay.glance_venv),
        ['OS_GLANCE_CONFIG_DIR=%s' % (lay.etc / 'glance')],
        GLANCE_UWSGI_OPTIONS))


def start_standins(lay: L.Layout, glance: bool = False) -> None:
    """The neutron stand-in, and the glance one when *glance*."""
    argv = [sys.executable, '-m', 'nova_xen_stubdom.cloud.standins',
            '--neutron-port', str(L.PORTS['neutron']),
            '--log', str(lay.log('standins-requests'))]
    if glance:
        argv += ['--glance-port', str(L.PORTS['glance'])]
    procs.start(lay, 'standins', argv)


def start_sim(lay: L.Layout) -> None:
    procs.start(lay, 'xapi-sim', [
        lay.nova_bin('nova-xen-stubdom'), 'sim',
        '--hosts', str(len(L.COMPUTE_HOSTS)),
        '--pci', L.SIM_PCI_SET,
        '--port', str(L.PORTS['xapi-sim']),
        '--username', L.XAPI_USER, '--password', L.XAPI_PASSWORD])


def start_placement(lay: L.Layout) -> None:
    procs.start(lay, 'placement-api', uwsgi(
        lay, 'placement', L.PORTS['placement'],
        'placement.wsgi.api:application', str(lay.nova_venv),
        ['OS_PLACEMENT_CONFIG_DIR=%s' % (lay.etc / 'placement')]))


def start_nova_api(lay: L.Layout) -> None:
    procs.start(lay, 'nova-api', uwsgi(
        lay, 'nova-api', L.PORTS['nova-api'],
        'nova.wsgi.osapi_compute:application', str(lay.nova_venv),
        ['OS_NOVA_CONFIG_DIR=%s' % (lay.etc / 'nova')]))


def start_nova(lay: L.Layout) -> None:
    for binary in ('nova-conductor', 'nova-scheduler'):
        procs.start(lay, binary, nova_cmd(lay, binary, binary))
    start_nova_api(lay)
    for host in L.COMPUTE_HOSTS:
        name = 'nova-compute-%s' % host
        procs.start(lay, name, nova_cmd(
            lay, 'nova-compute', name,
            str(lay.etc / 'nova' / ('compute-%s.conf' % host))))


def all_pids(lay: L.Layout) -> List[int]:
    """Every running process of the cloud, with descendants."""
    pids: List[int] = []
    for name in ALL_PROCESSES:
        pid = procs.read_pid(lay.pidfile(name))
        if pid:
            pids += [pid] + procs.children(pid)
    return pids
