"""Where the test cloud keeps its files, and which ports it uses."""
import dataclasses
import os
import sys
from pathlib import Path
from typing import Dict

# One address for everything: the cloud never listens beyond loopback.
HOST = '127.0.0.1'

# Service name -> TCP port.  The stock OpenStack ports, so that logs and
# catalog entries look like those of any other cloud.
PORTS: Dict[str, int] = {
    'mariadb': 3306,
    'epmd': 4369,
    'rabbitmq': 5672,
    'rabbitmq-dist': 25672,
    'keystone': 5000,
    'placement': 8778,
    'nova-api': 8774,
    'glance': 9292,
    'neutron': 9696,
    'xapi-sim': 9363,
}

DB_USER = 'os'
DB_PASSWORD = 'os'
DATABASES = ('keystone', 'glance', 'placement', 'nova_api', 'nova',
             'nova_cell0')
RABBIT_USER = 'guest'
RABBIT_PASSWORD = 'guest'
ADMIN_PASSWORD = 'admin'
XAPI_USER = 'root'
XAPI_PASSWORD = 'sim-password'
COMPUTE_HOSTS = ('host1', 'host2')
# Nova host -> name_label of the simulated XAPI host it manages (the
# simulator names host k of pool p "sim-host-p-k").
XAPI_HOSTS = {'host1': 'sim-host-0-0', 'host2': 'sim-host-0-1'}
# Every simulated host has the simulator's "gpu" device set (a GPU and its
# HDMI audio function); flavors ask for the GPU through this alias.
SIM_PCI_SET = 'gpu'
PCI_ALIAS = {'name': 'xgpu', 'vendor_id': '10de', 'product_id': '1eb8',
             'device_type': 'type-PCI'}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Paths of one cloud: configs, data, pid files and logs under *root*."""

    root: Path
    nova_venv: Path
    keystone_venv: Path
    glance_venv: Path

    @classmethod
    def create(cls, root: str, nova_venv: str = '',
               keystone_venv: str = '', glance_venv: str = '') -> 'Layout':
        r = Path(root).resolve()
        return cls(root=r,
                   nova_venv=Path(nova_venv or sys.prefix).resolve(),
                   keystone_venv=Path(keystone_venv or
                                      r / 'venv-keystone').resolve(),
                   glance_venv=Path(glance_venv or
                                    r / 'venv-glance').resolve())

    @property
    def etc(self) -> Path:
        return self.root / 'etc'

    @property
    def data(self) -> Path:
        return self.root / 'data'

    @property
    def run(self) -> Path:
        return self.root / 'run'

    @property
    def logs(self) -> Path:
        return self.root / 'logs'

    @property
    def state_file(self) -> Path:
        """JSON facts about the running cloud (flavors, image, endpoints)."""
        return self.run / 'cloud.json'

    def nova_bin(self, name: str) -> str:
        return str(self.nova_venv / 'bin' / name)

    def keystone_bin(self, name: str) -> str:
        return str(self.keystone_venv / 'bin' / name)

    def glance_bin(self, name: str) -> str:
        return str(self.glance_venv / 'bin' / name)

    def pidfile(self, name: str) -> Path:
        return self.run / ('%s.pid' % name)

    def log(self, name: str) -> Path:
        return self.logs / ('%s.log' % name)

    def mkdirs(self) -> None:
        for d in (self.etc, self.data, self.run, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    def url(self, service: str, path: str = '') -> str:
        return 'http://%s:%d%s' % (HOST, PORTS[service], path)

    def db_url(self, database: str) -> str:
        return 'mysql+pymysql://%s:%s@%s:%d/%s?charset=utf8' % (
            DB_USER, DB_PASSWORD, HOST, PORTS['mariadb'], database)

    def transport_url(self) -> str:
        return 'rabbit://%s:%s@%s:%d/' % (
            RABBIT_USER, RABBIT_PASSWORD, HOST, PORTS['rabbitmq'])

    def env(self) -> Dict[str, str]:
        """A clean environment for child processes."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('OS_', 'PYTHON'))}
        env['PATH'] = '%s:%s' % (self.nova_venv / 'bin',
                                 env.get('PATH', '/usr/bin:/bin'))
        return env
