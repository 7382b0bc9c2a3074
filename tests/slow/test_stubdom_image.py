"""Build the Linux stub domain image from Debian packages and boot it.

Downloads come from the Debian mirror through apt-get (cached under
~/.cache/nova-xen-stubdom, or $NXS_STUBDOM_CACHE), so the first run needs
the network; the boot runs under qemu-system-x86_64 with TCG (no Xen, no
KVM).
"""

import gzip
import hashlib
import json
import os
import stat

import pytest

from nova_xen_stubdom.stubdom import bootcheck
from nova_xen_stubdom.stubdom import builder
from nova_xen_stubdom.stubdom import cpio
from nova_xen_stubdom.stubdom import elfdeps
from nova_xen_stubdom.stubdom import packages

CACHE = os.environ.get("NXS_STUBDOM_CACHE") or builder.default_cache_dir()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubdom")
    try:
        result = builder.build(str(out), CACHE)
    except packages.RegistryUnreachable as exc:
        # an outage, not a defect: apt-get itself says it could not reach
        # a repository, so the tier reports the image NOT BUILT (skipped)
        pytest.skip("STUBDOM IMAGE NOT BUILT: %s" % exc)
    return out, result


@pytest.fixture(scope="module")
def entries(image):
    _out, result = image
    with open(result.rootfs, "rb") as f:
        return {name: (mode, data) for name, mode, data in
                cpio.read_newc(gzip.decompress(f.read()))}


def test_outputs_have_the_names_the_driver_expects(image):
    out, result = image
    assert sorted(os.listdir(out)) == sorted(
        [builder.KERNEL_NAME, builder.ROOTFS_NAME, builder.MANIFEST_NAME])
    assert os.path.basename(result.kernel) == builder.KERNEL_NAME


def test_rebuild_pinned_to_the_manifest_gives_the_same_bytes(image,
                                                             tmp_path):
    out, result = image
    builder.build(str(tmp_path), CACHE, progress=lambda m: None,
                  pin=result.manifest)
    for name in (builder.KERNEL_NAME, builder.ROOTFS_NAME,
                 builder.MANIFEST_NAME):
        with open(os.path.join(out, name), "rb") as a, \
                open(tmp_path / name, "rb") as b:
            assert a.read() == b.read(), name


def test_manifest_lists_every_file_with_its_sha256(image, entries):
    _out, result = image
    with open(result.manifest) as f:
        manifest = json.load(f)
    files = {m["path"].lstrip("/"): m for m in manifest["files"]}
    regular = {n for n, (mode, _d) in entries.items() if stat.S_ISREG(mode)}
    assert regular == {p for p, m in files.items() if "sha256" in m}
    for name in regular:
        assert hashlib.sha256(entries[name][1]).hexdigest() == \
            files[name]["sha256"], name
    links = {n: d.decode() for n, (mode, d) in entries.items()
             if stat.S_ISLNK(mode)}
    assert links == {p: m["symlink"] for p, m in files.items()
                     if "symlink" in m}
    assert manifest["packages"]["qemu-system-xen"]
    assert manifest["packages"]["busybox-static"]
    assert any(p.startswith("libxen") for p in manifest["packages"])
    with open(result.rootfs, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == \
            manifest["rootfs"]["sha256"]


def test_rootfs_is_minimal_and_self_contained(image, entries, tmp_path):
    _out, result = image
    names = set(entries)
    assert "init" in names and "usr/libexec/xen-qemu-system-i386" in names
    assert not [n for n in names if n.startswith(("usr/share/doc",
                                                  "usr/share/man",
                                                  "usr/include"))]
    # Firmware: exactly the ROMs of the devices we configure.
    roms = {n for n in names if n.endswith((".rom", ".bin"))
            and stat.S_ISREG(entries[n][0])}
    assert roms == {p.lstrip("/") for p in builder.FIRMWARE}
    # Unpack and re-walk the ELF closure inside the image: all resolvable.
    for name, (mode, data) in entries.items():
        p = tmp_path / name
        if stat.S_ISDIR(mode):
            p.mkdir(parents=True, exist_ok=True)
        elif stat.S_ISLNK(mode):
            p.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(data.decode(), p)
        elif stat.S_ISREG(mode):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    tree = elfdeps.HostTree(str(tmp_path))
    elfdeps.closure(tree, list(builder.BINARIES))
    # Every shared library shipped is needed by something we run.
    needed = elfdeps.closure(tree, list(builder.BINARIES))
    libs = {"/" + n for n in names if ".so" in n and "/modules/" not in n}
    assert libs <= needed, libs - needed
    r = result.report
    assert r["rootfs"]["unpacked_size"] < r["naive"]["size"]


def test_selftest_boots_under_tcg(image):
    _out, result = image
    boot = bootcheck.boot_selftest(result.kernel, result.rootfs,
                                   memory_mb=128, timeout=400)
    assert boot.passed, boot.console[-6000:]
    assert boot.qemu_version and boot.qemu_version.startswith(
        "QEMU emulator version 7.2"), boot.console[-3000:]
    assert "MemAvailable" in boot.meminfo_kb
    print("\nstubdom self-test under TCG, -m 128: %.1f s to power-off,"
          " guest uptime at marker %.2f s, in use %.1f MiB"
          " (MemTotal-MemAvailable); %s"
          % (boot.seconds, boot.guest_uptime, boot.used_kb / 1024.0,
             boot.qemu_version))
    for line in builder.format_report(result.report):
        print(line)
