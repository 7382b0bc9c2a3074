"""``nova-xen-stubdom build-stubdom``: build the stub domain kernel + rootfs."""

from __future__ import annotations

import argparse

from nova_xen_stubdom.stubdom import builder


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
    args = parser.parse_args(argv)
    return builder.main_build(args.output, args.cache_dir)
