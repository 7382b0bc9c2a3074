"""TLS for the dom0-to-dom0 migration stream (Python's :mod:`ssl` only).

Both ends present a host certificate and verify the other's against a CA
bundle (mutual TLS); the source also checks that the destination's
certificate names the host it means to reach (its XAPI host UUID: the
subject CN or a DNS subjectAltName).  The per-migration key is then proven
inside the TLS channel (:mod:`.migration_channel`), and the stream relies on
TLS's AEAD cipher for integrity instead of computing HMAC tags.

On XCP-ng the certificates are the pool's own (xapi-project/xen-api
``ocaml/xapi/certificates.ml``, the list of certificate locations;
``doc/content/design/pool-certificates.md``): ``/etc/xensource/
xapi-pool-tls.pem`` is the host's pool certificate and key (its only claim:
CN = the host UUID) and ``/etc/stunnel/xapi-pool-ca-bundle.pem`` holds every
pool member's certificate, which is what xapi's own stunnel clients verify
peers against (``ocaml/libs/stunnel/stunnel.ml``: ``pool`` verification).

Protocol versions: TLS 1.3 where this Python's OpenSSL has it, else TLS 1.2
restricted to ECDHE key exchange with AEAD ciphers (AES-GCM,
ChaCha20-Poly1305).  dom0's python3 may link OpenSSL 1.0.2, which has no
TLS 1.3; xapi itself pins ``sslVersion = TLSv1.2`` with ECDHE-RSA-AES-GCM
suites between pool hosts (``stunnel.ml`` ``config_file``,
``Constants.good_ciphersuites``).  See doc/source/migration.rst.
"""
import socket
import ssl
from typing import List, Optional

from nova_xen_stubdom.dom0 import constants

#: TLS 1.2 suites allowed: forward-secret key exchange, AEAD ciphers only
#: (TLS 1.3's suites are all AEAD)
TLS12_CIPHERS = 'ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1'
VERSIONS = ('auto', '1.2', '1.3')
#: XCP-ng's pool certificate and trust bundle (see the module docstring)
XAPI_POOL_CERT = constants.XAPI_POOL_TLS_CERT
XAPI_POOL_CA_BUNDLE = constants.XAPI_POOL_CA_BUNDLE


class TlsError(Exception):
    """TLS could not be set up or the peer failed verification."""


def has_tls13() -> bool:
    """Whether this Python's OpenSSL speaks TLS 1.3 (1.1.1 or later)."""
    flag = getattr(ssl, 'HAS_TLSv1_3', None)     # Python 3.7+
    if flag is not None:
        return bool(flag)
    return ssl.OPENSSL_VERSION_INFO >= (1, 1, 1)


def resolve_version(policy: str) -> str:
    """'1.2' or '1.3' for a policy of :data:`VERSIONS`."""
    if policy not in VERSIONS:
        raise TlsError('migration_tls_version must be one of %s, not %r'
                       % (', '.join(VERSIONS), policy))
    if policy == 'auto':
        return '1.3' if has_tls13() else '1.2'
    if policy == '1.3' and not has_tls13():
        raise TlsError('migration_tls_version = 1.3, but this Python links '
                       '%s, which has no TLS 1.3' % ssl.OPENSSL_VERSION)
    return policy


