"""Tempest plugin for the nova-xen-stubdom compute driver.

Registered on the ``tempest.test_plugins`` entry point.  It imports only
tempest and the standard library (never Nova or ``nova_xen_stubdom``), so it
installs into a tempest venv with ``pip install --no-deps``.
"""
