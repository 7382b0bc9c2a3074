"""Scenario 1 on real Xen 4.17, libxl-linked: the HVM guest's device model is
QEMU 8.0.3 running in a PV stub domain (tests/realxen/dom0/s1-stubdom.sh).

libxl builds the guest and the stub and links them (target, dm-argv, QMP
vchan); our stub init runs QEMU.  Not yet our ``build-stubdom`` image nor
our daemon doing the linking: see doc/source/realxen.rst.
"""

import pytest

S1 = ('S1-CREATE', 'S1-DM-RUNNING', 'S1-MBR-VIA-STUB', 'S1-SERIAL-VIA-STUB',
      'S1-NO-DM-IN-DOM0',
      'S1-LEAK-CHECK', 'S1-DONE')


def _marker(boot, name):
    m = boot.marker(name)
    assert m is not None, '%s not seen; %s; last serial lines:\n%s' % (
        name, boot.summary(), '\n'.join(boot.final.last_lines))
    return m


@pytest.mark.parametrize('name', S1)
def test_s1_step(realxen_boot, name):
    m = _marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_s1_stub_is_the_device_model(realxen_boot):
    create = _marker(realxen_boot, 'S1-CREATE')
    dm = _marker(realxen_boot, 'S1-DM-RUNNING')
    # The stub holds the guest as its target and its QEMU said "running".
    assert dm.args['stub'] == create.args['stub'] != create.args['guest']
    assert dm.args['target'] == create.args['guest']
    # SeaBIOS found the IDE disk the stub's QEMU emulates and booted it.
    mbr = _marker(realxen_boot, 'S1-MBR-VIA-STUB')
    assert mbr.args['disk'] == '1'
    # dom0 runs no device model for the guest, only the stub's PV backend.
    assert _marker(realxen_boot, 'S1-NO-DM-IN-DOM0').args['ok'] == '1'


def test_s1_no_leaks(realxen_boot):
    m = _marker(realxen_boot, 'S1-LEAK-CHECK')
    assert m.args.get('ok') == '1' and m.args['domains'] == '1', repr(m)
