"""Hosts carry XAPI's ``other_config:boot_time`` and ``agent_start_time``:
set when the simulated host boots (simulator start), a toolstack restart
changes only the latter; the driver's host uptime reads the former."""
import time
import types

import pytest

from nova_xen_stubdom.sim import testing
from tests import waiting


#: OCaml's string_of_float (%.12g) of epoch seconds: hundredths
RECORDED_PRECISION = 0.01


def _times(x, host):
    oc = x.host.get_other_config(host)
    return float(oc['boot_time']), float(oc['agent_start_time'])


def test_boot_time_set_at_start_kept_over_toolstack_restart(tmp_path):
    before = time.time()
    with testing.running_sim(hosts=2, state_dir=str(tmp_path)) as sim:
        after = time.time()
        session = testing.login(sim)
        x = session.xenapi
        boots = {}
        for h in sim.hosts:
            boot, agent_start = _times(x, h.ref)
            assert before - 1 <= boot <= after + 1
            assert boot <= agent_start <= after + 1
            boots[h.uuid] = boot
        target = sim.host(1)
        _boot, agent_before = _times(x, target.ref)
        # it must visibly move: the record keeps 12 significant digits
        waiting.wait_for_clock_past(agent_before, RECORDED_PRECISION)
        sim.restart_toolstack(target)
        boot, agent_start = _times(x, target.ref)
        assert boot == boots[target.uuid]
        assert agent_start > agent_before
        # the other host's toolstack did not restart
        assert _times(x, sim.host(0).ref)[0] == boots[sim.host(0).uuid]
        session.xenapi.session.logout()
    # a new simulator process is a host reboot, even from a state dir
    waiting.wait_for_clock_past(max(boots.values()), RECORDED_PRECISION)
    with testing.running_sim(hosts=2, state_dir=str(tmp_path)) as sim:
        x = testing.login(sim).xenapi
        for h in sim.hosts:
            assert _times(x, h.ref)[0] > boots[h.uuid]


@pytest.mark.parametrize('value,text', [
    (1795000000.0, '1795000000.'), (1795000000.57, '1795000000.57'),
    (0.0, '0.')])
def test_times_written_as_xapi_writes_them(value, text):
    from nova_xen_stubdom.sim import pool
    assert pool._ocaml_float(value) == text


def test_driver_uptime_from_the_sims_host_record(sim, monkeypatch):
    from nova_xen_stubdom.driver import hostops
    x = testing.login(sim).xenapi
    try:
        host = sim.host(0)
        record = x.host.get_record(host.ref)
    finally:
        x.session.logout()
    # the driver's HostOps reads the host record (normally from its cache)
    ctx = types.SimpleNamespace(
        cache=types.SimpleNamespace(get=lambda cls, ref: None),
        host_ref=host.ref, host_record=record)
    ops = hostops.HostOps(ctx, types.SimpleNamespace())
    assert ops.uptime().endswith(' up 0 days,  0:00')
    boot = float(record['other_config']['boot_time'])
    monkeypatch.setattr(hostops.time, 'time',
                        lambda: boot + 86400 + 2 * 3600 + 5 * 60 + 7)
    assert ops.uptime().endswith(' up 1 days,  2:05')
