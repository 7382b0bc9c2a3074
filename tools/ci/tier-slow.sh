#!/usr/bin/env bash
# Slow tier: build the Linux stub domain image from Debian packages (apt-get
# download; cached in ~/.cache/nova-xen-stubdom, works from scratch), or from
# the Xen testbed's device model when apt-get cannot reach the archive
# (--device-model auto), and boot its self-test under qemu-system-x86_64 with
# TCG; then rehearse that outage and build and boot the testbed image.  About
# 2-4 minutes on two cores (most of it three builds and two emulated boots).
# Then the migration benchmark's own tests (tests/bench/test_migration_bench.py,
# about 2 minutes: a small whole run on the simulator over TLS, and the
# encode-cost paths), which no other tier runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
exec timeout 900 python -m pytest -q -s -rs -p no:cacheprovider tests/slow tests/bench/test_migration_bench.py
