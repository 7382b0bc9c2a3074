#!/usr/bin/env python3
"""Regenerate the compact XAPI schema the package ships (``datamodel/``).

Reads XAPI's datamodel export (``xenapi-datamodel.json``) and error table
(``xapi-errors.json``) and writes ``nova_xen_stubdom/datamodel/schema.json``
with names and types only -- classes, fields (type, qualifier, default,
lifecycle state), messages (parameters, result type, errors, roles,
implicit flag, lifecycle state), enums and error parameter names.  No prose
is kept.

    python tools/gen_datamodel_schema.py [--data DIR] [--out FILE]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = '/work/shared/data'
DEFAULT_OUT = os.path.join(HERE, '..', 'nova_xen_stubdom', 'datamodel',
                           'schema.json')

# lifecycle states shortened: Published_s -> published, ...
_STATE = {'Published_s': 'published', 'Deprecated_s': 'deprecated',
          'Removed_s': 'removed', 'Prototyped_s': 'prototyped'}


def build(datamodel: list, errors: dict) -> dict:
    enums = {}
    classes = {}
    for cls in datamodel:
        for enum in cls.get('enums', []):
            enums[enum['name']] = [v['name'] for v in enum['values']]
        fields = {}
        for f in cls['fields']:
            entry = [f['type'], f['qualifier'],
                     _STATE[f['lifecycle']['state']]]
            if 'default' in f:
                entry.append(f['default'])
            fields[f['name']] = entry
        messages = {}
        for m in cls['messages']:
            messages[m['name']] = {
                'p': [[p['type'], p['name']] for p in m['params']],
                'r': m['result'][0] if m['result'] else 'void',
                'e': [e['name'] for e in m['errors']],
                'roles': m['roles'],
                'i': bool(m['implicit']),
                's': _STATE[m['lifecycle']['state']],
            }
        classes[cls['name']] = {
            's': _STATE[cls['lifecycle']['state']],
            'fields': fields,
            'messages': messages,
        }
    return {'classes': classes, 'enums': enums, 'errors': errors}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', default=DEFAULT_DATA,
                        help='folder with xenapi-datamodel.json and '
                             'xapi-errors.json (default %(default)s)')
    parser.add_argument('--out', default=DEFAULT_OUT,
                        help='schema file to write (default: the package)')
    args = parser.parse_args(argv)
    with open(os.path.join(args.data, 'xenapi-datamodel.json')) as f:
        datamodel = json.load(f)
    with open(os.path.join(args.data, 'xapi-errors.json')) as f:
        errors = json.load(f)['errors']
    schema = build(datamodel, errors)
    with open(args.out, 'w') as f:
        json.dump(schema, f, separators=(',', ':'), sort_keys=True)
        f.write('\n')
    print('wrote %s: %d classes, %d messages, %d errors'
          % (os.path.normpath(args.out), len(schema['classes']),
             sum(len(c['messages']) for c in schema['classes'].values()),
             len(errors)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
