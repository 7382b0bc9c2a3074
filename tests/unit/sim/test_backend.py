import inspect
import time

import pytest

from nova_xen_stubdom.dom0.hypervisor import HypervisorBackend, load_backend
from nova_xen_stubdom.sim.backend import SimBackend
from nova_xen_stubdom.sim.hypervisor import PAGE_SIZE
from tests import waiting


@pytest.fixture
def be():
    b = SimBackend()
    yield b
    b.close()


def test_implements_every_abstract_method():
    abstract = {n for n, m in inspect.getmembers(HypervisorBackend)
                if getattr(m, '__isabstractmethod__', False)}
    assert abstract and not (abstract & SimBackend.__abstractmethods__)
    b = load_backend('sim')
    assert isinstance(b, SimBackend)
    b.close()


def test_domain_memory_is_a_shared_file(be):
    domid = be.sim.create_domain('uuid-1', True, 4 << 20, vcpus=2)
    info = be.domain_info(domid)
    assert (info.hvm, info.max_pfn, info.vcpus, info.paused) == (
        True, 1024, 2, True)
    path = be.hypervisor.domain(domid).mem_path
    import os
    assert os.path.getsize(path) == 4 << 20
    # sparse: nothing allocated until written
    assert os.stat(path).st_blocks == 0
    mem = be.map_memory(domid, writable=True)
    mem[PAGE_SIZE:PAGE_SIZE + 4] = b'abcd'
    mem.release()
    with open(path, 'rb') as f:
        f.seek(PAGE_SIZE)
        assert f.read(4) == b'abcd'
    ro = be.map_memory(domid)
    assert ro.readonly
    ro.release()
    be.sim.destroy_domain(domid)
    assert not os.path.exists(path)
    with pytest.raises(KeyError):
        be.domain_info(domid)


def test_workload_dirties_pages_into_logdirty_bitmap(be):
    domid = be.sim.create_domain('uuid-2', True, 8 << 20, paused=False)
    with pytest.raises(RuntimeError):
        be.fetch_dirty_bitmap(domid)
    be.enable_logdirty(domid)
    be.sim.set_dirty_rate(domid, 2 << 20)
    dom = be.hypervisor.domain(domid)
    waiting.wait_until(lambda: dom.pages_dirtied >= 50,
                       'the workload to dirty 50 pages')
    bitmap = be.fetch_dirty_bitmap(domid, clear=True)
    assert len(bitmap) == 2048 // 8
    dirty = [i for i in range(2048) if bitmap[i >> 3] & (1 << (i & 7))]
    assert dirty
    # a dirty page really changed
    mem = be.map_memory(domid)
    assert any(mem[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] != bytes(PAGE_SIZE)
               for p in dirty)
    mem.release()
    # paused: no more dirtying
    be.pause(domid)
    be.fetch_dirty_bitmap(domid, clear=True)
    # an observation window of several workload ticks, not a hand-off
    waiting.wait_for_clock_past(time.time() + 0.1)
    assert not any(be.fetch_dirty_bitmap(domid))
    be.sim.set_dirty_rate(domid, 0)
    be.disable_logdirty(domid)


def test_hvm_context_and_params(be):
    domid = be.sim.create_domain('uuid-3', True, 1 << 20)
    from nova_xen_stubdom.sim.hypervisor import walk_hvm_context
    blob = be.get_hvm_context(domid)
    records = walk_hvm_context(blob)
    assert [(t, i) for t, i, _b in records] == [(1, 0), (2, 0), (0, 0)]
    assert records[0][2][:4] == (0x54381286).to_bytes(4, 'little')
    be.set_hvm_context(domid, b'new')
    assert be.get_hvm_context(domid) == b'new'
    be.set_hvm_params(domid, {5: 7})
    assert be.get_hvm_params(domid)[5] == 7
    pv = be.sim.create_domain('uuid-4', False, 1 << 20)
    with pytest.raises(ValueError):
        be.get_hvm_context(pv)


def test_xenstore_and_target(be):
    guest = be.sim.create_domain('g', True, 1 << 20)
    stub = be.sim.create_domain('s', False, 1 << 20)
    be.xs_write('/local/domain/%d/data/x' % guest, '1')
    assert be.xs_read('/local/domain/%d/data/x' % guest) == '1'
    assert 'data' in be.xs_list('/local/domain/%d' % guest)
    be.xs_set_perms('/local/domain/%d/data/x' % guest, ['n%d' % guest])
    assert be.xs_get_perms('/local/domain/%d/data/x' % guest) == [
        'n%d' % guest]
    xs = be.hypervisor.xenstore
    with pytest.raises(Exception):
        xs.read('/local/domain/%d/data/x' % guest, caller=stub)
    be.set_target(stub, guest)
    be.xs_set_target(stub, guest)     # xenstored's own (see below)
    assert be.domain_info(stub).target == guest
    assert xs.read('/local/domain/%d/data/x' % guest, caller=stub) == '1'
    be.xs_rm('/local/domain/%d/data/x' % guest)
    assert be.xs_read('/local/domain/%d/data/x' % guest) is None
    be.sim.destroy_domain(guest)
    assert be.xs_read('/local/domain/%d' % guest) is None
    assert [d.domid for d in be.list_domains()] == [0, stub]


