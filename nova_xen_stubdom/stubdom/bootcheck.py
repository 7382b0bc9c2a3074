"""Boot the stub domain image's self-test under QEMU (TCG) and read it back.

No Xen and no KVM needed: ``qemu-system-x86_64 -accel tcg`` boots the kernel
and rootfs with ``stubdom.selftest=1``; the init checks that every binary's
libraries resolve, runs the packaged QEMU with ``--version``, prints
/proc/meminfo figures and the marker line, and powers off.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time

from nova_xen_stubdom.stubdom.builder import SELFTEST_CMDLINE

MARKER = "NOVA-XEN-STUBDOM-SELFTEST"
PASS_LINE = MARKER + ": PASS"
QEMU_VERSION_RE = re.compile(MARKER + r": qemu: (QEMU emulator version \S+.*)")


@dataclasses.dataclass
class BootResult:
    memory_mb: int
    passed: bool
    seconds: float          # host wall clock, QEMU start to exit
    qemu_version: str | None
    meminfo_kb: dict[str, int]
    guest_uptime: float | None
    console: str
    returncode: int | None

    @property
    def used_kb(self) -> int | None:
        m = self.meminfo_kb
        if "MemTotal" in m and "MemAvailable" in m:
            return m["MemTotal"] - m["MemAvailable"]
        return None


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise RuntimeError("qemu-system-x86_64 not found (Debian package"
                           " qemu-system-x86; see tools/apt-packages.txt)")
    return path


def parse_console(text: str) -> dict:
    meminfo = {}
    for m in re.finditer(MARKER + r": meminfo: (\w+):\s+(\d+) kB", text):
        meminfo[m.group(1)] = int(m.group(2))
    ver = QEMU_VERSION_RE.search(text)
    up = re.search(MARKER + r": uptime ([\d.]+) s", text)
    return {"passed": PASS_LINE in text.splitlines() or
            any(line.strip().endswith(PASS_LINE)
                for line in text.splitlines()),
            "qemu_version": ver.group(1).strip() if ver else None,
            "meminfo_kb": meminfo,
            "guest_uptime": float(up.group(1)) if up else None}


def boot_selftest(kernel: str, rootfs: str, memory_mb: int = 128,
                  timeout: float = 300.0) -> BootResult:
    """Boot once; return what the console showed (never raises on FAIL)."""
    with tempfile.TemporaryDirectory(prefix="stubdom-boot-") as tmp:
        console = os.path.join(tmp, "console.log")
        cmd = [qemu_binary(), "-accel", "tcg", "-m", str(memory_mb),
               "-smp", "1", "-nographic", "-no-reboot",
               "-monitor", "none", "-serial", "file:" + console,
               "-net", "none",
               "-kernel", kernel, "-initrd", rootfs,
               "-append", SELFTEST_CMDLINE]
        start = time.monotonic()
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, timeout=timeout)
            rc = res.returncode
        except subprocess.TimeoutExpired:
            rc = None
        seconds = time.monotonic() - start
        with open(console, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    parsed = parse_console(text)
    return BootResult(memory_mb=memory_mb, seconds=seconds, console=text,
                      returncode=rc, **parsed)


def smallest_memory(kernel: str, rootfs: str, low: int = 16,
                    high: int = 128, step: int = 4, timeout: float = 120.0,
                    log=print) -> tuple[int | None, list[BootResult]]:
    """Bisect the smallest ``-m`` (MiB, multiple of ``step``) that passes.

    Assumes passing is monotonic in memory.  Returns (smallest passing or
    None when even ``high`` fails, every boot made).
    """
    boots = []

    def ok(mb: int) -> bool:
        r = boot_selftest(kernel, rootfs, mb, timeout)
        boots.append(r)
        log("  -m %4d MiB: %s (%.1f s)" % (mb, "PASS" if r.passed else
                                           "fail", r.seconds))
        return r.passed

    if not ok(high):
        return None, boots
    lo, hi = low // step, high // step  # hi passes; find the smallest
    if ok(lo * step):
        return lo * step, boots
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid * step):
            hi = mid
        else:
            lo = mid
    return hi * step, boots
