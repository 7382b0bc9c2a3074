"""tempest.conf options of the plugin: ``[xen_stubdom]`` and a service flag."""
from oslo_config import cfg

service_option = cfg.BoolOpt(
    'xen_stubdom', default=False,
    help='Whether the compute hosts run the nova-xen-stubdom driver; the '
         'plugin\'s tests skip otherwise.')

group = cfg.OptGroup(
    name='xen_stubdom', title='nova-xen-stubdom driver tests',
    help='Where the plugin reads what the driver did: the XAPI pool the '
         'compute hosts manage (a real pool or the embedded simulator).')

opts = [
    cfg.StrOpt('xapi_url',
               help='URL of the XAPI pool master, e.g. http://127.0.0.1:9363 '
                    'for the embedded simulator.'),
    cfg.StrOpt('xapi_username', default='root', help='XAPI user name.'),
    cfg.StrOpt('xapi_password', secret=True, help='XAPI password.'),
    cfg.IntOpt('stubdom_memory_mb', default=128,
               help='The compute hosts\' [xen_stubdom] stubdom_memory_mb: '
                    'memory of a stub domain whose flavor does not set '
                    'xen_stubdom:memory_mb.'),
    cfg.DictOpt('host_map', default={},
                help='Nova compute host -> name_label of the XAPI host it '
                     'manages ([xen_stubdom] host_name of that compute), '
                     'e.g. host1:xcp-a,host2:xcp-b. A host not listed is '
                     'assumed to carry the same name in both.'),
    cfg.StrOpt('pci_alias',
               help='A [pci] alias of the cloud that every compute host can '
                    'satisfy (one device per host is enough); the PCI '
                    'pass-through tests skip when unset.'),
    cfg.IntOpt('xapi_timeout', default=60,
               help='Seconds to wait for XAPI state to follow Nova\'s.'),
]
