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
from nova_xen_stubdom.stubdom import offline
from nova_xen_stubdom.stubdom import packages as pkgmod
from nova_xen_stubdom.stubdom.packages import BuildError, Progress

from nova_xen_stubdom.stubdom.image import (  # noqa: F401 (re-exported)
    KERNEL_CMDLINE, KERNEL_NAME, MANIFEST_NAME, ROOTFS_NAME, SELFTEST_CMDLINE)

KERNEL_PACKAGE = "linux-image-cloud-amd64"
ROOT_PACKAGES = ("qemu-system-xen", "xenstore-utils", "busybox-static")
#: Taken without their Depends: only one program of each goes in, whose
#: libraries the ROOT_PACKAGES' closure already holds (xen-utils-4.17
#: would pull in Python and the whole toolstack).
LONE_PACKAGES = ("xen-utils-4.17",)
DEVICE_MODEL_SOURCES = ("debian", "testbed", "auto")
QEMU = "/usr/libexec/xen-qemu-system-i386"
XENSTORE = "/usr/bin/xenstore"
BUSYBOX = "/bin/busybox"
#: Programs the init runs; their library closure goes in too.
BINARIES = (QEMU, XENSTORE, BUSYBOX)
#: dom0 reaches QEMU's VNC socket through a vchan this proxies (the stub
#: init's start_vnc_bridge; Xen's tools/vchan/vchan-socket-proxy.c), found
#: on the init's PATH here; Debian ships it in xen-utils-4.17 as
#: DEBIAN_VCHAN_PROXY, the testbed's tools tarball as VCHAN_PROXY
VCHAN_PROXY = "/usr/bin/vchan-socket-proxy"
DEBIAN_VCHAN_PROXY = "/usr/lib/xen-4.17/bin/vchan-socket-proxy"
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


@dataclasses.dataclass
class Inputs:
    """What the image is assembled from, whatever the source."""
    tree: PackageTree
    #: package -> version of every package the tree holds (manifest)
    versions: dict[str, str]
    #: the manifest's candidate_packages (what --pin rebuilds from)
    candidates: dict[str, dict]
    firmware: dict[str, str]
    binaries: tuple[str, ...]
    device_model: dict
    #: where vchan-socket-proxy is in the inputs (a link to it goes to
    #: VCHAN_PROXY when elsewhere)
    vchan: str
    #: the -device names this QEMU offers, which the image's self-test
    #: checks (/etc/stubdom/devices)
    devices: tuple[str, ...] = DEVICE_MODELS
    naive_size: int = 0
    naive_files: int = 0


@dataclasses.dataclass
class KernelInput:
    data: bytes
    release: str
    #: image paths of the modules to load, in order, under module_root
    modules: list[str]
    module_root: str | None
    manifest: dict
    package_size: int | None = None


def _debian_inputs(cache_dir: str, progress: Progress,
                   pin: str | None) -> tuple[Inputs, KernelInput]:
    """Debian bookworm packages through apt (the default)."""
    pkgmod.require_tools("apt-cache", "apt-get")
    if pin:
        progress("using the package versions pinned by %s" % pin)
        closure, kpkg, meta = pinned_packages(pin)
    else:
        progress("resolving packages: %s + their Depends, %s, and %s"
                 % (", ".join(ROOT_PACKAGES), ", ".join(LONE_PACKAGES),
                    KERNEL_PACKAGE))
        closure = pkgmod.depends_closure(ROOT_PACKAGES)
        closure.update(pkgmod.show(LONE_PACKAGES))
        meta = pkgmod.show([KERNEL_PACKAGE])[KERNEL_PACKAGE]
        image_names = [d for d in meta.depends
                       if d.startswith("linux-image-")]
        if not image_names:
            raise BuildError("%s %s depends on no linux-image-* package"
                             % (meta.name, meta.version))
        kpkg = pkgmod.show(image_names[:1])[image_names[0]]
    missing = [r for r in ROOT_PACKAGES + LONE_PACKAGES if r not in closure]
    if missing:
        raise BuildError("package set lacks %s" % ", ".join(missing))
    progress("%d rootfs candidate packages; kernel %s %s"
             % (len(closure), kpkg.name, kpkg.version))
    debs = pkgmod.download(list(closure.values()) + [kpkg], cache_dir,
                           progress)
    progress("unpacking")
    inputs = Inputs(PackageTree(), {n: p.version for n, p in closure.items()},
                    {n: {"version": p.version, "arch": p.arch}
                     for n, p in sorted(closure.items())},
                    dict(FIRMWARE), BINARIES + (DEBIAN_VCHAN_PROXY,),
                    {"source": "debian", "package": "qemu-system-xen",
                     "version": closure["qemu-system-xen"].version},
                    DEBIAN_VCHAN_PROXY)
    for name in sorted(closure):
        root = pkgmod.unpack(debs[name], cache_dir)
        inputs.tree.add_package(name, root)
        s, n = pkgmod.tree_size(root)
        inputs.naive_size += s
        inputs.naive_files += n
    kroot = pkgmod.unpack(debs[kpkg.name], cache_dir)
    release = kernelmod.find_release(kroot)
    progress("kernel %s: modules %s" % (release,
                                        ", ".join(kernelmod.MODULES)))
    with open(os.path.join(kroot, "boot", "vmlinuz-" + release), "rb") as f:
        kdata = f.read()
    kernel = KernelInput(
        kdata, release, kernelmod.module_closure(kroot, release), kroot,
        {"source": "debian", "package": kpkg.name, "version": kpkg.version,
         "arch": kpkg.arch, "meta_package": meta.name,
         "meta_version": meta.version},
        pkgmod.tree_size(kroot)[0])
    return inputs, kernel


