"""The hypervisor seam: what the agent may call is what the base declares.

The simulator's backend is held to :class:`HypervisorBackend`'s public
methods, so the dom0 payload cannot come to depend on something only the
simulator has (simulation controls live on ``SimBackend.sim``); the real
backend implements every declared method.  The simulator is not importable
on dom0's Python 3.6, so that half is skipped there, saying why.
"""
import inspect
import sys

import pytest

from nova_xen_stubdom.dom0 import hypervisor
from nova_xen_stubdom.dom0 import xen_backend


def _public_methods(cls):
    return {name for name, _ in inspect.getmembers(cls, callable)
            if not name.startswith('_')}


def test_sim_backend_has_no_method_the_base_lacks():
    if sys.version_info < (3, 7):
        pytest.skip('the simulator needs Python >= 3.7 (dataclasses); the '
                    'unit tier runs this on the Nova side')
    from nova_xen_stubdom.sim.backend import SimBackend
    extra = _public_methods(SimBackend) - _public_methods(
        hypervisor.HypervisorBackend)
    assert extra == set(), (
        'SimBackend has public methods HypervisorBackend does not declare: '
        '%s (declare them in the base, or move simulation-only controls to '
        'SimBackend.sim)' % sorted(extra))


def test_xen_backend_implements_every_declared_method():
    assert not getattr(xen_backend.XenBackend, '__abstractmethods__', None)
    for name in _public_methods(hypervisor.HypervisorBackend):
        impl = getattr(xen_backend.XenBackend, name)
        base = getattr(hypervisor.HypervisorBackend, name)
        if name in ('close',):
            continue            # concrete in the base too
        assert impl is not base or name == 'read_console', name


@pytest.mark.parametrize('method', ['attach_disk', 'detach_disk',
                                    'vdi_path', 'read_console', 'close',
                                    'set_target'])
def test_base_declares_what_the_agent_calls(method):
    assert callable(getattr(hypervisor.HypervisorBackend, method))
