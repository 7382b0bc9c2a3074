"""The layouts ``cloud install-checks`` builds (no cloud here: the checks
themselves run in the integration tier against the running cloud)."""
import os
import subprocess
import sys

from nova_xen_stubdom.cloud import install_checks as ic


def _site(tmp_path):
    src = tmp_path / 'site-packages'
    for d in ('nova/virt/xen_stubdom', 'nova/virt/libvirt', 'nova/api',
              'nova_xen_stubdom/objects', 'nova_xen_stubdom_tempest_plugin',
              'nova_xen_stubdom-1.0.dist-info', 'nova-34.0.0.dist-info',
              'oslo_config', 'nova/__pycache__'):
        (src / d).mkdir(parents=True, exist_ok=True)
    for f in ('nova/__init__.py', 'nova/virt/__init__.py',
              'nova/virt/driver.py', 'nova/virt/xen_stubdom/__init__.py',
              'nova_xen_stubdom/__init__.py', 'oslo_config/__init__.py',
              'nova_xen_stubdom-objects.pth', 'distutils-precedence.pth'):
        (src / f).write_text('')
    return src


def test_distro_site_is_nova_without_any_file_of_ours(tmp_path):
    src = _site(tmp_path)
    dest = ic.distro_site(src, tmp_path / 'distro')
    names = sorted(os.listdir(dest))
    assert names == ['distutils-precedence.pth', 'nova',
                     'nova-34.0.0.dist-info', 'oslo_config']
    # nova/ and nova/virt/ are real directories (the shim left out),
    # everything in them links to the original
    assert not (dest / 'nova').is_symlink()
    assert not (dest / 'nova' / 'virt').is_symlink()
    assert sorted(os.listdir(dest / 'nova' / 'virt')) == [
        '__init__.py', 'driver.py', 'libvirt']
    assert os.path.realpath(dest / 'nova' / 'virt' / 'driver.py') == str(
        src / 'nova' / 'virt' / 'driver.py')
    assert (dest / 'nova' / 'api').is_symlink()
    assert not (dest / 'nova' / '__pycache__').exists()
    # built again from scratch
    assert ic.distro_site(src, dest) == dest


def test_where_code_reports_nova_and_no_shim(tmp_path):
    """The line the swapped services print names where ``nova.virt``
    comes from and the shim's file (None when nothing finds it)."""
    code = ic.WHERE_CODE + 'pass'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    # this venv: Nova is installed, the editable finder has no shim
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines()
            if ln.startswith(ic.WHERE_MARK)][-1]
    where = dict(kv.split('=', 1) for kv in line.split()[1:])
    assert where['nova.virt'].endswith(os.path.join('nova', 'virt'))
    assert set(where) == {'nova.virt', 'shim'}


def test_timestamps_from_the_compute_api():
    at = ic._utc('2026-12-08T00:12:03.000000')
    assert at is not None and at.second == 3 and at.tzinfo is None
    assert ic._utc('2026-12-08T00:12:03Z') == at.replace(microsecond=0)
    assert ic._utc(None) is None
