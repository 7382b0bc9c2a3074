import pytest

from nova_xen_stubdom.sim.xenstore import Xenstore, XenstoreError


@pytest.fixture
def xs():
    xs = Xenstore()
    xs.write('/local/domain/5', '')
    xs.set_perms('/local/domain/5', ['n0', 'r5'])
    xs.write('/local/domain/5/data', '')
    xs.set_perms('/local/domain/5/data', ['n5'])
    xs.write('/local/domain/7', '')
    xs.set_perms('/local/domain/7', ['n0', 'r7'])
    return xs


def test_dom0_reads_and_writes_everything(xs):
    xs.write('/local/domain/5/name', 'g')
    assert xs.read('/local/domain/5/name') == 'g'
    assert xs.list('/local/domain') == ['5', '7']
    assert xs.read('/nope') is None


def test_owner_and_reader(xs):
    # read permission on its own directory, no write
    assert xs.list('/local/domain/5', caller=5) == ['data']
    with pytest.raises(XenstoreError) as e:
        xs.write('/local/domain/5/name', 'x', caller=5)
    assert e.value.errno_name == 'EACCES'
    # full rights where it is the owner; new nodes are owned by the writer
    xs.write('/local/domain/5/data/k', 'v', caller=5)
    assert xs.get_perms('/local/domain/5/data/k') == ['n5']


def test_other_domain_refused(xs):
    xs.write('/local/domain/5/data/x', '1')
    with pytest.raises(XenstoreError):
        xs.read('/local/domain/5/data/x', caller=7)
    with pytest.raises(XenstoreError):
        xs.write('/local/domain/5/data/y', '1', caller=7)


def test_stubdom_target_gets_guest_privileges(xs):
    xs.write('/local/domain/5/data/secret', 's')
    with pytest.raises(XenstoreError):
        xs.read('/local/domain/5/data/secret', caller=7)
    xs.set_target(7, 5)
    assert xs.read('/local/domain/5/data/secret', caller=7) == 's'
    xs.write('/local/domain/5/data/from-stub', 'x', caller=7)
    xs.forget_domain(7)
    with pytest.raises(XenstoreError):
        xs.read('/local/domain/5/data/secret', caller=7)


def test_explicit_acl_entry(xs):
    xs.write('/shared/node', 'v')
    xs.set_perms('/shared/node', ['n0', 'r7'])
    assert xs.read('/shared/node', caller=7) == 'v'
    with pytest.raises(XenstoreError):
        xs.write('/shared/node', 'w', caller=7)
    with pytest.raises(XenstoreError):
        xs.read('/shared/node', caller=5)
    with pytest.raises(XenstoreError):
        xs.set_perms('/shared/node', ['bogus'])


def test_rm_and_watch(xs):
    seen = []
    token = xs.watch('/local/domain/5', seen.append)
    xs.write('/local/domain/5/data/a', '1')
    xs.rm('/local/domain/5/data')
    assert seen == ['/local/domain/5/data/a', '/local/domain/5/data']
    assert xs.read('/local/domain/5/data/a') is None
    xs.unwatch(token)
    xs.write('/local/domain/5/x', '1')
    assert len(seen) == 2
