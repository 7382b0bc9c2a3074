"""Agent plugin functions for the live-migration CPU pre-check.

``host_cpu_policy``: this host's HVM maximum policy, what any guest moved
here may at most see (Xen's XEN_SYSCTL_cpu_policy_hvm_max, the set XAPI
publishes as ``cpu_info:features_hvm``).  ``guest_cpu_policy``: the policy
a running guest's domain has now (what libxc's save will put in the
stream's X86_CPUID_POLICY / X86_MSR_POLICY).  Both answer the two arrays
hex-encoded, in libxc's serialised layout
(:mod:`nova_xen_stubdom.dom0.cpu_policy`), and change nothing.  The driver
compares them before the source is touched (XAPI does the same in
``Cpuid_helpers.assert_vm_is_compatible``).

``guest_pv_drivers``: whether a guest's PV drivers are loaded
(``HVM_PARAM_CALLBACK_IRQ`` set, what libxl and :mod:`guest_suspend` go
by).  Such a guest can be stopped for a switch-over only through the
``control/shutdown`` suspend handshake, which xenopsd does not tolerate on
a VM of its own (it halts it); the driver refuses to live-migrate or
suspend it (``driver/pv_guests.py``).
"""
import json
from typing import Tuple

from nova_xen_stubdom.dom0 import guest_suspend
from nova_xen_stubdom.dom0 import migration_calls
from nova_xen_stubdom.dom0 import registry as plugin


def _encode(policy: Tuple[bytes, bytes]) -> str:
    return json.dumps({'cpuid': policy[0].hex(), 'msrs': policy[1].hex()})


@plugin.register('host_cpu_policy')
def host_cpu_policy(agent, args) -> str:
    return _encode(agent.backend.host_cpu_policy())


@plugin.register('guest_cpu_policy')
def guest_cpu_policy(agent, args) -> str:
    info = migration_calls._guest(agent, args)
    return _encode(agent.backend.get_cpu_policy(info.domid))


@plugin.register('guest_pv_drivers')
def guest_pv_drivers(agent, args) -> str:
    info = migration_calls._guest(agent, args)
    return json.dumps({'domid': info.domid, 'pv_drivers':
                       guest_suspend.has_pv_drivers(agent.backend,
                                                    info.domid)})
