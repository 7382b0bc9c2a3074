"""Build the _emucore extension in place for the running interpreter.

The package's setup.py goes through pbr (a Nova-side build dependency);
dom0's Python 3.6 has only the standard library and setuptools, so this
script builds the one C extension directly with the same sources and
flags.  Usage (from the source root)::

    python3.6 tools/dom0/build_emucore.py              # in place
    python3.X tools/dom0/build_emucore.py --check DIR  # build into DIR,
                                                       # load it, no trace
    python3.6 tools/dom0/build_emucore.py --wheel DIR  # + a cp36 wheel

The module is linked as manylinux asks (PEP 513/599): not against
libpython (a ``--enable-shared`` interpreter such as pyenv's would add
``-lpython3.Xm`` and an rpath to its own prefix; the symbols come from
the interpreter that loads the module) and with no rpath, so that the
same file loads under dom0's ``/usr/bin/python3``.  It uses no glibc
symbol newer than 2.14 (``memcpy``), which ``auditwheel show`` reports
as ``manylinux_2_17_x86_64`` (``manylinux2014``): XCP-ng 8.3's dom0 has
glibc 2.17 (tests/unit/test_dom0_wheel.py).
"""
import base64
import glob
import hashlib
import os
import sys
import sysconfig
import zipfile

from setuptools import Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

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


class _BuildExt(build_ext):
    def get_libraries(self, ext):  # type: ignore[no-untyped-def]
        # distutils adds -lpythonX.Ym for a shared-libpython interpreter
        return list(ext.libraries)


def _wheel(so_path: str, dest: str) -> str:
    """A cp3X wheel of *so_path*, written by hand (dom0's 3.6 has no
    ``wheel`` package): the module, METADATA, WHEEL, RECORD."""
    tag = 'cp%d%d' % sys.version_info[:2]
    abi = tag + ('m' if sys.version_info < (3, 8) else '')
    plat = sysconfig.get_platform().replace('-', '_').replace('.', '_')
    name, version = 'nova_xen_stubdom_emucore', '0.0.1'
    info = '%s-%s.dist-info' % (name, version)
    entries = []
    with open(so_path, 'rb') as f:
        entries.append(('nova_xen_stubdom/' + os.path.basename(so_path),
                        f.read()))
    entries.append((info + '/METADATA', (
        'Metadata-Version: 2.1\nName: %s\nVersion: %s\n'
        'Summary: the native data plane of nova-xen-stubdom (dom0)\n'
        % (name, version)).encode()))
    entries.append((info + '/WHEEL', (
        'Wheel-Version: 1.0\nGenerator: tools/dom0/build_emucore.py\n'
        'Root-Is-Purelib: false\nTag: %s-%s-%s\n' % (tag, abi, plat)
    ).encode()))
    record = []
    for arc, data in entries:
        digest = base64.urlsafe_b64encode(
            hashlib.sha256(data).digest()).rstrip(b'=').decode()
        record.append('%s,sha256=%s,%d' % (arc, digest, len(data)))
    record.append(info + '/RECORD,,')
    entries.append((info + '/RECORD', ('\n'.join(record) + '\n').encode()))
    os.makedirs(dest, exist_ok=True)
    path = os.path.join(dest, '%s-%s-%s-%s-%s.whl' % (
        name, version, tag, abi, plat))
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for arc, data in entries:
            z.writestr(arc, data)
    return path


def main() -> int:
    os.chdir(ROOT)
    sources = sorted(glob.glob('nova_xen_stubdom/emucore/src/*.c'))
    if not sources:
        sys.stderr.write('no emucore sources under %s\n' % ROOT)
        return 1
    check = sys.argv[2] if sys.argv[1:2] in (['--check'], ['--wheel']) \
        else None
    wheel = sys.argv[1:2] == ['--wheel']
    # the compiler without the interpreter's LDFLAGS (its rpath)
    os.environ.setdefault('LDSHARED', '%s -shared' % (
        sysconfig.get_config_var('CC') or 'cc').split()[0])
    build_temp = os.path.join(check or 'build',
                              'emucore-py%d%d' % sys.version_info[:2])
    where = ['--build-lib', check] if check else ['--inplace']
    setup(name='nova_xen_stubdom_emucore', cmdclass={'build_ext': _BuildExt},
          script_args=[
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
        if wheel:
            print(_wheel(built[0], check))
    return 0


if __name__ == '__main__':
    sys.exit(main())
