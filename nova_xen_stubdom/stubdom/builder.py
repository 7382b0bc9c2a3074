"""Build the Linux stub domain image: kernel + minimal gzip cpio rootfs.

Inputs are Debian bookworm packages fetched with ``apt-get download``; the
rootfs holds only the programs the stub domain runs (QEMU with Xen support,
the xenstore client, busybox), the shared libraries they load (walked from
their ELF dependencies), the option ROMs of the devices QEMU emulates, the Xen
PV kernel modules and our init.  Everything ELF is stripped.  The output is
reproducible: the same package versions give the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable

from nova_xen_stubdom.stubdom import cpio
from nova_xen_stubdom.stubdom import elfdeps
from nova_xen_stubdom.stubdom import kernel as kernelmod
from nova_xen_stubdom.stubdom import packages as pkgmod
from nova_xen_stubdom.stubdom.packages import BuildError

from nova_xen_stubdom.stubdom.image import (  # noqa: F401 (re-exported)
    KERNEL_CMDLINE, KERNEL_NAME, MANIFEST_NAME, ROOTFS_NAME, SELFTEST_CMDLINE)

KERNEL_PACKAGE = "linux-image-cloud-amd64"
ROOT_PACKAGES = ("qemu-system-xen", "xenstore-utils", "busybox-static")
QEMU = "/usr/libexec/xen-qemu-system-i386"
XENSTORE = "/usr/bin/xenstore"
BUSYBOX = "/bin/busybox"
#: Programs the init runs; their library closure goes in too.
BINARIES = (QEMU, XENSTORE, BUSYBOX)
#: xenstore-utils' multi-call binary, dispatched on argv[0].
XENSTORE_TOOLS = ("xenstore-chmod", "xenstore-exists", "xenstore-list",
                  "xenstore-ls", "xenstore-read", "xenstore-rm",
                  "xenstore-watch", "xenstore-write")
#: ROMs QEMU loads for the devices we let it emulate.  The system BIOS is
#: not here: on Xen, hvmloader (Xen's own firmware) boots the guest and
#: QEMU's -bios is unused; QEMU only loads the option ROMs of the VGA card
#: and of the NICs, and fails to start a device whose ROM is missing.
FIRMWARE = {
    "/usr/share/seabios/vgabios-cirrus.bin": "Cirrus VGA (libxl default)",
    "/usr/share/seabios/vgabios-stdvga.bin": "standard VGA (vga=stdvga)",
    "/usr/lib/ipxe/qemu/efi-rtl8139.rom": "rtl8139 NIC (libxl default)",
    "/usr/lib/ipxe/qemu/efi-e1000.rom": "e1000 NIC (model=e1000)",
}
#: Device models the agent puts on QEMU's command line (agent/stubdom.py,
#: agent/pci.py); the self-test checks QEMU has each of them built in.
DEVICE_MODELS = ("VGA", "cirrus-vga", "e1000", "rtl8139", "ahci", "ide-hd",
                 "xen-pci-passthrough")
INIT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "init.sh")


def _default_progress(msg: str) -> None:
    print("[build-stubdom] %s" % msg, flush=True)


class PackageTree:
    """Unpacked packages seen as one filesystem (what dpkg would install)."""

    def __init__(self) -> None:
        self.index: dict[str, tuple[str, str]] = {}  # path -> (pkg, host)

    def add_package(self, name: str, root: str) -> None:
        for dirpath, dirs, files in os.walk(root):
            for f in files + [d for d in dirs
                              if os.path.islink(os.path.join(dirpath, d))]:
                host = os.path.join(dirpath, f)
                path = "/" + os.path.relpath(host, root)
                self.index.setdefault(path, (name, host))

    def host_path(self, path: str) -> str | None:
        hit = self.index.get(path)
        return hit[1] if hit else None

    def readlink(self, path: str) -> str | None:
        host = self.host_path(path)
        return os.readlink(host) if host and os.path.islink(host) else None

    def package_of(self, path: str) -> str:
        return self.index[path][0]


@dataclasses.dataclass
class Part:
    name: str
    files: int = 0
    size: int = 0         # bytes in the image (after stripping)
    size_before: int = 0  # bytes as packaged


@dataclasses.dataclass
class BuildResult:
    kernel: str
    rootfs: str
    manifest: str
    report: dict


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _strip(host: str, args: list[str], workdir: str) -> bytes:
    out = os.path.join(workdir, "stripped")
    res = subprocess.run(["strip", *args, "-o", out, host],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError("strip %s failed: %s" % (host, res.stderr.strip()))
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def _busybox_applets(host_busybox: str) -> list[str]:
    res = subprocess.run([host_busybox, "--list-full"], capture_output=True,
                         text=True)
    if res.returncode != 0 or not res.stdout.strip():
        raise BuildError("cannot list busybox applets (%s --list-full): %s"
                         % (host_busybox, res.stderr.strip()))
    return sorted("/" + line.strip() for line in res.stdout.splitlines()
                  if line.strip() and line.strip() != "bin/busybox")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "nova-xen-stubdom")


def pinned_packages(manifest_path: str):
    """Package set recorded in an earlier build's manifest (--pin): the
    rootfs candidates, the kernel package and the kernel meta-package."""
    try:
        with open(manifest_path) as f:
            m = json.load(f)
        closure = {n: pkgmod.Package(n, v["version"], v["arch"])
                   for n, v in m["candidate_packages"].items()}
        k = m["kernel"]
        kpkg = pkgmod.Package(k["package"], k["version"], k["arch"])
        meta = pkgmod.Package(k["meta_package"], k["meta_version"],
                              k["arch"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BuildError("cannot use %s as a pin: %s: %s"
                         % (manifest_path, type(exc).__name__, exc))
    return closure, kpkg, meta


def build(output: str, cache_dir: str | None = None,
          progress: Callable[[str], None] = _default_progress,
          pin: str | None = None) -> BuildResult:
    """Build the image into ``output``.

    :param output: directory for the kernel, rootfs and manifest.
    :param cache_dir: downloaded and unpacked packages (reused).
    :param progress: called with one line of progress text at a time.
    :param pin: an earlier manifest.json: use exactly its package versions
        (from the cache, or the mirror while it still carries them) instead
        of apt's current candidates, to rebuild that image bit for bit.
    """
    pkgmod.require_tools("apt-cache", "apt-get", "dpkg-deb", "strip")
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    os.makedirs(output, exist_ok=True)

    if pin:
        progress("using the package versions pinned by %s" % pin)
        closure, kpkg, meta = pinned_packages(pin)
    else:
        progress("resolving packages: %s + their Depends, and %s"
                 % (", ".join(ROOT_PACKAGES), KERNEL_PACKAGE))
        closure = pkgmod.depends_closure(ROOT_PACKAGES)
        meta = pkgmod.show([KERNEL_PACKAGE])[KERNEL_PACKAGE]
        image_names = [d for d in meta.depends
                       if d.startswith("linux-image-")]
        if not image_names:
            raise BuildError("%s %s depends on no linux-image-* package"
                             % (meta.name, meta.version))
        kpkg = pkgmod.show(image_names[:1])[image_names[0]]
    missing = [r for r in ROOT_PACKAGES if r not in closure]
    if missing:
        raise BuildError("package set lacks %s" % ", ".join(missing))
    progress("%d rootfs candidate packages; kernel %s %s"
             % (len(closure), kpkg.name, kpkg.version))

    debs = pkgmod.download(list(closure.values()) + [kpkg], cache_dir,
                           progress)
    progress("unpacking")
    tree = PackageTree()
    naive_size = naive_files = 0
    for name in sorted(closure):
        root = pkgmod.unpack(debs[name], cache_dir)
        tree.add_package(name, root)
        s, n = pkgmod.tree_size(root)
        naive_size += s
        naive_files += n
    kroot = pkgmod.unpack(debs[kpkg.name], cache_dir)
    release = kernelmod.find_release(kroot)
    ktree_size, _ = pkgmod.tree_size(kroot)

    for b in BINARIES + tuple(FIRMWARE):
        if tree.host_path(b) is None:
            raise BuildError("%s is not shipped by any of the packages"
                             " (%s)" % (b, ", ".join(ROOT_PACKAGES)))

    progress("walking the ELF dependencies of %s" % ", ".join(BINARIES))
    try:
        needed = elfdeps.closure(tree, BINARIES)
    except elfdeps.UnresolvedLibraries as exc:
        raise BuildError(str(exc))

    arch = cpio.Archive()
    parts = {k: Part(k) for k in ("qemu", "xenstore", "busybox",
                                  "libraries", "firmware", "modules",
                                  "init+config")}
    files_meta = []
    used_packages: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="stubdom-") as work:
        for path in sorted(needed):
            pkg, host = tree.index[path]
            used_packages.add(pkg)
            if os.path.islink(host):
                arch.add_symlink(path, os.readlink(host))
                files_meta.append({"path": path, "package": pkg,
                                   "symlink": os.readlink(host)})
                continue
            data = _strip(host, ["--strip-unneeded"], work)
            part = {QEMU: "qemu", XENSTORE: "xenstore",
                    BUSYBOX: "busybox"}.get(path, "libraries")
            mode = 0o755
            arch.add_file(path, data, mode)
            _account(parts[part], os.path.getsize(host), len(data))
            files_meta.append({"path": path, "package": pkg,
                               "sha256": _sha256(data), "size": len(data),
                               "mode": "%o" % mode})
        for tool in XENSTORE_TOOLS:
            arch.add_symlink("/usr/bin/" + tool, "xenstore")
            files_meta.append({"path": "/usr/bin/" + tool,
                               "package": "xenstore-utils",
                               "symlink": "xenstore"})
        for applet in _busybox_applets(tree.host_path(BUSYBOX)):
            if applet not in arch:
                arch.add_symlink(applet, BUSYBOX)
                files_meta.append({"path": applet,
                                   "package": "busybox-static",
                                   "symlink": BUSYBOX})
        for path in sorted(FIRMWARE):
            chain = elfdeps.resolve_links(tree, path)
            for link in chain[:-1]:
                arch.add_symlink(link, tree.readlink(link))
                files_meta.append({"path": link,
                                   "package": tree.package_of(link),
                                   "symlink": tree.readlink(link)})
            pkg, host = tree.index[chain[-1]]
            used_packages.add(pkg)
            with open(host, "rb") as f:
                data = f.read()
            arch.add_file(chain[-1], data, 0o644)
            _account(parts["firmware"], len(data), len(data))
            files_meta.append({"path": chain[-1], "package": pkg,
                               "sha256": _sha256(data), "size": len(data),
                               "mode": "644", "why": FIRMWARE[path]})

        progress("kernel %s: modules %s" % (release,
                                            ", ".join(kernelmod.MODULES)))
        mods = kernelmod.module_closure(kroot, release)
        for path in mods:
            data = _strip(os.path.join(kroot, path[1:]), ["--strip-debug"],
                          work)
            arch.add_file(path, data, 0o644)
            _account(parts["modules"],
                     os.path.getsize(os.path.join(kroot, path[1:])),
                     len(data))
            files_meta.append({"path": path, "package": kpkg.name,
                               "sha256": _sha256(data), "size": len(data),
                               "mode": "644"})

    qemu_version = closure["qemu-system-xen"].version
    config = {
        "/init": (_read(INIT_SCRIPT), 0o755),
        "/etc/stubdom/modules": ("".join(m + "\n" for m in mods).encode(),
                                 0o644),
        "/etc/stubdom/firmware": ("".join(
            p + "\n" for p in sorted(FIRMWARE)).encode(), 0o644),
        "/etc/stubdom/devices": ("".join(
            d + "\n" for d in DEVICE_MODELS).encode(), 0o644),
        "/etc/stubdom/binaries": (("%s\n%s\n" % (QEMU, XENSTORE)).encode(),
                                  0o644),
        "/etc/stubdom/release": (
            ("kernel=%s\nkernel_package=%s %s\nqemu_package=qemu-system-xen"
             " %s\n" % (release, kpkg.name, kpkg.version,
                        qemu_version)).encode(), 0o644),
    }
    for path, (data, perm) in sorted(config.items()):
        arch.add_file(path, data, perm)
        _account(parts["init+config"], len(data), len(data))
        files_meta.append({"path": path, "package": "nova-xen-stubdom",
                           "sha256": _sha256(data), "size": len(data),
                           "mode": "%o" % perm})
    for d in ("/dev", "/proc", "/sys", "/run", "/var", "/etc"):
        arch.add_dir(d)
    arch.add_dir("/tmp", 0o1777)
    arch.add_symlink("/var/run", "../run")
    files_meta.append({"path": "/var/run", "package": "nova-xen-stubdom",
                       "symlink": "../run"})
    arch.add_chardev("/dev/console", 5, 1)
    arch.add_chardev("/dev/null", 1, 3, 0o666)

    progress("writing the rootfs (%d entries)" % len(arch))
    raw = arch.to_bytes()
    gz = arch.to_gzip()
    with open(os.path.join(kroot, "boot", "vmlinuz-" + release), "rb") as f:
        kdata = f.read()
    kernel_path = os.path.join(output, KERNEL_NAME)
    rootfs_path = os.path.join(output, ROOTFS_NAME)
    manifest_path = os.path.join(output, MANIFEST_NAME)
    _atomic_write(kernel_path, kdata)
    _atomic_write(rootfs_path, gz)

    init_size = kernelmod.bzimage_init_size(kernel_path)
    report = {
        "kernel": {"file": KERNEL_NAME, "release": release,
                   "size": len(kdata), "init_size": init_size,
                   "package_unpacked_size": ktree_size},
        "rootfs": {"file": ROOTFS_NAME, "gzip_size": len(gz),
                   "cpio_size": len(raw),
                   "unpacked_size": arch.unpacked_size(),
                   "entries": len(arch)},
        "parts": {p.name: dataclasses.asdict(p) for p in parts.values()},
        "naive": {"packages": len(closure), "files": naive_files,
                  "size": naive_size},
    }
    manifest = {
        "format": 1,
        "kernel": {"package": kpkg.name, "version": kpkg.version,
                   "arch": kpkg.arch,
                   "meta_package": meta.name, "meta_version": meta.version,
                   "release": release, "sha256": _sha256(kdata),
                   "cmdline": KERNEL_CMDLINE,
                   "size": len(kdata)},
        "rootfs": {"sha256": _sha256(gz), "size": len(gz),
                   "cpio_sha256": _sha256(raw)},
        "packages": {n: closure[n].version for n in sorted(used_packages)},
        "candidate_packages": {n: {"version": p.version, "arch": p.arch}
                               for n, p in sorted(closure.items())},
        "files": sorted(files_meta, key=lambda m: m["path"]),
        "sizes": report,
    }
    _atomic_write(manifest_path, (json.dumps(
        manifest, indent=1, sort_keys=True) + "\n").encode())
    for line in format_report(report):
        progress(line)
    return BuildResult(kernel_path, rootfs_path, manifest_path, report)


def _account(part: Part, before: int, after: int) -> None:
    part.files += 1
    part.size_before += before
    part.size += after


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _mib(n: int | None) -> str:
    return "?" if n is None else "%.2f MiB" % (n / 1048576.0)


def format_report(report: dict) -> list[str]:
    k, r, n = report["kernel"], report["rootfs"], report["naive"]
    lines = ["kernel %s: %s (bzImage), %s in memory once decompressed"
             " (its package: %s unpacked, most of it modules)"
             % (k["release"], _mib(k["size"]), _mib(k["init_size"]),
                _mib(k.get("package_unpacked_size")))]
    for p in report["parts"].values():
        lines.append("  %-12s %4d file(s) %10s (packaged %s)"
                     % (p["name"], p["files"], _mib(p["size"]),
                        _mib(p["size_before"])))
    lines.append("rootfs: %s unpacked, cpio %s, gzip %s (%d entries)"
                 % (_mib(r["unpacked_size"]), _mib(r["cpio_size"]),
                    _mib(r["gzip_size"]), r["entries"]))
    lines.append("naive (all files of the %d packages): %d files, %s; the"
                 " rootfs keeps %.1f%%"
                 % (n["packages"], n["files"], _mib(n["size"]),
                    100.0 * r["unpacked_size"] / max(n["size"], 1)))
    return lines


def main_build(output: str, cache_dir: str | None = None,
               pin: str | None = None) -> int:
    try:
        build(output, cache_dir, pin=pin)
    except BuildError as exc:
        print("build-stubdom: error: %s" % exc, file=sys.stderr)
        return 1
    return 0
