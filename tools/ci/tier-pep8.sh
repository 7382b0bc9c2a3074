#!/usr/bin/env bash
# CI tier "pep8": flake8 over the package, the tempest plugin, the tests and
# the CI tooling (the same check as `tox -e pep8`).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
. tools/ci/report.sh
if ./.venv/bin/python -m flake8 nova_xen_stubdom \
        nova_xen_stubdom_tempest_plugin tests tools; then
    echo "pep8: flake8 clean"
    report passed flake8
else
    report failed flake8
    exit 1
fi
