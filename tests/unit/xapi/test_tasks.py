"""Async.* tasks: wait, failure, timeout + cancel, destroy."""
import pytest

from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import tasks


def _vm(fake):
    return sorted(fake.vms)[0]


def test_call_async_waits_and_destroys_task(fake, client):
    vm = _vm(fake)
    fake.task_delay = 0.1
    assert client.call_async('VM.start', vm, False, False) == ''
    assert fake.vms[vm]['power_state'] == 'Running'
    assert fake.tasks == {}           # destroyed
    assert fake.count('Async.VM.start') == 1
    assert fake.count('task.destroy') == 1


def test_call_async_decodes_ref_result(fake, client):
    new = client.call_async('VM.clone', _vm(fake), 'copy')
    assert new.startswith('OpaqueRef:') and new in fake.vms
    assert fake.tasks == {}


def test_failed_task_raises_its_error(fake, client):
    vm = _vm(fake)
    client.call('VM.start', vm)
    with pytest.raises(errors.VMBadPowerState) as info:
        client.call_async('VM.start', vm, False, False)
    assert info.value.params == [vm, 'halted', 'running']
    assert info.value.method == 'VM.start'
    assert fake.tasks == {}


def test_timeout_cancels_and_destroys(fake, client):
    vm = _vm(fake)
    fake.task_delay = 30
    with pytest.raises(errors.XAPITaskTimeout) as info:
        client.call_async('VM.start', vm, False, False, timeout=0.2)
    assert info.value.method == 'VM.start'
    assert fake.count('task.cancel') == 1
    assert fake.tasks == {}
    assert fake.vms[vm]['power_state'] == 'Halted'


def test_uncancellable_task_still_times_out_and_is_destroyed(
        fake, client, monkeypatch):
    monkeypatch.setattr(tasks, 'CANCEL_GRACE', 0.1)
    fake.task_delay = 30
    fake.task_cancellable = False
    with pytest.raises(errors.XAPITaskTimeout):
        client.call_async('VM.start', _vm(fake), False, False, timeout=0.1)
    assert fake.count('task.cancel') == 1
    assert fake.tasks == {}


def test_task_cancelled_by_someone_else(fake, client):
    fake.task_delay = 30
    task = client.start_async('VM.start', _vm(fake), False, False)
    client.call('task.cancel', task)
    with pytest.raises(errors.TaskCancelled):
        client.wait_task(task, timeout=5, method='VM.start')
    assert fake.tasks == {}


@pytest.mark.parametrize('raw,value', [
    ('', ''),
    ('<value>OpaqueRef:abc</value>', 'OpaqueRef:abc'),
    ('<value><string>x</string></value>', 'x'),
    ('<value><array><data><value>a</value></data></array></value>', ['a']),
    ('plain', 'plain'),
    ('<value><broken', '<value><broken'),
])
def test_decode_result(raw, value):
    assert tasks.decode_result(raw) == value
