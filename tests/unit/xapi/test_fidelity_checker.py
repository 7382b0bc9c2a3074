"""The datamodel checker used by tests/functional/test_fidelity.py."""
import pytest

from nova_xen_stubdom.xapi import fidelity
from nova_xen_stubdom.xapi import recorder


def _problems(name, *args):
    return fidelity.check_call(recorder.make_record(name, args))


def test_faithful_calls_pass():
    assert _problems('VM.start', 'OpaqueRef:a', False, False) == []
    assert _problems('session.login_with_password', 'u', 'p', '2.0',
                     'n') == []
    assert _problems('event.from', ['VM'], '', 30.0) == []
    assert _problems('Async.VM.clean_shutdown', 'OpaqueRef:a') == []
    assert _problems('VM.set_memory_static_max', 'OpaqueRef:a', 1) == []
    assert _problems('VM.set_memory_static_max', 'OpaqueRef:a', '1') == []
    assert _problems('host.call_plugin', 'OpaqueRef:h', 'p', 'fn',
                     {'a': 'b'}) == []
    assert _problems('VM.get_all_records') == []


@pytest.mark.parametrize('name,args,needle', [
    ('VM.strat', ('OpaqueRef:a', False, False), 'no such message'),
    ('VM.start', ('OpaqueRef:a', False), '2 parameters given'),
    ('VM.start', ('some-uuid', False, False), 'wants VM ref, got string'),
    ('VM.start', ('OpaqueRef:a', 'false', False), 'wants bool'),
    ('event.from', (['VM'], '', 30), 'wants float, got int'),
    ('VM.set_memory_static_max', ('OpaqueRef:a', '1GiB'),
     'not a decimal integer'),
    ('VM.create', ({'name_label': 'x', 'VCPUs_max': '2.5'},),
     'VCPUs_max: wants int, got string'),
    ('host.call_plugin', ('OpaqueRef:h', 'p', 'fn', {'a': True}),
     "['a']: wants string, got bool"),
    ('VM.set_name_label', ('OpaqueRef:a', None), 'None is not'),
    ('Async.VM.get_record', ('OpaqueRef:a',), 'no Async variant'),
    ('Async.VM.add_tags', ('OpaqueRef:a', 't'), 'no Async variant'),
    ('VM.set_tags', ('OpaqueRef:a', 'x'), 'wants string set'),
    ('VM.create', ({'name_label': 'x', 'bogus': 'y'},), "no field 'bogus'"),
    ('VM.create', ({'name_label': 'x'},), 'lacks required fields'),
    ('HTTP PUT /import_raw_vdi', ({'vdi': 'uuid'},), 'must be a reference'),
    ('HTTP PUT /nowhere', ({'vdi': 'OpaqueRef:v'},), 'not an XAPI HTTP'),
])
def test_unfaithful_calls_are_caught(name, args, needle):
    problems = _problems(name, *args)
    assert any(needle in p for p in problems), problems


def test_full_vm_create_record_passes():
    from nova_xen_stubdom.datamodel import schema
    s = schema.load()
    record = {}
    samples = {'string': 'x', 'int': 1, 'float': 1.0, 'bool': False,
               'datetime': '19700101T00:00:00Z'}
    for name, field in s.live_fields('VM').items():
        if field.qualifier not in ('RW', 'RO/constructor'):
            continue
        t = field.type
        if t.kind == 'map':
            record[name] = {}
        elif t.kind == 'set':
            record[name] = []
        elif t.kind == 'ref':
            record[name] = 'OpaqueRef:NULL'
        elif t.kind == 'enum':
            record[name] = s.enums[t.name][0]
        elif t.kind in samples:
            record[name] = samples[t.kind]
    assert _problems('VM.create', record) == []
