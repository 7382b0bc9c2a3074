"""Keys to the dom0 agent travel wrapped for its ephemeral Diffie-Hellman
offer, never as plugin arguments (XAPI puts those on the plugin's command
line: xen-api ocaml/xapi/xapi_plugins.ml call_plugin)."""
import json

import pytest

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import keywrap
from nova_xen_stubdom.dom0 import migration_calls

KEY = bytes(range(32))


def test_round_trip_and_single_use():
    offers = keywrap.Offers()
    o = offers.offer()
    wrapped = keywrap.wrap(o['offer'], o['pub'], KEY)
    assert KEY.hex() not in wrapped
    assert offers.unwrap(wrapped) == KEY
    with pytest.raises(keywrap.KeyWrapError, match='unknown, used'):
        offers.unwrap(wrapped)


def test_tampered_or_foreign_wraps_refused():
    offers = keywrap.Offers()
    o = offers.offer()
    offer, pub, ct, tag = keywrap.wrap(o['offer'], o['pub'], KEY).split(':')
    flipped = '%02x' % (int(ct[:2], 16) ^ 1) + ct[2:]
    with pytest.raises(keywrap.KeyWrapError, match='does not verify'):
        offers.unwrap(':'.join((offer, pub, flipped, tag)))
    # the offer is spent by the failed attempt: no oracle to retry against
    with pytest.raises(keywrap.KeyWrapError, match='unknown'):
        offers.unwrap(':'.join((offer, pub, ct, tag)))
    o2 = keywrap.Offers().offer()            # another daemon's offer
    with pytest.raises(keywrap.KeyWrapError, match='unknown'):
        offers.unwrap(keywrap.wrap(o2['offer'], o2['pub'], KEY))
    with pytest.raises(keywrap.KeyWrapError, match='offer:pub'):
        offers.unwrap('not-a-wrap')


@pytest.mark.parametrize('pub', ['1', '%x' % (keywrap.P - 1), '0'])
def test_degenerate_public_values_refused(pub):
    with pytest.raises(keywrap.KeyWrapError, match='out of range'):
        keywrap.wrap('x', pub, KEY)
    offers = keywrap.Offers()
    o = offers.offer()
    good = keywrap.wrap(o['offer'], o['pub'], KEY).split(':')
    good[1] = pub
    with pytest.raises(keywrap.KeyWrapError, match='out of range'):
        offers.unwrap(':'.join(good))


def test_expired_offer_refused(monkeypatch):
    offers = keywrap.Offers()
    o = offers.offer()
    wrapped = keywrap.wrap(o['offer'], o['pub'], KEY)
    now = keywrap.time.monotonic()
    monkeypatch.setattr(keywrap.time, 'monotonic',
                        lambda: now + keywrap.OFFER_TTL + 1)
    with pytest.raises(keywrap.KeyWrapError, match='expired'):
        offers.unwrap(wrapped)


def test_offers_are_bounded():
    offers = keywrap.Offers()
    first = offers.offer()
    for _ in range(keywrap.MAX_OFFERS):
        offers.offer()
    assert len(offers._offers) == keywrap.MAX_OFFERS
    with pytest.raises(keywrap.KeyWrapError, match='unknown'):
        offers.unwrap(keywrap.wrap(first['offer'], first['pub'], KEY))


class _Agent:
    """Enough of a HostAgent for the key functions (weakref-able)."""


def test_agent_refuses_a_plain_key_and_takes_a_wrapped_one():
    agent = _Agent()
    with pytest.raises(errors.InvalidArgument, match='command line'):
        migration_calls._key(agent, {'key': KEY.hex()})
    o = json.loads(migration_calls.key_offer(agent, {}))
    wrapped = keywrap.wrap(o['offer'], o['pub'], KEY)
    assert migration_calls._key(agent, {'key_wrap': wrapped}) == KEY
    with pytest.raises(errors.InvalidArgument, match='used or expired'):
        migration_calls._key(agent, {'key_wrap': wrapped})
    short = keywrap.wrap(*_offer(agent), KEY[:8])
    with pytest.raises(errors.InvalidArgument, match='128 bits'):
        migration_calls._key(agent, {'key_wrap': short})


def _offer(agent):
    o = json.loads(migration_calls.key_offer(agent, {}))
    return o['offer'], o['pub']
