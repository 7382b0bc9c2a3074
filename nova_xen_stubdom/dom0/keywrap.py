"""Keys for the dom0 agent that never travel in a process's argv.

XAPI runs a host plugin with the whole XML-RPC call -- every argument -- on
its command line (xapi-project/xen-api ``ocaml/xapi/xapi_plugins.ml``,
``call_plugin``: ``execute_command_get_output plugin [Xml.to_string
call]``), where ``ps`` shows it to every user of dom0.  A per-migration or
per-image key therefore goes to the agent wrapped:

1. ``key_offer`` (a plugin call) makes the daemon draw an ephemeral
   Diffie-Hellman secret *x* in the 2048-bit MODP group of RFC 3526 (group
   14) and answer ``{"offer": id, "pub": g^x}``; the secret stays in the
   daemon, for one use, for :data:`OFFER_TTL` seconds;
2. the caller (the Nova driver) draws *y*, computes the shared secret
   ``(g^x)^y``, derives a wrapping key and a MAC key from it (HMAC-SHA256,
   bound to the offer id and both public values), and passes
   ``key_wrap = "offer:g^y:ciphertext:tag"`` instead of ``key``;
3. the daemon recomputes the secret, checks the tag and recovers the key.

What argv and the call's answer show (the public values, the ciphertext) is
useless without *x* or *y*.  Standard library only: this runs on dom0's
Python 3.6 and in the driver.
"""
import hashlib
import hmac
import os
import threading
import time
from typing import Dict, Tuple

#: RFC 3526 section 3, the 2048-bit MODP group (generator 2)
P = int(
    'FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1'
    '29024E088A67CC74020BBEA63B139B22514A08798E3404DD'
    'EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245'
    'E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED'
    'EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D'
    'C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F'
    '83655D23DCA3AD961C62F356208552BB9ED529077096966D'
    '670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B'
    'E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9'
    'DE2BCBF6955817183995497CEA956AE515D2261898FA0510'
    '15728E5A8AACAA68FFFFFFFFFFFFFFFF', 16)
G = 2
#: exponent bits: RFC 3526 rates group 14 at 110-160 bits of strength and
#: asks for exponents of twice that
EXPONENT_BITS = 320
OFFER_TTL = 300
MAX_OFFERS = 64
LABEL = b'nova-xen-stubdom key wrap v1'


class KeyWrapError(Exception):
    """A wrapped key that cannot be unwrapped: unknown or expired offer,
    bad encoding, or a tag that does not verify."""


def _pub_bytes(v: int) -> bytes:
    return v.to_bytes(256, 'big')


def _check_pub(v: int) -> None:
    # 1 and p-1 would make the shared secret predictable
    if not 1 < v < P - 1:
        raise KeyWrapError('Diffie-Hellman public value out of range')


def _keys(shared: int, offer: str, pub_a: int, pub_b: int
          ) -> Tuple[bytes, bytes]:
    prk = hmac.new(LABEL, _pub_bytes(shared), hashlib.sha256).digest()
    ctx = offer.encode() + _pub_bytes(pub_a) + _pub_bytes(pub_b)
    enc = hmac.new(prk, b'enc' + ctx, hashlib.sha256).digest()
    mac = hmac.new(prk, b'mac' + ctx, hashlib.sha256).digest()
    return enc, mac


def _stream(enc: bytes, n: int) -> bytes:
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hmac.new(enc, block.to_bytes(4, 'big'),
                        hashlib.sha256).digest()
        block += 1
    return bytes(out[:n])


def wrap(offer: str, offer_pub_hex: str, key: bytes) -> str:
    """*key* wrapped for the holder of *offer* (the caller's side)."""
    try:
        pub_a = int(offer_pub_hex, 16)
    except ValueError:
        raise KeyWrapError('offer public value is not hex')
    _check_pub(pub_a)
    y = int.from_bytes(os.urandom(EXPONENT_BITS // 8), 'big')
    pub_b = pow(G, y, P)
    enc, mac = _keys(pow(pub_a, y, P), offer, pub_a, pub_b)
    ct = bytes(a ^ b for a, b in zip(key, _stream(enc, len(key))))
    tag = hmac.new(mac, ct, hashlib.sha256).digest()
    return '%s:%x:%s:%s' % (offer, pub_b, ct.hex(), tag.hex())


class Offers:
    """The daemon's side: ephemeral secrets by offer id, each used once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offers = {}       # type: Dict[str, Tuple[int, int, float]]

    def offer(self) -> Dict[str, str]:
        x = int.from_bytes(os.urandom(EXPONENT_BITS // 8), 'big')
        pub = pow(G, x, P)
        offer = os.urandom(12).hex()
        now = time.monotonic()
        with self._lock:
            for k in [k for k, v in self._offers.items()
                      if v[2] < now]:
                del self._offers[k]
            if len(self._offers) >= MAX_OFFERS:
                # oldest first: a caller flooding offers only loses its own
                oldest = min(self._offers, key=lambda k: self._offers[k][2])
                del self._offers[oldest]
            self._offers[offer] = (x, pub, now + OFFER_TTL)
        return {'offer': offer, 'pub': '%x' % pub}

    def unwrap(self, wrapped: str) -> bytes:
        try:
            offer, pub_hex, ct_hex, tag_hex = wrapped.split(':')
            pub_b = int(pub_hex, 16)
            ct = bytes.fromhex(ct_hex)
            tag = bytes.fromhex(tag_hex)
        except ValueError:
            raise KeyWrapError('wrapped key is not offer:pub:ciphertext:tag')
        with self._lock:
            entry = self._offers.pop(offer, None)
        if entry is None or entry[2] < time.monotonic():
            raise KeyWrapError('key offer %s is unknown, used or expired '
                               '(the agent restarted?)' % offer)
        x, pub_a, _ = entry
        _check_pub(pub_b)
        enc, mac = _keys(pow(pub_b, x, P), offer, pub_a, pub_b)
        if not hmac.compare_digest(
                hmac.new(mac, ct, hashlib.sha256).digest(), tag):
            raise KeyWrapError('wrapped key does not verify')
        return bytes(a ^ b for a, b in zip(ct, _stream(enc, len(ct))))
