"""What the stub domain image promises its users: file names and command line.

Kept apart from the builder so the driver can import it without the
builder's dependencies (pyelftools, dpkg tooling).
"""

KERNEL_NAME = "nova-xen-stubdom-kernel"
ROOTFS_NAME = "nova-xen-stubdom-rootfs.cpio.gz"
MANIFEST_NAME = "manifest.json"

#: Kernel command line the stub domain needs (PV_args of its XAPI VM).
#: rootfstype=ramfs: without a root= the kernel unpacks the initramfs into a
#: tmpfs capped at half of the memory seen at boot, which a 128 MiB stub
#: domain cannot fit QEMU's 38 MiB closure into (files end up truncated:
#: SIGBUS / ETXTBSY); ramfs has no cap.  console=hvc0 is Xen's PV console.
KERNEL_CMDLINE = "console=hvc0 rootfstype=ramfs"
#: The same for the self-test boot under qemu-system-x86_64 (serial port).
SELFTEST_CMDLINE = "console=ttyS0 rootfstype=ramfs stubdom.selftest=1 panic=-1"
