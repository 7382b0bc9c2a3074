"""Scenario 2 on real Xen 4.17: the guest's disk emulated by the stub
domain's QEMU over a PV blkfront in the stub (blkback in dom0), in the
boot of scenario 1 with our image (tests/realxen/dom0/s1-ourstub.sh).

The guest's boot sector (tests/realxen/stub/readsector.S) reads LBA 1
through the BIOS and prints what it finds: a token drawn for this run
(tests/realxen/ourstub.py), so the text can only come from the disk.
"""


from tests.realxen import ourstub


_marker = ourstub.marker


def test_s2_guest_reads_its_sector_through_the_stub(realxen_boot):
    m = _marker(realxen_boot, 'S2-SECTOR-READ')
    assert not m.failed, repr(m)
    assert m.args['token'] == ourstub.DISK_TOKEN
    # SeaBIOS saw the IDE disk the stub's QEMU emulates
    assert int(m.args['ide_disk']) >= 1


def test_s2_disk_is_blkback_to_the_stubs_blkfront(realxen_boot):
    m = _marker(realxen_boot, 'S2-BLKBACK')
    assert m.args['be_state'] == '4' and m.args['fe_state'] == '4', m
    assert m.args['physical_device']          # a loop device, major:minor
    assert m.args['argv_disk'] == '1'         # QEMU's -drive on /dev/xvda


def test_s2_nic_through_the_stub(realxen_boot):
    """A vif into the stub (netback/netfront connected) that the stub's
    init bridges to the tap of the e1000 its QEMU emulates.  No traffic:
    the testbed has no bridge in dom0 and the guest no network stack."""
    m = _marker(realxen_boot, 'S2-NIC')
    assert not m.failed, repr(m)
    assert m.args['be_state'] == '4' and m.args['bridged'] == '1', m
