"""URL handling and TLS verification."""
import pytest

from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import transport
from tests.unit.xapi import fakexapi


@pytest.mark.parametrize('current,address,expected', [
    ('https://10.0.0.2', '10.0.0.1', 'https://10.0.0.1'),
    ('https://10.0.0.2:8443/x', '10.0.0.1', 'https://10.0.0.1:8443/x'),
    ('http://127.0.0.1:4001', '127.0.0.1:4000', 'http://127.0.0.1:4000'),
    ('https://h2', 'fd00::1', 'https://[fd00::1]'),
    ('https://h2:444', '[fd00::1]:443', 'https://[fd00::1]:443'),
    ('http://x', 'http://master:80/', 'http://master:80/'),
    ('https://member.example', 'master.example',
     'https://master.example'),
])
def test_master_url(current, address, expected):
    assert transport.master_url(current, address) == expected


def test_master_url_needs_address():
    with pytest.raises(ValueError):
        transport.master_url('https://h', '')


def test_redact_url():
    assert transport.redact_url('https://u:p@h:1/x') == 'https://h:1/x'
    assert transport.redact_url('http://h') == 'http://h'


@pytest.fixture
def tls_fake(tmp_path):
    ctx, cert = fakexapi.self_signed_context(tmp_path)
    server = fakexapi.FakeXAPI(https_context=ctx)
    yield server, cert
    server.stop()


def test_tls_verified_by_default_refuses_unknown_ca(tls_fake, make_client):
    server, _ = tls_fake
    c = make_client(server.url, max_retries=0)
    with pytest.raises(errors.XAPIConnectionError) as info:
        c.call('VM.get_all')
    assert 'CERTIFICATE_VERIFY_FAILED' in str(info.value.reason)
    assert server.logins == 0


def test_tls_ca_file_accepted(tls_fake, make_client):
    server, cert = tls_fake
    c = make_client(server.url, ca_file=cert)
    assert sorted(c.call('VM.get_all')) == sorted(server.vms)
    c.close()
    assert server.open_sessions == 0


def test_tls_verification_can_be_turned_off(tls_fake, make_client):
    server, _ = tls_fake
    c = make_client(server.url, verify_tls=False)
    assert c.call('VM.get_all')
