"""Register this project's versioned objects in every Nova service.

Nova's conductor (and API, scheduler) never load a compute driver, yet they
deserialise the driver's ``migrate_data``.  A ``.pth`` file installed with
the package (``nova_xen_stubdom-objects.pth``) runs :func:`install` at
interpreter start-up; it adds a meta-path finder that waits for
``nova.objects.migrate_data`` to be imported -- which every Nova service
does through ``nova.objects.register_all()`` -- and then imports
:mod:`nova_xen_stubdom.objects.migrate_data`, registering its classes.
Processes that never import Nova pay for two tiny imports and nothing else.
"""
import importlib
import importlib.abc
import sys

TRIGGER = 'nova.objects.migrate_data'
OURS = 'nova_xen_stubdom.objects.migrate_data'


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        # The trigger is complete (it is in sys.modules): register ours.
        importlib.import_module(OURS)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TRIGGER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Idempotent; registers at once when Nova's objects are already in."""
    if TRIGGER in sys.modules:
        importlib.import_module(OURS)
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
