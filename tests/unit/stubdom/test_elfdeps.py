import os
import re
import shutil
import subprocess

import pytest

from nova_xen_stubdom.stubdom import elfdeps

LS = shutil.which("ls")


def _ldd_libs(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line)
        if m:
            names.add(m.group(1))
        elif "ld-linux" in line:
            names.add(os.path.basename(line.split()[0]))
    return names


def test_read_elf_facts():
    info = elfdeps.read_elf(os.path.realpath(LS))
    assert info.interp and "ld-linux" in info.interp
    assert "libc.so.6" in info.needed
    libc = [p for p in ("/lib/x86_64-linux-gnu/libc.so.6",
                        "/usr/lib/x86_64-linux-gnu/libc.so.6")
            if os.path.exists(p)][0]
    assert elfdeps.read_elf(libc).soname == "libc.so.6"


def test_non_elf_is_none(tmp_path):
    p = tmp_path / "script"
    p.write_text("#!/bin/sh\n")
    assert elfdeps.read_elf(str(p)) is None
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x7fELF" + b"\0" * 8)
    with pytest.raises(ValueError, match="invalid ELF"):
        elfdeps.read_elf(str(bad))


@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd")
def test_closure_of_ls_matches_ldd():
    real = os.path.realpath(LS)
    files = elfdeps.closure(elfdeps.HostTree(), [real])
    basenames = {os.path.basename(f) for f in files}
    # Every library ldd reports (by soname) is in our closure.
    assert _ldd_libs(real) <= basenames, _ldd_libs(real) - basenames
    assert real in files


def test_closure_resolves_symlink_chains_and_reports_missing(tmp_path):
    # A tree holding only ls (no libraries): every DT_NEEDED is unresolved.
    real = os.path.realpath(LS)
    (tmp_path / "bin").mkdir()
    shutil.copy(real, tmp_path / "bin" / "ls.real")
    os.symlink("ls.real", tmp_path / "bin" / "ls")
    tree = elfdeps.HostTree(str(tmp_path))
    assert elfdeps.resolve_links(tree, "/bin/ls") == ["/bin/ls",
                                                      "/bin/ls.real"]
    with pytest.raises(elfdeps.UnresolvedLibraries) as exc:
        elfdeps.closure(tree, ["/bin/ls"])
    assert "libc.so.6" in exc.value.missing
    assert "needed by /bin/ls" in str(exc.value)


def test_symlink_loop(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(ValueError, match="loop"):
        elfdeps.resolve_links(elfdeps.HostTree(str(tmp_path)), "/a")
