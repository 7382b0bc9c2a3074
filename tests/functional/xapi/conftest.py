import pytest

from nova_xen_stubdom.sim import testing
from nova_xen_stubdom.xapi import client as xapi_client


@pytest.fixture
def sim():
    with testing.running_sim(hosts=2) as server:
        yield server


@pytest.fixture
def make_client(sim):
    made = []

    def make(url=None, username=testing.USERNAME,
             password=testing.PASSWORD, **kw):
        kw.setdefault('retry_interval', 0.01)
        kw.setdefault('login_timeout', 5)
        kw.setdefault('call_timeout', 10)
        kw.setdefault('task_timeout', 30)
        c = xapi_client.XAPIClient(url or sim.url, username, password, **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close(wait=1)


def sessions(sim) -> int:
    return sum(p.sessions.count() for p in sim.pools)
