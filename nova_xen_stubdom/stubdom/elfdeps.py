"""Walk the shared-library closure of ELF binaries (DT_NEEDED, PT_INTERP).

The walk runs against a *tree*: a mapping from image paths (as the binaries
will see them inside the stub domain) to files on the build host, so it can
resolve libraries inside unpacked Debian packages without installing them.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Iterable, Protocol

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

#: Where Debian's (multiarch) dynamic loader looks when there is no cache.
DEFAULT_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                    "/lib64", "/usr/lib64", "/lib", "/usr/lib")


@dataclasses.dataclass(frozen=True)
class ElfInfo:
    interp: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str | None


class Tree(Protocol):
    def host_path(self, path: str) -> str | None:
        """Host file for an image path (None when absent); not following
        a final symlink."""

    def readlink(self, path: str) -> str | None:
        """Symlink target of an image path, or None if not a symlink."""


class HostTree:
    """The build host's own filesystem, optionally under a root directory."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def host_path(self, path: str) -> str | None:
        p = os.path.join(self.root, path.lstrip("/"))
        return p if os.path.lexists(p) else None

    def readlink(self, path: str) -> str | None:
        p = self.host_path(path)
        return os.readlink(p) if p and os.path.islink(p) else None


class UnresolvedLibraries(Exception):
    def __init__(self, missing: dict[str, list[str]]) -> None:
        self.missing = missing
        super().__init__("unresolved shared libraries: " + "; ".join(
            "%s (needed by %s)" % (so, ", ".join(sorted(by)))
            for so, by in sorted(missing.items())))


def read_elf(filename: str) -> ElfInfo | None:
    """Dynamic-linking facts of one file; None when it is not ELF."""
    with open(filename, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
        f.seek(0)
        try:
            elf = ELFFile(f)
            interp = None
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    interp = seg.get_interp_name()
            needed, runpath, soname = [], [], None
            for sec in elf.iter_sections():
                if not isinstance(sec, DynamicSection):
                    continue
                for tag in sec.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_RUNPATH":
                        runpath.extend(tag.runpath.split(":"))
                    elif tag.entry.d_tag == "DT_RPATH":
                        runpath.extend(tag.rpath.split(":"))
                    elif tag.entry.d_tag == "DT_SONAME":
                        soname = tag.soname
        except ELFError as exc:
            raise ValueError("%s: invalid ELF: %s" % (filename, exc))
    return ElfInfo(interp, tuple(needed), tuple(runpath), soname)


def resolve_links(tree: Tree, path: str, limit: int = 40) -> list[str]:
    """The chain of image paths from ``path`` to the final (non-link) file."""
    chain = [posixpath.normpath(path)]
    for _ in range(limit):
        target = tree.readlink(chain[-1])
        if target is None:
            return chain
        nxt = posixpath.normpath(posixpath.join(
            posixpath.dirname(chain[-1]), target))
        chain.append(nxt)
    raise ValueError("symlink loop at %s" % path)


def _find_library(tree: Tree, soname: str, runpath: Iterable[str],
                  origin: str, lib_dirs: Iterable[str]) -> str | None:
    if "/" in soname:
        return soname if tree.host_path(soname) else None
    for d in list(runpath) + list(lib_dirs):
        d = d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
        cand = posixpath.join(d, soname)
        if tree.host_path(cand) is not None:
            return cand
    return None


def closure(tree: Tree, roots: Iterable[str],
            lib_dirs: Iterable[str] = DEFAULT_LIB_DIRS) -> set[str]:
    """Image paths needed to run ``roots``: the roots, their interpreters and
    every library they load (transitively), symlinks included.

    Raises UnresolvedLibraries listing every soname that cannot be found.
    """
    lib_dirs = tuple(lib_dirs)
    result: set[str] = set()
    missing: dict[str, list[str]] = {}
    todo = list(roots)
    seen_files: set[str] = set()
    while todo:
        path = todo.pop()
        if tree.host_path(path) is None:
            raise FileNotFoundError("not in the image tree: %s" % path)
        chain = resolve_links(tree, path)
        result.update(chain)
        final = chain[-1]
        if final in seen_files:
            continue
        seen_files.add(final)
        host = tree.host_path(final)
        if host is None:
            raise FileNotFoundError("dangling symlink %s -> %s"
                                    % (path, final))
        info = read_elf(host)
        if info is None:
            continue
        if info.interp:
            if tree.host_path(info.interp) is None:
                missing.setdefault(info.interp, []).append(path)
            else:
                todo.append(info.interp)
        origin = posixpath.dirname(final)
        for soname in info.needed:
            found = _find_library(tree, soname, info.runpath, origin,
                                  lib_dirs)
            if found is None:
                missing.setdefault(soname, []).append(path)
            else:
                todo.append(found)
    if missing:
        raise UnresolvedLibraries(missing)
    return result
