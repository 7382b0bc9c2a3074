"""doc/source/xapi-behaviour.rst: every entry cites its source and names
tests that exist."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DOC = os.path.join(ROOT, 'doc', 'source', 'xapi-behaviour.rst')
FIELDS = (':XAPI:', ':Source:', ':Simulator:', ':Test:', ':Driver:')
TEST_REF = re.compile(r'``(tests/[\w/]+\.py)::([\w:]+)``')


def entries():
    """(title, body) of each entry: a title underlined with '-'."""
    with open(DOC) as f:
        lines = f.read().split('\n')
    found, title, body = [], None, []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ''
        if nxt and set(nxt) == {'-'} and line:
            if title:
                found.append((title, '\n'.join(body)))
            title, body = line, []
        elif title and line and set(line) <= {'=', '-'}:
            continue
        elif title:
            body.append(line)
    if title:
        found.append((title, '\n'.join(body)))
    return found


def _test_exists(path, name):
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    parts = name.split('::')
    return all(re.search(r'^\s*(def|class) %s\b' % re.escape(p), text,
                         re.M) for p in parts)


def test_every_entry_is_complete():
    es = entries()
    assert es, 'no entries'
    for title, body in es:
        for field in FIELDS:
            assert field in body, '%s: no %s' % (title, field)
        src = body.split(':Source:')[1].split(':Simulator:')[0]
        assert '.ml' in src or 'xen-project/xen' in src, \
            '%s: Source names no file' % title
        tests = TEST_REF.findall(body.split(':Test:')[1])
        assert tests, '%s: Test names no test' % title
        for path, name in tests:
            assert _test_exists(path, name), '%s: %s::%s not found' % (
                title, path, name)


def test_titles_are_unique():
    titles = [t for t, _ in entries()]
    assert len(titles) == len(set(titles))
