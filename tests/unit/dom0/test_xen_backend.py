"""XenBackend against recording stand-ins of the Xen libraries.

The stand-ins (tests/unit/agent/xen_fakes.py) are real C function pointers,
so these tests check the ctypes marshalling the real libraries would see.
No hypervisor is involved anywhere in this project's tests.
"""
import ctypes
import errno
import gc
import uuid

import pytest

from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.dom0 import hypervisor as backend_mod
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import xen_backend as xb
from nova_xen_stubdom.dom0 import xen_devices
from nova_xen_stubdom.dom0 import xen_libs as xl
from tests.unit.dom0 import xen_fakes
from tests.unit.dom0.xen_fakes import FakeXen, page_pattern

GUEST_UUID = str(uuid.uuid4())
STUB_UUID = str(uuid.uuid4())


@pytest.fixture
def xen():
    fx = FakeXen()
    fx.add_domain(5, hvm=True, max_gpfn=9, vcpus=2, paused=True,
                  vm_uuid=GUEST_UUID)
    fx.add_domain(6, hvm=False, max_gpfn=3)
    fx.xenstore['/local/domain/6/target'] = '5'
    # no handle: the uuid comes from xenstore's /vm path
    fx.xenstore['/local/domain/6/vm'] = '/vm/%s' % STUB_UUID
    return fx


@pytest.fixture
def be(xen):
    b = xb.XenBackend(xen.libs())
    yield b
    b.close()


# -- struct layouts mirror the Xen 4.17 headers (x86_64) ---------------------
def test_struct_sizes_match_headers():
    # struct xen_domctl_getdomaininfo, XEN_DOMCTL_INTERFACE_VERSION 0x15
    assert ctypes.sizeof(xl.XcDomainInfo) == 112
    assert xl.XcDomainInfo.flags.offset == 4
    assert xl.XcDomainInfo.tot_pages.offset == 8
    assert xl.XcDomainInfo.nr_online_vcpus.offset == 64
    assert xl.XcDomainInfo.handle.offset == 76
    assert xl.XcDomainInfo.cpupool.offset == 92
    assert xl.XcDomainInfo.gpaddr_bits.offset == 96
    assert xl.XcDomainInfo.arch_config.offset == 104
    # struct xc_hypercall_buffer: hbuf, param_shadow, int dir, ubuf, sz
    assert ctypes.sizeof(xl.XcHypercallBuffer) == 40
    assert xl.XcHypercallBuffer.ubuf.offset == 24
    assert ctypes.sizeof(xl.XcShadowOpStats) == 8
    assert ctypes.sizeof(xl.XsPermissions) == 8
    assert ctypes.sizeof(xl.xen_pfn_t) == 8


def test_every_abstract_method_is_implemented():
    abstract = backend_mod.HypervisorBackend.__abstractmethods__
    assert abstract and not xb.XenBackend.__abstractmethods__
    assert backend_mod.BACKENDS['xen'] == \
        'nova_xen_stubdom.dom0.xen_backend:XenBackend'


# -- domains ------------------------------------------------------------------
def test_list_domains(be, xen):
    doms = {d.domid: d for d in be.list_domains()}
    assert sorted(doms) == [0, 5, 6]
    g = doms[5]
    assert (g.vm_uuid, g.hvm, g.paused, g.vcpus, g.max_pfn, g.target) == \
        (GUEST_UUID, True, True, 2, 10, None)
    s = doms[6]
    assert (s.vm_uuid, s.hvm, s.paused, s.max_pfn, s.target) == \
        (STUB_UUID, False, False, 4, 5)
    assert doms[0].max_pfn == 0
    # dom0's memory is never sized (nor mapped)
    assert ('xc_domain_maximum_gpfn', xen_fakes.XCH, 0) not in \
        [c[:3] for c in xen.calls]


def test_list_domains_batches_and_skips_dying(xen, monkeypatch):
    monkeypatch.setattr(xb, 'GETINFO_BATCH', 2)
    xen.add_domain(9, dying=True)
    xen.add_domain(12)
    be = xb.XenBackend(xen.libs())
    assert [d.domid for d in be.list_domains()] == [0, 5, 6, 12]
    firsts = [c[2] for c in xen.calls if c[0] == 'xc_domain_getinfolist']
    assert firsts == [0, 6, 10]      # [0, 5] [6, 9] [12]


