"""Start-up hooks: register this project's versioned objects in every Nova
service, and find the ``nova.virt.xen_stubdom`` loader shim wherever it was
installed.

Nova's conductor (and API, scheduler) never load a compute driver, yet they
deserialise the driver's ``migrate_data``.  A ``.pth`` file installed with
the package (``nova_xen_stubdom-objects.pth``) runs :func:`install` at
interpreter start-up; it adds a meta-path finder that waits for
``nova.objects.migrate_data`` to be imported -- which every Nova service
does through ``nova.objects.register_all()`` -- and then imports
:mod:`nova_xen_stubdom.objects.migrate_data`, registering its classes.
Should that import fail, Nova's own import still succeeds and a warning
says what failed: nova-api and the scheduler must not go down with a
broken compute driver package (only live migration needs the class).

The same finder resolves ``nova.virt.xen_stubdom`` when Nova's package and
ours live in different site directories (Nova from distro packages in
``/usr/lib/python3/dist-packages``, this package from pip in
``/usr/local/lib/...``): Python imports ``nova`` from the directory that
has ``nova/__init__.py``, so the shim pip placed in the other directory's
``nova/virt/`` is not on ``nova.virt.__path__``.  When no other finder has
the shim, the finder looks for it under every ``sys.path`` entry.

Processes that never import Nova pay for two tiny imports and nothing else.
"""
import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys

TRIGGER = 'nova.objects.migrate_data'
OURS = 'nova_xen_stubdom.objects.migrate_data'
SHIM = 'nova.virt.xen_stubdom'

LOG = logging.getLogger(__name__)


def register() -> bool:
    """Import (and so register) our objects; False, with a warning, when
    that fails -- never an exception into Nova's own import."""
    try:
        importlib.import_module(OURS)
    except Exception as exc:
        LOG.warning('nova-xen-stubdom: %s could not be imported (%s: %s); '
                    'its live-migration data cannot be deserialised by '
                    'this process', OURS, type(exc).__name__, exc)
        return False
    return True


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        # The trigger is complete (it is in sys.modules): register ours.
        register()


def _shim_spec(fullname: str):
    """The shim from any ``sys.path`` entry's ``nova/virt/xen_stubdom``."""
    rel = os.path.join(*fullname.split('.'))
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        pkg = os.path.join(entry or os.getcwd(), rel)
        init = os.path.join(pkg, '__init__.py')
        if os.path.isfile(init):
            return importlib.util.spec_from_file_location(
                fullname, init, submodule_search_locations=[pkg])
    return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in (TRIGGER, SHIM):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                if fullname == TRIGGER:
                    spec.loader = _Loader(spec.loader)
                return spec
        if fullname == SHIM:
            return _shim_spec(fullname)
        return None


def install() -> None:
    """Idempotent; registers at once when Nova's objects are already in."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    if TRIGGER in sys.modules:
        register()
