"""Build entry: pbr reads setup.cfg; the native data plane is added here.

pbr has no declarative syntax for C extensions, so the one extension the
package ships (``nova_xen_stubdom._emucore``) is declared in this file.
"""
import glob

import setuptools
import setuptools.dist

# Nova imports only ``nova.virt.<compute_driver>``: the loader shim must sit
# inside Nova's package.  pbr's [files] packages only accepts top-level
# directories, so the one shim package is added after pbr has filled in the
# package list -- only that directory is shipped, never nova/__init__.py.
_NOVA_SHIM_PACKAGE = 'nova.virt.xen_stubdom'


class _Distribution(setuptools.dist.Distribution):
    def finalize_options(self):
        super().finalize_options()
        if self.packages is not None and \
                _NOVA_SHIM_PACKAGE not in self.packages:
            self.packages = list(self.packages) + [_NOVA_SHIM_PACKAGE]


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
