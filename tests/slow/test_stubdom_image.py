"""Build the Linux stub domain image and boot it.

The image comes from Debian packages through apt-get (cached under
~/.cache/nova-xen-stubdom, or $NXS_STUBDOM_CACHE), so the first run needs
the network.  When apt-get download reports the archive unreachable, the
build takes the device model from the Xen testbed instead
(``--device-model auto``; ../shared/xen-testbed or $XEN_TESTBED); only when
neither source is there is the image reported NOT BUILT (skipped, with
both reasons).  Every test reads which device model the image holds from
its manifest.  The boot runs under qemu-system-x86_64 with TCG (no Xen, no
KVM).

``test_apt_outage_builds_from_the_testbed`` rehearses the outage on every
run: apt's own configuration ($APT_CONFIG) sends its downloads to a
loopback port that refuses connections, so the fallback is decided by
apt-get's failure, as in a real outage, and nothing probes a registry.
"""

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import socket
import stat

import pytest

from nova_xen_stubdom.stubdom import bootcheck
from nova_xen_stubdom.stubdom import builder
from nova_xen_stubdom.stubdom import cpio
from nova_xen_stubdom.stubdom import elfdeps
from nova_xen_stubdom.stubdom import offline
from nova_xen_stubdom.stubdom import packages
from tests.realxen import testbed as testbed_mod

CACHE = os.environ.get("NXS_STUBDOM_CACHE") or builder.default_cache_dir()
#: QEMU --version of each device model source
QEMU_VERSIONS = {"debian": "QEMU emulator version 7.2",
                 "testbed": "QEMU emulator version 8.0.3"}


def _testbed():
    """(testbed directory, None) when its tarballs are there, else
    (None, why not)."""
    tb = testbed_mod.locate()
    try:
        offline.tarballs(tb)
    except packages.BuildError as exc:
        return None, str(exc)
    return tb, None


def _device_model(manifest: dict) -> str:
    """One line naming the device model the image holds."""
    dm = manifest["device_model"]
    if dm["source"] == "testbed":
        return "testbed %s (sha256 %s...), lacks %s" % (
            dm["device_model"]["tarball"], dm["device_model"]["sha256"][:12],
            ", ".join(dm.get("lacks") or ["nothing"]))
    return "debian %s %s" % (dm["package"], dm["version"])


def _build(out, cache, **kwargs):
    lines = []

    def progress(line):
        lines.append(line)
        print("[build-stubdom] %s" % line)
    result = builder.build(str(out), cache, progress=progress, **kwargs)
    with open(result.manifest) as f:
        manifest = json.load(f)
    return result, manifest, lines


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubdom")
    tb, no_tb = _testbed()
    # auto: Debian's packages, the testbed's device model only when
    # apt-get download reports the archive unreachable
    sources = dict(device_model="auto", testbed=tb) if tb else {}
    try:
        result, manifest, _lines = _build(out, CACHE, **sources)
    except packages.RegistryUnreachable as exc:
        # an outage, not a defect: apt-get itself says it could not reach
        # a repository, and there is no testbed to fall back on
        pytest.skip("STUBDOM IMAGE NOT BUILT: %s; no fallback: %s"
                    % (exc, no_tb))
    print("\nstubdom image device model: %s" % _device_model(manifest))
    return out, result, manifest


@pytest.fixture(scope="module")
def entries(image):
    _out, result, _manifest = image
    return _entries(result)


def _entries(result):
    with open(result.rootfs, "rb") as f:
        return {name: (mode, data) for name, mode, data in
                cpio.read_newc(gzip.decompress(f.read()))}


def test_outputs_have_the_names_the_driver_expects(image):
    out, result, _manifest = image
    assert sorted(os.listdir(out)) == sorted(
        [builder.KERNEL_NAME, builder.ROOTFS_NAME, builder.MANIFEST_NAME])
    assert os.path.basename(result.kernel) == builder.KERNEL_NAME


def test_manifest_names_the_device_model(image, entries):
    _out, _result, manifest = image
    dm = manifest["device_model"]
    if dm["source"] == "debian":
        assert dm["package"] == "qemu-system-xen"
        assert manifest["packages"]["qemu-system-xen"] == dm["version"]
        assert "xen-pci-passthrough" in dm["devices"]
    else:
        assert dm["source"] == "testbed", dm
        assert dm["device_model"]["sha256"]
        assert dm["lacks"] == list(offline.TESTBED_LACKS)
    # the image says the same: its release file and its self-test's list
    release = entries["etc/stubdom/release"][1].decode()
    assert "device_model=%s " % dm["source"] in release, release
    assert entries["etc/stubdom/devices"][1].decode().split() == \
        dm["devices"]


def test_rebuild_pinned_to_the_manifest_gives_the_same_bytes(image,
                                                             tmp_path):
    out, result, manifest = image
    if manifest["device_model"]["source"] == "testbed":
        # the testbed's files are pinned by their sha256 already
        again = dict(device_model="testbed",
                     testbed=manifest["device_model"]["testbed"])
    else:
        again = dict(pin=result.manifest)
    builder.build(str(tmp_path), CACHE, progress=lambda m: None, **again)
    for name in (builder.KERNEL_NAME, builder.ROOTFS_NAME,
                 builder.MANIFEST_NAME):
        with open(os.path.join(out, name), "rb") as a, \
                open(tmp_path / name, "rb") as b:
            assert a.read() == b.read(), name


