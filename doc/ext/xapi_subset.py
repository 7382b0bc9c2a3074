"""List the XAPI messages the project's code calls, from the code itself.

``.. xapi-subset::`` walks the Python sources of the packages that talk to
XAPI (driver, agent, xapi client) and collects every string literal passed to a
call (``client.call('VM.start', ...)``, ``call_async``, helpers taking the
message name) of the form ``Class.message`` whose class is in the XAPI
datamodel
(``nova_xen_stubdom/datamodel/schema.json``, the simulator's copy of it).  Each
message is shown with its parameters and the roles allowed to call it, so
the page states exactly what an operator's XAPI account must be granted.
A literal naming a datamodel class but an unknown message is a build error:
the code would call something XAPI does not have.
"""
import ast
import json
import os
import re
from typing import Dict, List, Set, Tuple

from docutils import nodes
from docutils.parsers.rst import Directive

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..'))
PACKAGES = ('nova_xen_stubdom/driver', 'nova_xen_stubdom/dom0',
            'nova_xen_stubdom/xapi')
SCHEMA = 'nova_xen_stubdom/datamodel/schema.json'
_NAME = re.compile(r'^(?:Async\.)?([A-Za-z_]+)\.([a-z_]+)$')


def load_schema(repo: str = REPO) -> Dict[str, dict]:
    with open(os.path.join(repo, SCHEMA)) as f:
        return json.load(f)['classes']


def _called_messages(node: ast.AST) -> List[str]:
    """String literals passed positionally to a call (``client.call('X.y')``,
    ``do('label', self._call, 'X.y', ...)``); never to ``call_plugin``,
    whose arguments are plugin function names."""
    if not isinstance(node, ast.Call):
        return []
    func = node.func
    fname = func.attr if isinstance(func, ast.Attribute) else (
        func.id if isinstance(func, ast.Name) else '')
    if fname == 'call_plugin':
        return []
    return [a.value for a in node.args
            if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def collect(repo: str = REPO, packages=PACKAGES,
            classes=None) -> Dict[str, Set[str]]:
    """``'Class.message'`` -> the source files (repo-relative) using it."""
    classes = classes if classes is not None else load_schema(repo)
    lower = {c.lower(): c for c in classes}
    found: Dict[str, Set[str]] = {}
    for pkg in packages:
        for dirpath, _dirs, files in os.walk(os.path.join(repo, pkg)):
            for name in sorted(files):
                if not name.endswith('.py'):
                    continue
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    for name in _called_messages(node):
                        m = _NAME.match(name)
                        if not m or m.group(1).lower() not in lower:
                            continue
                        key = '%s.%s' % (lower[m.group(1).lower()],
                                         m.group(2))
                        found.setdefault(key, set()).add(
                            os.path.relpath(path, repo))
    return found


def check(found: Dict[str, Set[str]], classes: Dict[str, dict]
          ) -> List[Tuple[str, Set[str]]]:
    """The collected names that the datamodel does not have."""
    bad = []
    for key, files in sorted(found.items()):
        cls, msg = key.split('.', 1)
        if msg not in classes[cls].get('messages', {}):
            bad.append((key, files))
    return bad


class XAPISubsetDirective(Directive):
    has_content = False

    def run(self):
        env = self.state.document.settings.env
        classes = load_schema()
        found = collect(classes=classes)
        for files in found.values():
            for f in files:
                env.note_dependency(os.path.join(REPO, f))
        bad = check(found, classes)
        if bad:
            raise self.error('not in the XAPI datamodel: %s' % ', '.join(
                '%s (%s)' % (k, ', '.join(sorted(v))) for k, v in bad))
        table = nodes.table()
        group = nodes.tgroup(cols=4)
        table += group
        for w in (26, 40, 18, 30):
            group += nodes.colspec(colwidth=w)
        head = nodes.thead()
        group += head
        body = nodes.tbody()
        group += body

        def row(cells, parent):
            r = nodes.row()
            for c in cells:
                e = nodes.entry()
                e += nodes.paragraph(text=c)
                r += e
            parent += r

        row(['Message', 'Parameters', 'Least role', 'Used in'], head)
        for key in sorted(found, key=str.lower):
            cls, msg = key.split('.', 1)
            spec = classes[cls]['messages'][msg]
            params = ', '.join('%s %s' % (t, n) for t, n in spec.get('p', [])
                               if n != 'session_id')
            # roles run from most to least privileged; 'client-cert' is
            # XAPI's certificate login, not an account role
            roles = [r for r in spec.get('roles', []) if r != 'client-cert']
            roles = roles[-1] if roles else '-'
            files = ', '.join(sorted(os.path.basename(f)
                                     for f in found[key]))
            row([key, params or '-', roles, files], body)
        summary = nodes.paragraph(text='%d XAPI messages in %d classes.' % (
            len(found), len({k.split('.')[0] for k in found})))
        return [summary, table]


def setup(app):
    app.add_directive('xapi-subset', XAPISubsetDirective)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
