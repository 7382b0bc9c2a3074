"""Names and numbers both sides of the XAPI seam agree on.

Standard library only and import-free, so that the Nova side (``conf``)
and the dom0 payload (Python 3.6 in XCP-ng 8.3's dom0) can both import it;
``tests/unit/dom0/test_records_config.py`` checks that the driver's plugin
name is this one.
"""

#: the plugin name the driver passes to ``host.call_plugin``; the file
#: XAPI runs is ``/etc/xapi.d/plugins/<PLUGIN>``
PLUGIN = 'nova_xen_stubdom'

#: the dom0 agent's configuration file (configparser, section [agent])
AGENT_CONF = '/etc/nova-xen-stubdom/agent.conf'

#: the daemon's root-only unix socket and its state directory
DAEMON_SOCKET = '/run/nova-xen-stubdom/agent.sock'
STATE_DIR = '/var/lib/nova-xen-stubdom'

#: XAPI's inventory file; INSTALLATION_UUID is this host's uuid
INVENTORY = '/etc/xensource-inventory'
#: XAPI's pool certificate (host key + certificate, CN = host UUID) and the
#: bundle of every pool member's one (xapi-project/xen-api
#: ocaml/xapi/certificates.ml, "Certificate locations")
XAPI_POOL_TLS_CERT = '/etc/xensource/xapi-pool-tls.pem'
XAPI_POOL_CA_BUNDLE = '/etc/stunnel/xapi-pool-ca-bundle.pem'

#: the stub-domain image's build manifest (build-dom0 --stubdom-dir installs
#: build-stubdom's manifest.json here, beside the kernel and rootfs)
STUBDOM_MANIFEST = '/var/lib/xcp/guest/nova-xen-stubdom-manifest.json'

#: the functions the plugin forwards (the registry's, checked by a test):
#: the plugin process knows them without importing the engine
PLUGIN_FUNCTIONS = (
    'console_log', 'dm_state', 'guest_cpu_policy', 'guest_exit',
    'guest_pv_drivers',
    'host_cpu_policy', 'key_offer', 'link_stubdom',
    'migrate_abort',
    'migrate_force_complete', 'migrate_forget', 'migrate_receive',
    'migrate_receive_cancel', 'migrate_receive_status',
    'migrate_resume_source', 'migrate_send',
    'migrate_status', 'pci_attach', 'pci_detach', 'pci_grants',
    'pci_inventory', 'restore_image', 'save_image', 'stubdom_image',
    'stubdom_wiring',
    'undo_save', 'unlink_stubdom', 'verify_image',
)

#: the error XAPI reports for a failing plugin: [status, stdout, stderr]
PLUGIN_FAILURE = 'XENAPI_PLUGIN_FAILURE'

#: defaults of the migration and save/restore settings: the Nova side's
#: ``[xen_stubdom]`` options of the same names take them from here
#: (``nova_xen_stubdom/conf.py``); the driver passes its values as plugin
#: arguments, so agent.conf only matters for calls that omit them
MIGRATION_DEFAULTS = {
    # '': the driver passes the host's management address (XAPI's
    # host.address); loopback and 0.0.0.0 are refused (migration.rst)
    'agent_listen_address': '',
    'agent_port_min': 49500,
    'agent_port_max': 49599,
    'live_migration_downtime_ms': 300,
    'live_migration_max_rounds': 30,
    'live_migration_bandwidth_mbps': 0,
    'live_migration_xbzrle_cache_mb': 64,
    'live_migration_stall_rounds': 5,
    'live_migration_max_mem_factor': 3.0,
    'live_migration_connect_timeout': 300,
    'live_migration_confirm_timeout': 60,
    'device_state_disk_mb': 32,
    'device_state_timeout': 30,
}
