import re

import pytest

from nova_xen_stubdom.stubdom import bootcheck
from nova_xen_stubdom.stubdom import builder

CONSOLE = """\
[    5.1] Run /init as init process
NOVA-XEN-STUBDOM-SELFTEST: begin (kernel 6.1.0-56-cloud-amd64)
NOVA-XEN-STUBDOM-SELFTEST: libs ok /usr/bin/xenstore (5 entries)
NOVA-XEN-STUBDOM-SELFTEST: qemu: QEMU emulator version 7.2.22 (Debian 1:7.2)
NOVA-XEN-STUBDOM-SELFTEST: meminfo: MemTotal:          94800 kB
NOVA-XEN-STUBDOM-SELFTEST: meminfo: MemFree:           29944 kB
NOVA-XEN-STUBDOM-SELFTEST: meminfo: MemAvailable:      36200 kB
NOVA-XEN-STUBDOM-SELFTEST: uptime 4.82 s
NOVA-XEN-STUBDOM-SELFTEST: PASS
[    5.7] reboot: Power down
"""


def test_parse_console_pass():
    got = bootcheck.parse_console(CONSOLE)
    assert got["passed"] is True
    assert got["qemu_version"] == "QEMU emulator version 7.2.22 (Debian 1:7.2)"
    assert got["meminfo_kb"] == {"MemTotal": 94800, "MemFree": 29944,
                                 "MemAvailable": 36200}
    assert got["guest_uptime"] == 4.82


@pytest.mark.parametrize("text", [
    CONSOLE.replace("SELFTEST: PASS", "SELFTEST: FAIL: qemu-version"),
    CONSOLE.replace("NOVA-XEN-STUBDOM-SELFTEST: PASS\n", ""),
    "Kernel panic - not syncing: System is deadlocked on memory\n",
])
def test_parse_console_fail(text):
    assert bootcheck.parse_console(text)["passed"] is False


def test_marker_and_cmdline_agree_with_the_init():
    with open(builder.INIT_SCRIPT) as f:
        init = f.read()
    assert "MARKER=%s\n" % bootcheck.MARKER in init
    assert 'echo "$MARKER: PASS"' in init
    assert "stubdom.selftest=1" in builder.SELFTEST_CMDLINE
    for cmdline in (builder.SELFTEST_CMDLINE, builder.KERNEL_CMDLINE):
        assert re.search(r"\brootfstype=ramfs\b", cmdline)


@pytest.mark.parametrize("threshold,expected", [
    (120, 120), (121, 124), (16, 16), (4, 16), (128, 128), (129, None)])
def test_smallest_memory_bisects(monkeypatch, threshold, expected):
    tried = []

    def fake_boot(kernel, rootfs, mb, timeout):
        tried.append(mb)
        return bootcheck.BootResult(mb, mb >= threshold, 1.0, None, {}, None,
                                    "", 0)

    monkeypatch.setattr(bootcheck, "boot_selftest", fake_boot)
    best, boots = bootcheck.smallest_memory("k", "r", low=16, high=128,
                                            step=4, log=lambda m: None)
    assert best == expected
    assert len(boots) == len(tried) <= 7
    assert all(mb % 4 == 0 for mb in tried)
