import json
import os
import shutil
import struct
import subprocess

import pytest

from nova_xen_stubdom import conf as nxs_conf
from nova_xen_stubdom.dom0 import image_manifest
from nova_xen_stubdom.stubdom import builder
from nova_xen_stubdom.stubdom import cli
from nova_xen_stubdom.stubdom import kernel
from nova_xen_stubdom.stubdom import packages
from nova_xen_stubdom.stubdom.packages import BuildError


def _default(name):
    for group, opts in nxs_conf.list_opts():
        for opt in opts:
            if opt.name == name:
                return opt.default
    raise AssertionError("option %s not found" % name)


def test_driver_defaults_name_the_files_the_builder_writes():
    assert os.path.basename(_default("stubdom_kernel")) == builder.KERNEL_NAME
    assert (os.path.basename(_default("stubdom_ramdisk"))
            == builder.ROOTFS_NAME)


def test_parse_depends_takes_first_alternative_without_versions():
    assert packages._parse_depends(
        "libc6 (>= 2.34), libglib2.0-0 (>= 2.73.2) | libfoo,"
        " python3:any, , zlib1g") == ("libc6", "libglib2.0-0", "python3",
                                      "zlib1g")


def test_deb_file_name_encodes_the_epoch():
    p = packages.Package("qemu-system-xen", "1:7.2+dfsg-7", "amd64")
    assert p.deb_name == "qemu-system-xen_1%3a7.2+dfsg-7_amd64.deb"


def test_missing_tool_is_a_clear_error(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(packages.shutil, "which",
                        lambda t: None if t == "dpkg-deb" else real(t))
    with pytest.raises(BuildError, match="missing tool.*dpkg-deb"):
        packages.require_tools("apt-get", "dpkg-deb")


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="not Debian")
def test_unknown_package_is_a_clear_error():
    with pytest.raises(BuildError, match="not known to apt: "
                                         "no-such-package-nxs"):
        packages.show(["no-such-package-nxs"])


def test_cli_reports_build_errors(monkeypatch, capsys, tmp_path):
    def boom(*a, **kw):
        raise BuildError("package(s) not known to apt: qemu-system-xen")
    monkeypatch.setattr(builder, "build", boom)
    assert cli.main(["--output", str(tmp_path)]) == 1
    assert "error: package(s) not known to apt" in capsys.readouterr().err


def test_package_tree_merges_packages_and_follows_links(tmp_path):
    a = tmp_path / "a" / "usr" / "lib"
    a.mkdir(parents=True)
    (a / "libx.so.1.2").write_bytes(b"x")
    os.symlink("libx.so.1.2", a / "libx.so.1")
    b = tmp_path / "b" / "lib64"
    b.mkdir(parents=True)
    os.symlink("/usr/lib/libx.so.1", b / "abs-link")
    tree = builder.PackageTree()
    tree.add_package("pa", str(tmp_path / "a"))
    tree.add_package("pb", str(tmp_path / "b"))
    from nova_xen_stubdom.stubdom import elfdeps
    assert elfdeps.resolve_links(tree, "/lib64/abs-link") == [
        "/lib64/abs-link", "/usr/lib/libx.so.1", "/usr/lib/libx.so.1.2"]
    assert tree.package_of("/usr/lib/libx.so.1.2") == "pa"
    assert tree.package_of("/lib64/abs-link") == "pb"


def _fake_module(path, depends, workdir):
    """A relocatable ELF with a .modinfo like a kernel module's."""
    src = workdir / "m.c"
    src.write_text("int x;\n")
    obj = workdir / "m.o"
    subprocess.run(["cc", "-c", str(src), "-o", str(obj)], check=True)
    info = workdir / "modinfo"
    info.write_bytes(b"license=GPL\0depends=%s\0vermagic=6.1.0 SMP\0"
                     % depends.encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["objcopy", "--add-section", ".modinfo=%s" % info,
                    str(obj), str(path)], check=True)


@pytest.mark.skipif(shutil.which("cc") is None or
                    shutil.which("objcopy") is None,
                    reason="needs cc and objcopy")
