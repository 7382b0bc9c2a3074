"""The stub domain's init (busybox sh), run function by function on the host.

The init is sourced with STUBDOM_INIT_LIB=1 under busybox sh, with busybox's
own applets first on PATH (the tools the image has), a directory-backed fake
xenstore, and a fake QEMU that speaks QMP on the init's pipe chardev.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nova_xen_stubdom.stubdom import builder
from nova_xen_stubdom.stubdom import channel
from nova_xen_stubdom.dom0 import statedisk

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None,
                                reason="busybox-static not installed")
INIT = builder.INIT_SCRIPT
APPLETS = ("od sha256sum head dd wc cut sed tr grep awk cat sleep sync mkfifo"
           " rm kill printf mkdir echo uname readlink").split()
ESC = "\x1b"


@pytest.fixture
def env(tmp_path):
    bb = tmp_path / "bb"
    bb.mkdir()
    for a in APPLETS:
        os.symlink(BUSYBOX, bb / a)
    xs = tmp_path / "xs"
    xs.mkdir()
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    tools = {
        # Xen's client escapes non-printable bytes (ESC, dm-argv's
        # separator, included) unless asked for the raw value with -R
        "xenstore-read": r'raw=; [ "$1" = -R ] && { raw=1; shift; };'
                         r' [ -f "$XS/$1" ] || exit 1;'
                         r' if [ -n "$raw" ]; then cat "$XS/$1";'
                         r' else sed "s/$(printf "")/\\033/g" "$XS/$1";'
                         r' fi',
        "xenstore-write": 'mkdir -p "$(dirname "$XS/$1")";'
                          ' printf %s "$2" >"$XS/$1"',
        "xenstore-exists": '[ -f "$XS/$1" ]',
    }
    for name, body in tools.items():
        p = fakebin / name
        p.write_text("#!%s sh\n%s\n" % (BUSYBOX, body))
        p.chmod(0o755)
    for d in ("run", "dev", "conf"):
        (tmp_path / d).mkdir()
    e = dict(os.environ,
             PATH="%s:%s:%s" % (bb, fakebin, os.environ["PATH"]),
             XS=str(xs), STUBDOM_INIT_LIB="1",
             STUBDOM_LOG=str(tmp_path / "console.log"),
             STUBDOM_RUN=str(tmp_path / "run"),
             STUBDOM_DEV=str(tmp_path / "dev"),
             STUBDOM_CONF=str(tmp_path / "conf"),
             STUBDOM_CMDLINE=str(tmp_path / "cmdline"))
    return tmp_path, e


def sh(env, script, check=True, **kw):
    res = subprocess.run([BUSYBOX, "sh", "-c", '. "%s"\n%s' % (INIT, script)],
                         env=env, capture_output=True, text=True, timeout=60,
                         **kw)
    if check and res.returncode != 0:
        raise AssertionError("rc=%d\nstdout:%s\nstderr:%s"
                             % (res.returncode, res.stdout, res.stderr))
    return res


def test_syntax_under_busybox():
    subprocess.run([BUSYBOX, "sh", "-n", INIT], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed")
def test_shellcheck_clean():
    res = subprocess.run(["shellcheck", "-s", "dash", INIT],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_cmdline_value(env):
    tmp, e = env
    (tmp / "cmdline").write_text("console=hvc0 stubdom.selftest=1 quiet\n")
    out = sh(e, "cmdline_value stubdom.selftest; cmdline_value console;"
                " cmdline_value nope || echo absent").stdout
    assert out.split() == ["1", "hvc0", "absent"]


def test_dm_args_splits_on_esc_and_drops_program_name(env):
    _tmp, e = env
    argv = ESC.join(["qemu-system-i386", "-xen-domid", "7", "-name",
                     "guest with spaces", "-machine", "xenfv", "-vnc",
                     "unix:/run/qemu-vnc.sock"])
    e["ARGV"] = argv
    out = sh(e, 'dm_args "$ARGV"').stdout
    assert out.splitlines() == ["-xen-domid", "7", "-name",
                                "guest with spaces", "-machine", "xenfv",
                                "-vnc", "unix:/run/qemu-vnc.sock"]


def test_dm_args_refuse_a_tcp_vnc_listener(env):
    _tmp, e = env
    e["ARGV"] = ESC.join(["-xen-domid", "7", "-vnc", "0.0.0.0:0,to=99"])
    res = sh(e, 'dm_args "$ARGV"', check=False)
    assert res.returncode != 0
    assert "only unix: is allowed" in res.stderr


def test_vnc_bridge_without_the_proxy_binary_logs_and_goes_on(env):
    tmp, e = env
    if any(os.path.exists(os.path.join(d, "vchan-socket-proxy"))
           for d in e["PATH"].split(":")):
        pytest.skip("this machine has a vchan-socket-proxy on PATH")
    res = sh(e, 'domid=3 target=4; start_vnc_bridge -vnc '
                'unix:/run/qemu-vnc.sock && echo ok', check=False)
    assert res.stdout.strip().endswith("ok")
    assert "VNC stays inside the stub domain" in (
        tmp / "console.log").read_text()


def test_dm_args_restore_placeholder(env):
    _tmp, e = env
    e["ARGV"] = ESC.join(["-xen-domid", "7", "-incoming",
                          "$STUBDOM_RESTORE_INCOMING_ARG"])
    out = sh(e, 'dm_args "$ARGV" "exec:cat /run/s"').stdout
    assert out.splitlines() == ["-xen-domid", "7", "-incoming",
                                "exec:cat /run/s"]
    res = sh(e, 'dm_args "$ARGV"', check=False)
    assert res.returncode != 0
    assert "no state disk" in res.stderr


@pytest.mark.parametrize("length", [0, 5, 511, 512, 513, 70000])
def test_state_disk_written_by_init_reads_in_python(env, length):
    tmp, e = env
    state = os.urandom(length)
    (tmp / "state").write_bytes(state)
    out = sh(e, 'statedisk_write "%s" "%s"' % (tmp / "state", tmp / "disk"))
    assert out.stdout.split() == [str(length),
                                  hashlib.sha256(state).hexdigest()]
    image = (tmp / "disk").read_bytes()
    assert image == statedisk.build_image(state)
    assert statedisk.unpack_image(image) == state


@pytest.mark.parametrize("length", [0, 1, 512, 65537])
def test_state_disk_written_in_python_reads_in_init(env, length):
    tmp, e = env
    state = os.urandom(length)
    statedisk.write_state_file(tmp / "disk", state)
    sh(e, 'statedisk_read "%s" "%s"' % (tmp / "disk", tmp / "out"))
    assert (tmp / "out").read_bytes() == state


@pytest.mark.parametrize("offset,value,message", [
    (0, b"X", "bad magic"),
    (8, b"\x02", "version 2"),
    (16, b"\xff\xff", "truncated"),
    (600, b"\x00\x01", "sha256 mismatch"),
])
def test_init_rejects_a_bad_state_disk(env, offset, value, message):
    tmp, e = env
    image = bytearray(statedisk.build_image(bytes(range(256)) * 3))
    image[offset:offset + len(value)] = value
    (tmp / "disk").write_bytes(bytes(image))
    res = sh(e, 'statedisk_read "%s" "%s"' % (tmp / "disk", tmp / "out"),
             check=False)
    assert res.returncode != 0
    assert message in (tmp / "console.log").read_text()


def test_save_command_with_a_fake_monitor(env):
    tmp, e = env
    (tmp / "dev" / "xvdb").write_bytes(b"")
    script = textwrap.dedent('''
        qmp() {
            echo "$1" >>"$STUBDOM_RUN/qmp.log"
            case "$1" in
                *xen-save-devices-state*)
                    printf 'QEVM-device-state' >"$STUBDOM_RUN/dm-save.state";;
            esac
            echo '{"return": {}}'
        }
        handle_command "4 save xvdb"
        handle_command "5 cont"
        handle_command "6 frobnicate"
    ''')
    out = sh(e, script).stdout.splitlines()
    state = b"QEVM-device-state"
    digest = hashlib.sha256(state).hexdigest()
    assert out[0] == "4 ok %d %s" % (len(state), digest)
    assert out[1] == "5 ok"
    assert out[2] == "6 error unknown command frobnicate"
    sent = (tmp / "run" / "qmp.log").read_text().splitlines()
    assert sent[0] == '{"execute":"stop"}'
    assert json.loads(sent[1])["arguments"] == {
        "filename": str(tmp / "run" / "dm-save.state"), "live": False}
    assert statedisk.read_state_file(tmp / "dev" / "xvdb") == state
    assert not (tmp / "run" / "dm-save.state").exists()


def test_save_command_reports_monitor_errors(env):
    tmp, e = env
    (tmp / "dev" / "xvdb").write_bytes(b"")
    out = sh(e, 'qmp() { echo \'{"error": {}}\'; return 1; }\n'
                'handle_command "9 save xvdb"').stdout
    assert out.strip() == "9 error QMP stop failed"


def _selftest_conf(tmp, ldso_body, qemu_version_body,
                   devices=("e1000", "VGA")):
    conf = tmp / "conf"
    (conf / "binaries").write_text("/usr/libexec/fake-qemu\n")
    (tmp / "mod.ko").write_bytes(b"")
    (conf / "modules").write_text("%s\n" % (tmp / "mod.ko"))
    (tmp / "roms").mkdir()
    (tmp / "roms" / "efi-e1000.rom").write_bytes(b"rom")
    (conf / "firmware").write_text("%s\n" % (tmp / "roms" / "efi-e1000.rom"))
    (conf / "devices").write_text("e1000\nVGA\nahci\n")
    qemu_body = textwrap.dedent('''
        case "$1" in
            -L) echo "%s/bin/../roms"; echo "/nonexistent/share/qemu" ;;
            -device) %s ;;
            *) %s ;;
        esac
    ''')
    alias = 'echo \'name "ich9-ahci", bus PCI, alias "ahci"\''
    device_help = "; ".join(['echo \'name "%s", bus PCI\'' % d
                             for d in devices] + [alias])
    qemu_body = qemu_body % (tmp, device_help, qemu_version_body)
    for name, body in (("ldso", ldso_body), ("qemu", qemu_body)):
        p = tmp / name
        p.write_text("#!%s sh\n%s\n" % (BUSYBOX, body))
        p.chmod(0o755)
    (tmp / "bin").mkdir(exist_ok=True)


def test_selftest_pass_and_figures(env):
    tmp, e = env
    _selftest_conf(tmp, 'echo "libc.so.6 => /lib/libc.so.6 (0x1)"',
                   'echo "QEMU emulator version 7.2.22 (Debian)"')
    e.update(STUBDOM_LDSO=str(tmp / "ldso"), STUBDOM_QEMU=str(tmp / "qemu"))
    out = sh(e, "selftest").stdout
    assert "NOVA-XEN-STUBDOM-SELFTEST: qemu: QEMU emulator version 7.2.22" \
        in out
    assert "NOVA-XEN-STUBDOM-SELFTEST: meminfo: MemTotal:" in out
    assert "NOVA-XEN-STUBDOM-SELFTEST: 3 device models present" in out
    assert out.rstrip().endswith("NOVA-XEN-STUBDOM-SELFTEST: PASS"), out


def test_selftest_fails_on_a_missing_library_and_a_missing_module(env):
    tmp, e = env
    _selftest_conf(tmp, 'echo "libspice-server.so.1 => not found"',
                   'echo "QEMU emulator version 7.2.22"')
    (tmp / "mod.ko").unlink()
    e.update(STUBDOM_LDSO=str(tmp / "ldso"), STUBDOM_QEMU=str(tmp / "qemu"))
    out = sh(e, "selftest").stdout
    assert "libs MISSING for /usr/libexec/fake-qemu" in out
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("NOVA-XEN-STUBDOM-SELFTEST: FAIL:")
    assert "libs:/usr/libexec/fake-qemu" in last and "module:" in last


def test_selftest_fails_on_missing_device_model_and_rom_off_path(env):
    tmp, e = env
    _selftest_conf(tmp, 'echo "libc.so.6 => /lib/libc.so.6 (0x1)"',
                   'echo "QEMU emulator version 7.2.22"', devices=("VGA",))
    (tmp / "other").mkdir()
    (tmp / "other" / "x.rom").write_bytes(b"")
    with open(tmp / "conf" / "firmware", "a") as f:
        f.write("%s\n%s\n" % (tmp / "other" / "x.rom", tmp / "gone.rom"))
    e.update(STUBDOM_LDSO=str(tmp / "ldso"), STUBDOM_QEMU=str(tmp / "qemu"))
    last = sh(e, "selftest").stdout.rstrip().splitlines()[-1]
    assert last.startswith("NOVA-XEN-STUBDOM-SELFTEST: FAIL:")
    assert "device:e1000" in last
    assert "rom-path:%s" % (tmp / "other" / "x.rom") in last
    assert "rom:%s" % (tmp / "gone.rom") in last
    assert "efi-e1000" not in last


FAKE_QEMU = '''
import json, os, sys
args = sys.argv[1:]
json.dump(args, open(os.environ["FAKE_QEMU_ARGV"], "w"))
path = [a for a in args if a.startswith("pipe,id=nxsqmp,path=")][0]
path = path.split("path=", 1)[1]
inp = open(path + ".in", "r")
out = open(path + ".out", "w")
out.write('{"QMP": {"version": {}}}\\n'); out.flush()
for line in inp:
    cmd = json.loads(line)
    if cmd["execute"] == "xen-save-devices-state":
        with open(cmd["arguments"]["filename"], "wb") as f:
            f.write(b"saved-by-fake-qemu" * 100)
    out.write('{"return": {}}\\n'); out.flush()
    if cmd["execute"] == "cont":
        sys.exit(0)
'''


class DirBackend:
    """xs_* of a HypervisorBackend over the fake xenstore directory that
    stands for /local/domain/<stub>."""

    def __init__(self, xs, stub):
        self.xs, self.prefix, self.perms = xs, "/local/domain/%d/" % stub, {}

    def _p(self, path):
        assert path.startswith(self.prefix), path
        return self.xs / path[len(self.prefix):]

    def xs_read(self, path):
        p = self._p(path)
        return p.read_text() if p.exists() else None

    def xs_write(self, path, value):
        p = self._p(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value)

    def xs_set_perms(self, path, perms):
        self.perms[path] = perms


def test_nics_bridge_qemu_taps_to_netfronts(env):
    tmp, e = env
    sysnet = tmp / "sysnet"
    (sysnet / "eth0").mkdir(parents=True)
    (sysnet / "eth1").mkdir()
    (sysnet / "lo").mkdir()
    calls = tmp / "calls"
    # Shell functions: busybox sh runs its own ip/brctl applets before PATH.
    fakes = ('ip() { echo "ip $*" >>"%s"; }\n'
             'brctl() { echo "brctl $*" >>"%s"; }\n' % (calls, calls))
    e["STUBDOM_SYSNET"] = str(sysnet)
    sh(e, fakes + "prepare_nics")
    assert calls.read_text().splitlines() == [
        "ip link set eth0 down", "ip link set eth0 name nf0",
        "brctl addbr br0", "brctl addif br0 nf0", "ip link set nf0 up",
        "ip link set br0 up",
        "ip link set eth1 down", "ip link set eth1 name nf1",
        "brctl addbr br1", "brctl addif br1 nf1", "ip link set nf1 up",
        "ip link set br1 up"]
    calls.unlink()
    # After QEMU started: its tap eth0 exists, eth1's does not.
    for d in ("eth1",):
        (sysnet / d).rmdir()
    (sysnet / "br0").mkdir()
    (sysnet / "br1").mkdir()
    sh(e, fakes + "attach_taps")
    assert calls.read_text().splitlines() == [
        "brctl addif br0 eth0", "ip link set eth0 up"]
    log = (tmp / "console.log").read_text()
    assert "no QEMU tap eth1 for bridge br1" in log
    assert "NIC 0: QEMU tap eth0 bridged to netfront nf0 (br0)" in log


def _wait(pred, what, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def test_run_stubdom_end_to_end_restore_running_save(env):
    tmp, e = env
    xs = tmp / "xs"
    (xs / "domid").write_text("12")
    (xs / "target").write_text("11")
    (xs / "dm-argv").write_text(ESC.join(
        ["qemu", "-xen-domid", "11", "-machine", "xenfv", "-incoming",
         "$STUBDOM_RESTORE_INCOMING_ARG"]))
    (xs / "nova-xen-stubdom").mkdir()
    (xs / "nova-xen-stubdom" / "restore-disk").write_text("xvdc")
    restored = b"state-from-source-host" * 50
    statedisk.write_state_file(tmp / "dev" / "xvdc", restored)
    (tmp / "dev" / "xvdd").write_bytes(b"")
    qemu = tmp / "fake-qemu"
    qemu.write_text("#!%s\n%s" % (sys.executable, FAKE_QEMU))
    qemu.chmod(0o755)
    e.update(STUBDOM_QEMU=str(qemu), FAKE_QEMU_ARGV=str(tmp / "argv.json"))
    proc = subprocess.Popen(
        [BUSYBOX, "sh", "-c", '. "%s"\nload_modules() { :; }\nrun_stubdom'
         % INIT], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        state = xs / "device-model" / "11" / "state"
        _wait(lambda: state.exists() and state.read_text() == "running",
              "state=running")
        argv = json.loads((tmp / "argv.json").read_text())
        run = tmp / "run"
        assert argv[:6] == ["-xen-domid", "11", "-machine", "xenfv",
                            "-incoming", "exec:cat %s/dm-restore.state"
                            % run]
        assert (run / "dm-restore.state").read_bytes() == restored
        # dom0's side (channel) drives the real init.
        backend = DirBackend(xs, 12)
        saved = b"saved-by-fake-qemu" * 100
        res = channel.request_save(backend, 12, "xvdd", timeout=30)
        assert res == channel.SaveResult(len(saved),
                                         hashlib.sha256(saved).hexdigest())
        assert statedisk.read_state_file(tmp / "dev" / "xvdd") == saved
        assert backend.perms[channel.node(12, "result")] == ["n12"]
        channel.request_cont(backend, 12, timeout=30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp / "console.log").read_text()
    assert "QEMU" in log and "running for guest 11" in log
    assert "QEMU exited with status 0" in log


def test_run_stubdom_waits_for_dom0_to_link_its_guest(env):
    """XAPI starts the stub VM before the guest: no target or dm-argv yet;
    the init waits for them instead of giving up (it did, until the
    realxen tier ran it on Xen)."""
    tmp, e = env
    xs = tmp / "xs"
    (xs / "domid").write_text("12")
    qemu = tmp / "fake-qemu"
    qemu.write_text("#!%s\n%s" % (sys.executable, FAKE_QEMU))
    qemu.chmod(0o755)
    e.update(STUBDOM_QEMU=str(qemu), FAKE_QEMU_ARGV=str(tmp / "argv.json"),
             STUBDOM_LINK_POLL="0.05")
    proc = subprocess.Popen(
        [BUSYBOX, "sh", "-c", '. "%s"\nload_modules() { :; }\nrun_stubdom'
         % INIT], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        log = tmp / "console.log"
        _wait(lambda: log.exists() and "waiting for dom0" in log.read_text(),
              "the init to wait")
        assert proc.poll() is None
        # dom0's order (stubdom_link.attach_target): target, then dm-argv
        (xs / "target").write_text("11")
        (xs / "dm-argv").write_text(ESC.join(["-xen-domid", "11"]))
        state = xs / "device-model" / "11" / "state"
        _wait(lambda: state.exists() and state.read_text() == "running",
              "state=running")
        assert json.loads((tmp / "argv.json").read_text())[:2] == [
            "-xen-domid", "11"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)     # the init and its QEMU
        proc.wait()


def test_run_stubdom_refuses_a_corrupt_restore_disk(env):
    tmp, e = env
    xs = tmp / "xs"
    (xs / "domid").write_text("12")
    (xs / "target").write_text("11")
    (xs / "dm-argv").write_text(ESC.join(["-incoming",
                                          "$STUBDOM_RESTORE_INCOMING_ARG"]))
    (xs / "nova-xen-stubdom").mkdir()
    (xs / "nova-xen-stubdom" / "restore-disk").write_text("xvdc")
    image = bytearray(statedisk.build_image(b"x" * 1000))
    image[700] ^= 1
    (tmp / "dev" / "xvdc").write_bytes(bytes(image))
    e["STUBDOM_QEMU"] = "/nonexistent/qemu"
    res = sh(e, "load_modules() { :; }\nrun_stubdom", check=False)
    assert res.returncode != 0
    assert (xs / "device-model" / "11" / "state").read_text() == "error"
    assert "sha256 mismatch" in (tmp / "console.log").read_text()


def test_every_command_the_init_runs_is_a_busybox_applet_or_shipped():
    """The image has busybox + xenstore-* + QEMU only: any other command
    name in the init would fail on the stub domain."""
    import re
    applets = set(subprocess.run([BUSYBOX, "--list"], capture_output=True,
                                 text=True, check=True).stdout.split())
    with open(INIT) as f:
        text = f.read()
    used = {"od", "sha256sum", "head", "dd", "wc", "cut", "sed", "tr", "grep",
            "awk", "mkfifo", "readlink", "brctl", "ip", "insmod", "mount",
            "poweroff", "sync", "kill", "sleep", "uname", "cat", "mkdir",
            "rm", "sh"}
    for cmd in used:
        assert re.search(r"\b%s\b" % cmd, text), cmd
    assert used <= applets, used - applets
    shipped = {"xenstore-read", "xenstore-write", "xenstore-rm"}
    assert shipped <= {"xenstore-" + t.split("-", 1)[1]
                       for t in builder.XENSTORE_TOOLS}


@pytest.mark.parametrize("value", [0, 1, 255, 256, 65535, 2**31 + 5,
                                   2**33 + 1, 2**40 - 1])
def test_little_endian_helpers_handle_lengths_beyond_32_bits(env, value):
    import struct
    tmp, e = env
    out = sh(e, 'printf "$(le_bytes %d 8)" >"%s"; le_value "%s" 0 8'
             % (value, tmp / "le", tmp / "le")).stdout.strip()
    assert (tmp / "le").read_bytes() == struct.pack("<Q", value)
    assert int(out) == value


#: a fake QEMU for the daemon's protocol: keeps the state it was started
#: with (-incoming exec:cat FILE) and logs every command
FAKE_QEMU_DM = '''
import json, os, shutil, sys
args = sys.argv[1:]
path = [a for a in args if a.startswith("pipe,id=nxsqmp,path=")][0]
path = path.split("path=", 1)[1]
inp = open(path + ".in", "r")
out = open(path + ".out", "w")
out.write('{"QMP": {"version": {}}}\\n'); out.flush()
log = open(os.environ["FAKE_QEMU_LOG"], "a")
if "-incoming" in args:
    uri = args[args.index("-incoming") + 1]
    assert uri.startswith("exec:cat "), uri
    shutil.copy(uri[len("exec:cat "):], os.environ["FAKE_QEMU_LOADED"])
for line in inp:
    cmd = json.loads(line)
    log.write(cmd["execute"] + "\\n"); log.flush()
    if cmd["execute"] == "xen-save-devices-state":
        with open(cmd["arguments"]["filename"], "wb") as f:
            f.write(b"saved-by-fake-qemu" * 100)
    if cmd["execute"] == "query-status":
        out.write('{"return": {"status": "running", "running": true}}\\n')
    else:
        out.write('{"return": {}}\\n')
    out.flush()
    if cmd["execute"] == "quit":
        sys.exit(0)
'''


def test_run_stubdom_serves_the_daemons_device_state_protocol(env):
    """dom0's daemon (dom0/device_state.py) drives save, continue and
    restore through /local/domain/<stub>/device-model/<guest>/{command,
    state-disk,state,error}; the init answered only its own channel
    (nova-xen-stubdom/command), so a save on real Xen waited out its
    timeout.  A restore restarts QEMU with -incoming (QEMU 8.0.3 aborts in
    xen-load-devices-state on Xen)."""
    tmp, e = env
    xs = tmp / "xs"
    (xs / "domid").write_text("12")
    (xs / "target").write_text("11")
    (xs / "dm-argv").write_text(ESC.join(["-xen-domid", "11"]))
    qemu = tmp / "fake-qemu"
    qemu.write_text("#!%s\n%s" % (sys.executable, FAKE_QEMU_DM))
    qemu.chmod(0o755)
    e.update(STUBDOM_QEMU=str(qemu), FAKE_QEMU_LOG=str(tmp / "qmp.log"),
             FAKE_QEMU_LOADED=str(tmp / "loaded"))
    rm = tmp / "fakebin" / "xenstore-rm"
    rm.write_text('#!%s sh\nrm -f "$XS/$1"\n' % BUSYBOX)
    rm.chmod(0o755)
    proc = subprocess.Popen(
        [BUSYBOX, "sh", "-c", '. "%s"\nload_modules() { :; }\nrun_stubdom'
         % INIT], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    d = xs / "device-model" / "11"

    def command(cmd, want):
        (d / "command").write_text(cmd)
        _wait(lambda: not (d / "command").exists()
              and (d / "state").read_text() == want,
              "%s -> %s" % (cmd, want))
    try:
        _wait(lambda: (d / "state").exists()
              and (d / "state").read_text() == "running", "state=running")
        (tmp / "dev" / "xvdz").write_bytes(b"")
        (d / "state-disk").write_text("xvdz")
        command("save", "saved")
        assert statedisk.read_state_file(tmp / "dev" / "xvdz") == \
            b"saved-by-fake-qemu" * 100
        command("continue", "running")
        state = b"QEVM-state-from-the-image" * 40
        statedisk.write_state_file(tmp / "dev" / "xvdz", state)
        command("restore", "running")
        assert (tmp / "loaded").read_bytes() == state
        # a corrupt disk: error with the reason, QEMU left as it was
        image = bytearray(statedisk.build_image(state))
        image[700] ^= 1
        (tmp / "dev" / "xvdz").write_bytes(bytes(image))
        command("restore", "error")
        assert "sha256 mismatch" in (d / "error").read_text()
        sent = (tmp / "qmp.log").read_text().split()
        assert sent == ["qmp_capabilities", "stop", "xen-save-devices-state",
                        "cont", "qmp_capabilities", "query-status"]
        log = (tmp / "console.log").read_text()
        assert log.count("starting %s" % qemu) == 2
        assert "-incoming exec:cat" in log.splitlines()[-1] or \
            "started with -incoming" in log
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
