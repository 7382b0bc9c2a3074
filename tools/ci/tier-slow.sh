#!/usr/bin/env bash
# Slow tier: build the Linux stub domain image from Debian packages (apt-get
# download; cached in ~/.cache/nova-xen-stubdom, works from scratch) and boot
# its self-test under qemu-system-x86_64 with TCG.  About 2-4 minutes on two
# cores (most of it two builds and one emulated boot).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
exec timeout 900 python -m pytest -q -s -rs -p no:cacheprovider tests/slow
