"""devstack/plugin.sh, phase by phase, against recording stand-ins.

Devstack cannot run here, so each phase is sourced by bash the way
devstack's ``run_phase`` does, with small stand-ins of the devstack
functions the plugin calls (``iniset``, ``pip_install``, ``run_process``,
...) that append their arguments to a log.  The tests then read that log.
"""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEVSTACK = os.path.join(REPO, 'devstack')

STANDINS = r'''
record() { printf '%s\n' "$*" >> "$CALLS"; }
iniset() { record iniset "$@"; }
pip_install() { record pip_install "$@"; }
run_process() { record run_process "$@"; }
stop_process() { record stop_process "$@"; }
echo_summary() { :; }
is_service_enabled() {
    local s
    for s in "$@"; do
        [[ " $ENABLED_SERVICES " == *" $s "* ]] && return 0
    done
    return 1
}
ssh() { record ssh "$@"; }
scp() { record scp "$@"; }
pip() { record pip "$@"; }
hostname() { echo devstack-node; }
'''


def run_phase(tmp_path, *phase, env=None, services='n-cpu tempest'):
    calls = tmp_path / 'calls'
    calls.touch()
    nova_bin = tmp_path / 'bin'
    nova_bin.mkdir(exist_ok=True)
    # the console script, as devstack would find it after "install"
    tool = nova_bin / 'nova-xen-stubdom'
    # build-dom0 leaves its tarball and (unless NO_RPM) its RPM in --output
    tool.write_text(
        '#!/bin/bash\necho "nova-xen-stubdom $*" >> "$CALLS"\n'
        'if [ "$1" = build-dom0 ]; then\n'
        '  touch "$3/nova-xen-stubdom-dom0-abc.tar.gz"\n'
        '  [ -n "${NO_RPM:-}" ] ||'
        ' touch "$3/nova-xen-stubdom-dom0-0.0.1-0.gabc.x86_64.rpm"\n'
        'fi\n')
    tool.chmod(0o755)
    script = '\n'.join([
        'set -eu',
        STANDINS,
        'source "%s/settings"' % DEVSTACK,
        'source "%s/plugin.sh" %s' % (DEVSTACK, ' '.join(phase)),
    ])
    e = {'PATH': os.environ['PATH'], 'CALLS': str(calls),
         'DEST': '/opt/stack', 'DATA_DIR': str(tmp_path / 'data'),
         'NOVA_CONF': '/etc/nova/nova.conf',
         'NOVA_CPU_CONF': '/etc/nova/nova-cpu.conf',
         'TEMPEST_CONFIG': '/opt/stack/tempest/etc/tempest.conf',
         'NOVA_BIN_DIR': str(nova_bin), 'ADMIN_PASSWORD': 'secret',
         'ENABLED_SERVICES': services}
    e.update(env or {})
    res = subprocess.run(['bash', '-c', script], env=e, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line.split(' ') for line in calls.read_text().splitlines()]


def inisets(calls, path):
    return {(c[2], c[3]): ' '.join(c[4:]) for c in calls
            if c[0] == 'iniset' and c[1] == path}


def test_install_is_a_regular_pip_install(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'install')
    assert calls == [['pip_install', '/opt/stack/nova-xen-stubdom']]


def test_post_config_sets_the_driver_and_starts_the_simulator(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'post-config')
    conf = inisets(calls, '/etc/nova/nova-cpu.conf')
    assert conf[('DEFAULT', 'compute_driver')] == \
        'xen_stubdom.XenStubdomDriver'
    assert conf[('xen_stubdom', 'connection_url')] == \
        'http://127.0.0.1:9363'
    assert conf[('xen_stubdom', 'connection_password')] == 'secret'
    assert conf[('xen_stubdom', 'verify_tls')] == 'False'
    assert conf[('xen_stubdom', 'host_name')] == 'sim-host-0-0'
    assert conf[('xen_stubdom', 'stubdom_memory_mb')] == '128'
    assert conf[('xen_stubdom', 'allow_dom0_device_model')] == 'False'
    # XAPI direct-boots kernels only from /var/lib/xcp/guest/
    assert conf[('xen_stubdom', 'stubdom_kernel')] == \
        '/var/lib/xcp/guest/nova-xen-stubdom-kernel'
    assert conf[('xen_stubdom', 'stubdom_ramdisk')] == \
        '/var/lib/xcp/guest/nova-xen-stubdom-rootfs.cpio.gz'
    sim = [c for c in calls if c[0] == 'run_process']
    assert len(sim) == 1 and sim[0][1] == 'xen-stubdom-sim'
    assert sim[0][2].endswith('/nova-xen-stubdom') and sim[0][3] == 'sim'
    assert '--port' in sim[0] and '9363' in sim[0]


def test_post_config_for_a_real_pool_starts_no_simulator(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'post-config', env={
        'XEN_STUBDOM_XAPI_URL': 'https://xcp.example.org',
        'XEN_STUBDOM_HOST_NAME': 'xcp-01'})
    conf = inisets(calls, '/etc/nova/nova-cpu.conf')
    assert conf[('xen_stubdom', 'connection_url')] == \
        'https://xcp.example.org'
    assert conf[('xen_stubdom', 'verify_tls')] == 'True'
    assert conf[('xen_stubdom', 'host_name')] == 'xcp-01'
    assert not [c for c in calls if c[0] == 'run_process']


