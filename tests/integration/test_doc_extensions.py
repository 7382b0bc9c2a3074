"""The docs' own Sphinx extensions: support matrix and XAPI subset."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'doc', 'ext'))

support_matrix = pytest.importorskip('support_matrix')
xapi_subset = pytest.importorskip('xapi_subset')

MATRIX = '''
[driver.xen_stubdom]
title=Xen stub domains

[operation.spawn]
title=Boot
status=mandatory
api=ComputeDriver.spawn
driver.xen_stubdom=complete

[operation.rescue]
title=Rescue
status=optional
driver.xen_stubdom=missing
driver-notes.xen_stubdom=not yet
'''


def test_matrix_parses():
    m = support_matrix.parse(MATRIX)
    assert [d['key'] for d in m['drivers']] == ['xen_stubdom']
    ops = {o['key']: o for o in m['operations']}
    assert ops['spawn']['impl'] == {'xen_stubdom': 'complete'}
    assert ops['spawn']['api'] == 'ComputeDriver.spawn'
    assert ops['rescue']['impl_notes'] == {'xen_stubdom': 'not yet'}
    assert len(support_matrix.render(m)) == 2


@pytest.mark.parametrize('bad, message', [
    (MATRIX.replace('status=optional', 'status=nice'), 'status'),
    (MATRIX.replace('driver.xen_stubdom=missing', 'driver.xen_stubdom=meh'),
     'missing'),
    (MATRIX.replace('driver.xen_stubdom=missing\n', ''), 'has no'),
    ('[operation.x]\ntitle=X\nstatus=optional\n', 'no \\[driver'),
])
def test_matrix_errors_fail_the_build(bad, message):
    with pytest.raises(support_matrix.MatrixError, match=message):
        support_matrix.parse(bad)


def test_the_project_matrix_is_valid_when_present():
    path = os.path.join(REPO, 'doc', 'source', 'support-matrix.ini')
    if not os.path.exists(path):
        pytest.skip('support-matrix.ini not written yet')
    with open(path) as f:
        m = support_matrix.parse(f.read())
    assert m['operations']


def test_every_xapi_message_the_code_calls_is_in_the_datamodel():
    classes = xapi_subset.load_schema()
    found = xapi_subset.collect(classes=classes)
    # the lifecycle the driver cannot do without
    for name in ('VM.create', 'VM.destroy', 'host.call_plugin',
                 'session.login_with_password', 'event.from'):
        assert name in found, name
    assert xapi_subset.check(found, classes) == []


def test_an_unknown_message_is_reported(tmp_path):
    pkg = tmp_path / 'pkg'
    pkg.mkdir()
    (pkg / 'm.py').write_text(
        "client.call('VM.start_on', vm)\n"
        "client.call('VM.teleport', vm)\n"
        "host.call_plugin(h, 'VM.not_a_message', 'fn', {})\n"
        "label = 'VM.not_called'\n")
    classes = xapi_subset.load_schema()
    found = xapi_subset.collect(str(tmp_path), ['pkg'], classes)
    assert sorted(found) == ['VM.start_on', 'VM.teleport']
    assert [k for k, _ in xapi_subset.check(found, classes)] == \
        ['VM.teleport']
