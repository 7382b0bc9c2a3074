#!/usr/bin/env bash
# Proof that the tests do not depend on timing: run tiers ROUNDS times in a
# row (default: unit and functional, 10 rounds) while LOAD busy processes
# (default: one per core) compete for every CPU, and stop at the first red
# round.  Prints one line per round and the rounds passed.
#
#   ROUNDS=10 LOAD=2 TIERS="unit functional" ./tools/repeat-under-load.sh
#
# The load is plain busy loops (no package needed), ended on exit whatever
# happens; each round is the README's test command on those tiers.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
LOAD=${LOAD:-$(nproc)}
TIERS=${TIERS:-"unit functional"}
LOG=${LOG_DIR:-build/repeat-under-load}
mkdir -p "$LOG"

pids=()
stop_load() { [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop_load EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$LOAD"); do
    # bounded: a killed runner must not leave a spinning process behind
    timeout 6h python3 -c 'while True: pass' &
    pids+=($!)
done
echo "load: $LOAD busy process(es) on $(nproc) core(s); tiers: $TIERS"

passed=0
for round in $(seq "$ROUNDS"); do
    t0=$SECONDS
    TIERS="$TIERS" ./tools/run-tests.sh > "$LOG/round-$round.log" 2>&1
    rc=$?
    echo "round $round: rc=$rc in $((SECONDS - t0)) s:" \
        "$(tail -1 "$LOG/round-$round.log")" \
        "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if [ "$rc" != 0 ]; then
        grep -E '^(FAILED|ERROR) ' "$LOG/round-$round.log" | head -20
        echo "red at round $round of $ROUNDS (log: $LOG/round-$round.log)"
        exit 1
    fi
    passed=$((passed + 1))
done
echo "$passed of $ROUNDS rounds green in a row under load"
