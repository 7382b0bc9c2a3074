"""Scenario 5 on real Xen 4.17: local live migration by our dom0 daemon
over loopback TLS (tests/realxen/dom0/s5-migrate.sh).

The counting, memory-dirtying guest of tests/realxen/dom0/s35-guest.S
moves to a new domain on the same host (migrate_receive + migrate_send);
it counts on there, the source domain and its stub are gone, nothing is
left behind.
"""

import pytest

from tests.realxen.test_s3_saverestore import marker

S5 = ('S5-GUESTS-UP', 'S5-DAEMON-UP', 'S5-LINKS', 'S5-RECEIVE', 'S5-SEND',
      'S5-MIGRATED', 'S5-DEST-RUNNING', 'S5-SOURCE-GONE', 'S5-CONTINUES',
      'S5-LEAK-CHECK', 'S5-DONE')


@pytest.mark.parametrize('name', S5)
def test_s5_step(realxen_boot, name):
    m = marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_s5_migration_over_tls(realxen_boot):
    m = marker(realxen_boot, 'S5-MIGRATED').args
    assert m['state'] == 'completed'
    assert m['channel'].startswith('TLSv1.'), m
    assert marker(realxen_boot, 'S5-RECEIVE').args['address'] == '127.0.0.1'


def test_s5_guest_runs_on_at_the_destination(realxen_boot):
    up = marker(realxen_boot, 'S5-GUESTS-UP').args
    dest = marker(realxen_boot, 'S5-DEST-RUNNING').args
    assert dest['domid'] == up['dest'] and dest['xl_paused'] == '0', dest
    m = marker(realxen_boot, 'S5-CONTINUES').args
    last = int(m['last_src'])
    assert int(m['first']) in (last + 1, last + 2), m
    assert int(m['cnt']) >= last + 2 and m['booted'] == '0'


def test_s5_source_gone_no_leaks(realxen_boot):
    assert marker(realxen_boot, 'S5-SOURCE-GONE').args[
        'source_domains'] == '0'
    m = marker(realxen_boot, 'S5-LEAK-CHECK')
    assert m.args.get('ok') == '1' and m.args['domains'] == '1', (
        repr(m), realxen_boot.out_file('S5-leaks.txt'))
