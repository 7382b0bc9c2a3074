"""Scenario 4 on real Xen 4.17: interchange with Xen's own tools.

In dom0 (tests/realxen/dom0/s4-interchange.sh): ``xl save`` of a running
HVM guest; our reader parses xl's file; our writer writes it again in
compatible mode behind xl's save-file header, once record by record
(``rewrite_stream``) and once from the guest memory our reader restored
(``write_pages``, our save engine's path); Xen's verify-stream-v2 accepts
both; ``xl restore`` of each brings the guest back and it keeps ticking
without booting again; nothing is left behind.
"""

import json

import pytest

BOOT_MARKERS = ('DOM0-SHELL-UP', 'XENSTORED-UP', 'ALL-DONE', 'POWEROFF')
S4 = (
    'S4-GUEST-UP', 'S4-XL-SAVE', 'S4-OURS-WRITTEN',
    'S4-VERIFY-REWRITTEN', 'S4-VERIFY-FROM-MEMORY',
    'S4-RESTORE-REWRITTEN', 'S4-TICKING-REWRITTEN',
    'S4-RESTORE-FROM-MEMORY', 'S4-TICKING-FROM-MEMORY',
    'S4-LEAK-CHECK', 'S4-DONE',
)


def _marker(boot, name):
    m = boot.marker(name)
    assert m is not None, '%s not seen; %s; last serial lines:\n%s' % (
        name, boot.summary(), '\n'.join(boot.final.last_lines))
    return m


def test_boot_completed(realxen_boot):
    boot = realxen_boot
    assert boot.ok, '%s; last serial lines:\n%s' % (
        boot.summary(), '\n'.join(boot.final.last_lines))
    for name in BOOT_MARKERS:
        _marker(boot, name)


@pytest.mark.parametrize('name', S4)
def test_s4_step(realxen_boot, name):
    m = _marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_s4_our_streams(realxen_boot):
    path = realxen_boot.out_file('s4-interchange.json')
    assert path, 's4-interchange.json not returned in /out'
    with open(path) as f:
        res = json.load(f)
    assert res['ok'], res['checks']
    assert all(res['checks'].values()), res['checks']
    # Our writer reproduces xl's file byte for byte from the parsed records,
    assert res['rewritten']['identical_to_xl']
    # and the one written from memory has our own record layout.
    assert res['from_memory']['records_differ_from_xl']
    assert res['read']['xen_version'] == [4, 17]
    assert res['read']['hvm_context'] > 0
    assert res['read']['emulator_context'] > 0


@pytest.mark.parametrize('which', ['REWRITTEN', 'FROM-MEMORY'])
def test_s4_guest_continues_after_restore(realxen_boot, which):
    boot = realxen_boot
    up = _marker(boot, 'S4-GUEST-UP')
    tick = _marker(boot, 'S4-TICKING-' + which)
    # A new domain, ticking, and it did not run its boot sector again.
    assert tick.args['domid'] != up.args['domid']
    assert int(tick.args['ticks']) >= 2
    assert tick.args['reboots'] == '0'


def test_s4_no_leaks(realxen_boot):
    m = _marker(realxen_boot, 'S4-LEAK-CHECK')
    assert m.args.get('ok') == '1', (
        repr(m), realxen_boot.out_file('S4-leaks.txt'))
    assert m.args['domains'] == '1'  # Domain-0 only