def test_module_closure_orders_dependencies_first(tmp_path):
    root = tmp_path / "k"
    kdir = root / "lib/modules/6.1.0-x/kernel"
    _fake_module(kdir / "net/bridge/bridge.ko", "llc,stp", tmp_path)
    _fake_module(kdir / "net/802/stp.ko", "llc", tmp_path)
    _fake_module(kdir / "net/llc/llc.ko", "", tmp_path)
    _fake_module(kdir / "drivers/xen/xen-evtchn.ko", "", tmp_path)
    order = kernel.module_closure(str(root), "6.1.0-x",
                                  ("xen_evtchn", "bridge"))
    names = [os.path.basename(p) for p in order]
    assert names == ["xen-evtchn.ko", "llc.ko", "stp.ko", "bridge.ko"]
    assert kernel.modinfo(str(kdir / "net/802/stp.ko"))["depends"] == "llc"
    with pytest.raises(BuildError, match="kernel module tun not found"):
        kernel.module_closure(str(root), "6.1.0-x", ("tun",))


def test_bzimage_init_size(tmp_path):
    hdr = bytearray(0x270)
    hdr[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", hdr, 0x206, 0x20f)
    struct.pack_into("<I", hdr, 0x260, 51 << 20)
    (tmp_path / "bz").write_bytes(bytes(hdr))
    assert kernel.bzimage_init_size(str(tmp_path / "bz")) == 51 << 20
    (tmp_path / "nope").write_bytes(b"\0" * 0x300)
    assert kernel.bzimage_init_size(str(tmp_path / "nope")) is None


def test_format_report_compares_with_naive():
    part = {"name": "qemu", "files": 1, "size": 10 << 20,
            "size_before": 11 << 20}
    lines = builder.format_report({
        "kernel": {"release": "6.1", "size": 1 << 20, "init_size": 2 << 20},
        "rootfs": {"unpacked_size": 25 << 20, "cpio_size": 26 << 20,
                   "gzip_size": 9 << 20, "entries": 10},
        "parts": {"qemu": part},
        "naive": {"packages": 3, "files": 100, "size": 100 << 20}})
    assert "keeps 25.0%" in lines[-1]
    assert "qemu" in lines[1] and "10.00 MiB" in lines[1]


def test_pinned_packages_from_a_manifest(tmp_path):
    m = tmp_path / "manifest.json"
    m.write_text(json.dumps({
        "candidate_packages": {
            "qemu-system-xen": {"version": "1:7.2", "arch": "amd64"},
            "seabios": {"version": "1.16", "arch": "all"}},
        "kernel": {"package": "linux-image-6.1.0-56-cloud-amd64",
                   "version": "6.1.192-2", "arch": "amd64",
                   "meta_package": "linux-image-cloud-amd64",
                   "meta_version": "6.1.192-2"}}))
    closure, kpkg, meta = builder.pinned_packages(str(m))
    assert closure["seabios"].deb_name == "seabios_1.16_all.deb"
    assert closure["qemu-system-xen"].deb_name == \
        "qemu-system-xen_1%3a7.2_amd64.deb"
    assert kpkg.name == "linux-image-6.1.0-56-cloud-amd64"
    assert meta.version == "6.1.192-2"


@pytest.mark.parametrize("content", ["{", "{}", '{"candidate_packages": 1}'])
def test_bad_pin_is_a_clear_error(tmp_path, content):
    m = tmp_path / "manifest.json"
    m.write_text(content)
    with pytest.raises(BuildError, match="cannot use .* as a pin"):
        builder.pinned_packages(str(m))
    with pytest.raises(BuildError, match="as a pin"):
        builder.pinned_packages(str(tmp_path / "missing.json"))


def test_download_failure_names_the_likely_cause(monkeypatch, tmp_path):
    def fail(cmd, cwd=None):
        raise BuildError("apt-get download -q failed (rc=100): E: Can't find"
                         " a source to download version '9' of 'seabios'")
    monkeypatch.setattr(packages, "_run", fail)
    with pytest.raises(BuildError, match="seabios.*apt-get update"):
        packages.download([packages.Package("seabios", "9", "all")],
                          str(tmp_path), progress=lambda m: None)


def test_download_uses_the_cache(monkeypatch, tmp_path):
    p = packages.Package("seabios", "1.16", "all")
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / p.deb_name).write_bytes(b"deb")
    monkeypatch.setattr(packages, "_run", lambda *a, **k: 1 / 0)
    msgs = []
    paths = packages.download([p], str(tmp_path), progress=msgs.append)
    assert paths == {"seabios": str(tmp_path / "debs" / p.deb_name)}
    assert "cached" in msgs[0]