def test_manifest_lists_every_file_with_its_sha256(image, entries):
    _out, result, manifest = image
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
    pkgs = manifest["packages"]
    if manifest["device_model"]["source"] == "debian":
        assert pkgs["qemu-system-xen"]
        assert any(p.startswith("libxen") for p in pkgs)
    else:
        # QEMU, xenstore and libxen* come from the testbed's tarballs
        assert "xen-testbed:" + offline.DM_TARBALL.split("/")[-1] in pkgs
        assert "xen-testbed:" + offline.TOOLS_TARBALL.split("/")[-1] in pkgs
    assert pkgs["busybox-static"]
    with open(result.rootfs, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == \
            manifest["rootfs"]["sha256"]


def _programs(entries):
    """The image's programs, a link (Debian's vchan-socket-proxy) taken
    to the file it names inside the image."""
    out = []
    for path in builder.BINARIES + (builder.VCHAN_PROXY,):
        mode, data = entries[path.lstrip("/")]
        out.append(data.decode() if stat.S_ISLNK(mode) else path)
    return out


def test_rootfs_is_minimal_and_self_contained(image, entries, tmp_path):
    _out, result, manifest = image
    names = set(entries)
    assert "init" in names and "usr/libexec/xen-qemu-system-i386" in names
    assert not [n for n in names if n.startswith(("usr/share/doc",
                                                  "usr/share/man",
                                                  "usr/include"))]
    # Firmware: exactly the ROMs of the devices we configure.
    roms = {n for n in names if n.endswith((".rom", ".bin"))
            and stat.S_ISREG(entries[n][0])}
    firmware = builder.FIRMWARE if manifest["device_model"]["source"] == \
        "debian" else offline.TESTBED_FIRMWARE
    assert roms == {p.lstrip("/") for p in firmware}
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
    # Every shared library shipped is needed by something we run.
    needed = elfdeps.closure(tree, _programs(entries))
    libs = {"/" + n for n in names if ".so" in n and "/modules/" not in n}
    assert libs <= needed, libs - needed
    r = result.report
    assert r["rootfs"]["unpacked_size"] < r["naive"]["size"]


def _boot(result, manifest):
    boot = bootcheck.boot_selftest(result.kernel, result.rootfs,
                                   memory_mb=128, timeout=400)
    assert boot.passed, boot.console[-6000:]
    want = QEMU_VERSIONS[manifest["device_model"]["source"]]
    assert boot.qemu_version and boot.qemu_version.startswith(want), \
        boot.console[-3000:]
    assert "MemAvailable" in boot.meminfo_kb
    print("\nstubdom self-test under TCG, -m 128, device model %s: %.1f s"
          " to power-off, guest uptime at marker %.2f s, in use %.1f MiB"
          " (MemTotal-MemAvailable); %s"
          % (_device_model(manifest), boot.seconds, boot.guest_uptime,
             boot.used_kb / 1024.0, boot.qemu_version))
    for line in builder.format_report(result.report):
        print(line)


def test_selftest_boots_under_tcg(image):
    _out, result, manifest = image
    _boot(result, manifest)


@contextlib.contextmanager
def _apt_outage(tmp_path):
    """apt as in an outage: its downloads go through a proxy on a loopback
    port that refuses connections (bound by us, never listening, so no
    other process can answer on it).  $APT_CONFIG is read first and names
    a copy of /etc/apt/apt.conf.d with one more file, read last, so the
    machine's own settings stay and ours win."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    parts = tmp_path / "apt.conf.d"
    src = "/etc/apt/apt.conf.d"
    if os.path.isdir(src):
        shutil.copytree(src, parts)
    else:
        parts.mkdir()
    proxy = "http://127.0.0.1:%d/" % port
    (parts / "zz-nxs-outage").write_text(
        'Acquire::http::Proxy "%s";\nAcquire::https::Proxy "%s";\n'
        'Acquire::Retries "0";\n' % (proxy, proxy))
    conf = tmp_path / "apt.conf"
    conf.write_text('Dir::Etc::parts "%s";\n' % parts)
    old = os.environ.get("APT_CONFIG")
    os.environ["APT_CONFIG"] = str(conf)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("APT_CONFIG", None)
        else:
            os.environ["APT_CONFIG"] = old
        sock.close()


def test_apt_outage_builds_from_the_testbed(tmp_path):
    """apt-get download fails as in an outage: ``auto`` builds and boots
    the testbed's device model, and the manifest says so."""
    tb, no_tb = _testbed()
    if tb is None:
        pytest.skip("OUTAGE FALLBACK NOT RUN: no testbed to fall back on"
                    " (%s)" % no_tb)
    cache = tmp_path / "cache"
    cache.mkdir()
    # no .deb cached, so apt-get must download; the unpacked trees are
    # shared with the other builds (keyed by the .deb's file name, or by
    # the tarball's sha256), so the testbed's are unpacked once per machine
    for sub in ("unpacked", "testbed"):
        os.makedirs(os.path.join(CACHE, sub), exist_ok=True)
        os.symlink(os.path.join(CACHE, sub), cache / sub)
    with _apt_outage(tmp_path):
        result, manifest, lines = _build(tmp_path / "out", str(cache),
                                         device_model="auto", testbed=tb)
    assert manifest["device_model"]["source"] == "testbed", (
        "the forced outage did not reach apt-get download: %s" % lines)
    said = [m for m in lines if "did not answer" in m]
    assert said and "apt-get could not reach" in said[0], lines
    print("\nforced apt outage: %s" % said[0][:300])
    _boot(result, manifest)
