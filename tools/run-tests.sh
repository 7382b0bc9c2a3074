#!/usr/bin/env bash
# The test command (README, .ci/run): sets the machine up, then runs every
# tier in order.  TIERS="unit functional" runs a subset.
#
#   pep8         flake8
#   unit         fast, no network
#   dom0py36     the dom0 payload on a real Python 3.6 (XCP-ng 8.3's dom0)
#   native       the C module: every accelerator, golden vectors, ASan, fuzz,
#                Xen's verify-stream-v2
#   realxen      real Xen 4.17 under QEMU (TCG), ../shared/xen-testbed: our
#                streams through xl save/restore, a stub-domain device model
#   functional   real Nova in one process + driver + simulator over HTTP
#   slow         stubdom image build and boot under QEMU
#   integration  a multi-process cloud with tempest
#
# A tier is tools/ci/tier-NAME.sh when that script exists, else pytest on
# tests/NAME.  Every pytest run and every other check records what it ran
# under build/test-results/TIER (tests/conftest.py, tools/ci/report.sh); the
# end of the output is one line per tier, every check that did not run and
# why, and "total: N passed, N failed, N skipped" (a check that could not
# run counts as skipped, never as passed).  Exits non-zero when a tier
# failed.
set -uo pipefail
cd "$(dirname "$0")/.."
TIERS=${TIERS:-"pep8 unit dom0py36 native realxen functional slow integration"}
RESULTS=$PWD/build/test-results
rm -rf "$RESULTS" && mkdir -p "$RESULTS"

if ! ./tools/setup.sh; then
    mkdir -p "$RESULTS/setup"
    printf 'failed\ttools/setup.sh\t\n' > "$RESULTS/setup/checks.tsv"
    echo 1 > "$RESULTS/setup/rc"
    python3 tools/ci/summary.py "$RESULTS" setup
    exit 1
fi
export PATH="$PWD/.venv/bin:$PATH"

for tier in $TIERS; do
    start=$(date +%s)
    echo "=== tier $tier ==="
    export NXS_RESULTS_DIR=$RESULTS/$tier
    mkdir -p "$NXS_RESULTS_DIR"
    if [ -x "tools/ci/tier-$tier.sh" ]; then
        "tools/ci/tier-$tier.sh"; rc=$?
    elif ls tests/"$tier"/test_*.py >/dev/null 2>&1; then
        python -m pytest -q -p no:cacheprovider -rs "tests/$tier"; rc=$?
    else
        echo "(no tests in tier $tier)"; rc=0
    fi
    echo "$rc" > "$NXS_RESULTS_DIR/rc"
    echo $(( $(date +%s) - start )) > "$NXS_RESULTS_DIR/seconds"
    echo "=== tier $tier: rc=$rc in $(cat "$NXS_RESULTS_DIR/seconds")s ==="
done
unset NXS_RESULTS_DIR
python tools/ci/summary.py "$RESULTS" "$TIERS"
