"""Render a support matrix in Nova's ``support-matrix.ini`` format.

Usage in a page::

    .. support_matrix:: support-matrix.ini

(``:optional:`` renders a one-line note instead of failing while the file
does not exist yet.)
The file has ``[driver.NAME]`` sections (``title``, optional ``link``) and
``[operation.NAME]`` sections with ``title``, ``status`` (mandatory |
choice | optional | condition), optional ``notes``, ``cli`` and, here, an
optional ``api`` (the ``ComputeDriver`` method the operation rests on), then
``driver.NAME = complete | partial | missing | unknown`` and optional
``driver-notes.NAME``.  Unknown statuses or operations that leave a driver
out are build errors, so the page cannot silently rot.
"""
import configparser
import os
from typing import Dict, List

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.parsers.rst import directives

STATUSES = ('mandatory', 'choice', 'optional', 'condition')
IMPLEMENTATIONS = ('complete', 'partial', 'missing', 'unknown')


class MatrixError(Exception):
    pass


def parse(text: str) -> Dict[str, object]:
    """Parse the ini text; returns {'drivers': [...], 'operations': [...]}."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.optionxform = str
    cfg.read_string(text)
    drivers = []
    for section in cfg.sections():
        if section.startswith('driver.'):
            drivers.append({'key': section[len('driver.'):],
                            'title': cfg.get(section, 'title'),
                            'link': cfg.get(section, 'link', fallback='')})
    if not drivers:
        raise MatrixError('no [driver.*] section')
    operations = []
    for section in cfg.sections():
        if not section.startswith('operation.'):
            continue
        status = cfg.get(section, 'status')
        if status not in STATUSES:
            raise MatrixError('[%s] status %r is not one of %s'
                              % (section, status, ', '.join(STATUSES)))
        op = {'key': section[len('operation.'):],
              'title': cfg.get(section, 'title'), 'status': status,
              'notes': cfg.get(section, 'notes', fallback=''),
              'cli': cfg.get(section, 'cli', fallback=''),
              'api': cfg.get(section, 'api', fallback=''),
              'impl': {}, 'impl_notes': {}}
        for d in drivers:
            key = 'driver.%s' % d['key']
            if not cfg.has_option(section, key):
                raise MatrixError('[%s] has no %s' % (section, key))
            impl = cfg.get(section, key)
            if impl not in IMPLEMENTATIONS:
                raise MatrixError('[%s] %s = %r is not one of %s' % (
                    section, key, impl, ', '.join(IMPLEMENTATIONS)))
            op['impl'][d['key']] = impl
            op['impl_notes'][d['key']] = cfg.get(
                section, 'driver-notes.%s' % d['key'], fallback='')
        operations.append(op)
    if not operations:
        raise MatrixError('no [operation.*] section')
    return {'drivers': drivers, 'operations': operations}


def _para(text: str) -> nodes.paragraph:
    return nodes.paragraph(text=text)


def _table(header: List[str], rows: List[List[nodes.Node]],
           widths: List[int]) -> nodes.table:
    table = nodes.table(classes=['support-matrix'])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths:
        group += nodes.colspec(colwidth=w)
    head = nodes.thead()
    row = nodes.row()
    for h in header:
        entry = nodes.entry()
        entry += _para(h)
        row += entry
    head += row
    group += head
    body = nodes.tbody()
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += cell
            row += entry
        body += row
    group += body
    return table


def render(matrix: Dict[str, object]) -> List[nodes.Node]:
    drivers = matrix['drivers']
    header = ['Operation', 'Status'] + [d['title'] for d in drivers]
    rows = []
    details = []
    for op in matrix['operations']:
        title = op['title'] + (' (%s)' % op['api'] if op['api'] else '')
        rows.append([_para(title), _para(op['status'])] +
                    [_para(op['impl'][d['key']]) for d in drivers])
        sec = nodes.section(ids=['operation-%s' % op['key']])
        sec += nodes.title(text=op['title'])
        facts = nodes.bullet_list()
        for label, value in (('Status', op['status']),
                             ('ComputeDriver API', op['api']),
                             ('CLI', op['cli']), ('Notes', op['notes'])):
            if value:
                item = nodes.list_item()
                item += _para('%s: %s' % (label, value))
                facts += item
        for d in drivers:
            item = nodes.list_item()
            text = '%s: %s' % (d['title'], op['impl'][d['key']])
            if op['impl_notes'][d['key']]:
                text += ' -- %s' % op['impl_notes'][d['key']]
            item += _para(text)
            facts += item
        sec += facts
        details.append(sec)
    summary = nodes.section(ids=['support-matrix-summary'])
    summary += nodes.title(text='Summary')
    summary += _table(header, rows, [40, 12] + [14] * len(drivers))
    detail = nodes.section(ids=['support-matrix-details'])
    detail += nodes.title(text='Details')
    detail.extend(details)
    return [summary, detail]


class SupportMatrixDirective(Directive):
    required_arguments = 1
    option_spec = {'title': directives.unchanged,
                   'optional': directives.flag}

    def run(self):
        env = self.state.document.settings.env
        rel, path = env.relfn2path(self.arguments[0])
        env.note_dependency(rel)
        if 'optional' in self.options and not os.path.exists(path):
            return [_para('%s is not written yet.' % self.arguments[0])]
        with open(path) as f:
            text = f.read()
        try:
            return render(parse(text))
        except (MatrixError, configparser.Error) as e:
            raise self.error('%s: %s' % (os.path.basename(path), e))


def setup(app):
    app.add_directive('support_matrix', SupportMatrixDirective)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