def test_disks_and_console(be):
    domid = be.sim.create_domain('d', False, 1 << 20)
    be.attach_disk(domid, '/tmp/x.img', 'xvdb')
    with pytest.raises(ValueError):
        be.attach_disk(domid, '/tmp/x.img', 'xvdb')
    assert be.xs_read('/local/domain/%d/device/vbd/xvdb/state' % domid) == '4'
    be.detach_disk(domid, 'xvdb')
    assert be.hypervisor.frontends_of(domid) == []
    assert 'created' in be.sim.console(domid)[0]


def test_pci_methods_delegate(be):
    from nova_xen_stubdom.sim import pci
    gpu = pci.gpu()[0]
    be.pci.add_device(gpu)
    domid = be.sim.create_domain('p', True, 1 << 20)
    be.assign_device(domid, gpu.address)
    assert be.pci.owner[gpu.address] == domid
    be.sim.destroy_domain(domid)
    assert be.pci.is_clean()


def test_fault_injection(be):
    from nova_xen_stubdom.sim.backend import BackendFault
    domid = be.sim.create_domain('f', True, 1 << 20)
    be.enable_logdirty(domid)
    be.sim.inject_fault('fetch_dirty_bitmap', after=2)
    be.fetch_dirty_bitmap(domid)
    with pytest.raises(BackendFault):
        be.fetch_dirty_bitmap(domid)
    be.fetch_dirty_bitmap(domid)
    with pytest.raises(ValueError):
        be.sim.inject_fault('no_such_method')


def test_xenstored_does_not_follow_the_hypervisor_target(be):
    """xenstored learns a stub domain's target only from XS_SET_TARGET
    (xen-project/xen tools/xenstore xenstored_domain.c do_set_target);
    xc_domain_set_target is the hypervisor's alone, so libxl sends both
    (tools/libs/light/libxl_dm.c libxl__spawn_stub_dm)."""
    from nova_xen_stubdom.sim.xenstore import XenstoreError
    guest = be.sim.create_domain('g', True, 4 << 20)
    stub = be.sim.create_domain('s', False, 4 << 20)
    xs = be.hypervisor.xenstore
    path = '/local/domain/%d/secret' % guest
    be.xs_write(path, 'x')
    be.xs_set_perms(path, ['n%d' % guest])
    be.set_target(stub, guest)
    assert be.domain_info(stub).target == guest
    with pytest.raises(XenstoreError):
        xs.read(path, caller=stub)
    be.xs_set_target(stub, guest)
    assert xs.read(path, caller=stub) == 'x'


def test_a_domain_has_one_target_for_life(be):
    """xen-project/xen xen/common/domctl.c do_domctl XEN_DOMCTL_set_target:
    -ESRCH for a target that does not exist, -EINVAL for a domain as its
    own target or one whose target is already set (the same one again
    too); d->target holds until the domain is destroyed.  The backend
    reports EINVAL as libxenctrl's failure (HYPERVISOR_CALL_FAILED)."""
    import errno
    from nova_xen_stubdom.dom0 import errors
    guest = be.sim.create_domain('g', True, 1 << 20)
    other = be.sim.create_domain('o', True, 1 << 20)
    stub = be.sim.create_domain('s', False, 1 << 20)
    with pytest.raises(errors.HypervisorCallFailed) as e:
        be.set_target(stub, stub)
    assert e.value.kwargs['errno'] == errno.EINVAL
    be.set_target(stub, guest)
    for again in (guest, other):
        with pytest.raises(errors.HypervisorCallFailed) as e:
            be.set_target(stub, again)
        assert e.value.kwargs['errno'] == errno.EINVAL
        assert be.domain_info(stub).target == guest
    # the guest gone, its stub domain is not pointed anywhere else
    be.sim.destroy_domain(guest)
    with pytest.raises(errors.HypervisorCallFailed) as e:
        be.set_target(stub, other)
    assert e.value.kwargs['errno'] == errno.EINVAL
    # ESRCH: the sim's "no such domain" is a KeyError, as the real
    # backend's (xen_backend._DomainGone)
    with pytest.raises(KeyError):
        be.set_target(other, guest)
