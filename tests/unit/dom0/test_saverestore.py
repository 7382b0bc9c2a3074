"""Save/restore engine on the simulator's domains."""
import io

import pytest

from nova_xen_stubdom import emucore
from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import saverestore
from nova_xen_stubdom.sim import qemu_savevm
from tests import xen_verifier
from tests.unit.dom0 import migration_fixtures as mf

MB = 1 << 20
DEVICE_STATE = qemu_savevm.device_state(b'unit')  # QEMU xenfv's shape


@pytest.fixture
def hosts():
    src, dst = mf.make_host('src'), mf.make_host('dst')
    yield src, dst
    src.hyp.shutdown()
    dst.hyp.shutdown()


def _guest(backend, uuid='vm-a', size=8 * MB, seed=3):
    dom = backend.hyp.create_domain(uuid, True, size, 2)
    backend.unpause(dom.domid)
    mf.fill(backend, dom.domid, seed=seed)
    backend.set_hvm_params(dom.domid, {1: 0xfeffc, 12: 7})
    return dom.domid


def _save(backend, domid, key):
    buf = io.BytesIO()
    stats = saverestore.save_domain(backend, domid, buf, key,
                                    device_state=lambda: DEVICE_STATE,
                                    xenstore=lambda: {'physmap/1': 'f0'})
    return buf, stats


def test_round_trip_restores_memory_cpu_and_device_state(hosts):
    src, dst = hosts
    key = wire.new_key()
    domid = _guest(src)
    buf, stats = _save(src, domid, key)
    assert src.domain_info(domid).paused
    assert stats.pages == src.domain_info(domid).max_pfn
    assert 0 < stats.zero_pages < stats.pages
    target = dst.hyp.create_domain('vm-a', True, 8 * MB, 2).domid
    got = saverestore.restore_domain(dst, target, buf, key,
                                     expected_vm_uuid='vm-a')
    assert mf.digest(dst, target) == mf.digest(src, domid)
    assert got.device_state == DEVICE_STATE
    assert got.xenstore == {'physmap/1': 'f0'}
    assert dst.get_hvm_context(target) == src.get_hvm_context(domid)
    # as with xc_hvm_param_set, restored params overwrite; others keep theirs
    assert {1: 0xfeffc, 12: 7}.items() <= dst.get_hvm_params(target).items()
    assert dst.domain_info(target).paused


def test_cpu_policy_and_tsc_travel_in_the_image(hosts):
    src, dst = hosts
    key = wire.new_key()
    domid = _guest(src)
    src.set_tsc_info(domid, 1, 2600000, 7 * 10 ** 9, 2)
    policy = src.get_cpu_policy(domid)
    buf, _ = _save(src, domid, key)
    res = emucore.StreamReader(buf.getvalue(), key).verify()
    assert (res.cpuid_policy, res.msr_policy) == policy
    assert res.tsc_info[0] == 1 and res.tsc_info[3] == 3
    target = dst.hyp.create_domain('vm-a', True, 8 * MB, 2).domid
    saverestore.restore_domain(dst, target, buf, key)
    assert dst.get_cpu_policy(target) == policy
    mode, _, nsec, inc = dst.get_tsc_info(target)
    assert (mode, inc) == (1, 4) and nsec >= 7 * 10 ** 9


def test_restore_on_a_host_lacking_features_writes_nothing(hosts):
    src, dst = hosts
    key = wire.new_key()
    domid = _guest(src)
    buf, _ = _save(src, domid, key)
    guest = cpu_policy.CpuPolicy.parse(*src.get_cpu_policy(domid))
    dst.hyp.cpu_policy = cpu_policy.build(
        guest.vendor, [f for f in guest.features() if f != 'avx'])
    target = dst.hyp.create_domain('vm-a', True, 8 * MB, 2).domid
    before = mf.digest(dst, target)
    with pytest.raises(saverestore.ImageError,
                       match='cannot offer the CPU the guest sees: '
                             'features avx$'):
        saverestore.restore_domain(dst, target, buf, key)
    assert mf.digest(dst, target) == before


def test_round_trip_through_a_file(hosts, tmp_path):
    """A real image file is mapped (not read into memory) and verified
    completely before anything is written."""
    src, dst = hosts
    key = wire.new_key()
    domid = _guest(src)
    path = tmp_path / 'save.v2'
    with open(path, 'wb') as f:
        saverestore.save_domain(src, domid, f, key,
                                device_state=lambda: DEVICE_STATE)
    target = dst.hyp.create_domain('vm-a', True, 8 * MB, 2).domid
    with open(path, 'rb') as f:
        info = saverestore.verify_image(f, key, 'vm-a')
        assert info.info['max_pfn'] == src.domain_info(domid).max_pfn
        got = saverestore.restore_domain(dst, target, f, key,
                                         expected_vm_uuid='vm-a')
    assert mf.digest(dst, target) == mf.digest(src, domid)
    assert got.device_state == DEVICE_STATE


