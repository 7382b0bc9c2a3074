"""A reproducible "newc" cpio writer (the format Linux unpacks as initramfs).

Reproducible means: the same entries give the same bytes.  Entries are sorted
by path, every owner is root (uid/gid 0), every timestamp is one fixed value
(``mtime``, 0 by default), inode numbers are assigned in sorted order and
device numbers are zero.  Parent directories are added implicitly.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import posixpath
import stat
from typing import BinaryIO

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclasses.dataclass(frozen=True)
class Entry:
    path: str          # without leading "/"
    mode: int          # full st_mode (type bits + permissions)
    data: bytes = b""  # file content, or symlink target
    rdev: tuple[int, int] = (0, 0)


def _norm(path: str) -> str:
    path = posixpath.normpath("/" + path).lstrip("/")
    if not path or path.startswith(".."):
        raise ValueError("bad cpio path: %r" % path)
    return path


class Archive:
    """Collects entries; ``write`` emits them sorted as newc cpio."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __contains__(self, path: str) -> bool:
        return _norm(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def paths(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, path: str) -> Entry:
        return self._entries[_norm(path)]

    def _put(self, entry: Entry) -> None:
        old = self._entries.get(entry.path)
        if old is not None and old != entry:
            if stat.S_ISDIR(old.mode) and stat.S_ISDIR(entry.mode):
                return
            raise ValueError("conflicting cpio entries for %s" % entry.path)
        parent = posixpath.dirname(entry.path)
        if parent and parent not in self._entries:
            self.add_dir(parent)
        self._entries[entry.path] = entry

    def add_dir(self, path: str, perm: int = 0o755) -> None:
        self._put(Entry(_norm(path), stat.S_IFDIR | perm))

    def add_file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._put(Entry(_norm(path), stat.S_IFREG | perm, bytes(data)))

    def add_symlink(self, path: str, target: str) -> None:
        self._put(Entry(_norm(path), stat.S_IFLNK | 0o777,
                        target.encode()))

    def add_chardev(self, path: str, major: int, minor: int,
                    perm: int = 0o600) -> None:
        self._put(Entry(_norm(path), stat.S_IFCHR | perm, b"",
                        (major, minor)))

    def unpacked_size(self) -> int:
        """Bytes of file content (what the files take once unpacked)."""
        return sum(len(e.data) for e in self._entries.values()
                   if stat.S_ISREG(e.mode))

    def write(self, out: BinaryIO, mtime: int = 0) -> None:
        for ino, path in enumerate(sorted(self._entries), start=1):
            e = self._entries[path]
            nlink = 2 if stat.S_ISDIR(e.mode) else 1
            _write_entry(out, path, e.mode, e.data, ino, nlink, mtime, e.rdev)
        _write_entry(out, TRAILER, 0, b"", 0, 1, 0, (0, 0))

    def to_bytes(self, mtime: int = 0) -> bytes:
        buf = io.BytesIO()
        self.write(buf, mtime)
        return buf.getvalue()

    def to_gzip(self, mtime: int = 0, level: int = 9) -> bytes:
        """The archive, gzip-compressed with a fixed header (no mtime/name)."""
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf,
                           compresslevel=level, mtime=0) as gz:
            self.write(gz, mtime)
        return buf.getvalue()


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _write_entry(out: BinaryIO, name: str, mode: int, data: bytes, ino: int,
                 nlink: int, mtime: int, rdev: tuple[int, int]) -> None:
    bname = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0,
              rdev[0], rdev[1], len(bname), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    out.write(header + bname + _pad4(len(header) + len(bname)))
    out.write(data + _pad4(len(data)))


def read_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    """Parse a newc archive into (name, mode, data); for tests and tools."""
    pos, result = 0, []
    while True:
        if data[pos:pos + 6] != NEWC_MAGIC:
            raise ValueError("bad newc magic at offset %d" % pos)
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16)
                  for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == TRAILER:
            return result
        result.append((name, mode, body))
