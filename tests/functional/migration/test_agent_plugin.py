"""The agent's migration and save/restore plugin functions on the simulator:
two hosts, guests whose QEMU runs in a stub domain, everything through
XAPI's host.call_plugin."""
# Nova's harness decides eventlet monkey patching on import; the functional
# tier imports it first in every module (tests/functional/base.py)
from tests.functional import base  # noqa: F401,I100

import hashlib
import json
import time

import pytest
import XenAPI

from nova_xen_stubdom.dom0 import keywrap
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.sim import devicemodel, testing
from tests import guest_memory


@pytest.fixture
def sim():
    with testing.running_sim(hosts=2) as s:
        yield s


@pytest.fixture
def x(sim):
    session = testing.login(sim)
    yield session.xenapi
    session.xenapi.session.logout()


def _plugin(x, host, fn, **args):
    if 'key' in args:
        # as the driver does (driver/common.py call_plugin): a key never
        # stands in the plugin's argv
        offer = _plugin(x, host, 'key_offer')
        args['key_wrap'] = keywrap.wrap(offer['offer'], offer['pub'],
                                        bytes.fromhex(args.pop('key')))
    return json.loads(x.host.call_plugin(
        host, 'nova_xen_stubdom', fn, {k: str(v) for k, v in args.items()}))


def _receive(x, host, **args):
    """migrate_receive on *host*'s own address (what the driver passes)."""
    return _plugin(x, host, 'migrate_receive',
                   listen_address=x.host.get_address(host), **args)


def _send(x, host, recv, dest, **args):
    return _plugin(x, host, 'migrate_send', address=recv['address'],
                   port=recv['port'], dest_host_uuid=x.host.get_uuid(dest),
                   **args)


def _guest(x, host, name, paused=False, memory=64 << 20, dirty_rate=0):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({'name_label': name, 'name_description': '',
                        'SR': sr, 'virtual_size': str(8 << 20),
                        'type': 'user', 'sharable': True,
                        'read_only': False, 'other_config': {},
                        'xenstore_data': {}, 'sm_config': {}, 'tags': []})
    guest = x.VM.create(testing.vm_record(name, hvm=True, memory=memory))
    stub = x.VM.create(testing.vm_record(name + '-dm', hvm=False,
                                         memory=128 << 20))
    for vm in (guest, stub):
        x.VBD.create({'VM': vm, 'VDI': vdi, 'userdevice': '0',
                      'bootable': vm == guest, 'mode': 'RW', 'type': 'Disk',
                      'unpluggable': True, 'empty': False,
                      'other_config': {}, 'qos_algorithm_type': '',
                      'qos_algorithm_params': {}})
    x.VM.start_on(stub, host, False, False)
    stub_domid = int(x.VM.get_domid(stub))
    config = {'memory_mb': memory >> 20, 'vcpus': 1, 'name': name,
              'disks': [{'bus': 'ide', 'index': 0}], 'nics': []}
    _plugin(x, host, 'link_stubdom', stubdom_domid=stub_domid,
            guest_vm_uuid=x.VM.get_uuid(guest), config=json.dumps(config))
    x.VM.start_on(guest, host, paused, False)
    guest_domid = int(x.VM.get_domid(guest))
    deadline = time.monotonic() + 10
    while _plugin(x, host, 'dm_state', stubdom_domid=stub_domid,
                  guest_domid=guest_domid).get('state') != 'running':
        assert time.monotonic() < deadline, 'device model did not start'
        time.sleep(0.02)
    return guest, guest_domid


def _runtime(sim, x, host):
    return sim.pools[0].host_by_ref(host)


def _mem(h, domid):
    dom = h.hypervisor.domain(domid)
    return guest_memory.digest(dom.memory(), dom.hvm_params)


