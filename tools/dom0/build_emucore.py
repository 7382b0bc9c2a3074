"""Build the _emucore extension in place for the running interpreter.

The package's setup.py goes through pbr (a Nova-side build dependency);
dom0's Python 3.6 has only the standard library and setuptools, so this
script builds the one C extension directly with the same sources and
flags.  Usage (from the source root)::

    python3.6 tools/dom0/build_emucore.py              # in place
    python3.X tools/dom0/build_emucore.py --check DIR  # build into DIR,
                                                       # load it, no trace
"""
import glob
import os
import sys

from setuptools import Extension
from setuptools import setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _load(path: str) -> None:
    """Import the built module from *path* and run one kernel."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'nova_xen_stubdom._emucore', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.is_zero(bytes(4096)) and not mod.is_zero(b'\1' * 4096)
    print('_emucore for %s: %s, accelerators %s' % (
        sys.version.split()[0], os.path.basename(path), mod.accels()))


def main() -> int:
    os.chdir(ROOT)
    sources = sorted(glob.glob('nova_xen_stubdom/emucore/src/*.c'))
    if not sources:
        sys.stderr.write('no emucore sources under %s\n' % ROOT)
        return 1
    check = sys.argv[2] if sys.argv[1:2] == ['--check'] else None
    build_temp = os.path.join(check or 'build',
                              'emucore-py%d%d' % sys.version_info[:2])
    where = ['--build-lib', check] if check else ['--inplace']
    setup(name='nova_xen_stubdom_emucore', script_args=[
              'build_ext', '--build-temp', build_temp] + where,
          ext_modules=[Extension(
              'nova_xen_stubdom._emucore', sources=sources,
              include_dirs=['nova_xen_stubdom/emucore/include'],
              extra_compile_args=['-O2', '-std=gnu11', '-Wall', '-Wextra',
                                  '-fno-strict-aliasing'])])
    if check:
        built = glob.glob(os.path.join(check, 'nova_xen_stubdom',
                                       '_emucore*.so'))
        if len(built) != 1:
            sys.stderr.write('expected one built module, got %s\n' % built)
            return 1
        _load(built[0])
    return 0


if __name__ == '__main__':
    sys.exit(main())
