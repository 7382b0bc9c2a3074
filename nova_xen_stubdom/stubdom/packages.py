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
import urllib.error
import urllib.request
from typing import Callable, Iterable, Optional

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
APT_SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")


def mirror_uri(sources: Iterable[str] = APT_SOURCES) -> Optional[str]:
    """The first http(s) mirror apt's sources name (one-line or deb822)."""
    files = []
    for path in sources:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.endswith((".list", ".sources")))
        elif os.path.isfile(path):
            files.append(path)
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(r"\s*(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+"
                             r"(https?://\S+)", line)
                if m:
                    return m.group(1)
    return None


def mirror_reachable(timeout: float = 10) -> bool:
    """Whether apt's first mirror answers at all (any HTTP status): tells a
    network outage from a mirror that lacks a package."""
    uri = mirror_uri()
    if uri is None:
        return False
    try:
        urllib.request.urlopen(uri, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


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
            raise BuildError("%s (no network, or stale package lists: run"
                             " 'apt-get update')" % exc)
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
