"""The migration stream over TLS between two simulated hosts, and the
receiver against hostile clients: silent, garbage instead of TLS, a
certificate from another CA, no certificate, a destination that is not the
host the source meant, a wrong key, a connection flood, a flipped bit."""
import socket
import ssl

import pytest

from nova_xen_stubdom.dom0 import live_migration as migration
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import migration_tls
from nova_xen_stubdom.sim import pki
from tests import waiting
from tests.unit.dom0 import migration_fixtures as mf
from tests.unit.dom0.test_migration import DEV, MB, Pair

SRC, DST = 'host-src-uuid', 'host-dst-uuid'


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    try:
        ca = pki.Pki(str(tmp_path_factory.mktemp('pki')))
        other = pki.Pki(str(tmp_path_factory.mktemp('pki-other')),
                        name='somebody else')
    except pki.PkiUnavailable as e:
        pytest.skip(str(e))
    return {'ca': ca.ca, SRC: ca.host(SRC), DST: ca.host(DST),
            'foreign': other.host(SRC)}


class TlsPair(Pair):
    def __init__(self, certs, version='auto'):
        super().__init__()
        self.certs = certs
        self.version = version

    def tls(self, host):
        if self.version == '1.2':
            # a dom0 whose OpenSSL (1.0.2) has no TLS 1.3 on one end
            return migration_tls.TlsConfig(
                self.certs[host], self.certs['ca'], version='1.2',
                max_version='1.2' if host == DST else None)
        return migration_tls.TlsConfig(self.certs[host], self.certs['ca'],
                                       version=self.version)

    def target(self, **kw):
        kw.setdefault('tls', self.tls(DST))
        kw.setdefault('handshake_timeout', 5)
        return super().target(**kw)

    def source(self, port, key=None, **kw):
        kw.setdefault('tls', self.tls(SRC))
        kw.setdefault('peer_identity', DST)
        return super().source(port, key, **kw)

    def migrate_ok(self, target):
        stats = self.source(target.port).run()
        result = target.wait(10)
        assert result.state == 'running', result.error
        assert mf.digest(self.dst, result.domid) == \
            mf.digest(self.src, self.domid)
        assert self.restored == [DEV]
        return stats


@pytest.fixture
def tpair(certs):
    p = TlsPair(certs)
    yield p
    p.close()


def _versions():
    out = ['1.2']
    if migration_tls.has_tls13():
        out.append('1.3')
    return out


@pytest.mark.parametrize('version', _versions())
def test_migration_over_tls(certs, version):
    p = TlsPair(certs, version)
    try:
        target = p.target()
        stats = p.migrate_ok(target)
        assert stats.channel.startswith('TLSv%s ' % version), stats.channel
        assert target.channel == stats.channel
        if version == '1.2':
            # AEAD suites only (migration_tls.TLS12_CIPHERS)
            assert 'GCM' in stats.channel or 'CHACHA20' in stats.channel
    finally:
        p.close()


def test_destination_not_the_named_host_is_refused(tpair):
    target = tpair.target()
    with pytest.raises(migration.MigrationError,
                       match='expected host someone-else'):
        tpair.source(target.port, peer_identity='someone-else').run()
    waiting.wait_until(lambda: target.rejected == 1,
                       'the receiver to count the dropped connection')
    assert not target.done
    tpair.assert_source_running_dest_clean(target)


def test_source_certificate_from_another_ca_is_refused(tpair):
    target = tpair.target()
    foreign = migration_tls.TlsConfig(tpair.certs['foreign'],
                                      tpair.certs['ca'])
    with pytest.raises(migration.MigrationError, match='TLS'):
        tpair.source(target.port, tls=foreign).run()
    waiting.wait_until(lambda: target.rejected == 1,
                       'the receiver to count the refused certificate')
    # the real source still gets in
    tpair.migrate_ok(target)


def test_destination_certificate_from_another_ca_is_refused(tpair):
    target = tpair.target(tls=migration_tls.TlsConfig(
        tpair.certs['foreign'], tpair.certs['ca']))
    with pytest.raises(migration.MigrationError,
                       match='CERTIFICATE_VERIFY_FAILED'):
        tpair.source(target.port).run()
    tpair.assert_source_running_dest_clean(target)


def test_client_without_certificate_is_refused(tpair):
    target = tpair.target()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(('127.0.0.1', target.port), timeout=10)
    with pytest.raises((ssl.SSLError, OSError)):
        with ctx.wrap_socket(raw) as tls:
            # TLS 1.3: the server's refusal arrives with the first read
            tls.recv(1)
            raise OSError('server did not refuse')
    waiting.wait_until(lambda: target.rejected == 1,
                       'the receiver to refuse the anonymous client')
    tpair.migrate_ok(target)


