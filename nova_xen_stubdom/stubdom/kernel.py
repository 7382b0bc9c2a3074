"""The stub domain kernel: pick the Debian image, its modules, its sizes."""

from __future__ import annotations

import os
import struct

from elftools.elf.elffile import ELFFile

from nova_xen_stubdom.stubdom.packages import BuildError

#: Kernel modules the stub domain loads when it runs on Xen: the device
#: nodes QEMU's Xen support opens (/dev/xen/{evtchn,gntdev,gntalloc,privcmd},
#: xenfs for /proc/xen), the PV frontends the guest's disks, NICs and
#: pass-through PCI devices reach the stub domain through, and tun + bridge
#: to join QEMU's emulated NICs to the netfront devices.
MODULES = ("xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-privcmd", "xenfs",
           "xen-blkfront", "xen-netfront", "xen-pcifront", "tun", "bridge")


def modinfo(path: str) -> dict[str, str]:
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".modinfo")
        if sec is None:
            raise BuildError("%s has no .modinfo section" % path)
        data = sec.data()
    info = {}
    for item in data.split(b"\0"):
        key, sep, val = item.decode("utf-8", "replace").partition("=")
        if sep and key not in info:
            info[key] = val
    return info


def _norm(name: str) -> str:
    return name.replace("-", "_")


def find_release(root: str) -> str:
    boot = os.path.join(root, "boot")
    names = sorted(n for n in os.listdir(boot) if n.startswith("vmlinuz-"))
    if len(names) != 1:
        raise BuildError("expected one vmlinuz in %s, found %s"
                         % (boot, names))
    return names[0][len("vmlinuz-"):]


def module_closure(root: str, release: str,
                   wanted=MODULES) -> list[str]:
    """Image paths of ``wanted`` modules and their dependencies, ordered so
    that each module comes after the ones it depends on."""
    moddir = "/lib/modules/%s/kernel" % release
    index: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(os.path.join(root, moddir[1:])):
        for f in files:
            if f.endswith(".ko"):
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                index[_norm(f[:-3])] = "/" + rel
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        key = _norm(name)
        if key not in index:
            raise BuildError("kernel module %s not found under %s"
                             % (name, moddir))
        path = index[key]
        if path in order:
            return
        if key in visiting:
            raise BuildError("module dependency cycle at %s" % name)
        visiting.add(key)
        deps = modinfo(os.path.join(root, path[1:])).get("depends", "")
        for dep in sorted(d for d in deps.split(",") if d):
            visit(dep)
        visiting.discard(key)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def bzimage_init_size(path: str) -> int | None:
    """Memory the kernel needs once decompressed (boot protocol init_size),
    or None when the file is not a bzImage with boot protocol >= 2.10."""
    with open(path, "rb") as f:
        head = f.read(0x270)
    if len(head) < 0x264 or head[0x202:0x206] != b"HdrS":
        return None
    version, = struct.unpack_from("<H", head, 0x206)
    if version < 0x20a:
        return None
    return struct.unpack_from("<I", head, 0x260)[0]