def _testbed_inputs(testbed: str, cache_dir: str,
                    progress: Progress) -> Inputs:
    """The Xen testbed's device model and tools, busybox from its .deb,
    libraries from the build host's packages (offline.py)."""
    balls = offline.tarballs(testbed)
    versions: dict[str, str] = {}
    tree = HostLibraryTree(versions)
    candidates: dict[str, dict] = {}
    record = {"source": "testbed", "testbed": os.path.abspath(testbed)}
    inputs = Inputs(tree, versions, candidates,
                    dict(offline.TESTBED_FIRMWARE),
                    BINARIES + (VCHAN_PROXY,), record, VCHAN_PROXY)
    for part, path in sorted(balls.items()):
        digest = offline.sha256_file(path)
        name = "xen-testbed:" + os.path.basename(path)
        root = offline.unpack_tarball(path, cache_dir)
        tree.add_package(name, root)
        versions[name] = "sha256:" + digest
        record[part] = {"tarball": os.path.basename(path),
                        "sha256": digest}
        s, n = pkgmod.tree_size(root)
        inputs.naive_size += s
        inputs.naive_files += n
    deb = offline.busybox_deb(testbed, pkgmod.APT_ARCHIVES)
    bname, bver = os.path.basename(deb).split("_")[:2]
    root = pkgmod.unpack(deb, cache_dir)
    tree.add_package(bname, root)
    versions[bname] = bver.replace("%3a", ":")
    record["device_model"]["qemu"] = QEMU
    # said in the manifest, so that nobody takes this image for one that
    # can pass PCI devices through, and left out of the self-test
    record["lacks"] = sorted(offline.TESTBED_LACKS)
    inputs.devices = tuple(d for d in DEVICE_MODELS
                           if d not in offline.TESTBED_LACKS)
    progress("device model from the testbed: %s (sha256 %s...)"
             % (record["device_model"]["tarball"],
                record["device_model"]["sha256"][:12]))
    return inputs


def _file_kernel(path: str, config: str, progress: Progress) -> KernelInput:
    """A given bzImage whose Xen drivers are built in: no modules."""
    builtin = offline.builtin_config(config)
    release = offline.kernel_release(path)
    with open(path, "rb") as f:
        data = f.read()
    progress("kernel %s from %s (drivers built in, checked in %s)"
             % (release, path, config))
    return KernelInput(data, release, [], None,
                       {"source": "file", "file": os.path.basename(path),
                        "config": os.path.basename(config),
                        "builtin": sorted(builtin)})


class HostLibraryTree(PackageTree):
    """A PackageTree that finds shared libraries it lacks on the build
    host, each recorded with the Debian package that installed it (and its
    version in *versions*)."""

    def __init__(self, versions: dict[str, str]) -> None:
        super().__init__()
        self.versions = versions

    def host_path(self, path: str) -> str | None:
        hit = super().host_path(path)
        if hit is not None or not path.startswith(offline.HOST_LIB_DIRS):
            return hit
        if not os.path.lexists(path):
            return None
        name, version = offline.host_package(path)
        self.index[path] = (name, path)
        self.versions[name] = version
        return path


