"""The plugin object tempest finds through the entry point."""
import os

from tempest import config
from tempest.test_discover import plugins

from nova_xen_stubdom_tempest_plugin import config as plugin_config


class XenStubdomTempestPlugin(plugins.TempestPlugin):

    def load_tests(self):
        base = os.path.split(os.path.dirname(os.path.abspath(__file__)))[0]
        test_dir = 'nova_xen_stubdom_tempest_plugin/tests'
        return os.path.join(base, test_dir), base

    def register_opts(self, conf):
        config.register_opt_group(conf, config.service_available_group,
                                  [plugin_config.service_option])
        config.register_opt_group(conf, plugin_config.group,
                                  plugin_config.opts)

    def get_opt_lists(self):
        return [(plugin_config.group.name, plugin_config.opts),
                ('service_available', [plugin_config.service_option])]
