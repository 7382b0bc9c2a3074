"""Reachability is what apt-get and pip say, never a probe of ours: no
package-registry host is named anywhere in the code or the tools (a proxy,
a local mirror or pip/apt configuration may route around it)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCANNED = ('nova_xen_stubdom', 'nova_xen_stubdom_tempest_plugin', 'tools',
           'devstack', '.ci', 'nova')
HOSTS = re.compile(r'pypi\.org|pythonhosted\.org|(deb|security|ftp)\.'
                   r'debian\.org|archive\.ubuntu\.com')


def test_no_registry_host_in_code():
    found = []
    for top in SCANNED:
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != '__pycache__']
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding='utf-8') as f:
                        text = f.read()
                except (UnicodeDecodeError, OSError):
                    continue          # binaries (the built extension)
                for n, line in enumerate(text.splitlines(), 1):
                    if HOSTS.search(line):
                        found.append('%s:%d: %s' % (
                            os.path.relpath(path, ROOT), n, line.strip()))
    assert found == []