def _fill(h, domid):
    mem = h.hypervisor.domain(domid).memory()
    for pfn in range(0, len(mem) // 4096, 3):
        mem[pfn * 4096:pfn * 4096 + 32] = hashlib.sha256(
            b'%d' % pfn).digest()
    mem.release()


def test_live_migration_between_hosts_through_call_plugin(sim, x):
    h1, h2 = x.host.get_all()[:2]
    src_vm, src_dom = _guest(x, h1, 'mover')
    dst_vm, dst_dom = _guest(x, h2, 'mover-incoming', paused=True)
    r1, r2 = _runtime(sim, x, h1), _runtime(sim, x, h2)
    _fill(r1, src_dom)
    r1.hypervisor.domain(src_dom).dirty_rate = 4 << 20
    qemu_state = devicemodel.device_state(r1.hypervisor, src_dom)
    assert qemu_state
    key = wire.new_key().hex()
    recv = _receive(x, h2, guest_vm_uuid=x.VM.get_uuid(dst_vm), key=key,
                    port_min=0, port_max=0)
    send = _send(x, h1, recv, h2, guest_vm_uuid=x.VM.get_uuid(src_vm),
                 key=key, downtime_ms=50)
    deadline = time.monotonic() + 60
    while True:
        st = _plugin(x, h1, 'migrate_status', id=send['id'])
        if st['state'] != 'running':
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert st['state'] == 'completed', st
    assert st['progress']['memory_total'] == 64 << 20
    assert st['progress']['memory_remaining'] == 0
    assert st['stats']['rounds'] >= 2
    rs = _plugin(x, h2, 'migrate_receive_status', id=recv['id'])
    assert rs['state'] == 'running' and rs['domid'] == dst_dom
    assert not r2.hypervisor.domain(dst_dom).paused
    assert r1.hypervisor.domain(src_dom).paused
    assert _mem(r2, dst_dom) == _mem(r1, src_dom)
    # QEMU in the destination's stub domain adopted the source's state
    assert devicemodel.device_state(r2.hypervisor, dst_dom) == qemu_state
    # no state disk left on either stub domain
    for h in (r1, r2):
        assert not [f for f in h.hypervisor.frontends if f.devid == 'xvdz']
    _plugin(x, h1, 'migrate_forget', id=send['id'])
    _plugin(x, h2, 'migrate_forget', id=recv['id'])


def test_wrong_key_leaves_the_source_running(sim, x):
    h1, h2 = x.host.get_all()[:2]
    src_vm, src_dom = _guest(x, h1, 'stay')
    dst_vm, dst_dom = _guest(x, h2, 'stay-incoming', paused=True)
    recv = _receive(x, h2, guest_vm_uuid=x.VM.get_uuid(dst_vm),
                    key=wire.new_key().hex(), port_min=0, port_max=0)
    send = _send(x, h1, recv, h2, guest_vm_uuid=x.VM.get_uuid(src_vm),
                 key=wire.new_key().hex())
    deadline = time.monotonic() + 30
    while _plugin(x, h1, 'migrate_status', id=send['id'])['state'] == \
            'running':
        assert time.monotonic() < deadline
        time.sleep(0.05)
    st = _plugin(x, h1, 'migrate_status', id=send['id'])
    assert st['state'] == 'failed' and 'refused' in st['error']
    r1 = _runtime(sim, x, h1)
    assert not r1.hypervisor.domain(src_dom).paused
    assert devicemodel.device_state(r1.hypervisor, src_dom)
    out = _plugin(x, h2, 'migrate_receive_cancel', id=recv['id'])
    assert out['state'] == 'cancelled'


def test_save_and_restore_image(sim, x, tmp_path):
    h1, h2 = x.host.get_all()[:2]
    vm, dom = _guest(x, h1, 'sleeper')
    r1, r2 = _runtime(sim, x, h1), _runtime(sim, x, h2)
    _fill(r1, dom)
    qemu_state = devicemodel.device_state(r1.hypervisor, dom)
    key = wire.new_key().hex()
    image = tmp_path / 'suspend.img'
    out = _plugin(x, h1, 'save_image', guest_vm_uuid=x.VM.get_uuid(vm),
                  path=str(image), key=key)
    assert out['bytes_written'] == image.stat().st_size
    assert r1.hypervisor.domain(dom).paused
    digest = _mem(r1, dom)
    uuid = x.VM.get_uuid(vm)
    # another VM's key / uuid, or a damaged image: refused before writing
    new_vm, new_dom = _guest(x, h2, 'sleeper-resumed', paused=True)
    before = _mem(r2, new_dom)
    for bad in ({'key': wire.new_key().hex()},
                {'expected_vm_uuid': 'someone-else'}):
        args = dict(guest_vm_uuid=x.VM.get_uuid(new_vm), path=str(image),
                    key=key, expected_vm_uuid=uuid)
        args.update(bad)
        with pytest.raises(XenAPI.Failure) as e:
            _plugin(x, h2, 'restore_image', **args)
        assert e.value.details[1] == 'IMAGE_REFUSED'
    assert _mem(r2, new_dom) == before
    _plugin(x, h2, 'verify_image', path=str(image), key=key,
            expected_vm_uuid=uuid)
    _plugin(x, h2, 'restore_image', guest_vm_uuid=x.VM.get_uuid(new_vm),
            path=str(image), key=key, expected_vm_uuid=uuid)
    assert _mem(r2, new_dom) == digest
    assert devicemodel.device_state(r2.hypervisor, new_dom) == qemu_state
