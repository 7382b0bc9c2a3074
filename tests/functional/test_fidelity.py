"""Fidelity of the XAPI calls this project makes, against XAPI's datamodel.

Three views, all checked with :mod:`nova_xen_stubdom.xapi.fidelity` (the
simulator's schema, derived from XAPI's datamodel):

1. Statically: every literal XAPI message name in the package (``'VM.start'``
   passed to any call wrapper) exists, and calls through the known wrappers
   pass the datamodel's number of parameters, with literal arguments of the
   right types.
2. Dynamically, here: the client layer's own calls (login, logout, the
   event cache for the driver's classes, tasks, HTTP handlers) against the
   simulator over HTTP.
3. Dynamically, for the whole test run: every call any client made in this
   pytest process (``recorder.GLOBAL``) is checked when the session ends
   (a session fixture's teardown, so the functional tier's driver tests are
   included when they run in the same process).
"""
import ast
import io
import os
import re

import pytest

import nova_xen_stubdom
from nova_xen_stubdom.datamodel import fidelity as dm_fidelity
from nova_xen_stubdom.datamodel import schema as sim_schema
from nova_xen_stubdom.sim import testing
from nova_xen_stubdom.xapi import client as xapi_client
from nova_xen_stubdom.xapi import fidelity
from nova_xen_stubdom.xapi import recorder

PACKAGE = os.path.dirname(nova_xen_stubdom.__file__)
#: the simulator is the server side: its literals are handler names
EXCLUDED = ('sim',)
#: wrappers whose first argument is the message and the rest its params
WRAPPERS = {'call': 0, '_call': 0, 'call_async': 0, 'start_async': 0,
            'call_with_timeout': 1, '_xapi': 0}
NAME_RE = re.compile(r'^(Async\.)?([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z0-9_]+)$')


def _sources():
    for root, dirs, files in os.walk(PACKAGE):
        rel = os.path.relpath(root, PACKAGE)
        if rel.split(os.sep)[0] in EXCLUDED:
            continue
        for f in files:
            if f.endswith('.py'):
                yield os.path.join(root, f)


def _literal_shape(node):
    """Shape of a literal argument, or None when not fully literal."""
    if isinstance(node, ast.Constant):
        return recorder.xapi_type(node.value)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        elems = [_literal_shape(e) for e in node.elts]
        if any(e is None for e in elems):
            return None
        return [e for i, e in enumerate(elems) if e not in elems[:i]]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if not isinstance(k, ast.Constant):
                return None
            s = _literal_shape(v)
            if s is None:
                return None
            out[str(k.value)] = s
        return out
    return None


def _func_name(call):
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return None


def scan_call_sites():
    """[(where, name, n_params or None, [shape or None])] of every literal
    XAPI message name passed to a call in the package."""
    schema = sim_schema.load()
    classes = set(schema.classes)
    lower = {c.lower(): c for c in classes}
    sites = []
    for path in _sources():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fname = _func_name(node)
            pos = WRAPPERS.get(fname, 0)
            if len(node.args) <= pos:
                continue
            arg = node.args[pos]
            if not (isinstance(arg, ast.Constant) and
                    isinstance(arg.value, str)):
                continue
            m = NAME_RE.match(arg.value)
            if not m:
                continue
            cls = m.group(2)
            if cls not in classes and cls.lower() not in lower:
                continue          # not XAPI (e.g. 'os.path')
            where = '%s:%d' % (os.path.relpath(path, PACKAGE), node.lineno)
            rest = node.args[pos + 1:]
            n_params = None
            shapes = []
            if fname in WRAPPERS and not any(
                    isinstance(a, ast.Starred) for a in rest):
                n_params = len(rest)
                shapes = [_literal_shape(a) for a in rest]
            sites.append((where, arg.value, n_params, shapes))
    return sites


def test_static_call_sites_exist_in_datamodel():
    schema = sim_schema.load()
    sites = scan_call_sites()
    # the driver, the agent and this layer all call XAPI by literal names
    assert len({s[1] for s in sites}) >= 10, sites
    problems = []
    for where, name, n_params, shapes in sites:
        p = fidelity.message_exists(name, schema)
        if p:
            problems.append('%s: %s' % (where, p))
            continue
        if n_params is None:
            continue
        base = name[len('Async.'):] if name.startswith('Async.') else name
        msg = schema.message(base)
        params = [(t, n) for t, n in msg.params
                  if not (t.kind == 'ref' and t.name == 'session')]
        if n_params != len(params):
            problems.append('%s: %s called with %d parameters, the '
                            'datamodel has %d' % (where, name, n_params,
                                                  len(params)))
            continue
        for (t, pname), shape in zip(params, shapes):
            if shape is None:
                continue
            out = []
            fidelity._check_value(t, shape, '%s(%s)' % (name, pname), out,
                                  schema)
            problems.extend('%s: %s' % (where, p) for p in out)
    assert problems == []


