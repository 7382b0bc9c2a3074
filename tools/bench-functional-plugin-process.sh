#!/usr/bin/env bash
# The functional tier's price for running host.call_plugin as XAPI does (a
# plugin process per call, the dom0 daemon a process of its own per
# simulated host): each group
# of functional tests runs in process (NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=0)
# and then through plugin processes (the tier's default), one right after
# the other so both see the same machine, and the ratio is printed.
#
#   tools/bench-functional-plugin-process.sh [PYTEST_PATH ...]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [ $# -eq 0 ]; then
    set -- tests/functional/driver/test_lifecycle.py \
        tests/functional/migration/test_live_migration.py::TestLiveMigration::test_live_migrate_moves_memory_and_device_state \
        tests/functional/pci/test_pci_passthrough.py::TestPciBoot
fi
rc=0
for group in "$@"; do
    declare -A took=()
    for mode in 0 1; do
        start=$(date +%s.%N)
        NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=$mode ./.venv/bin/python -m pytest \
            -q -p no:cacheprovider "$group" > /dev/null 2>&1 || rc=1
        took[$mode]=$(echo "$(date +%s.%N) - $start" | bc)
    done
    printf '%s: in process %.0f s, plugin processes %.0f s, ratio %.2f (load %s)\n' \
        "$group" "${took[0]}" "${took[1]}" \
        "$(echo "${took[1]} / ${took[0]}" | bc -l)" \
        "$(cut -d' ' -f1 /proc/loadavg)"
done
exit $rc