def test_post_config_falls_back_to_nova_conf(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'post-config',
                      env={'NOVA_CPU_CONF': ''})
    assert inisets(calls, '/etc/nova/nova.conf')[
        ('DEFAULT', 'compute_driver')] == 'xen_stubdom.XenStubdomDriver'


def test_extra_without_a_real_host_does_nothing(tmp_path):
    assert run_phase(tmp_path, 'stack', 'extra') == []


def test_extra_installs_the_dom0_package_on_a_real_host(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'extra', env={
        'XEN_STUBDOM_XAPI_URL': 'https://xcp.example.org',
        'XEN_STUBDOM_DOM0_HOST': 'xcp-01.example.org'})
    words = [' '.join(c) for c in calls]
    assert any(w.startswith('nova-xen-stubdom build-stubdom --output')
               for w in words)
    assert any(w.startswith('nova-xen-stubdom build-dom0 --output') and
               '--stubdom-dir' in w for w in words)
    assert any(w.startswith('scp') and w.endswith(
        'x86_64.rpm root@xcp-01.example.org:/tmp/nova-xen-stubdom/')
        for w in words)
    (install,) = [w for w in words if w.startswith('ssh') and 'rpm -U' in w]
    assert install.endswith('&& systemctl restart xenopsd-xc')
    # the package itself carries the image to /var/lib/xcp/guest/
    assert not [w for w in words if 'nova-xen-stubdom-kernel' in w]


def test_extra_uses_the_tarball_without_an_rpm(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'extra', env={
        'XEN_STUBDOM_XAPI_URL': 'https://xcp.example.org',
        'XEN_STUBDOM_DOM0_HOST': 'xcp-01.example.org', 'NO_RPM': '1',
        'XEN_STUBDOM_BOOT_DIR': '/srv/guest'})
    words = [' '.join(c) for c in calls]
    (install,) = [w for w in words if w.startswith('ssh') and
                  'install.sh' in w]
    assert 'nova-xen-stubdom-dom0-abc/install.sh' in install
    assert install.endswith('&& systemctl restart xenopsd-xc')
    kernel = [w for w in words if w.startswith('scp') and
              'nova-xen-stubdom-kernel' in w]
    assert kernel and kernel[0].endswith('root@xcp-01.example.org:/srv/guest/')


def test_test_config_enables_the_tempest_plugin(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'test-config')
    conf = inisets(calls, '/opt/stack/tempest/etc/tempest.conf')
    assert conf[('service_available', 'xen_stubdom')] == 'True'
    assert conf[('xen_stubdom', 'xapi_url')] == 'http://127.0.0.1:9363'
    assert conf[('xen_stubdom', 'xapi_password')] == 'secret'
    assert conf[('xen_stubdom', 'host_map')] == 'devstack-node:sim-host-0-0'
    # no alias configured: the PCI test skips
    assert ('xen_stubdom', 'pci_alias') not in conf


def test_test_config_passes_the_pci_alias(tmp_path):
    calls = run_phase(tmp_path, 'stack', 'test-config',
                      env={'XEN_STUBDOM_TEMPEST_PCI_ALIAS': 'gpu'})
    conf = inisets(calls, '/opt/stack/tempest/etc/tempest.conf')
    assert conf[('xen_stubdom', 'pci_alias')] == 'gpu'


def test_test_config_without_tempest_writes_nothing(tmp_path):
    assert run_phase(tmp_path, 'stack', 'test-config', services='n-cpu') \
        == []


def test_unstack_stops_the_simulator(tmp_path):
    assert run_phase(tmp_path, 'unstack') == [
        ['stop_process', 'xen-stubdom-sim']]


def test_a_node_without_nova_compute_is_left_alone(tmp_path):
    for phase in (('stack', 'install'), ('stack', 'post-config'),
                  ('unstack',)):
        assert run_phase(tmp_path, *phase, services='n-api') == []


SCRIPTS = ['devstack/plugin.sh', 'devstack/settings',
           'tools/ci/tier-integration.sh', 'tools/cloud/make-venvs.sh']


@pytest.mark.skipif(not shutil.which('shellcheck'),
                    reason='shellcheck (Debian package) not installed')
def test_shellcheck():
    # -x from the repository root: sourced files (tools/ci/report.sh) are
    # followed and checked too
    res = subprocess.run(['shellcheck', '-x', '-s', 'bash'] + SCRIPTS,
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout


def test_bashate():
    bashate = shutil.which('bashate') or os.path.join(
        os.path.dirname(sys.executable), 'bashate')
    if not os.path.exists(bashate):
        pytest.skip('bashate not installed')
    # E005: devstack's settings file is sourced, it has no #! by design
    res = subprocess.run([bashate, '-i', 'E005,E006'] +
                         [os.path.join(REPO, s) for s in SCRIPTS],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
