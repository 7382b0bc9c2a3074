import pytest

from nova_xen_stubdom.sim import testing


@pytest.fixture
def sim():
    with testing.running_sim(hosts=2) as s:
        yield s


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
