"""Offline inputs of ``build-stubdom``: the Xen testbed and a given kernel.

When the Debian archive does not answer, the image is built from files that
are already on the machine:

- the device model from the testbed's ``bin/qemu-xen-8.0.3-dm.tar.xz``
  (QEMU 8.0.3 built with Xen support, ``/usr/libexec/xen-qemu-system-i386``)
  with the option ROMs it carries under ``/usr/share/qemu``;
- ``xenstore`` (and its ``xenstore-*`` links) and ``vchan-socket-proxy``
  from the testbed's ``bin/xen-tools-4.17.7-dom0.tar.xz``;
- busybox from ``busybox-static_*.deb`` in apt's cache or the testbed's
  ``debs/``;
- the shared libraries those programs load from the build host's own
  Debian packages (recorded by package and installed version);
- optionally a kernel file whose Xen drivers are built in
  (:func:`kernel_file`), e.g. the testbed's ``vmlinuz-6.1.20-xenprobe-dom0``:
  Debian's 6.1.187 cloud kernel carries XSA-482, whose privcmd refuses
  libxendevicemodel 4.17's probe in a domU (doc/source/realxen.rst).

Each tarball is recorded in the manifest by name and sha256.
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess

from nova_xen_stubdom.stubdom.packages import BuildError

DM_TARBALL = "bin/qemu-xen-8.0.3-dm.tar.xz"
TOOLS_TARBALL = "bin/xen-tools-4.17.7-dom0.tar.xz"
BUSYBOX_DEB_GLOB = "busybox-static_*_amd64.deb"
#: ROMs of the testbed's QEMU (built with --prefix=/usr: its firmware path
#: is /usr/share/qemu).  It has no rtl8139 ROM: libxl's default NIC cannot
#: boot from the network with it (e1000 can).
TESTBED_FIRMWARE = {
    "/usr/share/qemu/vgabios-cirrus.bin": "Cirrus VGA (libxl default)",
    "/usr/share/qemu/vgabios-stdvga.bin": "standard VGA (vga=stdvga)",
    "/usr/share/qemu/efi-e1000.rom": "e1000 NIC (model=e1000)",
}
#: -device models of builder.DEVICE_MODELS the testbed's QEMU lacks: it was
#: configured --without-default-features --enable-xen (xen-testbed
#: README.md, "Device model"), which leaves Xen PCI pass-through out, so an
#: image built on it cannot give a guest a PCI device.
TESTBED_LACKS = ("xen-pci-passthrough",)
#: Kernel options the stub domain needs when nothing is loaded as a module
#: (the list kernel.MODULES loads from Debian's kernel otherwise).
BUILTIN_OPTIONS = ("CONFIG_XEN_DEV_EVTCHN", "CONFIG_XEN_GNTDEV",
                   "CONFIG_XEN_GRANT_DEV_ALLOC", "CONFIG_XEN_PRIVCMD",
                   "CONFIG_XENFS", "CONFIG_XEN_BLKDEV_FRONTEND",
                   "CONFIG_XEN_NETDEV_FRONTEND", "CONFIG_DEVTMPFS",
                   "CONFIG_BLK_DEV_INITRD")
#: Where the build host's libraries are taken from (its Debian packages).
HOST_LIB_DIRS = ("/lib/x86_64-linux-gnu/", "/usr/lib/x86_64-linux-gnu/",
                 "/lib64/", "/usr/lib64/")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _need(testbed: str, rel: str) -> str:
    path = os.path.join(testbed, rel)
    if not os.path.isfile(path):
        raise BuildError("the Xen testbed %s has no %s (is it the xen-testbed"
                         " package? see its README)" % (testbed, rel))
    return path


def unpack_tarball(path: str, cache_dir: str) -> str:
    """Unpack a testbed tarball once under cache_dir/testbed/<sha256>."""
    digest = sha256_file(path)
    dest = os.path.join(cache_dir, "testbed", digest[:16])
    if not os.path.isdir(dest):
        tmp = dest + ".tmp"
        subprocess.run(["rm", "-rf", tmp], check=True)
        os.makedirs(tmp)
        res = subprocess.run(["tar", "-xJf", path, "-C", tmp],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError("cannot unpack %s: %s" % (path,
                                                       res.stderr.strip()))
        os.rename(tmp, dest)
    return dest


def busybox_deb(testbed: str, archives: str) -> str:
    """busybox-static's .deb: apt's cache first, then the testbed's debs/."""
    for d in (archives, os.path.join(testbed, "debs")):
        found = sorted(glob.glob(os.path.join(d, BUSYBOX_DEB_GLOB)))
        if found:
            return found[-1]
    raise BuildError("no %s in %s nor %s/debs" % (BUSYBOX_DEB_GLOB, archives,
                                                  testbed))


def tarballs(testbed: str) -> dict[str, str]:
    """Name -> path of the testbed tarballs the image takes files from."""
    return {"device_model": _need(testbed, DM_TARBALL),
            "tools": _need(testbed, TOOLS_TARBALL)}


def host_package(path: str) -> tuple[str, str]:
    """(package, installed version) owning a host file, by dpkg."""
    for p in (path, os.path.realpath(path)):
        res = subprocess.run(["dpkg-query", "-S", p], capture_output=True,
                             text=True, env=dict(os.environ, LC_ALL="C"))
        if res.returncode == 0 and ":" in res.stdout:
            name = res.stdout.split(": ", 1)[0].split(",")[0].strip()
            name = name.split(":")[0]
            ver = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", name],
                capture_output=True, text=True).stdout.strip()
            return name, ver
    raise BuildError("%s belongs to no installed Debian package (the"
                     " offline build takes libraries only from dpkg)" % path)


def kernel_release(path: str) -> str:
    """The release string of a bzImage (boot protocol kernel_version)."""
    with open(path, "rb") as f:
        head = f.read(0x4000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise BuildError("%s is not a bzImage (no HdrS boot header)" % path)
    ptr = int.from_bytes(head[0x20e:0x210], "little")
    if not ptr:
        raise BuildError("%s carries no kernel_version string" % path)
    with open(path, "rb") as f:
        f.seek(ptr + 0x200)
        raw = f.read(256)
    return raw.split(b" ", 1)[0].split(b"\0", 1)[0].decode("ascii",
                                                           "replace")


def builtin_config(config_path: str) -> dict[str, str]:
    """The BUILTIN_OPTIONS of a kernel .config; each must be ``y``."""
    values: dict[str, str] = {}
    try:
        with open(config_path) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key in BUILTIN_OPTIONS:
                    values[key] = value
    except OSError as exc:
        raise BuildError("cannot read the kernel config %s: %s"
                         % (config_path, exc))
    bad = [o for o in BUILTIN_OPTIONS if values.get(o) != "y"]
    if bad:
        raise BuildError(
            "kernel config %s: %s not built in (=y); the image loads no"
            " modules with a given kernel" % (config_path, ", ".join(
                "%s=%s" % (o, values.get(o, "unset")) for o in bad)))
    return values


def testbed_kernel(testbed: str) -> tuple[str, str]:
    """The testbed's 6.1.20 kernel (drivers built in) and its .config."""
    return (_need(testbed, "bin/vmlinuz-6.1.20-xenprobe-dom0"),
            _need(testbed, "configs/linux-6.1.20-xenprobe-dom0.config"))
