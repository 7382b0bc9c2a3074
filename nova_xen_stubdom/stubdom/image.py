"""What the stub domain image promises its users: file names and command line.

Kept apart from the builder so the driver can import it without the
builder's dependencies (pyelftools, dpkg tooling).
"""
import posixpath
from typing import Optional

KERNEL_NAME = "nova-xen-stubdom-kernel"
ROOTFS_NAME = "nova-xen-stubdom-rootfs.cpio.gz"
MANIFEST_NAME = "manifest.json"

#: Where the image goes on every XAPI host.  XAPI direct-boots a PV kernel
#: or ramdisk only from a path that resolves under this directory
#: (xapi-project/xen-api ocaml/xapi/xapi_xenops.ml, kernel_path, since
#: v24.20; v24.19 and earlier, i.e. XCP-ng 8.3 at release, also accepted
#: /boot/guest/ in is_boot_file_whitelisted).  It is the one directory both
#: accept; see doc/source/xapi-behaviour.rst.
GUEST_BOOT_DIR = "/var/lib/xcp/guest/"


def boot_path_problem(path: str) -> Optional[str]:
    """Why XAPI would refuse *path* as a direct-boot file, or None."""
    if not path.startswith("/"):
        return "%r is not an absolute path" % path
    if not posixpath.normpath(path).startswith(GUEST_BOOT_DIR):
        return ("%r is outside %s, the only directory XAPI direct-boots "
                "PV kernels and ramdisks from" % (path, GUEST_BOOT_DIR))
    return None


#: Kernel command line the stub domain needs (PV_args of its XAPI VM).
#: rootfstype=ramfs: without a root= the kernel unpacks the initramfs into a
#: tmpfs capped at half of the memory seen at boot, which a 128 MiB stub
#: domain cannot fit QEMU's 38 MiB closure into (files end up truncated:
#: SIGBUS / ETXTBSY); ramfs has no cap.  console=hvc0 is Xen's PV console.
KERNEL_CMDLINE = "console=hvc0 rootfstype=ramfs"
#: The same for the self-test boot under qemu-system-x86_64 (serial port).
SELFTEST_CMDLINE = "console=ttyS0 rootfstype=ramfs stubdom.selftest=1 panic=-1"