def build(output: str, cache_dir: str | None = None,
          progress: Callable[[str], None] = _default_progress,
          pin: str | None = None, device_model: str = "debian",
          testbed: str | None = None, kernel: str | None = None,
          kernel_config: str | None = None) -> BuildResult:
    """Build the image into ``output``.

    :param output: directory for the kernel, rootfs and manifest.
    :param cache_dir: downloaded and unpacked packages (reused).
    :param progress: called with one line of progress text at a time.
    :param pin: an earlier manifest.json: use exactly its package versions
        (from the cache, or the mirror while it still carries them) instead
        of apt's current candidates, to rebuild that image bit for bit.
    :param device_model: ``debian`` (qemu-system-xen through apt),
        ``testbed`` (the Xen testbed's QEMU, offline) or ``auto`` (Debian,
        the testbed when apt cannot reach the archive).
    :param testbed: the xen-testbed directory (``testbed``/``auto``).
    :param kernel: a bzImage with the Xen drivers built in, with its
        ``kernel_config``; default: Debian's cloud kernel, or the testbed's
        6.1.20 kernel with the testbed's device model.
    """
    if device_model not in DEVICE_MODEL_SOURCES:
        raise BuildError("device model source %r: one of %s"
                         % (device_model, ", ".join(DEVICE_MODEL_SOURCES)))
    if device_model != "debian" and not testbed:
        raise BuildError("--device-model %s needs --testbed DIR (the"
                         " xen-testbed package)" % device_model)
    if bool(kernel) != bool(kernel_config):
        raise BuildError("--kernel and --kernel-config go together (the"
                         " config proves the Xen drivers are built in)")
    if pin and device_model == "testbed":
        raise BuildError("--pin rebuilds a Debian build; the testbed's"
                         " files are pinned by their sha256 already")
    pkgmod.require_tools("dpkg-deb", "strip")
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    os.makedirs(output, exist_ok=True)
    kin = _file_kernel(kernel, kernel_config, progress) if kernel else None
    inputs = None
    if device_model in ("debian", "auto"):
        try:
            inputs, dkernel = _debian_inputs(cache_dir, progress, pin)
            kin = kin or dkernel
        except pkgmod.RegistryUnreachable as exc:
            if device_model == "debian":
                raise
            progress("the Debian archive did not answer (%s): taking the"
                     " device model from the testbed" % str(exc)[:200])
    if inputs is None:
        inputs = _testbed_inputs(testbed, cache_dir, progress)
        kin = kin or _file_kernel(*offline.testbed_kernel(testbed),
                                  progress)
    return _assemble(output, inputs, kin, progress)