def test_download_takes_apt_archives_first(monkeypatch, tmp_path):
    """A .deb of exactly the pinned version that apt already holds (the
    machine installed it) is copied, not downloaded; other versions are
    not taken."""
    p = packages.Package("busybox-static", "1:1.35.0-4", "amd64")
    other = packages.Package("seabios", "1.16", "all")
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / p.deb_name).write_bytes(b"from apt")
    (archives / "seabios_1.15_all.deb").write_bytes(b"wrong version")
    asked = []

    def run(cmd, cwd=None):
        asked.extend(cmd[3:])
        (tmp_path / "cache" / "debs" / other.deb_name).write_bytes(b"dl")
    monkeypatch.setattr(packages, "_run", run)
    paths = packages.download([p, other], str(tmp_path / "cache"),
                              progress=lambda m: None,
                              archives=str(archives))
    assert asked == ["seabios=1.16"]
    with open(paths["busybox-static"], "rb") as f:
        assert f.read() == b"from apt"
    assert "%3a" in p.deb_name


@pytest.mark.parametrize("message,outage", [
    # apt-get download's own words (LC_ALL=C) in an outage...
    ("W: Failed to fetch http://deb.example/pool/x.deb  Temporary failure"
     " resolving 'deb.example'", True),
    ("E: Failed to fetch http://10.0.0.1/x.deb  Could not connect to"
     " 10.0.0.1:80 (10.0.0.1), connection timed out", True),
    ("E: Failed to fetch http://h/x.deb  Unable to connect to h:http:", True),
    # ... and when the repository answered but lacks what was asked
    ("E: Failed to fetch http://h/x.deb  404  Not Found [IP: 1.2.3.4 80]",
     False),
    ("E: Can't select candidate version from package qemu-system-xen",
     False),
    ("E: Unable to locate package no-such-package", False),
])
def test_apt_unreachable_reads_apts_verdict(message, outage):
    assert packages.apt_unreachable(message) is outage


def test_download_tells_an_outage_from_a_missing_package(monkeypatch,
                                                         tmp_path):
    p = packages.Package("qemu-system-xen", "1:7.2", "amd64")

    def failing(words):
        def run(cmd, cwd=None):
            raise packages.BuildError("apt-get download -q failed (rc=100):"
                                      " " + words)
        return run
    monkeypatch.setattr(packages, "_run", failing(
        "E: Failed to fetch http://h/q.deb  Temporary failure resolving"
        " 'h'"))
    with pytest.raises(packages.RegistryUnreachable, match="no cache"):
        packages.download([p], str(tmp_path), progress=lambda m: None,
                          archives=str(tmp_path / "none"))
    monkeypatch.setattr(packages, "_run", failing(
        "E: Failed to fetch http://h/q.deb  404  Not Found"))
    with pytest.raises(packages.BuildError) as err:
        packages.download([p], str(tmp_path), progress=lambda m: None,
                          archives=str(tmp_path / "none"))
    assert not isinstance(err.value, packages.RegistryUnreachable)


# -- offline inputs (the Xen testbed, a given kernel) -------------------------

def _bzimage(tmp_path, version=b"6.1.20-xenprobe (builder@host) #1"):
    """A file with the bzImage header fields kernel_release reads."""
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    ptr = 0x600
    head[0x20e:0x210] = (ptr - 0x200).to_bytes(2, "little")
    head[ptr:ptr + len(version) + 1] = version + b"\0"
    path = tmp_path / "vmlinuz"
    path.write_bytes(bytes(head))
    return str(path)


