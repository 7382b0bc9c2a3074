"""Scenario 3 with OUR stub-domain image on real Xen 4.17
(tests/realxen/dom0/s3-ourstub.sh; doc/source/realxen.rst).

The counting guest (s35-guest.S) runs with the QEMU in our stub domain as
its device model; save_image takes its device state out of that QEMU
through the state disk (the init's stop + xen-save-devices-state), both
domains are destroyed, new ones made, and restore_image puts the state into
the new stub's QEMU through the state disk (stop + xen-load-devices-state +
cont); the guest counts on and its RAM digest is unchanged.
"""

import pytest

from tests.realxen import ourstub

S3O = ('S3O-DAEMON-UP', 'S3O-STUB-WAITS', 'S3O-LINK', 'S3O-GUEST-UP',
       'S3O-DIGEST-BEFORE', 'S3O-SAVE', 'S3O-DESTROYED', 'S3O-NEW-DOMAINS',
       'S3O-RESTORE', 'S3O-DIGEST-AFTER', 'S3O-CONTINUES', 'S3O-LEAK-CHECK',
       'S3O-DONE')

_marker = ourstub.marker


@pytest.fixture(autouse=True)
def _not_skipped():
    if ourstub.skipped('s3-ourstub.sh'):
        pytest.skip('NOT RUN (s3-ourstub.sh): left out with %s'
                    % ourstub.SKIP_ENV)


@pytest.mark.parametrize('name', S3O)
def test_s3o_step(realxen_boot, name):
    m = _marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_s3o_device_state_through_our_stub(realxen_boot):
    up = _marker(realxen_boot, 'S3O-GUEST-UP').args
    assert up['dm_domid'] == up['stub']          # our stub is its DM
    save = _marker(realxen_boot, 'S3O-SAVE').args
    length = int(save['stub_saved'].split(':')[0])
    assert length > 0 and int(save['pages']) > 0
    assert _marker(realxen_boot, 'S3O-DESTROYED').args['domains'] == '1'
    restore = _marker(realxen_boot, 'S3O-RESTORE').args
    # the new stub verified the same length and loaded it into its QEMU
    assert int(restore['stub_verified']) == length, restore
    assert restore['stub_loaded'] == '1' and restore['dm_state'] == 'running'


def test_s3o_memory_digest_equal_and_guest_counts_on(realxen_boot):
    before = _marker(realxen_boot, 'S3O-DIGEST-BEFORE').args
    after = _marker(realxen_boot, 'S3O-DIGEST-AFTER').args
    assert (after['ram'], after['pages']) == (before['ram'], before['pages'])
    assert after['guest'] != before['guest']
    m = _marker(realxen_boot, 'S3O-CONTINUES').args
    assert int(m['first']) in (int(before['cnt']) + 1,
                               int(before['cnt']) + 2), m
    assert m['booted'] == '0'


def test_s3o_no_leaks(realxen_boot):
    m = _marker(realxen_boot, 'S3O-LEAK-CHECK')
    assert m.args.get('ok') == '1' and m.args['domains'] == '1', repr(m)
