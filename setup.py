"""Build entry: pbr reads setup.cfg; the native data plane is added here.

pbr has no declarative syntax for C extensions, so the one extension the
package ships (``nova_xen_stubdom._emucore``) is declared in this file.
"""
import glob

import setuptools

_EMUCORE_SOURCES = sorted(glob.glob('nova_xen_stubdom/emucore/src/*.c'))

setuptools.setup(
    setup_requires=['pbr>=6.0.0'],
    pbr=True,
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
