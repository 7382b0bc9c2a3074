"""``compute_driver = xen_stubdom.XenStubdomDriver`` resolves through Nova's
own loader, for the developers' editable install (this venv) and for a
normal ``pip install`` of the wheel."""
from tests.functional import base  # noqa: F401,I100 (eventlet first)

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

from nova import test
from nova.virt import driver as nova_driver

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

LOAD_SNIPPET = r'''
import nova.tests.functional  # eventlet decision first
from nova import conf
from nova.virt import driver, fake
import nova_xen_stubdom.conf  # noqa
conf.CONF([], project='nova')
conf.CONF.set_override('compute_driver', 'xen_stubdom.XenStubdomDriver')
d = driver.load_compute_driver(fake.FakeVirtAPI())
import nova.virt.xen_stubdom as shim
print('LOADED', type(d).__module__, type(d).__name__, shim.__file__)
'''


class TestLoadInThisInstall(test.NoDBTestCase):
    def _clear_attrs(self):
        # PITFALL (pytest): keep the bound test method (see base.py)
        name = self._testMethodName
        saved = self.__dict__.get(name)
        super()._clear_attrs()
        if saved is not None:
            self.__dict__[name] = saved

    def test_load_compute_driver(self):
        self.flags(compute_driver='xen_stubdom.XenStubdomDriver')
        from nova.virt import fake
        drv = nova_driver.load_compute_driver(fake.FakeVirtAPI())
        self.assertEqual('nova_xen_stubdom.driver.driver',
                         type(drv).__module__)
        self.assertEqual('XenStubdomDriver', type(drv).__name__)
        self.assertTrue(drv.capabilities['supports_image_type_raw'])


def test_wheel_install_ships_only_the_shim_into_nova(tmp_path):
    # build from a copy: other builds may be using the checkout's build/
    # (the C sources are left out: this test is about the package layout)
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('setup.py', 'setup.cfg', 'pyproject.toml', 'README.md',
                 'requirements.txt'):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for name in ('nova', 'nova_xen_stubdom'):
        shutil.copytree(os.path.join(ROOT, name), src / name,
                        ignore=shutil.ignore_patterns(
                            '__pycache__', '*.so', '*.c', 'schema.json'))
    wheels = tmp_path / 'wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', '-w', str(wheels), str(src)],
                   check=True, cwd=str(src),
                   env=dict(os.environ, PBR_VERSION='0.0.1'))
    wheel = next(wheels.glob('nova_xen_stubdom-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    nova_files = sorted(n for n in names if n.startswith('nova/'))
    # exactly the shim: never Nova's own __init__ files
    assert nova_files == ['nova/virt/xen_stubdom/__init__.py'], nova_files

    # a fresh venv whose site-packages holds Nova (copied, without its unit
    # tests); everything else comes from this venv's site-packages through a
    # plain path entry (its .pth files, e.g. our editable finder, are not run)
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(venv)], check=True)
    vpy = str(venv / 'bin' / 'python')
    site = subprocess.run([vpy, '-c', 'import sysconfig; print(sysconfig.'
                           'get_paths()["purelib"])'], check=True,
                          capture_output=True, text=True).stdout.strip()
    purelib = sysconfig.get_paths()['purelib']
    shutil.copytree(os.path.join(purelib, 'nova'),
                    os.path.join(site, 'nova'),
                    ignore=shutil.ignore_patterns('unit', '__pycache__'))
    with open(os.path.join(site, 'deps.pth'), 'w') as f:
        f.write(purelib + '\n')
    nova_dir = os.path.join(site, 'nova')
    before = {os.path.relpath(os.path.join(d, n), nova_dir)
              for d, _dirs, files in os.walk(nova_dir) for n in files}
    subprocess.run([sys.executable, '-m', 'pip', '--python', vpy, 'install',
                    '-q', '--no-deps', '--no-compile', str(wheel)],
                   check=True)
    out = subprocess.run([vpy, '-c', LOAD_SNIPPET], cwd=str(tmp_path),
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONNOUSERSITE='1'))
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith('LOADED')]
    assert line, out.stdout
    module, cls, shim = line[0].split()[1:]
    assert (module, cls) == ('nova_xen_stubdom.driver.driver',
                             'XenStubdomDriver')
    assert shim.startswith(site), shim
    # uninstall removes the shim and leaves every file of Nova in place
    subprocess.run([sys.executable, '-m', 'pip', '--python', vpy,
                    'uninstall', '-q', '-y', 'nova-xen-stubdom'], check=True)
    after = {os.path.relpath(os.path.join(d, n), nova_dir)
             for d, _dirs, files in os.walk(nova_dir) for n in files
             if '__pycache__' not in d}
    assert before == after


SPLIT_SITES_SNIPPET = r'''
import site, sys
# Debian's order: pip's /usr/local/... site first, the distro's second
site.addsitedir(%(ours)r)        # runs our .pth, as site.py does
sys.path.append(%(nova)r)       # Nova's (its .pth files are not ours)
''' + LOAD_SNIPPET


def test_shim_found_when_nova_is_in_another_site_dir(tmp_path):
    """Nova from distro packages in one site directory, this package from
    pip in another: ``nova`` is imported from the directory holding its
    ``__init__.py``, so the shim pip put into the other directory's
    ``nova/virt`` is not on ``nova.virt.__path__``; the start-up hook
    (objects/hook.py) finds it.  Red before: ModuleNotFoundError
    'nova.virt.xen_stubdom'."""
    ours = tmp_path / 'usr-local-site'
    shim_dir = ours / 'nova' / 'virt' / 'xen_stubdom'
    shim_dir.mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, 'nova', 'virt', 'xen_stubdom',
                             '__init__.py'), shim_dir / '__init__.py')
    os.symlink(os.path.join(ROOT, 'nova_xen_stubdom'),
               ours / 'nova_xen_stubdom')
    shutil.copy(os.path.join(ROOT, 'nova_xen_stubdom', 'objects',
                             'nova_xen_stubdom-objects.pth'), ours)
    # the distro's site: this venv's site-packages, which holds Nova and
    # no shim (the developers' editable finder is one of its .pth files,
    # not run here: -S)
    nova_site = sysconfig.get_paths()['purelib']
    assert not os.path.exists(os.path.join(nova_site, 'nova', 'virt',
                                           'xen_stubdom'))
    code = SPLIT_SITES_SNIPPET % {'ours': str(ours), 'nova': nova_site}
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, '-S', '-c', code],
                         cwd=str(tmp_path), capture_output=True, text=True,
                         env=dict(env, PYTHONNOUSERSITE='1'), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith('LOADED')]
    assert line, out.stdout
    module, cls, shim = line[0].split()[1:]
    assert (module, cls) == ('nova_xen_stubdom.driver.driver',
                             'XenStubdomDriver')
    assert shim == str(shim_dir / '__init__.py'), shim
