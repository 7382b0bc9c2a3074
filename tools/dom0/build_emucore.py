"""Build the _emucore extension in place for the running interpreter.

The package's setup.py goes through pbr (a Nova-side build dependency);
dom0's Python 3.6 has only the standard library and setuptools, so this
script builds the one C extension directly with the same sources and
flags.  Usage (from the source root)::

    python3.6 tools/dom0/build_emucore.py
"""
import glob
import os
import sys

from setuptools import Extension
from setuptools import setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def main() -> int:
    os.chdir(ROOT)
    sources = sorted(glob.glob('nova_xen_stubdom/emucore/src/*.c'))
    if not sources:
        sys.stderr.write('no emucore sources under %s\n' % ROOT)
        return 1
    build_temp = os.path.join('build', 'emucore-py%d%d' % sys.version_info[:2])
    setup(name='nova_xen_stubdom_emucore', script_args=[
              'build_ext', '--inplace', '--build-temp', build_temp],
          ext_modules=[Extension(
              'nova_xen_stubdom._emucore', sources=sources,
              include_dirs=['nova_xen_stubdom/emucore/include'],
              extra_compile_args=['-O2', '-std=gnu11', '-Wall', '-Wextra',
                                  '-fno-strict-aliasing'])])
    return 0


if __name__ == '__main__':
    sys.exit(main())