class TlsConfig:
    """Where this host's certificate, key and trusted CAs are, and the
    protocol floor (*version*: 'auto' is 1.3 where OpenSSL has it, '1.2'
    also talks to a peer without TLS 1.3).  *max_version* '1.2' makes this
    end behave like an OpenSSL without TLS 1.3 (tests of that path)."""

    def __init__(self, certfile: str, cafile: str, keyfile: str = '',
                 version: str = 'auto',
                 max_version: Optional[str] = None) -> None:
        self.certfile = certfile
        self.keyfile = keyfile or None
        self.cafile = cafile
        self.version = resolve_version(version)
        if max_version not in (None, '1.2', '1.3') or \
                (max_version == '1.2' and self.version == '1.3'):
            raise TlsError('TLS version range %s..%s is empty or unknown'
                           % (self.version, max_version))
        self.max_version = max_version
        self._contexts = {}     # type: dict

    def context(self, server: bool) -> ssl.SSLContext:
        """The (cached) context of one side; :class:`TlsError` naming the
        file when a certificate, key or bundle cannot be loaded."""
        ctx = self._contexts.get(server)
        if ctx is None:
            ctx = self._contexts[server] = self._make(server)
        return ctx

    def _make(self, server: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server
                             else ssl.PROTOCOL_TLS_CLIENT)
        # Identity is checked against the host UUID (check_identity), not
        # a DNS name: pool certificates carry no hostname.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.options |= ssl.OP_NO_COMPRESSION
        floor = self.version
        if hasattr(ctx, 'minimum_version') and hasattr(ssl, 'TLSVersion'):
            ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if floor == '1.3'
                                   else ssl.TLSVersion.TLSv1_2)
            if self.max_version == '1.2':
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        else:                                       # Python 3.6
            ctx.options |= (ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3 |
                            ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1)
            if floor == '1.3':
                ctx.options |= ssl.OP_NO_TLSv1_2
            if self.max_version == '1.2':
                ctx.options |= getattr(ssl, 'OP_NO_TLSv1_3', 0)
        try:
            ctx.set_ciphers(TLS12_CIPHERS)
        except ssl.SSLError as e:
            raise TlsError('this OpenSSL (%s) has none of the TLS 1.2 AEAD '
                           'suites %s: %s' % (ssl.OPENSSL_VERSION,
                                              TLS12_CIPHERS, e))
        for what, load in (
                ('trusted CA bundle %s' % self.cafile,
                 lambda: ctx.load_verify_locations(cafile=self.cafile)),
                ('host certificate %s' % self.certfile,
                 lambda: ctx.load_cert_chain(self.certfile, self.keyfile))):
            try:
                load()
            except (OSError, ssl.SSLError, ValueError) as e:
                raise TlsError('cannot load the migration %s: %s' % (what, e))
        return ctx

    def wrap(self, sock: socket.socket, server: bool) -> ssl.SSLSocket:
        """*sock* as a TLS socket, before its handshake (:func:`handshake`).
        *sock* is detached: the returned socket owns the connection."""
        return self.context(server).wrap_socket(
            sock, server_side=server, do_handshake_on_connect=False)

    def wrap_client(self, sock: socket.socket) -> ssl.SSLSocket:
        """Client side, handshake done (under the socket's timeout)."""
        tls = self.wrap(sock, server=False)
        try:
            handshake(tls)
        except TlsError:
            tls.close()
            raise
        return tls


def handshake(tls: ssl.SSLSocket) -> None:
    """The TLS handshake, under the socket's timeout; :class:`TlsError`."""
    try:
        tls.do_handshake()
    except socket.timeout:
        raise TlsError('TLS handshake timed out')
    except ssl.SSLError as e:
        raise TlsError('TLS handshake failed: %s' % describe(e))
    except OSError as e:
        raise TlsError('connection failed during the TLS handshake: %s' % e)


def describe(e: ssl.SSLError) -> str:
    """OpenSSL's reason (e.g. CERTIFICATE_VERIFY_FAILED) with its text."""
    reason = getattr(e, 'reason', None)
    text = getattr(e, 'verify_message', None) or str(e)
    return '%s (%s)' % (reason, text) if reason else text


def peer_names(tls: ssl.SSLSocket) -> List[str]:
    """The subject CN and DNS subjectAltNames of the verified peer."""
    cert = tls.getpeercert() or {}
    names = [v for rdn in cert.get('subject', ()) for k, v in rdn
             if k == 'commonName']
    names += [v for k, v in cert.get('subjectAltName', ()) if k == 'DNS']
    return names


def check_identity(tls: ssl.SSLSocket, expected: Optional[str]) -> None:
    """Refuse a peer whose (verified) certificate does not name *expected*
    (a host UUID); None skips the check (the chain was still verified)."""
    if not expected:
        return
    names = peer_names(tls)
    if expected.lower() not in [n.lower() for n in names]:
        raise TlsError('the peer presented a certificate for %s, expected '
                       'host %s' % (', '.join(names) or 'no name', expected))


def version_of(tls: ssl.SSLSocket) -> str:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' (for logs and stats)."""
    cipher = tls.cipher() or ('', '', 0)
    return '%s %s' % (tls.version(), cipher[0])
