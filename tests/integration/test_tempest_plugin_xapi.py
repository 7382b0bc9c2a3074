"""The tempest plugin's XAPI reader against the simulator over HTTP.

The plugin's checks run in the tempest venv with the standard library only;
here the same module talks to a real simulator to show that its calls exist
and its record handling matches what XAPI returns.
"""
import json

import pytest

from nova_xen_stubdom.sim import testing
from nova_xen_stubdom_tempest_plugin import xapi

SERVER = '0c1ad9b4-61b5-4c44-9f0e-1b9a1e9fdc10'


@pytest.fixture(scope='module')
def sim():
    with testing.running_sim(hosts=2) as sim:
        yield sim


def _open(sim):
    return xapi.XAPIReader(sim.url, testing.USERNAME, testing.PASSWORD)


def test_login_failure_is_an_xapi_failure(sim):
    with pytest.raises(xapi.XAPIFailure) as e:
        xapi.XAPIReader(sim.url, testing.USERNAME, 'wrong')
    assert e.value.code == 'SESSION_AUTHENTICATION_FAILED'


def test_close_logs_the_session_out(sim):
    before = sum(p.sessions.count() for p in sim.pools)
    reader = _open(sim)
    assert sum(p.sessions.count() for p in sim.pools) == before + 1
    reader.close()
    reader.close()        # idempotent
    assert sum(p.sessions.count() for p in sim.pools) == before


def test_vms_of_finds_guest_and_stubdom_by_nova_uuid(sim):
    admin = testing.login(sim)
    x = admin.xenapi
    refs = []
    try:
        refs.append(x.VM.create(testing.vm_record(
            'guest', hvm=True, other_config={
                xapi.NOVA_UUID_KEY: SERVER, xapi.ROLE_KEY: 'guest'})))
        refs.append(x.VM.create(testing.vm_record(
            'guest-dm', hvm=False, other_config={
                xapi.NOVA_UUID_KEY: SERVER, xapi.ROLE_KEY: 'stubdom'})))
        refs.append(x.VM.create(testing.vm_record(
            'someone-else', other_config={xapi.NOVA_UUID_KEY: 'other'})))
        reader = _open(sim)
        try:
            vms = reader.vms_of(SERVER)
            assert sorted(vms) == ['guest', 'stubdom']
            assert vms['guest'][0] == refs[0]
            assert vms['guest'][1]['HVM_boot_policy'] == 'BIOS order'
            assert vms['stubdom'][1]['PV_kernel']
            assert reader.vms_of('no-such-server') == {}
            assert reader.vdis_of(SERVER) == []
        finally:
            reader.close()
    finally:
        for ref in refs:
            x.VM.destroy(ref)
        x.session.logout()


def test_host_lookup_and_agent_wiring_call(sim):
    reader = _open(sim)
    try:
        name = sim.pools[0].db.get('host', sim.hosts[0].ref)['name_label']
        host = reader.host_by_name(name)
        assert host == sim.hosts[0].ref
        with pytest.raises(LookupError):
            reader.host_by_name('no-such-host')
        # a domid with no stub domain: the agent answers, nothing is linked
        wiring = reader.stubdom_wiring(host, 4242)
        assert wiring['stubdom_domid'] == 4242
        assert wiring['target'] is None
        json.dumps(wiring)
        # a VM the agent granted nothing for
        assert reader.pci_grants(host, SERVER) == {}
    finally:
        reader.close()


def test_wait_reports_the_last_value_on_timeout():
    reader = xapi.XAPIReader.__new__(xapi.XAPIReader)
    with pytest.raises(AssertionError, match="last seen: 'Halted'"):
        reader.wait('Running', lambda: 'Halted', lambda v: v == 'Running',
                    timeout=0.6)
