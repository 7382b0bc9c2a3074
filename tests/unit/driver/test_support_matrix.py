"""doc/source/support-matrix.ini agrees with what the driver implements."""
import configparser
import os

from nova.virt import driver as nova_driver

from nova_xen_stubdom.driver import driver

INI = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))),
    'doc', 'source', 'support-matrix.ini')


def _ops():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(INI)
    return {s: dict(cfg.items(s)) for s in cfg.sections()
            if s.startswith('operation.')}


def test_complete_operations_are_implemented():
    for name, op in _ops().items():
        impl = op['driver.xen_stubdom']
        api = op.get('api')
        if not api or api == 'emit_event':
            continue
        overridden = api in vars(driver.XenStubdomDriver)
        if impl == 'complete':
            assert overridden, '%s: %s is not implemented' % (name, api)


def test_missing_operations_are_not_implemented():
    """A "missing" operation keeps Nova's NotImplementedError default."""
    for name, op in _ops().items():
        if op['driver.xen_stubdom'] != 'missing':
            continue
        api = op.get('api')
        if not api:
            continue
        assert api not in vars(driver.XenStubdomDriver), name
        assert getattr(nova_driver.ComputeDriver, api) is getattr(
            driver.XenStubdomDriver, api), name
