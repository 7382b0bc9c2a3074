import pytest

from nova_xen_stubdom.xapi import client as xapi_client
from tests.unit.xapi import fakexapi


@pytest.fixture
def fake():
    server = fakexapi.FakeXAPI()
    yield server
    server.stop()


@pytest.fixture
def make_client():
    made = []

    def make(url, **kw):
        kw.setdefault('retry_interval', 0.01)
        kw.setdefault('login_timeout', 5)
        kw.setdefault('call_timeout', 10)
        # NOTE: the fake's calls are test scaffolding, not the project's:
        # keep them out of the fidelity test's process-wide record.
        kw.setdefault('record_globally', False)
        c = xapi_client.XAPIClient(url, kw.pop('username', 'root'),
                                   kw.pop('password', 'secret'), **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close(wait=1)


@pytest.fixture
def client(fake, make_client):
    return make_client(fake.url)
