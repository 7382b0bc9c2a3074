"""Without the built extension the API refuses to import, saying how to
build it (no silent pure-Python fallback)."""
import subprocess
import sys

BLOCK = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'nova_xen_stubdom._emucore':
            raise ImportError('No module named %r' % name)
sys.meta_path.insert(0, Block())
try:
    import nova_xen_stubdom.emucore
except ImportError as exc:
    print('IMPORTERROR', exc)
else:
    print('IMPORTED')
'''


def test_missing_extension_says_how_to_build():
    out = subprocess.run([sys.executable, '-c', BLOCK], capture_output=True,
                         text=True, timeout=120).stdout
    assert out.startswith('IMPORTERROR'), out
    assert 'python setup.py build_ext --inplace' in out
    assert 'pip install .' in out


def test_extension_is_the_c_module():
    from nova_xen_stubdom import _emucore
    assert _emucore.__file__.endswith('.so')
