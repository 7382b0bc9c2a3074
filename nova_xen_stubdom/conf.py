"""Configuration options of the ``[xen_stubdom]`` group.

All options of the project live here; ``list_opts`` feeds
``oslo-config-generator`` (see ``etc/nova-xen-stubdom-config-generator.conf``).
"""
from oslo_config import cfg

from nova_xen_stubdom.dom0 import constants as dom0_constants

#: defaults the dom0 agent uses for calls that omit a value (agent.conf)
_DOM0 = dom0_constants.MIGRATION_DEFAULTS

GROUP = 'xen_stubdom'

xen_stubdom_group = cfg.OptGroup(
    GROUP,
    title='Xen/XAPI with Linux stub domains',
    help='Options of the nova-xen-stubdom compute driver and its dom0 agent.')

connection_opts = [
    cfg.StrOpt('connection_url',
               help='URL of the XAPI pool master (https://host or '
                    'http://127.0.0.1:PORT for the embedded simulator). '
                    'Logging into a pool member is redirected to the master.'),
    cfg.StrOpt('connection_username', default='root',
               help='XAPI user name.'),
    cfg.StrOpt('connection_password', secret=True,
               help='XAPI password. Never logged.'),
    cfg.BoolOpt('verify_tls', default=True,
                help='Verify the XAPI server certificate for https URLs. '
                     'Turning this off is for test pools only.'),
    cfg.StrOpt('ca_file',
               help='CA bundle used to verify the XAPI certificate; the '
                    'system bundle when unset.'),
    cfg.IntOpt('connection_concurrent', default=5, min=1,
               help='Maximum number of concurrent XAPI sessions (and so of '
                    'concurrent XAPI calls) this compute service opens.'),
    cfg.IntOpt('login_timeout', default=10, min=1,
               help='Seconds to wait for an XAPI login.'),
    cfg.IntOpt('call_timeout', default=60, min=1,
               help='Seconds to wait for one synchronous XAPI call.'),
    cfg.IntOpt('task_timeout', default=600, min=1,
               help='Seconds to wait for an asynchronous XAPI task before '
                    'cancelling it.'),
    cfg.IntOpt('api_max_retries', default=3, min=0,
               help='Retries of an XAPI call refused with a transient error '
                    '(OTHER_OPERATION_IN_PROGRESS, connection reset).'),
    cfg.FloatOpt('api_retry_interval', default=0.5, min=0,
                 help='Seconds between such retries.'),
    cfg.StrOpt('host_name',
               help='name_label of the XAPI host this nova-compute manages; '
                    'defaults to Nova\'s [DEFAULT] host.'),
]

stubdom_opts = [
    cfg.StrOpt('stubdom_kernel',
               default='/var/lib/xcp/guest/nova-xen-stubdom-kernel',
               help='Path, on the XAPI host, of the Linux stub domain kernel '
                    '(written by "nova-xen-stubdom build-stubdom"). XAPI '
                    'direct-boots kernels only from under '
                    '/var/lib/xcp/guest/; other paths are refused.'),
    cfg.StrOpt('stubdom_ramdisk',
               default='/var/lib/xcp/guest/nova-xen-stubdom-rootfs.cpio.gz',
               help='Path, on the XAPI host, of the Linux stub domain '
                    'rootfs (written by "nova-xen-stubdom build-stubdom"). '
                    'Must be under /var/lib/xcp/guest/, as the kernel.'),
    cfg.IntOpt('stubdom_memory_mb', default=128, min=32,
               help='Memory of each stub domain; a flavor may override it '
                    'with the xen_stubdom:memory_mb extra spec. The image '
                    'built by "nova-xen-stubdom build-stubdom" needs at '
                    'least 120 MiB (measured: its rootfs lives in RAM); '
                    'smaller values are for smaller custom images.'),
    cfg.IntOpt('stubdom_vcpus', default=1, min=1, max=8,
               help='vCPUs of each stub domain; a flavor may override it '
                    'with xen_stubdom:vcpus.'),
    cfg.BoolOpt('allow_dom0_device_model', default=False,
                help='Allow guests whose device model runs in dom0 (no stub '
                     'domain). Off by default: the device model is the '
                     'largest attack surface of an HVM guest.'),
    cfg.IntOpt('device_model_start_timeout', default=60, min=1,
               help='Seconds to wait for the stub domain to report its '
                    'device model running.'),
    cfg.IntOpt('clean_shutdown_timeout', default=60, min=1,
               help='Seconds a soft reboot waits for the guest to shut '
                    'down cleanly before it is forced off. (Stop uses the '
                    'timeout Nova passes: [DEFAULT] shutdown_timeout.)'),
]

console_opts = [
    cfg.PortOpt('console_port',
                help='TCP port of XAPI\'s plain-HTTP listener on each host, '
                     'to which Nova\'s noVNC proxy sends "CONNECT '
                     '/console?..." (XAPI\'s console proxy; the host is the '
                     'one the console record\'s location names). Default: '
                     'the port of connection_url when it is http://, '
                     'otherwise 80. XAPI hosts set to https-only do not '
                     'serve consoles to Nova\'s proxies.'),
    cfg.StrOpt('console_username',
               help='XAPI account whose sessions go into console paths '
                    '(Nova stores them with its console tokens). XAPI\'s '
                    'console proxy needs only the vm-operator role; by '
                    'default the connection account (pool-admin) is used.'),
    cfg.StrOpt('console_password', secret=True,
               help='Password of console_username.'),
]

