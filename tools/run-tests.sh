#!/usr/bin/env bash
# The test command (README, .ci/run): sets the machine up, then runs every
# tier in order.  TIERS="unit functional" runs a subset.
#
#   pep8         flake8
#   unit         fast, no network
#   native       the C module: every accelerator, golden vectors, ASan, fuzz,
#                Xen's verify-stream-v2
#   functional   real Nova in one process + driver + simulator over HTTP
#   slow         stubdom image build and boot under QEMU
#   integration  a multi-process cloud with tempest
#
# A tier is tools/ci/tier-NAME.sh when that script exists, else pytest on
# tests/NAME.
set -uo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh || exit 1
export PATH="$PWD/.venv/bin:$PATH"

TIERS=${TIERS:-"pep8 unit native functional slow integration"}
failed=""
for tier in $TIERS; do
    start=$(date +%s)
    echo "=== tier $tier ==="
    if [ -x "tools/ci/tier-$tier.sh" ]; then
        "tools/ci/tier-$tier.sh"; rc=$?
    elif ls tests/"$tier"/test_*.py >/dev/null 2>&1; then
        python -m pytest -q -p no:cacheprovider "tests/$tier"; rc=$?
    else
        echo "(no tests in tier $tier yet)"; rc=0
    fi
    echo "=== tier $tier: rc=$rc in $(( $(date +%s) - start ))s ==="
    [ "$rc" = 0 ] || failed="$failed $tier"
done
if [ -n "$failed" ]; then
    echo "FAILED tiers:$failed"
    exit 1
fi
echo "all tiers passed: $TIERS"
