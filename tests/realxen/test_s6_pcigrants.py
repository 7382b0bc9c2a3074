"""Scenario 6 on real Xen 4.17: the PCI path without a physical device
(tests/realxen/dom0/s6-pcigrants.sh, rxstub.py pci-grants).

Our pci_grants code on XenBackend grants the stub domain the memory BARs
of an emulated PCI function (the outer QEMU's VGA, as dom0 sees it), Xen's
rangesets show them, detach_devices revokes them, and after the domains
are destroyed the release finds nothing left.  What only real hardware
shows is in doc/source/realxen.rst.
"""

import pytest

from tests.realxen import ourstub

S6 = ('S6-DOMAINS', 'S6-ASSIGN-REFUSED', 'S6-GRANTED', 'S6-REVOKED',
      'S6-RELEASED', 'S6-LEAK-CHECK', 'S6-DONE')


_marker = ourstub.marker


@pytest.mark.parametrize('name', S6)
def test_s6_step(realxen_boot, name):
    m = _marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_s6_without_iommu_assign_is_refused_and_rolled_back(realxen_boot):
    m = _marker(realxen_boot, 'S6-ASSIGN-REFUSED')
    assert m.args['call'] == 'xc_assign_device'
    assert m.args['rollback_clean'] == '1'


def test_s6_grants_reach_xen_and_are_revoked(realxen_boot):
    g = _marker(realxen_boot, 'S6-GRANTED')
    assert g.args['iomem'] not in ('', '?')
    assert int(g.args['calls']) >= 2      # a BAR each, stub and guest
    r = _marker(realxen_boot, 'S6-REVOKED')
    assert r.args['released'] == '1'
    # granted again: the same ranges as the first time
    assert r.args['regranted'] == g.args['iomem']