def test_domain_info_missing_is_keyerror(be):
    assert be.domain_info(5).vm_uuid == GUEST_UUID
    with pytest.raises(KeyError):
        be.domain_info(7)           # getinfolist answers nothing
    with pytest.raises(KeyError):
        be.domain_info(4)           # getinfolist answers the next one, 5


def test_pause_unpause_set_target(be, xen):
    be.unpause(5)
    assert not be.domain_info(5).paused
    be.pause(5)
    assert be.domain_info(5).paused
    # the hypervisor's privilege, then xenstored's, as libxl_dm.c sends
    # them (stubdom_link calls both)
    be.set_target(6, 5)
    be.xs_set_target(6, 5)
    names = [c[0] for c in xen.calls]
    assert names.index('xc_domain_set_target') < names.index('xs_set_target')
    assert ('xc_domain_set_target', xen_fakes.XCH, 6, 5) in xen.calls
    assert ('xs_set_target', xen_fakes.XSH, 6, 5) in xen.calls
    assert xen.targets == {6: 5}


def test_xs_set_target_failure_is_reported(be, xen):
    xen.fail['xs_set_target'] = errno.EACCES
    with pytest.raises(errors.HypervisorCallFailed, match='xs_set_target'):
        be.xs_set_target(6, 5)


def test_read_console_maps_the_ring_page_read_only(be, xen):
    with pytest.raises(NotImplementedError):
        be.read_console(6)              # no console/ring-ref
    # the fake fills a frame with its number as 64-bit words: this one
    # reads as out_prod = 3 and output bytes 'A', 0, 0
    frame = (3 << 32) | 0x41
    xen.xenstore['/local/domain/6/console/ring-ref'] = str(frame)
    text = be.read_console(6)
    maps = [c for c in xen.calls if c[0] == 'xenforeignmemory_map2']
    assert len(maps) == 1 and maps[-1][4] == xl.PROT_READ
    assert [c[0] for c in xen.calls[-2:]] == ['xenforeignmemory_unmap',
                                              'munmap']
    assert text == 'A\x00\x00'
    assert text == xen_devices.console_tail(xen_fakes.page_pattern(frame))


def test_esrch_is_named_and_a_keyerror(be):
    with pytest.raises(KeyError) as exc:
        be.pause(42)
    assert isinstance(exc.value, errors.HypervisorCallFailed)
    msg = str(exc.value)
    assert 'xc_domain_pause' in msg and 'errno 3' in msg
    assert 'domain 42' in msg


def test_other_errno_is_hypervisor_call_failed(be, xen):
    xen.fail['xc_domain_set_target'] = errno.EPERM
    with pytest.raises(errors.HypervisorCallFailed) as exc:
        be.set_target(6, 5)
    assert not isinstance(exc.value, KeyError)
    assert 'xc_domain_set_target failed: errno 1' in str(exc.value)
    assert exc.value.code == 'HYPERVISOR_CALL_FAILED'


