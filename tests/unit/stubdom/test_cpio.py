import gzip
import os
import shutil
import stat
import subprocess

import pytest

from nova_xen_stubdom.stubdom import cpio


def _sample(order):
    a = cpio.Archive()
    items = {
        "usr/bin/tool": lambda: a.add_file("/usr/bin/tool", b"#!/bin/sh\n",
                                           0o755),
        "etc/x": lambda: a.add_file("etc/x", b"hello"),
        "lib/link": lambda: a.add_symlink("/lib/link", "../etc/x"),
        "dev/console": lambda: a.add_chardev("/dev/console", 5, 1),
        "tmp": lambda: a.add_dir("/tmp", 0o1777),
    }
    for k in order:
        items[k]()
    return a


def test_same_entries_give_same_bytes_whatever_the_order():
    one = _sample(["usr/bin/tool", "etc/x", "lib/link", "dev/console", "tmp"])
    two = _sample(["tmp", "dev/console", "lib/link", "etc/x", "usr/bin/tool"])
    assert one.to_bytes() == two.to_bytes()
    assert one.to_gzip() == two.to_gzip()
    # gzip header: no file name, mtime 0.
    gz = one.to_gzip()
    assert gz[3] & 0x08 == 0 and gz[4:8] == b"\0\0\0\0"
    assert gzip.decompress(gz) == one.to_bytes()


def test_parse_back_sorted_with_parents_and_fixed_owners():
    data = _sample(["usr/bin/tool", "etc/x", "lib/link", "dev/console",
                    "tmp"]).to_bytes(mtime=0)
    entries = cpio.read_newc(data)
    names = [e[0] for e in entries]
    assert names == sorted(names)
    assert {"usr", "usr/bin", "etc", "lib", "dev"} <= set(names)
    by = {n: (m, d) for n, m, d in entries}
    assert stat.S_ISLNK(by["lib/link"][0]) and by["lib/link"][1] == b"../etc/x"
    assert stat.S_ISCHR(by["dev/console"][0])
    assert by["tmp"][0] == stat.S_IFDIR | 0o1777
    assert by["usr/bin/tool"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    # every header: uid, gid, mtime fields are zero.
    pos = 0
    for name, _mode, body in entries:
        hdr = data[pos:pos + 110]
        assert hdr[:6] == b"070701"
        assert hdr[22:38] == b"0" * 16  # uid, gid
        assert hdr[46:54] == b"0" * 8   # mtime
        namesize = int(hdr[94:102], 16)
        pos += 110 + namesize
        pos += -pos % 4
        pos += len(body) + (-len(body) % 4)
    assert data.endswith(b"\0") and len(data) % 4 == 0


def test_conflicting_entries_are_refused():
    a = cpio.Archive()
    a.add_file("/a", b"1")
    a.add_file("/a", b"1")  # identical: fine
    with pytest.raises(ValueError, match="conflicting"):
        a.add_file("/a", b"2")
    with pytest.raises(ValueError):
        a.add_file("/", b"")


@pytest.mark.skipif(shutil.which("busybox") is None,
                    reason="busybox-static not installed")
def test_busybox_cpio_extracts_our_archive(tmp_path):
    a = cpio.Archive()
    a.add_file("/bin/hello", b"hi\n" * 1000, 0o755)
    a.add_symlink("/bin/hi", "hello")
    a.add_file("/odd/size", b"x" * 7)
    (tmp_path / "a.cpio").write_bytes(a.to_bytes())
    out = tmp_path / "root"
    out.mkdir()
    with open(tmp_path / "a.cpio", "rb") as f:
        subprocess.run(["busybox", "cpio", "-i", "-d"], stdin=f, cwd=out,
                       check=True, capture_output=True)
    assert (out / "bin/hello").read_bytes() == b"hi\n" * 1000
    assert os.readlink(out / "bin/hi") == "hello"
    assert (out / "odd/size").read_bytes() == b"x" * 7
    assert os.stat(out / "bin/hello").st_mode & 0o777 == 0o755
