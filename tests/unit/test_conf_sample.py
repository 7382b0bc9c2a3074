"""etc/nova-xen-stubdom.conf.sample is what oslo-config-generator writes."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_sample_config_is_current(tmp_path):
    out = tmp_path / 'sample.conf'
    subprocess.run(
        [sys.executable, '-m', 'oslo_config.generator',
         '--config-file',
         os.path.join(ROOT, 'etc', 'nova-xen-stubdom-config-generator.conf'),
         '--output-file', str(out)],
        check=True, cwd=ROOT)
    with open(os.path.join(ROOT, 'etc', 'nova-xen-stubdom.conf.sample')) as f:
        committed = f.read()
    assert out.read_text() == committed, (
        'etc/nova-xen-stubdom.conf.sample is stale: run "tox -e genconfig" '
        '(oslo-config-generator --config-file '
        'etc/nova-xen-stubdom-config-generator.conf)')


def test_every_option_has_help():
    from nova_xen_stubdom import conf
    for group, opts in conf.list_opts():
        for opt in opts:
            assert opt.help and len(opt.help) > 8, opt.name
    names = {o.name for _g, opts in conf.list_opts() for o in opts}
    for required in ('connection_url', 'connection_username',
                     'connection_password', 'verify_tls', 'ca_file',
                     'connection_concurrent', 'stubdom_kernel',
                     'stubdom_ramdisk', 'stubdom_memory_mb',
                     'sr_matching_filter', 'allow_dom0_device_model'):
        assert required in names
    pw = [o for _g, opts in conf.list_opts() for o in opts
          if o.name == 'connection_password'][0]
    assert pw.secret
