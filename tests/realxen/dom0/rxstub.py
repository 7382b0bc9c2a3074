"""dom0 side of the stub-image scenarios (s1-ourstub.sh, s6-pcigrants.sh).

Each subcommand is one fresh process on our ``XenBackend`` (libxenctrl,
libxenstore over ctypes); it prints ``key=value`` words for the scenario's
markers.

``attach-disk DOMID PATH DEVID`` / ``detach-disk DOMID DEVID``
    A disk onto the stub domain through blkback, as XAPI's ``VBD.plug`` of
    the guest's disk onto the stub VM does on a host (here our
    ``XenDisks``: a loop device and the backend/frontend xenstore nodes).
``pci-grants GUEST STUB``
    Scenario 6 before the teardown: our ``pci_grants.attach_devices`` for
    an emulated PCI function of the outer QEMU (its VGA: memory BARs, no
    device of ours), as the daemon's dm_launch hook runs it; then the same
    with ``assign_device`` recorded instead of made (this Xen has no
    IOMMU: the first attempt shows the hypervisor's answer); the stub's
    rangesets as Xen reports them (debug key ``q``) after the grant and
    after ``detach_devices``; then a second grant left in place for the
    destroy.
``pci-release GUEST``
    ``detach_devices`` once both domains are gone (the wrapper's dm_stop
    hook): nothing left to revoke in Xen, the grant record removed.
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, '/opt/realxen/pkg')

from nova_xen_stubdom.dom0 import pci_grants  # noqa: E402
from nova_xen_stubdom.dom0 import xen_backend  # noqa: E402

VGA_CLASS = '0x030000'


def _words(**kw):
    print(' '.join('%s=%s' % (k, str(v).replace(' ', '_'))
                   for k, v in sorted(kw.items())))


def attach_disk(domid, path, devid):
    be = xen_backend.XenBackend()
    be.attach_disk(int(domid), path, devid)
    _words(ok=1, domid=domid, devid=devid)


def detach_disk(domid, devid):
    be = xen_backend.XenBackend()
    be.detach_disk(int(domid), devid)
    _words(ok=1, domid=domid, devid=devid)


def _vga():
    root = '/sys/bus/pci/devices'
    for name in sorted(os.listdir(root)):
        with open(os.path.join(root, name, 'class')) as f:
            if f.read().strip() == VGA_CLASS:
                return name
    return None


def rangesets(domid):
    """The domain's rangesets as Xen prints them for debug key 'q'
    (xen/common/keyhandler.c dump_domains -> rangeset_domain_printk):
    {'I/O Memory': '...', 'I/O Ports': '...', 'Interrupts': '...'}."""
    subprocess.run(['xl', 'debug-keys', 'q'], check=True)
    log = subprocess.run(['xl', 'dmesg'], stdout=subprocess.PIPE,
                         check=True).stdout.decode('utf-8', 'replace')
    head = 'Rangesets belonging to domain %d:' % domid
    at = log.rfind(head)
    if at < 0:
        return None
    out = {}
    for line in log[at + len(head):].splitlines()[1:6]:
        line = re.sub(r'^\([A-Z]+\) (\[[^]]*\] )?', '', line).strip()
        m = re.match(r'([A-Za-z/ -]+?)\s*\{(.*)\}', line)
        if m:
            out[m.group(1).strip()] = m.group(2).strip()
    return out


def _records(backend):
    """How many grant records dom0's xenstore holds (keyed by the guest's
    VM uuid, which xl made up here)."""
    try:
        return len(backend.xs_list(pci_grants.GRANT_RECORD_ROOT))
    except Exception:
        return 0


class _NoIommu:
    """XenBackend with assign_device/deassign_device recorded, not made:
    without an IOMMU Xen refuses them (shown first), and only those."""

    def __init__(self, backend):
        self._be = backend
        self.assigned = []

    def __getattr__(self, name):
        return getattr(self._be, name)

    def assign_device(self, domid, sbdf):
        self.assigned.append(('assign', domid, sbdf))

    def deassign_device(self, domid, sbdf):
        self.assigned.append(('deassign', domid, sbdf))


def pci_grants_run(guest, stub):
    guest, stub = int(guest), int(stub)
    be = xen_backend.XenBackend()
    sbdf = _vga()
    res = pci_grants.read_resources(sbdf)
    words = {'sbdf': sbdf, 'iomem': ','.join(
        '%x+%d' % (a, n) for a, n in res.iomem), 'irq': res.irq}
    before = rangesets(stub)
    # 1. as on a host: assign_device first, which needs an IOMMU
    try:
        pci_grants.attach_devices(be, guest, stub, [sbdf])
        words['assign'] = 'ok'
    except pci_grants.AttachFailed as exc:
        words['assign'] = 'refused'
        words['assign_step'] = exc.kwargs['step'].split('(')[0]
        cause = exc.__cause__
        words['assign_call'] = getattr(cause, 'kwargs', {}).get('call')
        words['assign_errno'] = getattr(cause, 'kwargs', {}).get('errno')
    after_refusal = rangesets(stub)
    words['rollback_clean'] = int(after_refusal == before)
    # 2. the grants themselves, assign_device recorded
    nb = _NoIommu(be)
    out = pci_grants.attach_devices(nb, guest, stub, [sbdf])
    granted = rangesets(stub)
    record = _records(be)
    words.update(calls=out['calls'], granted_iomem=granted.get(
        'I/O Memory', '?'), record=record,
        pciback=int(bool(be.xs_read(
            '/local/domain/0/backend/pci/%d/0/num_devs' % stub))))
    # 3. revoked by detach_devices (the daemon's dm_stop hook)
    rel = pci_grants.detach_devices(nb, guest_domid=guest)
    revoked = rangesets(stub)
    words.update(released=len(rel['released']), errors=len(rel['errors']),
                 revoked_iomem=revoked.get('I/O Memory', '?'),
                 revoked_clean=int(revoked == before),
                 record_after=_records(be))
    # 4. granted again, left for the destroy (pci-release after it)
    pci_grants.attach_devices(nb, guest, stub, [sbdf])
    words['regranted_iomem'] = rangesets(stub).get('I/O Memory', '?')
    words['before_iomem'] = (before or {}).get('I/O Memory', '?')
    with open('/out/s6-rangesets.json', 'w') as f:
        json.dump({'before': before, 'after_refusal': after_refusal,
                   'granted': granted, 'revoked': revoked}, f, indent=1)
    _words(**words)


def pci_release(guest):
    guest = int(guest)
    be = xen_backend.XenBackend()
    rel = pci_grants.detach_devices(_NoIommu(be), guest_domid=guest)
    _words(released=len(rel['released']), errors=len(rel['errors']),
           record_left=_records(be))


def main(argv):
    cmds = {'attach-disk': attach_disk, 'detach-disk': detach_disk,
            'pci-grants': pci_grants_run, 'pci-release': pci_release}
    return cmds[argv[0]](*argv[1:])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
