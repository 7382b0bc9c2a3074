#!/usr/bin/env bash
# CI tier "pep8": flake8 over the package, the tempest plugin and the tests
# (the same check as `tox -e pep8`).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
./.venv/bin/python -m flake8 nova_xen_stubdom nova_xen_stubdom_tempest_plugin tests &&
    echo "pep8: flake8 clean"
