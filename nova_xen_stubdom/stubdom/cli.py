"""``nova-xen-stubdom build-stubdom``: build the stub domain kernel + rootfs.

``--boot-test`` then boots the image's self-test under QEMU (TCG) and prints
the figures; ``--find-min-memory`` also bisects the smallest memory with
which the self-test still passes.
"""

from __future__ import annotations

import argparse
import os
import sys

from nova_xen_stubdom.stubdom import bootcheck
from nova_xen_stubdom.stubdom import builder


def _boot_figures(output: str, memory_mb: int, find_min: bool) -> int:
    kernel = os.path.join(output, builder.KERNEL_NAME)
    rootfs = os.path.join(output, builder.ROOTFS_NAME)
    r = bootcheck.boot_selftest(kernel, rootfs, memory_mb)
    print("[boot-test] -m %d MiB under TCG: %s, %.1f s to power-off"
          " (guest uptime at marker %s s)"
          % (memory_mb, "PASS" if r.passed else "FAIL", r.seconds,
             r.guest_uptime))
    print("[boot-test] %s" % r.qemu_version)
    for k, v in r.meminfo_kb.items():
        print("[boot-test] meminfo %-13s %8d kB" % (k + ":", v))
    if r.used_kb is not None:
        print("[boot-test] in use (MemTotal-MemAvailable): %.1f MiB; MiniOS"
              " stubdom 28 MiB, libxl Linux stubdom default 128 MiB"
              % (r.used_kb / 1024.0))
    if not r.passed:
        sys.stdout.write(r.console[-4000:])
        return 1
    if find_min:
        best, boots = bootcheck.smallest_memory(
            kernel, rootfs, log=lambda m: print("[boot-test]" + m))
        print("[boot-test] smallest memory that passes: %s MiB (%d boots)"
              % (best, len(boots)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nova-xen-stubdom build-stubdom",
        description="Build the Linux stub domain kernel and rootfs from"
                    " Debian bookworm packages (apt-get download; no root"
                    " needed).  Writes %s, %s and %s."
                    % (builder.KERNEL_NAME, builder.ROOTFS_NAME,
                       builder.MANIFEST_NAME))
    parser.add_argument("--output", required=True,
                        help="directory to write the image files into")
    parser.add_argument("--cache-dir", default=None,
                        help="where downloaded and unpacked packages are"
                             " kept (default: %s)"
                             % builder.default_cache_dir())
    parser.add_argument("--pin", metavar="MANIFEST", default=None,
                        help="rebuild with exactly the package versions of"
                             " an earlier build's manifest.json")
    parser.add_argument("--device-model", default="debian",
                        choices=builder.DEVICE_MODEL_SOURCES,
                        help="where QEMU comes from: Debian's"
                             " qemu-system-xen (default), the Xen testbed's"
                             " QEMU 8.0.3 (offline; needs --testbed), or"
                             " auto: Debian, the testbed when apt cannot"
                             " reach the archive")
    parser.add_argument("--testbed", default=None, metavar="DIR",
                        help="the xen-testbed directory (device model,"
                             " xenstore, vchan-socket-proxy, busybox .deb"
                             " and, by default with it, its 6.1.20 kernel)")
    parser.add_argument("--kernel", default=None, metavar="BZIMAGE",
                        help="use this kernel, Xen drivers built in,"
                             " instead of Debian's (no modules are loaded)")
    parser.add_argument("--kernel-config", default=None, metavar="CONFIG",
                        help="its .config, checked for the built-in Xen"
                             " drivers (required with --kernel)")
    parser.add_argument("--boot-test", action="store_true",
                        help="then boot the self-test under"
                             " qemu-system-x86_64 (TCG) and print figures")
    parser.add_argument("--memory", type=int, default=128,
                        help="memory (MiB) for --boot-test (default 128)")
    parser.add_argument("--find-min-memory", action="store_true",
                        help="with --boot-test: bisect the smallest memory"
                             " that passes (a few more boots)")
    args = parser.parse_args(argv)
    rc = builder.main_build(args.output, args.cache_dir, args.pin,
                            device_model=args.device_model,
                            testbed=args.testbed, kernel=args.kernel,
                            kernel_config=args.kernel_config)
    if rc == 0 and args.boot_test:
        rc = _boot_figures(args.output, args.memory, args.find_min_memory)
    return rc
