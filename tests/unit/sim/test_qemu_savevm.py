"""The simulated device model's state has the size and shape of QEMU's
xenfv device state."""
import lzma
import os
import struct

import pytest

from nova_xen_stubdom.sim import qemu_savevm as qs

STREAM = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))), '..', 'shared',
    'xen-testbed', 'streams', 'hvm-guest-64M.xl-save.xz')
#: where the testbed README says the EMULATOR_CONTEXT record starts
EMULATOR_CONTEXT_AT = 75471785


def test_generated_state_is_xenfv_sized_and_walks():
    blob = qs.device_state(b'vm-1')
    assert len(blob) == 6645            # what QEMU 8.0.3 xenfv wrote
    names = [n for n, _ in qs.walk(blob)]
    assert names[:3] == ['timer', 'cpu_common', 'cpu']
    assert '0000:00:02.0/platform' in names
    assert qs.device_state(b'vm-1') == blob != qs.device_state(b'vm-2')


def test_walk_refuses_other_shapes():
    blob = qs.device_state(b'x')
    with pytest.raises(ValueError, match='savevm'):
        qs.walk(b'QEVM\0\0\0\2' + blob[8:])
    with pytest.raises(ValueError, match="section 0 'timer'"):
        qs.walk(blob[:8] + b'\x05' + blob[9:])
    with pytest.raises(ValueError, match='QEMU_VM_EOF'):
        qs.walk(blob + b'\0')


def test_table_matches_the_testbeds_real_qemu_state():
    path = os.environ.get('NXS_HVM_XL_SAVE', STREAM)
    if not os.path.exists(path):
        pytest.skip('the testbed\'s hvm-guest-64M.xl-save.xz is not at %s'
                    % path)
    with lzma.open(path) as f:
        f.seek(EMULATOR_CONTEXT_AT)
        rtype, length = struct.unpack('<II', f.read(8))
        body = f.read(length)
    assert rtype == 3                   # libxl EMULATOR_CONTEXT
    state = body[8:]                    # after {id, index}
    assert len(state) == 6645
    assert qs.walk(state) == qs.walk(qs.device_state(b's'))
