"""vmdevices: every disk and NIC is a pair, the guest's and its stub
domain's mirror naming it (the XAPI side is exercised through Nova in
tests/functional)."""
import itertools

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmdevices


class _Ctx:
    """Records VBD/VIF.create and answers a fresh ref/uuid per object."""

    def __init__(self):
        self.created = []
        self._n = itertools.count()

    def call(self, method, *args):
        if method.endswith('.create'):
            self.created.append((method, args[0]))
            return 'OpaqueRef:%d' % next(self._n)
        assert method.endswith('.get_uuid'), method
        return 'uuid-of-' + args[0]


def test_disk_pair_mirror_names_the_guest_vbd():
    ctx = _Ctx()
    built = vmbuild.Built(guest='guest', stubdom='stub')
    vmdevices.attach_disk(ctx, built, 'vdi', 'root', 0)
    (_, guest), (_, mirror) = ctx.created
    assert (guest['VM'], mirror['VM']) == ('guest', 'stub')
    assert guest['userdevice'] == mirror['userdevice'] == '0'
    assert mirror['other_config'][dc.OC_MIRROR_OF] == 'uuid-of-' + \
        built.vbds[0]
    assert not guest['unpluggable'] and not mirror['unpluggable']
    assert len(built.vbds) == 2     # both recorded for a rollback


def test_volume_beside_the_boot_disk_is_tagged_and_unpluggable():
    ctx = _Ctx()
    built = vmbuild.Built(guest='guest', stubdom='stub')
    vmdevices.attach_disk(ctx, built, 'vdi', 'volume', 2, volume_id='v1')
    for _method, rec in ctx.created:
        assert rec['other_config'][dc.OC_VOLUME_ID] == 'v1'
        assert rec['unpluggable']


def test_nic_pair_shares_device_and_mac():
    ctx = _Ctx()
    built = vmbuild.Built(guest='guest', stubdom='stub')
    vif = {'id': 'port', 'address': 'fa:16:3e:00:00:01',
           'network': {'meta': {'mtu': 9000}}}
    vmdevices.attach_nic(ctx, built, vif, 'net', 1)
    (_, guest), (_, mirror) = ctx.created
    assert guest['other_config'][dc.OC_VIF_ID] == 'port'
    assert mirror['other_config'][dc.OC_MIRROR_OF] == 'uuid-of-' + \
        built.vifs[0]
    for rec in (guest, mirror):
        assert (rec['device'], rec['MAC'], rec['MTU']) == \
            ('1', vif['address'], '9000')


def test_a_failed_step_is_named_by_the_runner():
    ctx = _Ctx()
    built = vmbuild.Built(guest='guest', stubdom='stub')
    steps = []

    def do(step, fn, *args):
        steps.append(step)
        return fn(*args)
    vmdevices.attach_disk(ctx, built, 'vdi', 'swap', 1, do)
    assert steps == ['VBD.create (guest swap disk)', 'VBD.get_uuid',
                     'VBD.create (stub domain mirror of the swap disk)']
