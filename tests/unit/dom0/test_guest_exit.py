"""Why a guest domain went: recorded at device-model stop, read by the
driver (``dom0/guest_exit.py``)."""
import json

import pytest

from nova_xen_stubdom.dom0 import device_model
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import guest_exit
from nova_xen_stubdom.dom0 import host
from nova_xen_stubdom.dom0 import registry as plugin
from nova_xen_stubdom.dom0 import xen_backend
from nova_xen_stubdom.dom0 import xen_libs
from tests.unit.dom0 import fakes

GUEST_UUID = '11111111-2222-3333-4444-555555555555'


@pytest.fixture
def agent():
    return host.HostAgent(fakes.FakeBackend(), 'host-uuid')


def _shut_down(agent, reason):
    domid = agent.backend.add_domain(GUEST_UUID, hvm=True)
    agent.backend.domains[domid].shutdown = reason
    return domid


def _ask(agent, **args):
    args.setdefault('guest_vm_uuid', GUEST_UUID)
    return json.loads(plugin.call(agent, plugin.PLUGIN, 'guest_exit',
                                  {k: str(v) for k, v in args.items()}))


def test_dm_stop_records_the_guests_reboot(agent):
    domid = _shut_down(agent, 'reboot')
    device_model.stop(agent, domid, GUEST_UUID)
    assert _ask(agent, domid=domid)['reason'] == 'reboot'
    # only dom0 reads it (the guest cannot forge its own record)
    assert agent.backend.perms['/nova-xen-stubdom/exits/' + GUEST_UUID] == \
        ['n0']


def test_a_record_of_another_domain_never_answers(agent):
    domid = _shut_down(agent, 'poweroff')
    guest_exit.record(agent, domid, GUEST_UUID)
    assert _ask(agent, domid=domid + 7) == {}
    assert _ask(agent, domid=domid, forget=1)['reason'] == 'poweroff'
    assert _ask(agent) == {}            # forgotten


def test_a_running_domain_destroyed_by_the_toolstack_records_nothing(agent):
    domid = agent.backend.add_domain(GUEST_UUID, hvm=True)
    assert guest_exit.record(agent, domid, GUEST_UUID) is None
    assert guest_exit.record(agent, 999, GUEST_UUID) is None
    assert _ask(agent) == {}


def test_bad_arguments(agent):
    with pytest.raises(errors.InvalidArgument):
        plugin.call(agent, plugin.PLUGIN, 'guest_exit', {})
    with pytest.raises(errors.InvalidArgument):
        _ask(agent, domid='x')


@pytest.mark.parametrize('code,name', list(enumerate(
    xen_libs.SHUTDOWN_REASONS)) + [(9, 'code-9')])
def test_xen_flags_carry_the_shutdown_code(code, name):
    flags = (xen_libs.XEN_DOMINF_shutdown | xen_libs.XEN_DOMINF_hvm_guest |
             code << xen_libs.XEN_DOMINF_shutdownshift)
    assert xen_backend._shutdown_reason(flags) == name
    assert xen_backend._shutdown_reason(
        flags & ~xen_libs.XEN_DOMINF_shutdown) is None


def test_unlink_forgets_the_record(agent):
    domid = _shut_down(agent, 'poweroff')
    guest_exit.record(agent, domid, GUEST_UUID)
    plugin.call(agent, plugin.PLUGIN, 'unlink_stubdom',
                {'guest_vm_uuid': GUEST_UUID})
    assert _ask(agent) == {}
