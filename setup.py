"""Build entry: pbr reads setup.cfg; the native data plane is added here.

pbr has no declarative syntax for C extensions, so the one extension the
package ships (``nova_xen_stubdom._emucore``) is declared in this file.
"""
import glob
import os
import shutil

import setuptools
import setuptools.dist
from setuptools.command import build_py

# Nova imports only ``nova.virt.<compute_driver>``: the loader shim must sit
# inside Nova's package.  pbr's [files] packages only accepts top-level
# directories, so the one shim package is added after pbr has filled in the
# package list -- only that directory is shipped, never nova/__init__.py.
_NOVA_SHIM_PACKAGE = 'nova.virt.xen_stubdom'
# The stream format's header and the C sources ship with the package (pbr
# adds every tracked file as package data); setuptools wants such data-only
# directories declared as packages.
_EXTRA_PACKAGES = (_NOVA_SHIM_PACKAGE, 'nova_xen_stubdom.emucore.include',
                   'nova_xen_stubdom.emucore.src')


# Nova's conductor, API and scheduler never load the compute driver, yet they
# deserialise its live-migration data: a .pth file at the root of
# site-packages registers the project's versioned objects in every Nova
# service (nova_xen_stubdom/objects/hook.py).  Editable installs get it from
# tools/setup.sh.
_OBJECTS_PTH = 'nova_xen_stubdom/objects/nova_xen_stubdom-objects.pth'


class _BuildPy(build_py.build_py):
    def run(self):
        super().run()
        self.mkpath(self.build_lib)
        shutil.copy(_OBJECTS_PTH, os.path.join(
            self.build_lib, os.path.basename(_OBJECTS_PTH)))


class _Distribution(setuptools.dist.Distribution):
    def finalize_options(self):
        super().finalize_options()
        if self.packages is not None:
            self.packages = list(self.packages) + [
                p for p in _EXTRA_PACKAGES if p not in self.packages]
        # after pbr has filled cmdclass from setup.cfg
        self.cmdclass['build_py'] = _BuildPy


_EMUCORE_SOURCES = sorted(glob.glob('nova_xen_stubdom/emucore/src/*.c'))

setuptools.setup(
    setup_requires=['pbr>=6.0.0'],
    pbr=True,
    distclass=_Distribution,
    ext_modules=[
        setuptools.Extension(
            'nova_xen_stubdom._emucore',
            sources=_EMUCORE_SOURCES,
            include_dirs=['nova_xen_stubdom/emucore/include'],
            extra_compile_args=['-O2', '-std=gnu11', '-Wall', '-Wextra',
                                '-fno-strict-aliasing'],
        )
    ] if _EMUCORE_SOURCES else [],
)
