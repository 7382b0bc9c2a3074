import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), '..', '..', '..')
DATA = '/work/shared/data'


@pytest.mark.skipif(not os.path.exists(os.path.join(
    DATA, 'xenapi-datamodel.json')), reason='XAPI datamodel export absent')
def test_shipped_schema_is_what_the_generator_writes(tmp_path):
    out = tmp_path / 'schema.json'
    tool = os.path.join(ROOT, 'tools', 'gen_datamodel_schema.py')
    subprocess.run([sys.executable, tool, '--data', DATA, '--out', str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(ROOT, 'nova_xen_stubdom', 'datamodel',
                           'schema.json')) as f:
        shipped = json.load(f)
    assert json.loads(out.read_text()) == shipped


def test_schema_has_no_prose():
    with open(os.path.join(ROOT, 'nova_xen_stubdom', 'datamodel',
                           'schema.json')) as f:
        text = f.read()
    # names and types only: the datamodel's descriptions are left out
    for prose in ('Start the specified VM', 'A virtual machine',
                  'Reference to a valid session', 'Unique identifier'):
        assert prose not in text
