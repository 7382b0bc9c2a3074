"""Scenario 1 with OUR stub-domain image, daemon and device-model wrapper
on real Xen 4.17 (tests/realxen/dom0/s1-ourstub.sh; doc/source/realxen.rst
"Scenarios 1 and 2 with our image").

build-stubdom's image (offline from the testbed) boots as a PV domain and
waits; our daemon links it (link_stubdom, then dm_launch from the wrapper
that xl runs as the guest's device model with xenopsd's argv shape); the
QEMU inside starts with -xen-domid <guest> and is the guest's device model:
the guest's output reaches Xen's debug port and the COM1 that QEMU
emulates; no QEMU runs in dom0.
"""

import pytest

from tests.realxen import ourstub

S1O = ('S1O-DAEMON-UP', 'S1O-STUB-WAITS', 'S1O-DISK', 'S1O-LINK',
       'S1O-CREATE', 'S1O-DM-RUNNING', 'S1O-WRAPPER', 'S1O-MBR-VIA-STUB',
       'S1O-SERIAL-VIA-STUB', 'S1O-NO-DM-IN-DOM0', 'S1O-TEARDOWN',
       'S1O-LEAK-CHECK', 'S1O-DONE')


_marker = ourstub.marker


@pytest.mark.parametrize('name', S1O)
def test_s1o_step(realxen_boot, name):
    m = _marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_s1o_our_image_is_the_device_model(realxen_boot):
    create = _marker(realxen_boot, 'S1O-CREATE')
    guest, stub = create.args['guest'], create.args['stub']
    assert guest and stub and guest != stub
    # the image's kernel: the testbed's 6.1.20 (pre-XSA-482) via --kernel
    assert _marker(realxen_boot, 'S1O-STUB-WAITS').args['kernel'] == \
        '6.1.20-xenprobe'
    dm = _marker(realxen_boot, 'S1O-DM-RUNNING')
    assert dm.args['target'] == guest and dm.args['argv_domid'] == guest
    assert dm.args['dm_domid'] == stub
    assert _marker(realxen_boot, 'S1O-NO-DM-IN-DOM0').args['ok'] == '1'


def test_s1o_wrapper_ran_as_xenopsd_runs_it(realxen_boot):
    guest = _marker(realxen_boot, 'S1O-CREATE').args['guest']
    w = _marker(realxen_boot, 'S1O-WRAPPER')
    assert w.args['dom0_state'] == 'running'
    assert w.args['qmp'] == '1'
    # xenopsd's argv after the re-exec: <domid> --syslog <QEMU args>
    assert w.args['argv_head'].startswith('%s,--syslog' % guest), w


def test_s1o_teardown_in_xenopsds_order(realxen_boot):
    t = _marker(realxen_boot, 'S1O-TEARDOWN')
    assert t.args['target_left'] == 'none'
    m = _marker(realxen_boot, 'S1O-LEAK-CHECK')
    assert m.args.get('ok') == '1', repr(m)
