import pytest

from nova_xen_stubdom.sim import fidelity, testing


def _check_errors(sim):
    problems = []
    for pool in sim.pools:
        for method, desc in pool.error_log:
            if method.startswith('sim.'):
                continue
            problems += fidelity.check_error(method, desc)
    return problems


@pytest.fixture
def sim():
    with testing.running_sim(hosts=2) as s:
        yield s
        # every error the simulator answered is one XAPI lists for that
        # message (or a generic one), with XAPI's parameter count
        assert _check_errors(s) == []


@pytest.fixture
def session(sim):
    s = testing.login(sim)
    yield s
    try:
        s.xenapi.session.logout()
    except Exception:
        pass


@pytest.fixture
def x(session):
    return session.xenapi


def pytest_sessionfinish(session, exitstatus):
    """``NOVA_XEN_STUBDOM_SIM_REPORT=FILE``: which XAPI messages the run
    exercised on the simulator (the closing-note figure)."""
    import os
    path = os.environ.get('NOVA_XEN_STUBDOM_SIM_REPORT')
    if not path:
        return
    from nova_xen_stubdom.sim import api
    names = sorted(api.CALLS)
    with open(path, 'w') as f:
        f.write('%d distinct XAPI messages called, %d calls\n'
                % (len(names), sum(api.CALLS.values())))
        for n in names:
            f.write('%s %d\n' % (n, api.CALLS[n]))
