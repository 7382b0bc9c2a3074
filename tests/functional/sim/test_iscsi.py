"""iSCSI SRs as XAPI keeps them (sim/iscsi.py): SR.introduce is a record,
PBD.plug logs in to the array's target, SR.scan lists its LUNs as VDIs,
a LUN VDI reaches a running domain as a PV frontend backed by the LUN's
file, and unplug/forget refuse while something still uses the SR."""
import XenAPI
import pytest

from nova_xen_stubdom.sim import iscsi, testing
from tests.functional.sim.test_stubdom_seam import _vbd

IQN = 'iqn.2010-10.org.openstack:volume-0001'


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def _introduce(x, host, config, uuid=''):
    sr = x.SR.introduce(uuid, 'vol', '', 'iscsi', '', False, {})
    pbd = x.PBD.create({'SR': sr, 'host': host, 'device_config': config,
                        'other_config': {}})
    return sr, pbd


@pytest.fixture
def target(sim):
    t = iscsi.array(sim).add_target(IQN, portal='192.0.2.10:3260',
                                    chap=('user', 'secret'))
    t.add_lun(1, 64 << 20, name='volume-0001', data=b'LUN1')
    return t


def test_introduce_plug_scan_forget(sim, x, target):
    host = sim.hosts[0].ref
    config = {'target': '192.0.2.10', 'port': '3260', 'targetIQN': IQN,
              'chapuser': 'user', 'chappassword': 'secret'}
    sr, pbd = _introduce(x, host, config)
    rec = x.SR.get_record(sr)
    assert (rec['type'], rec['physical_size'], rec['VDIs']) == \
        ('iscsi', '-1', [])
    assert _fail(x.SR.introduce, rec['uuid'], 'again', '', 'iscsi', '',
                 False, {}) == ['SR_UUID_EXISTS', rec['uuid']]
    assert _fail(x.PBD.create, {'SR': sr, 'host': host, 'device_config': {},
                                'other_config': {}}) == \
        ['PBD_EXISTS', sr, host, pbd]
    # nothing to scan before the host attached the SR
    assert _fail(x.SR.scan, sr) == ['SR_NOT_ATTACHED', sr]
    x.PBD.plug(pbd)
    assert iscsi.array(sim).sessions == {(sim.hosts[0].uuid, IQN)}
    x.SR.scan(sr)
    [vdi] = x.SR.get_VDIs(sr)
    vrec = x.VDI.get_record(vdi)
    assert vrec['sm_config']['LUNid'] == '1'
    assert vrec['virtual_size'] == str(64 << 20)
    assert vrec['location'] == target.luns[1].scsi_id
    # the volume belongs to the array: XAPI may forget it, not delete it
    assert _fail(x.VDI.destroy, vdi) == ['SR_OPERATION_NOT_SUPPORTED', sr]
    # a new LUN appears on the next scan, a removed one goes
    target.add_lun(2, 1 << 20)
    x.SR.scan(sr)
    assert len(x.SR.get_VDIs(sr)) == 2
    assert _fail(x.SR.forget, sr) == ['SR_HAS_PBD', sr]
    assert _fail(x.PBD.destroy, pbd) == ['OPERATION_NOT_ALLOWED',
                                         'PBD is currently attached']
    x.PBD.unplug(pbd)
    assert iscsi.array(sim).sessions == set()
    x.SR.forget(sr)
    assert x.PBD.get_all_records() == {} or all(
        r['SR'] != sr for r in x.PBD.get_all_records().values())
    assert vdi not in x.VDI.get_all()
    # the LUN's data stayed on the array
    assert target.read(1, 4) == b'LUN1'


@pytest.mark.parametrize('config,status', [
    ({'target': '192.0.2.10', 'targetIQN': IQN}, iscsi.SM_CHAP_FAILED),
    ({'target': '192.0.2.10', 'targetIQN': IQN, 'chapuser': 'user',
      'chappassword': 'wrong'}, iscsi.SM_CHAP_FAILED),
    ({'target': '192.0.2.99', 'targetIQN': IQN},
     iscsi.SM_ISCSI_LOGIN_FAILED),
    ({'target': '192.0.2.10'}, iscsi.SM_NO_TARGET_IQN),
])
def test_plug_failures_leave_the_pbd_detached(sim, x, target, config,
                                              status):
    sr, pbd = _introduce(x, sim.hosts[0].ref, config)
    err = _fail(x.PBD.plug, pbd)
    assert err[:2] == ['SR_BACKEND_FAILURE', status]
    assert x.PBD.get_currently_attached(pbd) is False
    assert iscsi.array(sim).sessions == set()
    x.SR.forget(sr)


def test_lun_vdi_on_a_running_domain(sim, x, target):
    host = sim.hosts[0]
    sr, pbd = _introduce(x, host.ref, {
        'target': '192.0.2.10', 'targetIQN': IQN, 'chapuser': 'user',
        'chappassword': 'secret'})
    x.PBD.plug(pbd)
    x.SR.scan(sr)
    [vdi] = x.SR.get_VDIs(sr)
    # introduce of a location the SR already has is refused
    rec = x.VDI.get_record(vdi)
    args = [rec['uuid'], 'again', '', sr, 'user', False, False, {},
            rec['location'], {}, {}, True, '0', '0', 'OpaqueRef:NULL',
            False, '19700101T00:00:00Z', 'OpaqueRef:NULL']
    assert _fail(x.VDI.introduce, *args) == ['LOCATION_NOT_UNIQUE', sr,
                                             rec['location']]
    x.VDI.forget(vdi)
    vdi = x.VDI.introduce(*args)
    assert x.VDI.get_sm_config(vdi)['LUNid'] == '1'
    vm = x.VM.create(testing.vm_record('guest', hvm=False))
    x.VM.start_on(vm, host.ref, False, False)
    vbd = _vbd(x, vm, vdi, '1')
    x.VBD.plug(vbd)
    domid = int(x.VM.get_domid(vm))
    [fe] = [f for f in host.hypervisor.frontends
            if f.domid == domid and f.kind == 'vbd']
    assert fe.target == target.luns[1].path
    assert _fail(x.PBD.unplug, pbd) == ['VDI_IN_USE', vdi, 'PBD.unplug']
    x.VBD.unplug(vbd)
    x.VBD.destroy(vbd)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    x.PBD.unplug(pbd)
    x.SR.forget(sr)
    assert iscsi.leaks(sim.pools[0]) == {'SR': [], 'PBD': [],
                                         'iscsi_sessions': []}