def test_image_on_a_bigger_volume_restores(hosts):
    """A VDI keeps its size: whatever follows the stream's END is ignored
    (and is not covered by any tag, so it cannot change the restore)."""
    src, dst = hosts
    key = wire.new_key()
    domid = _guest(src)
    buf, _ = _save(src, domid, key)
    volume = io.BytesIO(buf.getvalue() + b'\xa5' * (1 << 20))
    target = dst.hyp.create_domain('vm-a', True, 8 * MB, 2).domid
    saverestore.restore_domain(dst, target, volume, key,
                               expected_vm_uuid='vm-a')
    assert mf.digest(dst, target) == mf.digest(src, domid)


def test_empty_image_file_is_refused(hosts, tmp_path):
    _, dst = hosts
    path = tmp_path / 'empty.v2'
    path.write_bytes(b'')
    target = dst.hyp.create_domain('vm-a', True, 8 * MB, 2).domid
    with open(path, 'rb') as f:
        with pytest.raises(saverestore.ImageError, match='truncated'):
            saverestore.restore_domain(dst, target, f, wire.new_key())


def test_zero_pages_cost_no_page_bytes(hosts):
    src, _ = hosts
    dom = src.hyp.create_domain('vm-z', True, 16 * MB, 1)
    buf, stats = _save(src, dom.domid, wire.new_key())
    assert stats.zero_pages == stats.pages
    assert len(buf.getvalue()) < 64 * 1024


def _refused(dst, image, key, match, uuid='vm-a', size=8 * MB):
    target = dst.hyp.create_domain(uuid, True, size, 2).domid
    before = mf.digest(dst, target)
    params = dst.get_hvm_params(target)
    with pytest.raises(saverestore.ImageError, match=match):
        saverestore.restore_domain(dst, target, io.BytesIO(image), key,
                                   expected_vm_uuid=uuid)
    # nothing written
    assert mf.digest(dst, target) == before
    assert dst.get_hvm_params(target) == params


@pytest.mark.parametrize('where', [0.1, 0.5, 0.97])
def test_corrupt_image_is_refused_and_nothing_written(hosts, where):
    src, dst = hosts
    key = wire.new_key()
    buf, _ = _save(src, _guest(src), key)
    image = bytearray(buf.getvalue())
    image[int(len(image) * where)] ^= 0x01
    _refused(dst, bytes(image), key, 'authentication|corrupt')


@pytest.mark.parametrize('keep', [10, 4000, 0.5, 0.999])
def test_truncated_image_is_refused(hosts, keep):
    src, dst = hosts
    key = wire.new_key()
    buf, _ = _save(src, _guest(src), key)
    image = buf.getvalue()
    n = keep if isinstance(keep, int) else int(len(image) * keep)
    _refused(dst, image[:n], key, 'truncated|authentication|incomplete')


def test_image_of_another_key_is_refused(hosts):
    src, dst = hosts
    buf, _ = _save(src, _guest(src), wire.new_key())
    _refused(dst, buf.getvalue(), wire.new_key(), 'authentication')


def test_image_of_another_vm_is_refused(hosts):
    src, dst = hosts
    key = wire.new_key()
    buf, _ = _save(src, _guest(src, uuid='vm-other'), key)
    _refused(dst, buf.getvalue(), key, 'belongs to VM vm-other')


def test_image_bigger_than_target_is_refused(hosts):
    src, dst = hosts
    key = wire.new_key()
    buf, _ = _save(src, _guest(src), key)
    _refused(dst, buf.getvalue(), key, 'holds 2048 pages', size=4 * MB)


def test_not_a_stream_is_refused(hosts):
    _, dst = hosts
    _refused(dst, b'\0' * 4096, wire.new_key(), 'not a libxl')


def test_failed_save_leaves_guest_running(hosts):
    src, _ = hosts
    domid = _guest(src)

    def broken():
        raise RuntimeError('state disk unreadable')

    with pytest.raises(RuntimeError):
        saverestore.save_domain(src, domid, io.BytesIO(), wire.new_key(),
                                device_state=broken)
    assert not src.domain_info(domid).paused


def _verify(path):
    return xen_verifier.verify(path, timeout=120)