network_opts = [
    cfg.StrOpt('network_name_label',
               help='name_label of the XAPI network guest NICs join when no '
                    'XAPI network has the bridge name Neutron gives the '
                    'port (e.g. the pool\'s integration network).'),
]

storage_opts = [
    cfg.StrOpt('sr_matching_filter', default='default-sr:true',
               help='Which SR holds instance disks: "default-sr:true" (the '
                    'pool default SR), "other-config:KEY=VALUE" or '
                    '"name-label:NAME".'),
    cfg.StrOpt('shared_sr_inventory', default='compute-node',
               choices=[
                   ('compute-node',
                    'DISK_GB of a shared SR on every compute node of the '
                    'pool (counted once per host; host-targeted '
                    'scheduling works)'),
                   ('sharing-provider',
                    'DISK_GB of a shared SR once, on a sharing resource '
                    'provider in an aggregate with the pool\'s compute '
                    'nodes; placement then finds no host for requests '
                    'naming a host (boot or move with a target host)')],
               help='Where the SR that holds instance disks is reported to '
                    'placement when it is shared (SR.shared, a PBD on '
                    'every host).  A local SR is always the compute '
                    'node\'s DISK_GB.  Changing it takes effect at '
                    'nova-compute start-up, which moves existing '
                    'allocations (a reshape).'),
]

migration_opts = [
    cfg.IntOpt('live_migration_downtime_ms',
               default=_DOM0['live_migration_downtime_ms'], min=1,
               help='Pre-copy stops when the remaining dirty memory can be '
                    'sent within this many milliseconds.'),
    cfg.IntOpt('live_migration_max_rounds',
               default=_DOM0['live_migration_max_rounds'], min=1,
               help='Pre-copy rounds before switching to stop-and-copy.'),
    cfg.IntOpt('live_migration_bandwidth_mbps',
               default=_DOM0['live_migration_bandwidth_mbps'], min=0,
               help='Bandwidth cap of a migration stream in MiB/s; 0 means '
                    'no cap.'),
    cfg.StrOpt('agent_listen_address',
               default=_DOM0['agent_listen_address'],
               help='Address the destination\'s dom0 agent listens on for '
                    'an incoming migration stream (TLS) and that the '
                    'source connects to. Empty: the host\'s management '
                    'address (XAPI host.address). The agent refuses '
                    '0.0.0.0 and, unless its agent.conf sets '
                    'migration_allow_loopback, loopback addresses.'),
    cfg.PortOpt('agent_port_min',
                default=_DOM0['agent_port_min'],
                help='Lowest TCP port for incoming migration streams.'),
    cfg.PortOpt('agent_port_max',
                default=_DOM0['agent_port_max'],
                help='Highest TCP port for incoming migration streams.'),
    cfg.IntOpt('live_migration_xbzrle_cache_mb',
               default=_DOM0['live_migration_xbzrle_cache_mb'], min=0,
               help='Per-migration cache of last-sent copies of re-dirtied '
                    'pages; pages sent again are XBZRLE-encoded against it. '
                    '0 turns XBZRLE off.'),
    cfg.IntOpt('live_migration_stall_rounds',
               default=_DOM0['live_migration_stall_rounds'], min=1,
               help='Pre-copy gives up (pause and send the rest) after '
                    'this many rounds in which the dirty set did not '
                    'shrink by 10%: the guest dirties memory faster than '
                    'the stream carries it.'),
    cfg.FloatOpt('live_migration_max_mem_factor',
                 default=_DOM0['live_migration_max_mem_factor'], min=1.0,
                 help='Pre-copy gives up once the stream carried this many '
                      'times the guest\'s memory (libxc uses 3).'),
    cfg.IntOpt('live_migration_connect_timeout',
               default=_DOM0['live_migration_connect_timeout'], min=1,
               help='Seconds the destination agent waits for the source '
                    'to connect after pre_live_migration.'),
    cfg.IntOpt('live_migration_confirm_timeout',
               default=_DOM0['live_migration_confirm_timeout'], min=1,
               help='Seconds the source waits for the destination to '
                    'report the guest restored and then running.'),
    cfg.IntOpt('live_migration_progress_interval', default=2, min=1,
               help='Seconds between progress updates written to Nova\'s '
                    'migration record during a live migration.'),
    cfg.IntOpt('device_state_disk_mb',
               default=_DOM0['device_state_disk_mb'], min=1,
               help='Size of the disk attached to a stub domain to carry '
                    'its device model\'s state during a save.'),
    cfg.IntOpt('device_state_timeout',
               default=_DOM0['device_state_timeout'], min=1,
               help='Seconds to wait for the device model in a stub '
                    'domain to save or load its state.'),
]

ALL_OPTS = (connection_opts + stubdom_opts + storage_opts + network_opts +
            console_opts + migration_opts)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[xen_stubdom]`` options on *conf*."""
    conf.register_group(xen_stubdom_group)
    conf.register_opts(ALL_OPTS, group=xen_stubdom_group)


def list_opts() -> list:
    """Entry point for ``oslo-config-generator``."""
    return [(xen_stubdom_group, ALL_OPTS)]


CONF = cfg.CONF
register_opts(CONF)