def test_static_scanner_catches_mistakes(tmp_path, monkeypatch):
    bad = tmp_path / 'bad.py'
    bad.write_text("c.call('VM.strat', ref)\n"
                   "c.call('VM.start', ref, 'no')\n"
                   "c.call('VM.set_name_label', ref, 1)\n")
    monkeypatch.setattr(
        __import__(__name__, fromlist=['_sources']), '_sources',
        lambda: [str(bad)])
    sites = scan_call_sites()
    assert [s[1] for s in sites] == ['VM.strat', 'VM.start',
                                     'VM.set_name_label']
    with pytest.raises(AssertionError):
        test_static_call_sites_exist_in_datamodel()


def _driver_cached_classes():
    try:
        from nova_xen_stubdom.driver import constants
        return tuple(constants.CACHED_CLASSES)
    except ImportError:         # Nova missing: the layer's own defaults
        from nova_xen_stubdom.xapi import cache
        return cache.DEFAULT_CLASSES


@pytest.fixture(scope='session')
def whole_run_calls():
    """At the end of the pytest session, check every recorded call."""
    yield recorder.GLOBAL
    problems = fidelity.check_calls(recorder.GLOBAL.records)
    n = len({r.name for r in recorder.GLOBAL.records})
    report = os.environ.get('NOVA_XEN_STUBDOM_FIDELITY_REPORT')
    if report:
        with open(report, 'w') as f:
            f.write('distinct XAPI calls validated: %d\n' % n)
            f.write('distinct (call, parameter types): %d\n'
                    % len(recorder.GLOBAL.signatures()))
            f.writelines('PROBLEM ' + p + '\n' for p in problems)
            f.writelines('%s(%s)\n' % (name, ', '.join(types)) for name, types
                         in sorted(recorder.GLOBAL.signatures()))
    assert problems == [], 'unfaithful XAPI calls:\n' + '\n'.join(problems)


def test_client_layer_calls_are_faithful(whole_run_calls):
    with testing.running_sim(hosts=2) as sim:
        member = sim.host(1).url
        c = xapi_client.XAPIClient(member, testing.USERNAME,
                                   testing.PASSWORD, retry_interval=0.01)
        try:
            cache = c.start_cache(classes=_driver_cached_classes(),
                                  poll_timeout=1)
            assert cache.wait_ready(20)
            # the records the driver reads from the cache are XAPI's
            record_problems = []
            for cls in cache.classes:
                for ref, rec in cache.get_all(cls).items():
                    record_problems += dm_fidelity.check_record(
                        cls, rec, '%s %s' % (cls, ref))
            assert record_problems == []
            assert cache.get_all('host') and cache.get_all('VM')
            sr = next(r for r, rec in c.call('SR.get_all_records').items()
                      if rec['type'] != 'iso')
            vdi = c.call('VDI.create', {
                'name_label': 'fidelity', 'name_description': '', 'SR': sr,
                'virtual_size': 1 << 20, 'type': 'user', 'sharable': False,
                'read_only': False, 'other_config': {}, 'xenstore_data': {},
                'sm_config': {}, 'tags': []})
            data = b'\x5a' * (1 << 20)
            c.http_put('/import_raw_vdi', io.BytesIO(data), len(data),
                       vdi=vdi, format='raw')
            out = io.BytesIO()
            c.http_get('/export_raw_vdi', out, vdi=vdi, format='raw')
            assert out.getvalue() == data
            c.call_async('VDI.destroy', vdi)
            task = c.call('task.create', 'fidelity', '')
            c.call('task.cancel', task)
            c.call('task.destroy', task)
        finally:
            c.close()
        assert sim.leaks()['pool0']['sessions'] == 0
    problems = fidelity.check_calls(c.call_log.records)
    assert problems == []
    names = c.call_log.names()
    for expected in ('session.login_with_password', 'session.logout',
                     'event.from', 'VM.get_all_records', 'Async.VDI.destroy',
                     'task.get_status', 'task.destroy'):
        assert expected in names
