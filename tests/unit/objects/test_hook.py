"""The start-up hook (objects/hook.py): a broken package of ours never takes
Nova's own object registration -- and with it nova-api, the conductor and
the scheduler -- down."""
import os
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

NOVA_API_LIKE = r'''
import site, sys
site.addsitedir(%(ours)r)       # runs our .pth, as site.py does
sys.path.append(%(nova)r)
import nova.objects
nova.objects.register_all()     # what every Nova service does first
from nova.objects import base
classes = base.NovaObjectRegistry.obj_classes()
assert 'LibvirtLiveMigrateData' in classes
print('REGISTERED', 'XenStubdomLiveMigrateData' in classes)
# nova-api's router: it loads the flavor extra-spec validators, ours too
import nova.api.openstack.compute.routes
from nova.api.validation.extra_specs import validators
print('VALIDATED', any(n.startswith('xen_stubdom:')
                       for n in validators.VALIDATORS))
'''


def _site(tmp_path, broken):
    '''Our package in a site dir of its own, module *broken* (a path in
    the package) replaced by one whose import fails -- a missing
    dependency, a Nova it does not fit.'''
    ours = tmp_path / 'site'
    src = os.path.join(ROOT, 'nova_xen_stubdom')
    pkg = ours / 'nova_xen_stubdom'
    # symlinks for everything but the directories down to *broken*
    parts = broken.split('/')
    here, there = pkg, src
    for depth, part in enumerate(parts):
        here.mkdir(parents=True)
        for name in os.listdir(there):
            if name != part and name != '__pycache__':
                os.symlink(os.path.join(there, name), here / name)
        if depth < len(parts) - 1:
            here, there = here / part, os.path.join(there, part)
    (here / parts[-1]).write_text(
        'raise ImportError("simulated: a dependency is missing")\n')
    shutil.copy(os.path.join(src, 'objects', 'nova_xen_stubdom-objects.pth'),
                ours)
    return ours


def _run_nova_api_like(tmp_path, broken):
    ours = _site(tmp_path, broken)
    code = NOVA_API_LIKE % {'ours': str(ours),
                            'nova': sysconfig.get_paths()['purelib']}
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, '-S', '-c', code],
                         cwd=str(tmp_path), capture_output=True, text=True,
                         env=dict(env, PYTHONNOUSERSITE='1'), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_nova_objects_register_when_ours_fail_to_import(tmp_path):
    '''Red before: nova.objects.register_all() raised our ImportError.'''
    out = _run_nova_api_like(tmp_path, 'objects/migrate_data.py')
    assert 'REGISTERED False' in out.stdout
    assert 'VALIDATED True' in out.stdout
    # ... and says so: a warning naming what failed
    assert ('nova_xen_stubdom.objects.migrate_data could not be imported '
            '(ImportError: simulated: a dependency is missing)') in out.stderr


def test_nova_api_starts_when_the_driver_fails_to_import(tmp_path):
    '''Red before: importing nova-api's router raised AttributeError
    ('EntryPoint' object has no attribute 'module_name': Nova's own
    load-failure callback, reporting our validators' ImportError).'''
    out = _run_nova_api_like(tmp_path, 'driver/__init__.py')
    # the objects do not need the driver
    assert 'REGISTERED True' in out.stdout
    assert 'VALIDATED False' in out.stdout
    assert ('the xen_stubdom: flavor extra specs are not validated: the '
            'driver does not import (ImportError: simulated') in out.stderr


def test_register_reports_failure_without_raising(monkeypatch, caplog):
    from nova_xen_stubdom.objects import hook
    monkeypatch.setattr(hook, 'OURS', 'nova_xen_stubdom.objects.no_such')
    assert hook.register() is False
    assert 'no_such could not be imported' in caplog.text
    monkeypatch.undo()
    assert hook.register() is True
