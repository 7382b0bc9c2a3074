"""The dom0 payload's shape: small modules, no import cycles, no simulator.

Read from the source (ast), so it runs the same on dom0's Python 3.6.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
DOM0 = os.path.join(ROOT, 'nova_xen_stubdom', 'dom0')
PKG = 'nova_xen_stubdom.dom0'
MAX_LINES = 600


def _modules():
    return sorted(f[:-3] for f in os.listdir(DOM0) if f.endswith('.py'))


def _imports(name):
    """Modules *name* imports, with the line of each import."""
    with open(os.path.join(DOM0, name + '.py')) as f:
        tree = ast.parse(f.read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, node))
            out += [(node.module + '.' + a.name, node) for a in node.names]
    return out


def _module_level(name):
    """dom0 modules imported at module level (what can form a cycle)."""
    with open(os.path.join(DOM0, name + '.py')) as f:
        tree = ast.parse(f.read())
    deps = set()
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [node.module + '.' + a.name
                                     for a in node.names]
        for n in names:
            if n.startswith(PKG + '.'):
                deps.add(n[len(PKG) + 1:].split('.')[0])
    deps.discard(name)
    return deps


@pytest.mark.parametrize('name', _modules())
def test_module_is_small(name):
    with open(os.path.join(DOM0, name + '.py')) as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, '%s.py has %d lines' % (name, lines)


@pytest.mark.parametrize('name', _modules())
def test_no_simulator_nova_or_oslo(name):
    for mod, node in _imports(name):
        top = mod.split('.')[0]
        assert top not in ('nova', 'oslo_config', 'oslo_log',
                           'oslo_utils'), '%s imports %s' % (name, mod)
        assert not mod.startswith(('nova_xen_stubdom.sim',
                                   'nova_xen_stubdom.driver',
                                   'nova_xen_stubdom.conf')), \
            '%s imports %s (line %d)' % (name, mod, node.lineno)


def test_no_import_cycles():
    graph = {m: _module_level(m) for m in _modules()}
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 'open':
                cycle = path[path.index(dep):] + [dep]
                pytest.fail('import cycle: %s' % ' -> '.join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 'done'
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
