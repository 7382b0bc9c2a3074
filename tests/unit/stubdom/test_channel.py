import pytest

from nova_xen_stubdom.stubdom import channel


class FakeBackend:
    """Answers commands like the stub domain's init would."""

    def __init__(self, answer=None):
        self.store, self.perms, self.answer = {}, {}, answer

    def xs_read(self, path):
        return self.store.get(path)

    def xs_write(self, path, value):
        self.store[path] = value
        if path.endswith("/command") and self.answer is not None:
            seq = value.split()[0]
            self.store[path[:-len("command")] + "result"] = \
                "%s %s" % (seq, self.answer)

    def xs_set_perms(self, path, perms):
        self.perms[path] = perms


def test_save_ok():
    b = FakeBackend(answer="ok 1234 " + "ab" * 32)
    res = channel.request_save(b, 7, "xvdb", timeout=1, sleep=lambda s: None)
    assert res == channel.SaveResult(1234, "ab" * 32)
    cmd = b.store["/local/domain/7/nova-xen-stubdom/command"]
    assert cmd.split()[1:] == ["save", "xvdb"]
    assert b.perms["/local/domain/7/nova-xen-stubdom/result"] == ["n7"]
    assert b.perms["/local/domain/7/nova-xen-stubdom/command"] == ["n0", "r7"]


def test_each_command_gets_a_new_sequence_number():
    b = FakeBackend(answer="ok")
    channel.request_cont(b, 7, timeout=1, sleep=lambda s: None)
    first = b.store["/local/domain/7/nova-xen-stubdom/command"].split()[0]
    channel.request_cont(b, 7, timeout=1, sleep=lambda s: None)
    second = b.store["/local/domain/7/nova-xen-stubdom/command"].split()[0]
    assert first != second


def test_error_is_raised_with_the_stubdom_reason():
    b = FakeBackend(answer="error QMP stop failed")
    with pytest.raises(channel.StubdomChannelError,
                       match="save failed: QMP stop failed"):
        channel.request_save(b, 7, "xvdb", timeout=1, sleep=lambda s: None)


def test_timeout_and_stale_results_are_ignored():
    b = FakeBackend(answer=None)
    b.store["/local/domain/7/nova-xen-stubdom/result"] = "1 ok 5 x"
    t = [0.0]

    def sleep(s):
        t[0] += s

    with pytest.raises(channel.StubdomChannelError, match="did not answer"):
        channel.request_save(b, 7, "xvdb", timeout=2, poll=0.5, sleep=sleep,
                             clock=lambda: t[0])


def test_malformed_result():
    b = FakeBackend(answer="ok garbage")
    with pytest.raises(channel.StubdomChannelError, match="malformed"):
        channel.request_save(b, 7, "xvdb", timeout=1, sleep=lambda s: None)


def test_restore_disk_announcement_and_vdev_check():
    b = FakeBackend()
    channel.announce_restore_disk(b, 9, "xvdz")
    assert b.store["/local/domain/9/nova-xen-stubdom/restore-disk"] == "xvdz"
    assert b.perms["/local/domain/9/nova-xen-stubdom/restore-disk"] == \
        ["n0", "r9"]
    with pytest.raises(ValueError, match="bad virtual disk name"):
        channel.announce_restore_disk(b, 9, "../etc/passwd")
    with pytest.raises(ValueError):
        channel.request_save(b, 9, "xvdb; reboot", timeout=1)