def test_wrong_key_over_tls_is_refused(tpair):
    target = tpair.target()
    with pytest.raises(migration.MigrationError, match='refused'):
        tpair.source(target.port, key=wire.new_key()).run()
    waiting.wait_until(lambda: target.key_refusals == 1,
                       'the receiver to count the wrong key')
    assert not target.done
    tpair.assert_source_running_dest_clean(target)


def test_silent_client_neither_blocks_nor_stays(tpair):
    """A client that connects and says nothing: the real source migrates
    meanwhile, and the silent one is dropped at its deadline."""
    target = tpair.target(handshake_timeout=1)
    silent = socket.create_connection(('127.0.0.1', target.port))
    try:
        waiting.wait_until(lambda: len(target._pending) == 1,
                           'the silent client to be pending')
        tpair.migrate_ok(target)
        waiting.wait_until(lambda: target.rejected == 1,
                           'the silent client to be dropped')
        silent.settimeout(10)
        assert silent.recv(1) == b''        # closed by the receiver
    finally:
        silent.close()


@pytest.mark.parametrize('garbage', [b'GET / HTTP/1.0\r\n\r\n',
                                     b'\x16\x03\x01\x00\x05hello',
                                     bytes(4096)])
def test_garbage_instead_of_tls_is_dropped(tpair, garbage):
    target = tpair.target()
    bad = socket.create_connection(('127.0.0.1', target.port))
    try:
        bad.sendall(garbage)
        waiting.wait_until(lambda: target.rejected == 1,
                           'the receiver to drop the garbage')
        assert not target.done
        tpair.migrate_ok(target)
    finally:
        bad.close()


def test_connection_flood_does_not_lock_the_source_out(tpair):
    """More idle connections than max_pending: the oldest are dropped as
    new ones arrive, the real source still gets in."""
    target = tpair.target(max_pending=4, handshake_timeout=30)
    flood = [socket.create_connection(('127.0.0.1', target.port))
             for _ in range(20)]
    try:
        waiting.wait_until(lambda: target.rejected >= 16,
                           'the receiver to drop the oldest idle ones')
        assert len(target._pending) <= 4
        tpair.migrate_ok(target)
    finally:
        for s in flood:
            s.close()


def test_bit_flipped_in_a_tls_record(tpair):
    """TLS's AEAD catches it: nothing of that record reaches the guest."""
    target = tpair.target()
    proxy = mf.Proxy(target.port, flip_at=3 * MB + 17)
    with pytest.raises(migration.MigrationError):
        tpair.source(proxy.port).run()
    proxy.close()
    result = target.wait(10)
    assert result.state == 'failed'
    assert 'TLS record failed authentication' in result.error
    tpair.assert_source_running_dest_clean(target)


@pytest.mark.parametrize('address,allow,error', [
    ('127.0.0.1', False, 'loopback'),
    ('::1', False, 'loopback'),
    ('0.0.0.0', True, 'every interface'),
    ('::', True, 'every interface'),
    ('', True, 'no address'),
    ('xen-host-1', True, 'not an IP address'),
])
def test_advertised_address_must_be_routable(address, allow, error):
    with pytest.raises(wire.WireError, match=error):
        wire.check_advertised(address, allow)


def test_advertised_address_accepted():
    assert wire.check_advertised('192.0.2.10', False) == '192.0.2.10'
    assert wire.check_advertised('127.0.0.3', True) == '127.0.0.3'


def test_tls13_floor_refuses_a_tls12_only_peer(certs):
    if not migration_tls.has_tls13():
        pytest.skip('this OpenSSL has no TLS 1.3: %s' % ssl.OPENSSL_VERSION)
    p = TlsPair(certs)
    try:
        target = p.target(tls=migration_tls.TlsConfig(
            certs[DST], certs['ca'], version='1.2', max_version='1.2'))
        with pytest.raises(migration.MigrationError, match='TLS'):
            p.source(target.port, tls=migration_tls.TlsConfig(
                certs[SRC], certs['ca'], version='1.3')).run()
        p.assert_source_running_dest_clean(target)
    finally:
        p.close()


def test_missing_certificate_is_a_clear_error(certs, tmp_path):
    tls = migration_tls.TlsConfig(str(tmp_path / 'none.pem'), certs['ca'])
    with pytest.raises(migration_tls.TlsError,
                       match='host certificate .*none.pem'):
        tls.context(server=True)
    with pytest.raises(migration_tls.TlsError, match='must be one of'):
        migration_tls.TlsConfig(certs[SRC], certs['ca'], version='1.1')


def test_receiver_refuses_to_start_without_its_certificate(tpair, tmp_path):
    with pytest.raises(migration.MigrationError, match='none.pem'):
        tpair.target(tls=migration_tls.TlsConfig(str(tmp_path / 'none.pem'),
                                                 tpair.certs['ca']))