# -- log-dirty ----------------------------------------------------------------
def test_dirty_bitmap_clean_and_peek(be, xen):
    xen.add_domain(7, max_gpfn=99)        # 100 PFNs: 2 longs, 13 bytes
    be.enable_logdirty(7)
    xen.dirty[7] = {0, 9, 63, 64, 99}
    bm = be.fetch_dirty_bitmap(7, clear=False)
    assert len(bm) == 13
    got = {i for i in range(100) if bm[i // 8] >> (i % 8) & 1}
    assert got == {0, 9, 63, 64, 99}
    ops = [c[3] for c in xen.calls if c[0] == 'xc_logdirty_control']
    assert ops == [xl.XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
                   xl.XEN_DOMCTL_SHADOW_OP_PEEK]
    assert xen.dirty[7]                      # peek keeps the log
    bm2 = be.fetch_dirty_bitmap(7)
    assert bm2 == bm
    assert xen.dirty[7] == set()             # clean restarts it
    assert not any(be.fetch_dirty_bitmap(7))
    # one hypercall buffer, reused, freed on disable
    assert len(xen.names('xc__hypercall_buffer_alloc')) == 1
    assert len(xen.hbufs) == 1
    be.disable_logdirty(7)
    assert xen.hbufs == {}
    assert [c[3] for c in xen.calls if c[0] == 'xc_logdirty_control'][-1] \
        == xl.XEN_DOMCTL_SHADOW_OP_OFF


def test_dirty_bitmap_without_logdirty_fails_clearly(be, xen):
    with pytest.raises(errors.HypervisorCallFailed) as exc:
        be.fetch_dirty_bitmap(5)
    assert 'xc_logdirty_control' in str(exc.value)
    assert 'errno %d' % errno.EINVAL in str(exc.value)


def test_bitmap_from_xen_masks_tail():
    raw = b'\xff' * 16
    assert xl.bitmap_from_xen(raw, 10) == bytearray(b'\xff\x03')
    assert xl.bitmap_from_xen(raw, 16) == bytearray(b'\xff\xff')
    assert xl.bitmap_from_xen(b'', 9) == bytearray(2)


# -- HVM state ----------------------------------------------------------------
def test_hvm_context_roundtrip(be, xen):
    xen.contexts[5] = bytes(range(200))
    assert be.get_hvm_context(5) == bytes(range(200))
    sizes = [c[4] for c in xen.calls if c[0] == 'xc_domain_hvm_getcontext']
    assert sizes == [0, 264]               # size query, then the fetch
    be.set_hvm_context(5, b'\x01\x02ctx')
    assert xen.set_contexts[5] == b'\x01\x02ctx'


def test_hvm_params(be, xen):
    xen.params[(5, xl.HVM_PARAM_STORE_PFN)] = 0xfeffc
    xen.params[(5, xl.HVM_PARAM_MCA_CAP)] = 1 << 40
    assert be.get_hvm_params(5) == {1: 0xfeffc, 38: 1 << 40}
    asked = [c[3] for c in xen.calls if c[0] == 'xc_hvm_param_get']
    assert asked == list(xl.SAVED_HVM_PARAMS)
    be.set_hvm_params(6, {'9': '3', 1: 1 << 33})
    assert xen.params[(6, 9)] == 3 and xen.params[(6, 1)] == 1 << 33


# -- CPU policy and TSC ------------------------------------------------------
def test_cpu_policy_get_set_and_host_max(be, xen):
    pol = cpu_policy.build('GenuineIntel', ['fpu', 'sse2', 'avx2'])
    xen.cpu_policies[5] = pol.serialise()
    assert be.get_cpu_policy(5) == pol.serialise()
    xen.system_policies[xl.XEN_SYSCTL_cpu_policy_hvm_max] = pol.serialise()
    assert be.host_cpu_policy() == pol.serialise()
    assert xen.policy_objs == {}            # every handle destroyed
    be.set_cpu_policy(6, *pol.serialise())
    assert xen.cpu_policies[6] == pol.serialise()
    call = [c for c in xen.calls if c[0] == 'xc_set_domain_cpu_policy'][0]
    assert call[3] == len(pol.leaves) and call[5] == 1


def test_cpu_policy_refusal_names_xens_error_leaf(be, xen):
    xen.fail['xc_set_domain_cpu_policy'] = errno.EINVAL
    with pytest.raises(errors.HypervisorCallFailed) as exc:
        be.set_cpu_policy(6, *cpu_policy.build('GenuineIntel',
                                               []).serialise())
    assert 'domain 6: leaf 0xffffffff' in str(exc.value)
    assert 'Invalid argument' in str(exc.value)


def test_tsc_info_round_trip(be, xen):
    xen.tsc[5] = (0, 123456789, 2600000, 3)
    assert be.get_tsc_info(5) == (0, 2600000, 123456789, 3)
    be.set_tsc_info(6, 2, 2600000, 42, 3)
    assert xen.tsc[6] == (2, 42, 2600000, 4)
    with pytest.raises(KeyError):
        be.get_tsc_info(9)


def test_pv_suspend_primitives(be, xen):
    xen.params[(5, 0)] = 1 << 56
    assert be.get_hvm_param(5, 0) == 1 << 56
    be.resume_domain(5)
    assert xen.resumed == [('xc', 5, 1), ('xs', 5)]     # fast, as libxl
    be.xs_introduce_domain(6, 0xfeffc, 7)
    assert xen.introduced[6] == (0xfeffc, 7)
    xen.fail['xs_introduce_domain'] = errno.EINVAL
    with pytest.raises(errors.HypervisorCallFailed, match='pfn 0x1 port 2'):
        be.xs_introduce_domain(6, 1, 2)


# -- xenstore -----------------------------------------------------------------
def test_xenstore(be, xen):
    be.xs_write('/local/domain/6/dm-argv', 'qemu\x1b-xen-domid\x1b5')
    assert be.xs_read('/local/domain/6/dm-argv') == \
        'qemu\x1b-xen-domid\x1b5'
    assert be.xs_read('/nope') is None
    assert be.xs_list('/local/domain/6') == ['dm-argv', 'target', 'vm']
    assert be.xs_list('/nope') == []
    be.xs_rm('/local/domain/6/dm-argv')
    be.xs_rm('/local/domain/6/dm-argv')      # idempotent
    assert be.xs_read('/local/domain/6/dm-argv') is None
    be.xs_set_perms('/local/domain/6/target', ['n6', 'r5', 'b0', 'w7'])
    assert xen.perms['/local/domain/6/target'] == [(6, 0), (5, 1), (0, 3),
                                                   (7, 2)]
    assert be.xs_get_perms('/local/domain/6/target') == \
        ['n6', 'r5', 'b0', 'w7']
    assert xen.allocs == {} and xen.freed        # every result freed


def test_xs_write_all_is_one_transaction_retried_on_eagain(be, xen):
    """A disk's frontend and backend nodes go in one transaction, as
    libxl_device.c libxl__device_generic_add writes them; xenstored's
    EAGAIN (another writer committed first) restarts it."""
    xen.conflicts = 1
    be.xs_write_all([('/local/domain/7/device/vbd/51712', '', ['n7', 'r0']),
                     ('/local/domain/7/device/vbd/51712/state', '1', None)])
    calls = [c for c in xen.calls if c[0].startswith('xs_')
             and c[0] != 'xs_open']
    names = [c[0] for c in calls]
    assert names == ['xs_transaction_start', 'xs_write', 'xs_set_permissions',
                     'xs_write', 'xs_transaction_end'] * 2
    first, second = calls[0:5], calls[5:10]
    assert {c[2] for c in first[1:]} == {41}        # every call inside t
    assert {c[2] for c in second[1:]} == {42}
    assert first[-1][3] is False                    # commit, not abort
    assert xen.xenstore['/local/domain/7/device/vbd/51712/state'] == '1'


def test_xs_write_all_aborts_on_a_failed_write(be, xen):
    xen.fail['xs_write'] = errno.EACCES
    with pytest.raises(errors.HypervisorCallFailed, match='xs_write'):
        be.xs_write_all([('/x', 'y', None)])
    assert xen.calls[-1][0] == 'xs_transaction_end'
    assert xen.calls[-1][3] is True                 # aborted
    del xen.fail['xs_write']
    xen.conflicts = 1000
    with pytest.raises(errors.HypervisorCallFailed,
                       match='still conflicting after 20 attempts'):
        be.xs_write_all([('/x', 'y', None)])


def test_xenstore_errors(be, xen):
    xen.fail['xs_read'] = errno.EACCES
    with pytest.raises(errors.HypervisorCallFailed) as exc:
        be.xs_read('/local/domain/5/secret')
    assert 'xs_read failed: errno 13' in str(exc.value)
    assert '/local/domain/5/secret' in str(exc.value)
    xen.fail['xs_write'] = errno.EACCES
    with pytest.raises(errors.HypervisorCallFailed):
        be.xs_write('/x', 'y')
    with pytest.raises(errors.InvalidArgument):
        be.xs_set_perms('/x', ['q5'])
    with pytest.raises(errors.InvalidArgument):
        be.xs_set_perms('/x', [])
    assert 'xs_set_permissions' not in xen.names()


# -- PCI ----------------------------------------------------------------------
def test_pci_grants_marshalling(be, xen):
    be.iomem_permission(6, 0xfe000, 16, True)
    be.ioport_permission(6, 0xc000, 0x40, False)
    be.irq_permission(6, 300, True)
    calls = {c[0]: c[1:] for c in xen.calls}
    assert calls['xc_domain_iomem_permission'] == (xen_fakes.XCH, 6, 0xfe000,
                                                   16, 1)
    assert calls['xc_domain_ioport_permission'] == (xen_fakes.XCH, 6, 0xc000,
                                                    0x40, 0)
    # pirq is 32 bits wide in 4.17 (older releases took a uint8_t)
    assert calls['xc_domain_irq_permission'] == (xen_fakes.XCH, 6, 300,
                                                 True)


@pytest.mark.parametrize('sbdf,code', [
    ('0000:03:00.1', 0x0301),
    ('03:00.1', 0x0301),
    ('0001:ff:1f.7', 0x1ffff),
    ('abcd:80:02.0', 0xabcd8010),
])
def test_sbdf_encoding(sbdf, code):
    assert xl.encode_sbdf(sbdf) == code


@pytest.mark.parametrize('bad', ['0000:03:20.0', '03:00', 'x:03:00.0',
                                 '0000:03:00.8'])
def test_sbdf_rejected(bad):
    with pytest.raises(errors.InvalidArgument):
        xl.encode_sbdf(bad)


def test_assign_deassign(xen):
    be = xb.XenBackend(xen.libs())
    be.assign_device(5, '0000:03:00.1')
    strict = xb.XenBackend(xen.libs(), rdm_relaxed=False)
    strict.assign_device(5, '0000:03:00.1')
    be.deassign_device(5, '0000:03:00.1')
    assert [c[1:] for c in xen.calls if c[0] == 'xc_assign_device'] == [
        (xen_fakes.XCH, 5, 0x301, xl.XEN_DOMCTL_DEV_RDM_RELAXED),
        (xen_fakes.XCH, 5, 0x301, xl.XEN_DOMCTL_DEV_RDM_STRICT)]
    assert ('xc_deassign_device', xen_fakes.XCH, 5, 0x301) in xen.calls


# -- guest memory -------------------------------------------------------------
def _map_calls(xen):
    return [(c[3], c[6]) for c in xen.calls
            if c[0] == 'xenforeignmemory_map2']


def test_map_memory_chunked_contiguous_readonly(xen):
    be = xb.XenBackend(xen.libs(), map_chunk_pages=4)
    view = be.map_memory(5)                       # 10 pages
    assert view.readonly and len(view) == 10 * xl.PAGE_SIZE
    for pfn in range(10):
        assert view[pfn * xl.PAGE_SIZE:(pfn + 1) * xl.PAGE_SIZE] == \
            page_pattern(pfn)
    calls = _map_calls(xen)
    assert [n for _, n in calls] == [4, 4, 2]
    base = calls[0][0]
    assert [a for a, _ in calls] == [base, base + 4 * xl.PAGE_SIZE,
                                     base + 8 * xl.PAGE_SIZE]
    prots = {c[4] for c in xen.calls if c[0] == 'xenforeignmemory_map2'}
    assert prots == {xl.PROT_READ}
    assert be.holes(view) == []
    view.release()
    unmaps = [(c[2], c[3]) for c in xen.calls
              if c[0] == 'xenforeignmemory_unmap']
    assert unmaps == [(base, 4), (base + 4 * xl.PAGE_SIZE, 4),
                      (base + 8 * xl.PAGE_SIZE, 2)]
    assert ('munmap', base, 10 * xl.PAGE_SIZE) in xen.calls
    assert be._mappings == {}


def test_map_memory_writable_and_gc_release(xen):
    be = xb.XenBackend(xen.libs(), map_chunk_pages=3)
    view = be.map_memory(6, writable=True)        # 4 pages
    assert not view.readonly
    view[5] = 0xAA
    assert view[5] == 0xAA
    assert {c[4] for c in xen.calls if c[0] == 'xenforeignmemory_map2'} == \
        {xl.PROT_READ | xl.PROT_WRITE}
    part = view[xl.PAGE_SIZE:]
    del view
    gc.collect()
    assert not xen.names('xenforeignmemory_unmap')   # slice keeps it alive
    del part
    gc.collect()
    assert len(xen.names('xenforeignmemory_unmap')) == 2


def test_hole_placeholders_are_not_charged_to_dom0(xen):
    """Writable placeholders of a guest's gaps (an HVM guest's span is
    ~1 M PFNs, mostly gaps) must not count against dom0's commit limit:
    a fork from the daemon (Python 3.6's subprocess forks) would charge
    them again and fail with ENOMEM (realxen s5 on Python 3.6)."""
    xen.holes[5] = {2, 3, 7}
    be = xb.XenBackend(xen.libs(), map_chunk_pages=4)
    view = be.map_memory(5, writable=True)
    anon = [(prot, flags) for prot, flags, fd in xen.mmap_flags
            if fd == -1 and flags & xl.MAP_ANONYMOUS]
    assert anon
    for prot, flags in anon:
        assert flags & xl.MAP_NORESERVE, (prot, flags)
    view.release()


def test_map_memory_holes_read_as_zeros(xen):
    xen.holes[5] = {2, 3, 7}
    be = xb.XenBackend(xen.libs(), map_chunk_pages=4)
    view = be.map_memory(5)
    assert be.holes(view) == [2, 3, 7]
    for pfn in range(10):
        page = view[pfn * xl.PAGE_SIZE:(pfn + 1) * xl.PAGE_SIZE]
        expected = bytes(xl.PAGE_SIZE) if pfn in xen.holes[5] else \
            page_pattern(pfn)
        assert page == expected, pfn
    # runs mapped around the holes: [0,1] [4,5,6] [8,9]
    assert [n for _, n in _map_calls(xen)] == [4, 2, 4, 3, 2]
    view.release()


def test_map_memory_asks_which_pfns_have_pages_first(xen):
    """An HVM guest's MMIO hole (XTAB in getpageframeinfo3) is never handed
    to the foreign map: as libxc's save, one type query per chunk."""
    xen.domains[5]['max_gpfn'] = 15
    xen.absent[5] = {2, 3, 7} | set(range(12, 16))
    be = xb.XenBackend(xen.libs(), map_chunk_pages=4)
    view = be.map_memory(5)                       # 16 pages
    assert be.holes(view) == [2, 3, 7, 12, 13, 14, 15]
    for pfn in range(16):
        page = view[pfn * xl.PAGE_SIZE:(pfn + 1) * xl.PAGE_SIZE]
        expected = bytes(xl.PAGE_SIZE) if pfn in xen.absent[5] else \
            page_pattern(pfn)
        assert page == expected, pfn
    # only the runs with pages: [0,1] [4,5,6] [8..11]; chunk 12..15 none
    assert [n for _, n in _map_calls(xen)] == [2, 3, 4]
    assert len(xen.names('xc_get_pfn_type_batch')) == 4
    view.release()


def test_populate_physmap_maps_new_frames_into_live_views(xen):
    """libxc's restore populates PFNs a fresh domain lacks
    (xg_sr_restore.c populate_pfns): a view taken before sees the new
    frames where it had placeholder zeros, and writes reach them."""
    xen.domains[5]['max_gpfn'] = 15
    xen.absent[5] = {2, 3, 7} | set(range(12, 16))
    be = xb.XenBackend(xen.libs(), map_chunk_pages=4)
    view = be.map_memory(5, writable=True)
    be.populate_physmap(5, [3, 7, 13])
    assert xen.populated[5] == [3, 7, 13]
    assert be.holes(view) == [2, 12, 14, 15]
    for pfn in (3, 7, 13):
        assert view[pfn * xl.PAGE_SIZE:(pfn + 1) * xl.PAGE_SIZE] == \
            page_pattern(pfn), pfn
    call = [c for c in xen.calls
            if c[0] == 'xc_domain_populate_physmap_exact'][0]
    assert call[3:6] == (3, 0, 0)           # nr_extents, order 0, no flags
    view.release()


def test_populate_physmap_failure_names_the_call(xen):
    xen.no_frames = {9}
    be = xb.XenBackend(xen.libs())
    with pytest.raises(errors.HypervisorCallFailed) as e:
        be.populate_physmap(5, [9])
    assert 'xc_domain_populate_physmap_exact' in str(e.value)
    assert 'ENOMEM' in str(e.value) or 'memory' in str(e.value)


def test_map_memory_maps_everything_when_types_are_refused(xen):
    xen.domains[5]['max_gpfn'] = 15
    xen.fail['xc_get_pfn_type_batch'] = errno.EPERM
    xen.holes[5] = {3}
    be = xb.XenBackend(xen.libs(), map_chunk_pages=8)
    view = be.map_memory(5)                       # 16 pages
    assert be.holes(view) == [3]
    assert [n for _, n in _map_calls(xen)] == [8, 3, 4, 8]
    view.release()


def test_pv_domains_are_mapped_without_type_query(xen):
    be = xb.XenBackend(xen.libs())
    be.map_memory(6).release()
    assert not xen.names('xc_get_pfn_type_batch')   # PV: PFN is not GFN


def test_map_memory_failure_releases_everything(xen):
    xen.fail['xenforeignmemory_map2'] = errno.EPERM
    be = xb.XenBackend(xen.libs())
    with pytest.raises(errors.HypervisorCallFailed) as exc:
        be.map_memory(5)
    assert 'xenforeignmemory_map2' in str(exc.value)
    assert 'domain 5' in str(exc.value)
    assert len(xen.names('munmap')) == 1 and be._mappings == {}
    with pytest.raises(errors.InvalidArgument):
        be.map_memory(0)                          # dom0: no guest memory


def test_close_unmaps_and_closes_handles(xen):
    be = xb.XenBackend(xen.libs())
    view = be.map_memory(6)
    be.enable_logdirty(6)
    be.fetch_dirty_bitmap(6)
    be.close()
    assert len(xen.names('xenforeignmemory_unmap')) == 1
    assert xen.hbufs == {}
    for sym in ('xs_close', 'xenforeignmemory_close', 'xc_interface_close'):
        assert sym in xen.names()
    del view
    gc.collect()
    assert len(xen.names('xenforeignmemory_unmap')) == 1   # not twice


# -- opening ------------------------------------------------------------------
def test_open_failure_is_clear(xen):
    xen.fail['xc_interface_open'] = errno.ENOENT
    with pytest.raises(errors.XenUnavailable) as exc:
        xb.XenBackend(xen.libs())
    assert 'only works in a Xen dom0' in str(exc.value)
    assert 'xc_interface_open failed: errno 2' in str(exc.value)
    xen.fail.clear()
    xen.fail['xs_open'] = errno.ECONNREFUSED
    with pytest.raises(errors.XenUnavailable):
        xb.XenBackend(xen.libs())
    # what was opened before the failure is closed again
    assert 'xenforeignmemory_close' in xen.names()


def test_missing_libraries_are_clear(monkeypatch):
    monkeypatch.setitem(xl.SONAMES, 'xenctrl', ('libxenctrl-nope.so.0',))
    with pytest.raises(errors.XenUnavailable) as exc:
        backend_mod.load_backend('xen')
    msg = str(exc.value)
    assert 'only works in a Xen dom0' in msg and 'libxenctrl' in msg
    assert exc.value.code == 'XEN_UNAVAILABLE'


def test_missing_symbol_is_clear(xen):
    class Lib:
        pass
    with pytest.raises(errors.XenUnavailable) as exc:
        xl.XenLibraries(Lib(), Lib(), Lib(), Lib(), Lib())
    assert 'has no symbol' in str(exc.value)


def _real_libs_present():
    try:
        xl.XenLibraries.load()
        return True
    except errors.XenUnavailable:
        return False


@pytest.mark.skipif(not _real_libs_present(),
                    reason='Xen 4.17 libraries not installed '
                           '(tools/apt-packages.txt: libxen-dev)')
def test_real_libraries_resolve_and_refuse_without_hypervisor(tmp_path):
    libs = xl.XenLibraries.load()
    for group in xl.PROTOTYPES:
        for sym in xl.PROTOTYPES[group]:
            assert callable(getattr(libs, sym))
    # no /dev/xen/privcmd here (and never a hypervisor in CI)
    with pytest.raises(errors.XenUnavailable) as exc:
        xb.XenBackend(privcmd=str(tmp_path / 'privcmd'))
    assert 'only works in a Xen dom0' in str(exc.value)
    # even with a privcmd path that exists, opening fails cleanly
    with pytest.raises(errors.XenUnavailable) as exc:
        xb.XenBackend(privcmd=str(tmp_path))
    assert 'xc_interface_open failed' in str(exc.value)


def test_readonly_view_outlives_its_parent_through_slices(be, xen):
    view = be.map_memory(5)
    page = view[xl.PAGE_SIZE:2 * xl.PAGE_SIZE]
    del view
    gc.collect()
    assert not [c for c in xen.calls if c[0] == 'xenforeignmemory_unmap']
    assert page == xen_fakes.page_pattern(1)
    assert page.readonly
    page.release()
    del page
    gc.collect()
    assert [c for c in xen.calls if c[0] == 'xenforeignmemory_unmap']
