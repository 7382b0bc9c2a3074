"""Debian packages through the package manager: resolve, download, unpack.

Only ``apt-cache``, ``apt-get download`` and ``dpkg-deb -x`` are used, so the
builder needs no root and installs nothing on the build host.  Downloads are
cached under the cache directory (keyed by file name, which carries the
version), unpacked trees too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from typing import Callable, Iterable

Progress = Callable[[str], None]


class BuildError(Exception):
    """A clear, user-facing reason why the image cannot be built."""


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    depends: tuple[str, ...] = ()

    @property
    def deb_name(self) -> str:
        # apt-get download's file naming: the epoch colon is URL-encoded.
        return "%s_%s_%s.deb" % (self.name, self.version.replace(":", "%3a"),
                                 self.arch)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise BuildError("missing tool(s): %s (on Debian: apt-get install"
                         " apt dpkg binutils)" % ", ".join(missing))


def _run(cmd: list[str], cwd: str | None = None) -> str:
    try:
        res = subprocess.run(cmd, cwd=cwd, check=False, capture_output=True,
                             text=True, env=dict(os.environ, LC_ALL="C"))
    except FileNotFoundError:
        raise BuildError("missing tool: %s" % cmd[0])
    if res.returncode != 0:
        raise BuildError("%s failed (rc=%d): %s" % (
            " ".join(cmd[:3]), res.returncode, res.stderr.strip()[-2000:]))
    return res.stdout


def _parse_depends(value: str) -> tuple[str, ...]:
    """First alternative of each dependency, without version/arch."""
    names = []
    for item in value.split(","):
        first = item.split("|")[0].strip()
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            names.append(name)
    return tuple(names)


def show(names: Iterable[str]) -> dict[str, Package]:
    """The candidate version of each package (one ``apt-cache show`` call)."""
    names = sorted(set(names))
    res = subprocess.run(["apt-cache", "show", "--no-all-versions", *names],
                         capture_output=True, text=True,
                         env=dict(os.environ, LC_ALL="C"))
    out = res.stdout
    found: dict[str, Package] = {}
    for para in out.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, val = line.partition(":")
                fields[key] = val.strip()
        if "Package" not in fields:
            continue
        deps = _parse_depends(fields.get("Pre-Depends", "") + "," +
                              fields.get("Depends", ""))
        found[fields["Package"]] = Package(
            fields["Package"], fields["Version"],
            fields.get("Architecture", "amd64"), deps)
    missing = [n for n in names if n not in found]
    if missing:
        raise BuildError(
            "package(s) not known to apt: %s (is this Debian bookworm with"
            " main enabled, and has 'apt-get update' run?) %s"
            % (", ".join(missing), res.stderr.strip()[-500:]))
    return found


def depends_closure(roots: Iterable[str]) -> dict[str, Package]:
    """Roots plus their Depends/Pre-Depends, recursively (candidates)."""
    result: dict[str, Package] = {}
    todo = set(roots)
    while todo:
        batch = show(todo)
        result.update(batch)
        todo = {d for p in batch.values() for d in p.depends} - set(result)
        # Virtual packages have no candidate of their own; drop them, they
        # only appear as alternatives we did not take.
        known = _known(todo)
        todo &= known
    return result


def _known(names: set[str]) -> set[str]:
    if not names:
        return set()
    out = subprocess.run(["apt-cache", "show", "--no-all-versions",
                          *sorted(names)], capture_output=True, text=True,
                         env=dict(os.environ, LC_ALL="C")).stdout
    return set(re.findall(r"^Package: (\S+)$", out, re.M))


#: apt's own cache of the .debs it installed: the same files, same names
APT_ARCHIVES = "/var/cache/apt/archives"


class RegistryUnreachable(BuildError):
    """apt-get could not reach any repository: an outage, not a defect."""


#: how apt (LC_ALL=C) says a repository did not answer.  Only apt's own
#: verdict counts: a proxy, a local mirror or apt.conf may route around a
#: host that a probe of ours would find dead.
_NETWORK_MESSAGES = (
    "Temporary failure resolving", "Could not resolve", "Could not connect",
    "Connection timed out", "Connection failed", "Unable to connect",
    "No route to host", "Network is unreachable", "Connection refused",
)


def apt_unreachable(message: str) -> bool:
    """Whether apt-get's error output says a repository was unreachable
    (as opposed to, say, a package or version the repository lacks)."""
    return any(m in message for m in _NETWORK_MESSAGES)


def download(pkgs: Iterable[Package], cache_dir: str,
             progress: Progress,
             archives: str = APT_ARCHIVES) -> dict[str, str]:
    """Fetch each package's .deb into ``cache_dir/debs``; returns paths.

    A .deb of exactly that version already in apt's *archives* (a package
    this machine installed) is copied instead of downloaded.
    """
    debdir = os.path.join(cache_dir, "debs")
    os.makedirs(debdir, exist_ok=True)
    pkgs = sorted(pkgs, key=lambda p: p.name)
    for p in pkgs:
        local = os.path.join(archives, p.deb_name)
        target = os.path.join(debdir, p.deb_name)
        if not os.path.exists(target) and os.path.isfile(local):
            shutil.copyfile(local, target + ".tmp")
            os.rename(target + ".tmp", target)
    want = [p for p in pkgs
            if not os.path.exists(os.path.join(debdir, p.deb_name))]
    if want:
        progress("downloading %d package(s) (%d cached)"
                 % (len(want), len(pkgs) - len(want)))
        try:
            _run(["apt-get", "download", "-q",
                  *["%s=%s" % (p.name, p.version) for p in want]],
                 cwd=debdir)
        except BuildError as exc:
            if apt_unreachable(str(exc)):
                raise RegistryUnreachable(
                    "apt-get could not reach the package repositories and"
                    " %d package(s) are in no cache: %s" % (len(want), exc))
            raise BuildError("%s (stale package lists? run 'apt-get"
                             " update')" % exc)
    else:
        progress("all %d package(s) cached in %s" % (len(pkgs), debdir))
    paths = {}
    for p in pkgs:
        path = os.path.join(debdir, p.deb_name)
        if not os.path.exists(path):
            raise BuildError("apt-get download did not produce %s" % path)
        paths[p.name] = path
    return paths


def unpack(deb: str, cache_dir: str) -> str:
    """Unpack a .deb's data once into ``cache_dir/unpacked/<deb name>``."""
    dest = os.path.join(cache_dir, "unpacked",
                        os.path.basename(deb)[:-len(".deb")])
    if not os.path.isdir(dest):
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        _run(["dpkg-deb", "-x", deb, tmp])
        os.rename(tmp, dest)
    return dest


def tree_size(root: str) -> tuple[int, int]:
    """(bytes of regular files, number of files) under ``root``."""
    total = count = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
                count += 1
    return total, count
