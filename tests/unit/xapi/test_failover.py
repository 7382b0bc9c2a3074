"""Finding a moved pool master."""
import pytest

from nova_xen_stubdom.xapi import errors
from tests.unit.xapi import fakexapi


def _pool_of(*fakes):
    addresses = ['127.0.0.1:%d' % f.port for f in fakes]
    for f in fakes:
        f.host_addresses = addresses
    return addresses


def test_pool_members_are_learned_at_login(fake, client):
    other = fakexapi.FakeXAPI()
    try:
        _pool_of(fake, other)
        client.call('VM.get_all')
        assert client.pool_members == [fake.url, other.url]
        client.call('VM.get_all')
        assert fake.count('host.get_all_records') == 1
    finally:
        other.stop()


def test_failover_to_the_new_master_when_the_master_dies(make_client):
    a = fakexapi.FakeXAPI()
    b = fakexapi.FakeXAPI(master_address=None)
    try:
        _pool_of(a, b)
        c = make_client(a.url, max_retries=1)
        assert c.call('VM.get_all')
        a.stop()                        # the master host dies
        # b was promoted (e.g. by HA); it answers logins as the master
        assert sorted(c.call('VM.get_all')) == sorted(b.vms)
        assert c.url == b.url
        assert b.open_sessions == c.open_sessions == 1
    finally:
        b.stop()


def test_failover_follows_a_member_to_the_new_master(make_client):
    a, b, m = fakexapi.FakeXAPI(), fakexapi.FakeXAPI(), fakexapi.FakeXAPI()
    try:
        _pool_of(a, b, m)
        c = make_client(a.url, max_retries=0)
        assert c.call('VM.get_all')
        a.stop()
        b.master_address = '127.0.0.1:%d' % m.port
        vm = sorted(m.vms)[0]
        c.call('VM.start', vm)          # refused on a: nothing was sent
        assert m.vms[vm]['power_state'] == 'Running'
        assert c.url == m.url
        assert b.open_sessions == 0
    finally:
        b.stop()
        m.stop()


def test_no_failover_without_a_new_master(make_client):
    a, b = fakexapi.FakeXAPI(), fakexapi.FakeXAPI()
    try:
        _pool_of(a, b)
        c = make_client(a.url, max_retries=0)
        assert c.call('VM.get_all')
        b.master_address = '127.0.0.1:%d' % a.port   # b still follows a
        a.stop()
        with pytest.raises(errors.XAPIConnectionError):
            c.call('VM.get_all')
        assert c.url == a.url
    finally:
        b.stop()
