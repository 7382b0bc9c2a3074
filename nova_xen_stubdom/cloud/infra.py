"""MariaDB and RabbitMQ from Debian's packages, run as our own processes.

No systemd and no init scripts: the daemons run in the foreground under
``procs.start`` with their data under ``<dir>/data`` and listen on loopback
only.  epmd (Erlang's port mapper, which RabbitMQ would otherwise daemonise
behind our back) is started first, by us, so that it too is stopped by PID.
"""
import os
import shutil
from typing import Dict

from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs

RABBIT_BIN = '/usr/lib/rabbitmq/bin'
NEEDED = ('mariadbd', 'mariadb-install-db', 'mariadb', 'mariadb-admin',
          'epmd')


def check_installed() -> None:
    missing = [b for b in NEEDED if not shutil.which(b, path=_sbin_path())]
    if not os.path.exists(os.path.join(RABBIT_BIN, 'rabbitmq-server')):
        missing.append('rabbitmq-server')
    if missing:
        raise procs.CloudError(
            'missing %s: install the Debian packages mariadb-server and '
            'rabbitmq-server (tools/apt-packages.txt)' % ', '.join(missing))


def _sbin_path() -> str:
    return '/usr/sbin:/usr/bin:/sbin:/bin:' + os.environ.get('PATH', '')


def _socket(lay: L.Layout) -> str:
    return str(lay.run / 'mysql.sock')


def start_mariadb(lay: L.Layout) -> None:
    datadir = lay.data / 'mysql'
    env = lay.env()
    env['PATH'] = _sbin_path()
    if not (datadir / 'mysql').is_dir():
        procs.run(['mariadb-install-db', '--user=root',
                   '--datadir=%s' % datadir,
                   '--auth-root-authentication-method=normal',
                   '--skip-test-db'], lay.log('mariadb-install-db'), env=env)
    procs.start(lay, 'mariadb', [
        'mariadbd', '--no-defaults', '--user=root',
        '--datadir=%s' % datadir, '--bind-address=%s' % L.HOST,
        '--port=%d' % L.PORTS['mariadb'], '--socket=%s' % _socket(lay),
        '--pid-file=%s' % (lay.run / 'mariadbd.own.pid'),
        '--log-error=%s' % lay.log('mariadb'),
        '--max-connections=500', '--innodb-buffer-pool-size=64M',
        '--innodb-flush-log-at-trx-commit=2', '--skip-name-resolve',
        '--character-set-server=utf8mb4',
        '--collation-server=utf8mb4_general_ci'], env=env)


def mariadb_ready(lay: L.Layout) -> bool:
    return os.path.exists(_socket(lay)) and procs.port_open(
        L.PORTS['mariadb'])


def create_databases(lay: L.Layout) -> None:
    """Fresh, empty databases and the service user (drops old ones)."""
    sql = []
    for db in L.DATABASES:
        sql.append('DROP DATABASE IF EXISTS %s;' % db)
        sql.append('CREATE DATABASE %s;' % db)
    sql.append("CREATE USER IF NOT EXISTS '%s'@'%s' IDENTIFIED BY '%s';"
               % (L.DB_USER, L.HOST, L.DB_PASSWORD))
    sql.append("GRANT ALL PRIVILEGES ON *.* TO '%s'@'%s';"
               % (L.DB_USER, L.HOST))
    sql.append('FLUSH PRIVILEGES;')
    procs.run(['mariadb', '--socket=%s' % _socket(lay), '-uroot'],
              lay.log('mariadb-create'), input_text='\n'.join(sql))


def rabbit_env(lay: L.Layout) -> Dict[str, str]:
    env = lay.env()
    home = lay.data / 'rabbit-home'
    mnesia = lay.data / 'rabbit-mnesia'
    for d in (home, mnesia, lay.logs / 'rabbit'):
        d.mkdir(parents=True, exist_ok=True)
    plugins = lay.data / 'rabbit-enabled-plugins'
    if not plugins.exists():
        plugins.write_text('[].\n')
    env.update({
        'HOME': str(home),
        'PATH': _sbin_path(),
        'RABBITMQ_NODENAME': 'rabbit@localhost',
        'RABBITMQ_NODE_IP_ADDRESS': L.HOST,
        'RABBITMQ_NODE_PORT': str(L.PORTS['rabbitmq']),
        'RABBITMQ_DIST_PORT': str(L.PORTS['rabbitmq-dist']),
        'ERL_EPMD_ADDRESS': L.HOST,
        'ERL_EPMD_PORT': str(L.PORTS['epmd']),
        'RABBITMQ_MNESIA_BASE': str(mnesia),
        'RABBITMQ_LOG_BASE': str(lay.logs / 'rabbit'),
        'RABBITMQ_PID_FILE': str(lay.run / 'rabbit.beam.pid'),
        'RABBITMQ_CONFIG_FILE': str(lay.data / 'rabbit-no-config'),
        'RABBITMQ_ENABLED_PLUGINS_FILE': str(plugins),
        'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS':
            '-kernel inet_dist_use_interface {127,0,0,1}',
    })
    return env


def start_rabbitmq(lay: L.Layout) -> None:
    env = rabbit_env(lay)
    procs.start(lay, 'epmd', ['epmd', '-address', L.HOST,
                              '-port', str(L.PORTS['epmd'])], env=env)
    procs.wait_for('epmd', lambda: procs.port_open(L.PORTS['epmd']), 20,
                   dead=lambda: procs.first_dead(lay, ['epmd']))
    procs.start(lay, 'rabbitmq',
                [os.path.join(RABBIT_BIN, 'rabbitmq-server')], env=env)


def wait_rabbitmq(lay: L.Layout) -> None:
    procs.run([os.path.join(RABBIT_BIN, 'rabbitmqctl'), 'wait',
               '--timeout', '120', str(lay.run / 'rabbit.beam.pid')],
              lay.log('rabbitmq-wait'), env=rabbit_env(lay), timeout=150)


def stop_rabbitmq(lay: L.Layout) -> list:
    """``rabbitmqctl stop`` for a clean shutdown, then by PID regardless."""
    lines = []
    if procs.read_pid(lay.pidfile('rabbitmq')):
        try:
            procs.run([os.path.join(RABBIT_BIN, 'rabbitmqctl'), 'stop'],
                      lay.log('rabbitmq-stop'), env=rabbit_env(lay),
                      timeout=60)
        except procs.CloudError as e:
            lines.append('rabbitmqctl stop failed (%s); signalling' % e)
    for name in ('rabbitmq', 'epmd'):
        line = procs.stop(lay, name)
        if line:
            lines.append(line)
    return lines