def _assemble(output: str, inputs: Inputs, kin: KernelInput,
              progress: Progress) -> BuildResult:
    tree = inputs.tree
    for b in inputs.binaries + tuple(inputs.firmware):
        if tree.host_path(b) is None:
            raise BuildError("%s is in none of the inputs (%s)"
                             % (b, ", ".join(sorted(inputs.versions))))
    progress("walking the ELF dependencies of %s"
             % ", ".join(inputs.binaries))
    try:
        needed = elfdeps.closure(tree, inputs.binaries)
    except elfdeps.UnresolvedLibraries as exc:
        raise BuildError(str(exc))

    arch = cpio.Archive()
    parts = {k: Part(k) for k in ("qemu", "xenstore", "busybox", "vchan",
                                  "libraries", "firmware", "modules",
                                  "init+config")}
    files_meta = []
    used_packages: set[str] = set()

    def add(path: str, pkg: str, data: bytes, mode: int, part: str,
            before: int, why: str | None = None) -> None:
        arch.add_file(path, data, mode)
        _account(parts[part], before, len(data))
        meta = {"path": path, "package": pkg, "sha256": _sha256(data),
                "size": len(data), "mode": "%o" % mode}
        if why:
            meta["why"] = why
        files_meta.append(meta)

    def link(path: str, target: str, pkg: str) -> None:
        arch.add_symlink(path, target)
        files_meta.append({"path": path, "package": pkg, "symlink": target})

    with tempfile.TemporaryDirectory(prefix="stubdom-") as work:
        for path in sorted(needed):
            pkg, host = tree.index[path]
            used_packages.add(pkg)
            if os.path.islink(host):
                link(path, os.readlink(host), pkg)
                continue
            part = {QEMU: "qemu", XENSTORE: "xenstore", BUSYBOX: "busybox",
                    inputs.vchan: "vchan"}.get(path, "libraries")
            add(path, pkg, _strip(host, ["--strip-unneeded"], work), 0o755,
                part, os.path.getsize(host))
        if inputs.vchan != VCHAN_PROXY:
            link(VCHAN_PROXY, inputs.vchan, tree.package_of(inputs.vchan))
        xs_pkg = tree.package_of(XENSTORE)
        for tool in XENSTORE_TOOLS:
            link("/usr/bin/" + tool, "xenstore", xs_pkg)
        for applet in _busybox_applets(tree.host_path(BUSYBOX)):
            if applet not in arch:
                link(applet, BUSYBOX, tree.package_of(BUSYBOX))
        for path in sorted(inputs.firmware):
            chain = elfdeps.resolve_links(tree, path)
            for lk in chain[:-1]:
                link(lk, tree.readlink(lk), tree.package_of(lk))
            pkg, host = tree.index[chain[-1]]
            used_packages.add(pkg)
            data = _read(host)
            add(chain[-1], pkg, data, 0o644, "firmware", len(data),
                inputs.firmware[path])
        for path in kin.modules:
            host = os.path.join(kin.module_root, path[1:])
            add(path, kin.manifest.get("package", "kernel"),
                _strip(host, ["--strip-debug"], work), 0o644, "modules",
                os.path.getsize(host))

    dm = dict(inputs.device_model, devices=list(inputs.devices))
    config = {
        "/init": (_read(INIT_SCRIPT), 0o755),
        "/etc/stubdom/modules": ("".join(
            m + "\n" for m in kin.modules).encode(), 0o644),
        "/etc/stubdom/firmware": ("".join(
            p + "\n" for p in sorted(inputs.firmware)).encode(), 0o644),
        "/etc/stubdom/devices": ("".join(
            d + "\n" for d in inputs.devices).encode(), 0o644),
        "/etc/stubdom/binaries": ("".join(
            b + "\n" for b in (QEMU, XENSTORE, VCHAN_PROXY)).encode(),
            0o644),
        "/etc/stubdom/release": (
            ("kernel=%s\nkernel_source=%s\ndevice_model=%s\n"
             % (kin.release, _describe(kin.manifest), _describe(dm))
             ).encode(), 0o644),
    }
    for path, (data, perm) in sorted(config.items()):
        add(path, "nova-xen-stubdom", data, perm, "init+config", len(data))
    for d in ("/dev", "/proc", "/sys", "/run", "/var", "/etc"):
        arch.add_dir(d)
    arch.add_dir("/tmp", 0o1777)
    link("/var/run", "../run", "nova-xen-stubdom")
    arch.add_chardev("/dev/console", 5, 1)
    arch.add_chardev("/dev/null", 1, 3, 0o666)

    progress("writing the rootfs (%d entries)" % len(arch))
    raw = arch.to_bytes()
    gz = arch.to_gzip()
    kernel_path = os.path.join(output, KERNEL_NAME)
    rootfs_path = os.path.join(output, ROOTFS_NAME)
    manifest_path = os.path.join(output, MANIFEST_NAME)
    _atomic_write(kernel_path, kin.data)
    _atomic_write(rootfs_path, gz)

    init_size = kernelmod.bzimage_init_size(kernel_path)
    report = {
        "kernel": {"file": KERNEL_NAME, "release": kin.release,
                   "size": len(kin.data), "init_size": init_size,
                   "package_unpacked_size": kin.package_size},
        "rootfs": {"file": ROOTFS_NAME, "gzip_size": len(gz),
                   "cpio_size": len(raw),
                   "unpacked_size": arch.unpacked_size(),
                   "entries": len(arch)},
        "parts": {p.name: dataclasses.asdict(p) for p in parts.values()},
        "naive": {"packages": len(inputs.versions),
                  "files": inputs.naive_files, "size": inputs.naive_size},
    }
    kman = dict(kin.manifest, release=kin.release, sha256=_sha256(kin.data),
                cmdline=KERNEL_CMDLINE, size=len(kin.data))
    versions = inputs.versions
    manifest = {
        "format": 1,
        "kernel": kman,
        "device_model": dm,
        "rootfs": {"sha256": _sha256(gz), "size": len(gz),
                   "cpio_sha256": _sha256(raw)},
        "packages": {n: versions[n] for n in sorted(used_packages)},
        "candidate_packages": inputs.candidates,
        "files": sorted(files_meta, key=lambda m: m["path"]),
        "sizes": report,
    }
    _atomic_write(manifest_path, (json.dumps(
        manifest, indent=1, sort_keys=True) + "\n").encode())
    for line in format_report(report):
        progress(line)
    return BuildResult(kernel_path, rootfs_path, manifest_path, report)


def _describe(record: dict) -> str:
    """One line for /etc/stubdom/release: where a part came from."""
    if record.get("source") == "testbed":
        dm = record["device_model"]
        return "testbed %s sha256:%s" % (dm["tarball"], dm["sha256"])
    if record.get("source") == "file":
        return "file %s (config %s)" % (record["file"], record["config"])
    return "debian %s %s" % (record["package"], record["version"])


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
               pin: str | None = None, **sources) -> int:
    try:
        build(output, cache_dir, pin=pin, **sources)
    except BuildError as exc:
        print("build-stubdom: error: %s" % exc, file=sys.stderr)
        return 1
    return 0
