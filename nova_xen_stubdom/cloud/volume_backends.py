"""Whether this machine's kernel can carry a one-machine Cinder backend.

The test cloud has no Cinder yet.  Each backend that runs on one machine
needs kernel features that a container or micro-VM kernel often lacks, and
which cannot be loaded when the kernel has no module support.  This reads
what the kernel offers (``/proc`` and ``/sys``, nothing is changed) and
names, per backend, exactly what is missing, so that the integration tier
reports Cinder NOT RUN with the reason rather than silently leaving it out.

* ``lvm-iscsi``: Cinder's LVM driver on a loop device, exported over iSCSI
  on loopback.  lvcreate needs device-mapper; the LIO target (targetcli)
  needs configfs; tgt's target is userspace, but attaching the export (Nova,
  or Cinder's own image-to-volume copy through os-brick) needs the kernel's
  iSCSI initiator transport.
* ``nfs``: Cinder's NFS driver against a local knfsd: the server needs the
  ``nfsd`` filesystem, the volume host mounts the share with the ``nfs``
  client.
"""
import os
from typing import Dict, List


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ''


def _filesystems(proc: str) -> List[str]:
    return [line.split()[-1] for line in
            _read(os.path.join(proc, 'filesystems')).splitlines()
            if line.strip()]


def blockers(proc: str = '/proc', sys: str = '/sys',
             dev: str = '/dev') -> Dict[str, List[str]]:
    """Backend name -> what this kernel lacks for it (empty: usable)."""
    fs = _filesystems(proc)
    misc = _read(os.path.join(proc, 'misc')).split()
    lvm_iscsi = []
    if not os.path.exists(os.path.join(dev, 'loop-control')):
        lvm_iscsi.append('no loop devices (%s/loop-control)' % dev)
    if 'device-mapper' not in misc:
        lvm_iscsi.append('no device-mapper for LVM (%s/misc)' % proc)
    if 'configfs' not in fs:
        lvm_iscsi.append('no configfs for the LIO iSCSI target '
                         '(%s/filesystems)' % proc)
    if not os.path.isdir(os.path.join(sys, 'class', 'iscsi_transport')):
        lvm_iscsi.append('no iSCSI initiator transport to attach an export '
                         '(%s/class/iscsi_transport)' % sys)
    nfs = []
    if 'nfsd' not in fs:
        nfs.append('no NFS server (nfsd in %s/filesystems)' % proc)
    if 'nfs' not in fs and 'nfs4' not in fs:
        nfs.append('no NFS client to mount the share (nfs in '
                   '%s/filesystems)' % proc)
    found = {'lvm-iscsi': lvm_iscsi, 'nfs': nfs}
    # without module support nothing missing can be loaded (modprobe)
    if not os.path.exists(os.path.join(proc, 'modules')):
        for why in found.values():
            if why:
                why.append('a kernel without loadable modules')
    return found


def summary(found: Dict[str, List[str]]) -> str:
    """One line: each backend and why it is blocked, or that it is not."""
    return '; '.join('%s: %s' % (name, ', '.join(why) if why else
                                 'the kernel has what it needs')
                     for name, why in sorted(found.items()))