def test_compatible_export_passes_xens_verifier(hosts, tmp_path):
    src, _ = hosts
    domid = _guest(src)
    path = tmp_path / 'export.v2'
    with open(path, 'wb') as f:
        stats = saverestore.export_domain(src, domid, f,
                                          device_state=lambda: DEVICE_STATE)
    assert stats.pages == src.domain_info(domid).max_pfn
    assert not src.domain_info(domid).paused    # export leaves it running
    out = _verify(path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'Emulator context' in out.stdout


def test_xens_verifier_rejects_our_optional_records(hosts, tmp_path):
    """Why the export exists: Xen 4.17's verifier refuses unknown optional
    records although its spec lets readers skip them."""
    src, _ = hosts
    buf, _ = _save(src, _guest(src), wire.new_key())
    path = tmp_path / 'save.v2'
    path.write_bytes(buf.getvalue())
    out = _verify(path)
    assert out.returncode != 0
    # the first optional record, emucore's NX_AUTH_INIT
    assert 'record type 80004e10' in out.stdout + out.stderr


def test_pfns_the_hypervisor_has_no_page_for_are_not_sent(hosts):
    """An HVM guest's PFNs reach its special pages below 4 GiB (a 32 MiB
    guest spans ~1 M PFNs on real Xen); the xen backend maps the holes as
    zeros and lists them (hole_runs).  Like libxc's XTAB PFNs they
    stay out of the stream: on real Xen scanning them took minutes."""
    src, dst = hosts
    key = wire.new_key()
    domid = _guest(src)
    max_pfn = src.domain_info(domid).max_pfn
    holes = list(range(100, 600)) + [max_pfn - 1]
    src.hyp.domain(domid).physmap.decrease_reservation(holes)
    buf, stats = _save(src, domid, key)
    assert stats.pages == max_pfn - len(holes)
    target = dst.hyp.create_domain('vm-a', True, 8 * MB, 2).domid
    saverestore.restore_domain(dst, target, buf, key,
                               expected_vm_uuid='vm-a')
    a, b = src.map_memory(domid), dst.map_memory(target)
    try:
        page = 4096
        skip = set(holes)
        for pfn in range(max_pfn):
            got = b[pfn * page:(pfn + 1) * page]
            if pfn in skip:
                assert not any(got)         # left as the new domain has it
            else:
                assert got == a[pfn * page:(pfn + 1) * page]
    finally:
        a.release()
        b.release()


# -- HVM physmap gaps (Xen's layout: sim.physmap 'xen') ----------------------
FIRMWARE_PFNS = mf.FIRMWARE_PFNS
PAGE = mf.PAGE


def test_save_leaves_out_the_gaps_of_an_hvm_physmap(hosts):
    """A 4 MiB guest spans ~1 M PFNs (special pages below 0xff000): only
    populated ones go into the stream, not a million zero pages."""
    src, _ = hosts
    dom = mf.firmware_guest(src)
    assert dom.max_pfn == 0xff000
    _, stats = _save(src, dom.domid, wire.new_key())
    assert stats.pages == dom.physmap.pages() == 1024 - 32 + 8 + 12


def test_restore_populates_pages_the_fresh_domain_lacks(hosts):
    """The fresh domain has RAM and special pages but not what the saved
    guest's firmware populated: libxc's restore populates each PFN before
    writing it (xg_sr_restore.c populate_pfns); ours must too, or those
    pages are silently lost."""
    src, dst = hosts
    key = wire.new_key()
    dom = mf.firmware_guest(src)
    buf, stats = _save(src, dom.domid, key)
    target = dst.hyp.create_domain('vm-x', True, 4 * MB, 1, layout='xen')
    assert not any(target.physmap.has_frame(p) for p in FIRMWARE_PFNS)
    got = saverestore.restore_domain(dst, target.domid, buf, key,
                                     expected_vm_uuid='vm-x')
    assert got.pages == stats.pages
    assert got.populated == len(FIRMWARE_PFNS)
    assert target.physmap.holes == dom.physmap.holes
    assert mf.same_pages(dom, target, FIRMWARE_PFNS + [1, 0xc0])


def test_restore_refuses_a_page_it_cannot_populate(hosts, monkeypatch):
    src, dst = hosts
    key = wire.new_key()
    buf, _ = _save(src, mf.firmware_guest(src).domid, key)
    target = dst.hyp.create_domain('vm-x', True, 4 * MB, 1, layout='xen')

    populate = dst.populate_physmap
    bad = FIRMWARE_PFNS[5]

    def no_memory(domid, pfns):     # Xen has no frame for one of them
        if bad in pfns:
            raise OSError(12, 'Cannot allocate memory')
        populate(domid, pfns)
    monkeypatch.setattr(dst, 'populate_physmap', no_memory)
    with pytest.raises(saverestore.ImageError,
                       match='no frame for PFN %#x' % bad):
        saverestore.restore_domain(dst, target.domid, buf, key,
                                   expected_vm_uuid='vm-x')
