"""Loads the C extension, or says how to build it.

There is deliberately no silent pure-Python fallback in production: the
reference implementation in ``emucore.reference`` is for tests only.
"""

import importlib
from types import ModuleType

BUILD_HINT = (
    'the native module nova_xen_stubdom._emucore is not built: run '
    '"python setup.py build_ext --inplace" in the source tree, or '
    'install the package with "pip install ." (needs a C compiler and '
    'the Python headers, Debian: build-essential python3-dev)'
)


def load() -> ModuleType:
    """The _emucore extension; ImportError with BUILD_HINT if missing."""
    try:
        return importlib.import_module('nova_xen_stubdom._emucore')
    except ImportError as exc:
        raise ImportError('%s (%s)' % (BUILD_HINT, exc)) from exc
