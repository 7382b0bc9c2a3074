"""Scenario 3 on real Xen 4.17: save and restore by our dom0 daemon
(tests/realxen/dom0/s3-saverestore.sh).

A running HVM guest (tests/realxen/dom0/s35-guest.S: a boot sector that
counts in its own memory and prints the count) is saved by save_image,
both its domains are destroyed, restore_image restores it into new ones,
and it counts on from the saved count; the RAM digest of the paused guest
before the save equals that of the restored domain before it runs.
"""

import pytest

S3 = ('S3-GUEST-UP', 'S3-DAEMON-UP', 'S3-LINK', 'S3-DIGEST-BEFORE',
      'S3-SAVE', 'S3-DESTROYED', 'S3-NEW-DOMAINS', 'S3-RESTORE',
      'S3-DIGEST-AFTER', 'S3-CONTINUES', 'S3-LEAK-CHECK', 'S3-DONE')


def marker(boot, name):
    m = boot.marker(name)
    assert m is not None, '%s not seen; %s; last serial lines:\n%s' % (
        name, boot.summary(), '\n'.join(boot.final.last_lines))
    return m


@pytest.mark.parametrize('name', S3)
def test_s3_step(realxen_boot, name):
    m = marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_s3_save_carries_memory_and_device_state(realxen_boot):
    save = marker(realxen_boot, 'S3-SAVE')
    assert int(save.args['pages']) > 0 and int(save.args['bytes']) > 0
    # the dom0 QEMU's state through the state disk (QMP), not a stand-in
    assert save.args['device_state'].startswith('qmp:'), save.args
    assert marker(realxen_boot, 'S3-DESTROYED').args['domains'] == '1'
    # the stub's side got the same state back through the image and the
    # restore's state disk (length and sha256; not loaded into the dom0
    # QEMU: doc/source/realxen.rst, scenario 3)
    restore = marker(realxen_boot, 'S3-RESTORE')
    assert restore.args['device_state'] == 'received:' + \
        save.args['device_state'].split(':', 1)[1], restore.args


def test_s3_memory_digest_equal(realxen_boot):
    before = marker(realxen_boot, 'S3-DIGEST-BEFORE').args
    after = marker(realxen_boot, 'S3-DIGEST-AFTER').args
    assert int(before['pages']) > 8000      # 32 MiB less the VGA hole
    assert (after['ram'], after['pages']) == (before['ram'],
                                              before['pages'])
    assert after['guest'] != before['guest']    # a new domain


def test_s3_restore_drops_no_page(realxen_boot):
    """Every page the image carries was written into a frame: the fresh
    domain lacks what hvmloader populated above RAM (real Xen: 28 PFNs
    there in the saved guest, 16 in the new one), and restore_image
    populates them first (libxc: xg_sr_restore.c populate_pfns)."""
    save = marker(realxen_boot, 'S3-SAVE').args
    restore = marker(realxen_boot, 'S3-RESTORE').args
    assert int(restore['pages']) == int(save['pages']), (save, restore)
    before = marker(realxen_boot, 'S3-DIGEST-BEFORE').args
    after = marker(realxen_boot, 'S3-DIGEST-AFTER').args
    assert after['special_pages'] == before['special_pages'], (before, after)
    print('s3: restore populated %s PFNs the new domain lacked'
          % restore['populated'])


def test_s3_guest_counts_on(realxen_boot):
    before = int(marker(realxen_boot, 'S3-DIGEST-BEFORE').args['cnt'])
    m = marker(realxen_boot, 'S3-CONTINUES').args
    # the next count (the one after it if the pause cut a line in two),
    # from the restored memory: no second boot
    assert int(m['first']) in (before + 1, before + 2), m
    assert int(m['cnt']) >= before + 2
    assert m['booted'] == '0'


def test_s3_no_leaks(realxen_boot):
    m = marker(realxen_boot, 'S3-LEAK-CHECK')
    assert m.args.get('ok') == '1' and m.args['domains'] == '1', (
        repr(m), realxen_boot.out_file('S3-leaks.txt'))
