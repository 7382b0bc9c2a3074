"""The client layer and the driver reach dom0 only through XAPI and never
import the simulator: the datamodel has its own home
(nova_xen_stubdom.datamodel) that both use."""
import subprocess
import sys

PROBE = r'''
import sys
from nova_xen_stubdom.driver import driver, coldmigrationops  # noqa: F401
from nova_xen_stubdom.xapi import client, fidelity, recorder
assert fidelity.message_exists('VM.start') is None
fidelity.check_calls([])
# the modules both sides share, stdlib only: dom0/constants.py, the
# defaults the Nova side's options and the dom0 payload read alike, and
# dom0/keywrap.py, the format of a wrapped key argument (the driver wraps,
# the daemon unwraps: one implementation of a protocol, not a way around
# XAPI), and dom0/cpu_policy.py, libxc's serialised CPU policy and the
# compatibility rule (the driver's pre-check and the destination agent
# apply the same one to what the agents answer)
shared = {'nova_xen_stubdom.dom0', 'nova_xen_stubdom.dom0.constants',
          'nova_xen_stubdom.dom0.keywrap', 'nova_xen_stubdom.dom0.cpu_policy'}
bad = sorted(m for m in sys.modules
             if m.startswith(('nova_xen_stubdom.sim',
                              'nova_xen_stubdom.dom0')) and m not in shared)
print(' '.join(bad))
'''


def test_driver_and_client_import_neither_simulator_nor_dom0_side():
    out = subprocess.run([sys.executable, '-c', PROBE], check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == ''