def test_kernel_release_reads_the_boot_header(tmp_path):
    from nova_xen_stubdom.stubdom import offline
    assert offline.kernel_release(_bzimage(tmp_path)) == "6.1.20-xenprobe"
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(BuildError, match="not a bzImage"):
        offline.kernel_release(str(junk))


def test_builtin_config_names_each_missing_driver(tmp_path):
    from nova_xen_stubdom.stubdom import offline
    cfg = tmp_path / "config"
    lines = ["%s=y" % o for o in offline.BUILTIN_OPTIONS]
    cfg.write_text("\n".join(lines) + "\n")
    assert set(offline.builtin_config(str(cfg))) == set(
        offline.BUILTIN_OPTIONS)
    lines[offline.BUILTIN_OPTIONS.index("CONFIG_XEN_PRIVCMD")] = \
        "CONFIG_XEN_PRIVCMD=m"
    cfg.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BuildError) as exc:
        offline.builtin_config(str(cfg))
    assert "CONFIG_XEN_PRIVCMD=m" in str(exc.value)
    assert "%s=unset" % offline.BUILTIN_OPTIONS[-1] in str(exc.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"device_model": "bogus"}, "one of debian, testbed, auto"),
    ({"device_model": "testbed"}, "needs --testbed"),
    ({"kernel": "/k"}, "go together"),
    ({"device_model": "testbed", "testbed": "/t", "pin": "m.json"},
     "--pin rebuilds a Debian build"),
])
def test_bad_source_options_are_refused_before_any_work(tmp_path, kwargs,
                                                        message):
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=message):
        builder.build(str(out), str(tmp_path / "cache"), **kwargs)
    assert not out.exists()


def test_testbed_without_its_tarballs_is_a_clear_error(tmp_path):
    from nova_xen_stubdom.stubdom import offline
    with pytest.raises(BuildError, match="has no bin/qemu-xen-8.0.3-dm"):
        offline.tarballs(str(tmp_path))


def test_offline_build_from_the_testbed(tmp_path):
    """The whole offline build, when the testbed is on this machine."""
    from tests.realxen import testbed
    tb = testbed.locate()
    if not os.path.isfile(os.path.join(tb, "bin",
                                       "qemu-xen-8.0.3-dm.tar.xz")):
        pytest.skip("no Xen testbed at %s" % tb)
    res = builder.build(str(tmp_path / "out"), str(tmp_path / "cache"),
                        progress=lambda m: None, device_model="testbed",
                        testbed=tb)
    with open(res.manifest) as f:
        m = json.load(f)
    assert m["device_model"]["source"] == "testbed"
    assert m["device_model"]["device_model"]["tarball"] == \
        "qemu-xen-8.0.3-dm.tar.xz"
    # its QEMU was built without Xen PCI pass-through: the manifest says
    # so and the image's self-test does not ask for it
    assert m["device_model"]["lacks"] == ["xen-pci-passthrough"]
    # and the agent's reader (what the driver decides on) finds it there
    got = image_manifest.read_manifest(res.manifest)
    assert got["lacks"] == ["xen-pci-passthrough"] and not got["error"]
    assert got["device_model"] == "testbed"
    assert "xen-pci-passthrough" not in m["device_model"]["devices"]
    assert "e1000" in m["device_model"]["devices"]
    assert m["kernel"]["source"] == "file"
    assert m["kernel"]["release"] == "6.1.20-xenprobe"
    paths = {f["path"]: f for f in m["files"]}
    for p in (builder.QEMU, builder.VCHAN_PROXY, "/usr/bin/xenstore-read",
              "/usr/share/qemu/vgabios-stdvga.bin"):
        assert p in paths, p
    assert paths[builder.QEMU]["package"].startswith("xen-testbed:")
    assert "libglib2.0-0" in m["packages"]      # from the host's dpkg
    release = [f for f in m["files"] if f["path"] == "/etc/stubdom/release"]
    assert release
