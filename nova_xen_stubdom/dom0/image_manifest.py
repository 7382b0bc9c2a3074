"""What the host's stub-domain image can do, from its build manifest.

``build-stubdom`` writes ``manifest.json`` beside the kernel and rootfs;
``build-dom0 --stubdom-dir`` installs it as :data:`constants.STUBDOM_MANIFEST`
next to them.  An image built on the testbed's QEMU records
``"device_model": {"source": "testbed", "lacks": ["xen-pci-passthrough"],
...}`` (``stubdom/builder.py``, ``stubdom/offline.py`` ``TESTBED_LACKS``): the
driver reads that through ``stubdom_image`` so that it neither offers the
host's PCI devices nor starts a guest with one on an image that cannot
pass them through (doc/source/pci.rst).

Runs on dom0's Python 3.6 (stdlib only).
"""
import json
from typing import Dict

from nova_xen_stubdom.dom0 import registry as plugin


def read_manifest(path: str) -> Dict[str, object]:
    """``{'manifest': path, 'present': bool, 'lacks': [...],
    'device_model': str, 'error': str}`` of the manifest at *path*.

    An absent manifest is not an error (images installed by hand, or
    before the manifest was shipped): ``present`` is False and nothing is
    known to be lacking.  An unreadable or malformed one is reported in
    ``error`` so that the driver can name it."""
    out = {'manifest': path, 'present': False, 'lacks': [],
           'device_model': '', 'error': ''}   # type: Dict[str, object]
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return out
    except (OSError, ValueError) as exc:
        out['error'] = 'cannot read %s: %s' % (path, exc)
        return out
    out['present'] = True
    if not isinstance(data, dict):
        out['error'] = '%s is not a JSON object' % path
        return out
    dm = data.get('device_model') or {}
    if not isinstance(dm, dict):
        out['error'] = '%s: "device_model" is not an object' % path
        return out
    lacks = dm.get('lacks') or []
    if not isinstance(lacks, list):
        out['error'] = '%s: "device_model.lacks" is not a list' % path
        return out
    out['lacks'] = sorted(str(x) for x in lacks)
    out['device_model'] = str(dm.get('source', ''))
    return out


@plugin.register('stubdom_image')
def plugin_stubdom_image(agent, args: Dict[str, str]) -> str:
    """JSON of :func:`read_manifest` for agent.conf's ``stubdom_manifest``."""
    return json.dumps(read_manifest(agent.config.stubdom_manifest))
