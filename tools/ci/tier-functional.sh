#!/usr/bin/env bash
# CI tier "functional": real Nova in one process (API, conductor, scheduler,
# placement, two computes) + XenStubdomDriver + the XAPI simulator over HTTP.
#
# Nova runs nova-compute either on eventlet or on native threads
# (OS_NOVA_DISABLE_EVENTLET_PATCHING=true, Nova 34's default for services);
# the mode is decided once per process, so the tier runs pytest twice:
#   1. every functional test in eventlet mode (the harness default);
#   2. the driver's lifecycle, events/concurrency and validation tests again
#      in threading mode (the demo test already runs the demo that way).
# host.call_plugin runs as XAPI runs it: the plugin a fresh process per
# call, forwarding to each simulated host's dom0 daemon, a process of its
# own (tests/functional/base.py, nova_xen_stubdom/sim/dom0_process.py);
# NOVA_XEN_STUBDOM_SIM_PLUGIN_PROCESS=0 runs the agent in the test process
# instead, for debugging.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
PY=./.venv/bin/python
rc=0
echo "--- functional (eventlet mode)"
env -u OS_NOVA_DISABLE_EVENTLET_PATCHING $PY -m pytest -q -p no:cacheprovider \
    tests/functional || rc=1
echo "--- functional (native threading mode: driver lifecycle, events, validation)"
OS_NOVA_DISABLE_EVENTLET_PATCHING=true $PY -m pytest -q -p no:cacheprovider \
    tests/functional/driver/test_lifecycle.py \
    tests/functional/driver/test_host_and_events.py \
    tests/functional/driver/test_validation.py || rc=1
exit $rc
