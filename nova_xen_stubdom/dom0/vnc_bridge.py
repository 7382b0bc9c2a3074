"""dom0's end of a stub domain's VNC: ``/var/run/xen/vnc-<guest domid>``.

QEMU in the stub domain serves VNC on a unix socket only
(:data:`stubdom_link.VNC_SOCKET`); the stub init offers it as a vchan
server at ``/local/domain/<stub>/device-model/<guest>/vnc-vchan``
(``stubdom/init.sh`` ``start_vnc_bridge``).  Here the device-model wrapper
runs the vchan's client end, listening where xenopsd tells XAPI an HVM
guest's VNC is (xen-api ``ocaml/xenopsd/xc/device.ml``
``Dm_Common.vnc_socket_path``, reported by the ``qemu-upstream-compat``
``Dm.get_vnc_port`` while the device model -- the wrapper -- runs), so
XAPI's console proxy (``ocaml/xapi/console.ml`` ``real_proxy``) reaches it
and nothing else does: the socket is root's, mode 0600, in dom0.

Xen ships the tool for both ends (``tools/vchan/vchan-socket-proxy.c``;
libxl uses it the same way for a Linux stub domain's QMP).  Without it
the guest has no VNC console and the wrapper says so once.
"""
import logging
import os
import shutil
import subprocess
from typing import Callable, List, Optional

LOG = logging.getLogger(__name__)

PROXY = 'vchan-socket-proxy'
#: where Xen packages install it when it is not on PATH
PROXY_DIRS = ('/usr/lib64/xen/bin', '/usr/lib/xen/bin', '/usr/libexec/xen/bin')
DOM0_SOCKET = '/var/run/xen/vnc-%d'


def vchan_path(stub_domid: int, guest_domid: int) -> str:
    return '/local/domain/%d/device-model/%d/vnc-vchan' % (stub_domid,
                                                           guest_domid)


def find_proxy(which: Callable[[str], Optional[str]] = shutil.which
               ) -> Optional[str]:
    found = which(PROXY)
    if found:
        return found
    for d in PROXY_DIRS:
        path = os.path.join(d, PROXY)
        if os.access(path, os.X_OK):
            return path
    return None


def command(proxy: str, stub_domid: int, guest_domid: int) -> List[str]:
    return [proxy, '--mode=client', str(stub_domid),
            vchan_path(stub_domid, guest_domid), DOM0_SOCKET % guest_domid]


def _private_umask() -> None:
    os.umask(0o077)         # the listening socket: root only


def start(stub_domid: int, guest_domid: int,
          which: Callable[[str], Optional[str]] = shutil.which,
          popen: Callable = subprocess.Popen):
    """Start the bridge; the process, or None when the host lacks the
    tool (logged: the guest then has no VNC console)."""
    proxy = find_proxy(which)
    if proxy is None:
        LOG.warning('no %s on this host: domain %d has no VNC console',
                    PROXY, guest_domid)
        return None
    argv = command(proxy, stub_domid, guest_domid)
    return popen(argv, stdin=subprocess.DEVNULL, close_fds=True,
                 preexec_fn=_private_umask)


def stop(proc, guest_domid: Optional[int] = None) -> None:
    """End the bridge and remove its listening socket: the proxy leaves
    the file behind when it is terminated (seen on real Xen: the realxen
    tier's leak check found /var/run/xen/vnc-<domid>)."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if guest_domid is not None:
        try:
            os.unlink(DOM0_SOCKET % guest_domid)
        except FileNotFoundError:
            pass
