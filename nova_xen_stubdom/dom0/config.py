"""The dom0 agent's configuration: ``/etc/nova-xen-stubdom/agent.conf``.

dom0 has no oslo.config: the file is read with :mod:`configparser`, one
``[agent]`` section, every key optional::

    [agent]
    # hypervisor backend: xen (a real dom0) or sim (the simulator)
    backend = xen
    # refuse QEMU in dom0 for our guests without a stub domain (default);
    # when allowed, the stock wrapper below runs their dom0 QEMU
    allow_dom0_device_model = false
    # device-model wrapper: how long to wait for the stub domain's QEMU to
    # report "running", and the host's stock wrapper that runs the device
    # model of every HVM VM nova-xen-stubdom does not manage, with
    # xenopsd's argv unchanged (empty: /usr/lib64/xen/bin/qemu-wrapper,
    # where XCP-ng 8.3 installs xenopsd's qemu-wrapper)
    dm_start_timeout = 60
    stock_dm_wrapper = /usr/lib64/xen/bin/qemu-wrapper
    # no longer used (dom0 device models go through stock_dm_wrapper);
    # accepted so that older files still load
    dom0_qemu =
    # defaults for migration calls that do not carry their own values
    # (the listen address: the driver passes the host's management address)
    agent_listen_address =
    agent_port_min = 49500
    agent_port_max = 49599
    # migration streams: TLS with this host's certificate, peers verified
    # against the bundle (XCP-ng's pool certificates by default)
    migration_tls_cert = /etc/xensource/xapi-pool-tls.pem
    migration_tls_key =
    migration_tls_ca = /etc/stunnel/xapi-pool-ca-bundle.pem
    # auto: TLS 1.3 where this Python's OpenSSL has it, else 1.2 (AEAD)
    migration_tls_version = auto
    # the receiver: seconds a connection has for its TLS and key
    # handshakes, handshakes at once, loopback listen addresses (tests);
    # see doc/source/migration.rst "The wire"
    migration_handshake_timeout = 10
    migration_max_pending = 8
    migration_allow_loopback = false

A missing file means the defaults; an unknown key or a value of the wrong
type is a clear error naming the file and the key.
"""
import configparser

from nova_xen_stubdom.dom0 import constants
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import records

MYPY = False
if MYPY:    # annotations only: typing costs each plugin process ~5 ms
    from typing import Any, Dict, Optional  # noqa: F401

SECTION = 'agent'
#: environment variable naming another agent.conf (the simulator gives
#: each simulated host's plugin processes their own)
CONF_ENV = 'NOVA_XEN_STUBDOM_AGENT_CONF'
_MIG = constants.MIGRATION_DEFAULTS


@records.record
class AgentConfig:
    backend: str = 'xen'
    allow_dom0_device_model: bool = False
    dom0_qemu: str = ''
    dm_start_timeout: float = 60.0
    stock_dm_wrapper: str = ''
    socket_path: str = constants.DAEMON_SOCKET
    state_dir: str = constants.STATE_DIR
    agent_listen_address: str = _MIG['agent_listen_address']
    agent_port_min: int = _MIG['agent_port_min']
    agent_port_max: int = _MIG['agent_port_max']
    live_migration_downtime_ms: int = _MIG['live_migration_downtime_ms']
    live_migration_max_rounds: int = _MIG['live_migration_max_rounds']
    live_migration_bandwidth_mbps: int = _MIG[
        'live_migration_bandwidth_mbps']
    live_migration_xbzrle_cache_mb: int = _MIG[
        'live_migration_xbzrle_cache_mb']
    live_migration_stall_rounds: int = _MIG['live_migration_stall_rounds']
    live_migration_max_mem_factor: float = _MIG[
        'live_migration_max_mem_factor']
    live_migration_connect_timeout: int = _MIG[
        'live_migration_connect_timeout']
    live_migration_confirm_timeout: int = _MIG[
        'live_migration_confirm_timeout']
    device_state_disk_mb: int = _MIG['device_state_disk_mb']
    device_state_timeout: int = _MIG['device_state_timeout']
    #: this host's certificate (PEM; with its key unless migration_tls_key)
    migration_tls_cert: str = constants.XAPI_POOL_TLS_CERT
    migration_tls_key: str = ''
    #: trusted certificates for peers (the pool's bundle on XCP-ng)
    migration_tls_ca: str = constants.XAPI_POOL_CA_BUNDLE
    #: auto | 1.2 | 1.3 (auto: 1.3 where OpenSSL has it)
    migration_tls_version: str = 'auto'
    migration_handshake_timeout: float = 10.0
    migration_max_pending: int = 8
    #: accept a loopback listen address (tests, the simulator)
    migration_allow_loopback: bool = False
    #: the stub-domain image's manifest (what its QEMU lacks)
    stubdom_manifest: str = constants.STUBDOM_MANIFEST


def _types() -> 'Dict[str, Any]':
    return dict(AgentConfig.__annotations__)


def from_mapping(values: 'Dict[str, Any]') -> AgentConfig:
    """An :class:`AgentConfig` from *values* (unknown keys refused)."""
    types = _types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise errors.AgentError('unknown agent setting(s): %s'
                                % ', '.join(unknown))
    return AgentConfig(**{k: types[k](v) for k, v in values.items()})


def load(path: 'Optional[str]' = None) -> AgentConfig:
    """The configuration in *path* (default :data:`constants.AGENT_CONF`)."""
    path = path or constants.AGENT_CONF
    parser = configparser.ConfigParser()
    types = _types()
    values = {}     # type: Dict[str, Any]
    try:
        parser.read(path)
        if parser.has_section(SECTION):
            for key in parser.options(SECTION):
                kind = types.get(key)
                if kind is None:
                    raise errors.AgentError(
                        'bad agent configuration %s: unknown key [%s] %s'
                        % (path, SECTION, key))
                if kind is bool:
                    values[key] = parser.getboolean(SECTION, key)
                elif kind is int:
                    values[key] = parser.getint(SECTION, key)
                elif kind is float:
                    values[key] = parser.getfloat(SECTION, key)
                else:
                    values[key] = parser.get(SECTION, key)
    except (configparser.Error, ValueError) as exc:
        raise errors.AgentError('bad agent configuration %s: %s'
                                % (path, exc))
    return AgentConfig(**values)
