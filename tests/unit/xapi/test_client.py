"""XAPIClient.call against a real XML-RPC endpoint (fakexapi)."""
import json
import threading

import pytest

from nova_xen_stubdom.xapi import client as xapi_client
from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import recorder
from tests.unit.xapi import fakexapi


def _vm(fake):
    return sorted(fake.vms)[0]


def test_call_logs_in_lazily_and_returns_value(fake, client):
    assert client.open_sessions == 0
    assert fake.open_sessions == 0
    vms = client.call('VM.get_all')
    assert sorted(vms) == sorted(fake.vms)
    assert client.open_sessions == 1 == fake.open_sessions
    rec = client.call('VM.get_record', vms[0])
    assert rec['power_state'] == 'Halted'
    # one session reused for sequential calls
    assert fake.logins == 1


def test_xapi_failure_becomes_specific_exception(fake, client):
    vm = _vm(fake)
    client.call('VM.start', vm)
    with pytest.raises(errors.VMBadPowerState) as info:
        client.call('VM.start', vm)
    err = info.value
    assert isinstance(err, errors.XAPIError)
    assert err.code == 'VM_BAD_POWER_STATE'
    assert (err.vm, err.expected, err.actual) == (vm, 'halted', 'running')
    assert err.method == 'VM.start'
    with pytest.raises(errors.HandleInvalid) as info:
        client.call('VM.get_record', 'OpaqueRef:nope')
    assert (info.value.cls, info.value.ref) == ('VM', 'OpaqueRef:nope')


def test_unknown_code_gives_base_class(fake, client):
    fake.inject('VM.get_all', ['SOME_NEW_ERROR', 'a', 'b'])
    with pytest.raises(errors.XAPIError) as info:
        client.call('VM.get_all')
    assert type(info.value) is errors.XAPIError
    assert info.value.params == ['a', 'b']
    assert info.value.matches('SOME_NEW_ERROR')


def test_ints_are_sent_as_decimal_strings(fake, client):
    vm = _vm(fake)
    client.call('VM.set_memory_static_max', vm, 4 << 30)
    assert fake.vms[vm]['memory_static_max'] == str(4 << 30)
    assert ('VM.set_memory_static_max', ('ref', 'int')) \
        in client.call_log.signatures()


def test_to_wire_recurses_and_keeps_bools():
    assert xapi_client.to_wire({'a': [1, True, 2.5], 3: 'x'}) == \
        {'a': ['1', True, 2.5], '3': 'x'}


def test_wrong_password_refused_without_leaking_it(fake, make_client):
    c = make_client(fake.url, password='hunter2-wrong')
    with pytest.raises(errors.SessionAuthenticationFailed) as info:
        c.call('VM.get_all')
    assert 'hunter2-wrong' not in str(info.value)
    assert 'hunter2-wrong' not in repr(c)
    assert c.open_sessions == 0


def test_relogin_once_on_session_invalid(fake, client):
    client.call('VM.get_all')
    fake.expire_sessions()
    assert client.call('VM.get_all')
    assert fake.logins == 2
    assert client.logins == 2
    assert client.open_sessions == 1 == fake.open_sessions


def test_only_one_relogin(fake, client):
    client.call('VM.get_all')
    fake.inject('VM.get_all', ['SESSION_INVALID', 'x'], times=2)
    with pytest.raises(errors.SessionInvalid):
        client.call('VM.get_all')
    assert fake.logins == 2          # the original plus ONE re-login


def test_retries_other_operation_in_progress(fake, make_client):
    c = make_client(fake.url, max_retries=3)
    vm = _vm(fake)
    fake.inject('VM.start', ['OTHER_OPERATION_IN_PROGRESS', 'VM', vm],
                times=3)
    c.call('VM.start', vm)
    assert fake.vms[vm]['power_state'] == 'Running'
    assert fake.count('VM.start') == 4


def test_retries_are_bounded_by_config(fake, make_client):
    c = make_client(fake.url, max_retries=2)
    vm = _vm(fake)
    fake.inject('VM.start', ['OTHER_OPERATION_IN_PROGRESS', 'VM', vm],
                times=5)
    with pytest.raises(errors.OtherOperationInProgress):
        c.call('VM.start', vm)
    assert fake.count('VM.start') == 3


def test_dropped_connection_retried_for_reads(fake, client):
    client.call('VM.get_all')
    fake.drop_next['VM.get_all'] = 1
    assert client.call('VM.get_all')
    assert fake.count('VM.get_all') == 3
    # the session survived the dropped connection
    assert fake.logins == 1


def test_dropped_connection_not_resent_for_writes(fake, client):
    vm = _vm(fake)
    client.call('VM.get_all')
    fake.drop_next['VM.start'] = 5
    with pytest.raises(errors.XAPIConnectionError) as info:
        client.call('VM.start', vm)
    assert info.value.method == 'VM.start'
    assert fake.count('VM.start') == 1


def test_connection_refused_is_retried_then_reported(make_client):
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    c = make_client('http://127.0.0.1:%d' % port, max_retries=2)
    with pytest.raises(errors.XAPIConnectionError) as info:
        c.call('VM.get_all')
    assert isinstance(info.value.reason, ConnectionRefusedError)


def test_login_timeout(fake, make_client):
    fake.delay['session.login_with_password'] = 2
    c = make_client(fake.url, login_timeout=0.2, max_retries=0)
    with pytest.raises(errors.XAPIConnectionError) as info:
        c.call('VM.get_all')
    assert isinstance(info.value.reason, TimeoutError)


def test_host_is_slave_redirects_to_master(fake, make_client):
    member = fakexapi.FakeXAPI(master_address='127.0.0.1:%d' % fake.port)
    try:
        c = make_client(member.url)
        assert sorted(c.call('VM.get_all')) == sorted(fake.vms)
        assert c.url == fake.url
        assert member.open_sessions == 0
        assert fake.open_sessions == 1
        c.close()
        assert fake.open_sessions == 0
    finally:
        member.stop()


def test_host_is_slave_loop_is_bounded(make_client):
    a = fakexapi.FakeXAPI()
    b = fakexapi.FakeXAPI(master_address='127.0.0.1:%d' % a.port)
    a.master_address = '127.0.0.1:%d' % b.port
    try:
        c = make_client(a.url)
        with pytest.raises(errors.HostIsSlave):
            c.call('VM.get_all')
        assert a.open_sessions == b.open_sessions == 0
    finally:
        a.stop()
        b.stop()


def test_pool_never_exceeds_connection_concurrent(fake, make_client):
    c = make_client(fake.url, concurrent=3)
    gate = fake.block('VM.get_all')
    results, errs = [], []

    def worker():
        try:
            results.append(c.call('VM.get_all'))
        except Exception as exc:       # pragma: no cover - reported below
            errs.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    assert fake.wait_until(lambda: fake.in_flight == 3)
    # the other seven wait for a session instead of opening more
    assert not fake.wait_until(lambda: fake.in_flight > 3, timeout=0.3)
    assert fake.open_sessions == 3
    assert c.pool.in_use == 3
    gate.set()
    for t in threads:
        t.join(10)
    assert not errs and len(results) == 10
    assert fake.peak_sessions == 3 == c.peak_sessions
    assert fake.peak_in_flight == 3
    assert c.open_sessions == 3


def test_failed_login_frees_its_slot(fake, make_client):
    c = make_client(fake.url, concurrent=1, max_retries=0)
    fake.inject('session.login_with_password',
                ['SESSION_AUTHENTICATION_FAILED', 'root', 'no'])
    with pytest.raises(errors.SessionAuthenticationFailed):
        c.call('VM.get_all')
    assert c.pool.count == 0
    assert c.call('VM.get_all')


def test_close_logs_out_every_session(fake, make_client):
    c = make_client(fake.url, concurrent=4)
    gate = fake.block('VM.get_all')
    threads = [threading.Thread(target=c.call, args=('VM.get_all',))
               for _ in range(4)]
    for t in threads:
        t.start()
    assert fake.wait_until(lambda: fake.in_flight == 4)
    gate.set()
    for t in threads:
        t.join(10)
    assert fake.open_sessions == 4
    c.close()
    assert fake.open_sessions == 0
    assert c.open_sessions == 0
    assert fake.logouts == 4
    with pytest.raises(errors.XAPIClosed):
        c.call('VM.get_all')
    c.close()               # idempotent


def test_close_with_call_in_flight_logs_it_out(fake, make_client):
    c = make_client(fake.url)
    gate = fake.block('VM.get_all')
    outcome = []

    def caller():
        try:
            outcome.append(c.call('VM.get_all'))
        except errors.XAPIException as exc:
            outcome.append(exc)
    t = threading.Thread(target=caller)
    t.start()
    assert fake.wait_until(lambda: fake.in_flight == 1)
    c.close(wait=0.1)
    assert fake.open_sessions == 0
    assert c.open_sessions == 0
    gate.set()
    t.join(10)
    # the fake checked the session before blocking, so the call may still
    # answer; either way nothing is left open and no new login happened
    assert len(outcome) == 1
    assert fake.open_sessions == 0
    assert fake.logins == 1


def test_calls_are_recorded_with_types(fake, make_client):
    client = make_client(fake.url, record_globally=True)
    seen = []
    recorder.GLOBAL.add_hook(seen.append)
    try:
        vm = _vm(fake)
        client.call('VM.add_to_other_config', vm, 'nova_uuid', 'u1')
    finally:
        recorder.GLOBAL.remove_hook(seen.append)
    expected = ('VM.add_to_other_config', ('ref', 'string', 'string'))
    assert expected in client.call_log.signatures()
    assert expected in [(r.name, r.param_types) for r in seen]
    # the login is recorded too, without its values
    login = [r for r in client.call_log.records
             if r.name == 'session.login_with_password'][0]
    assert login.param_types == ('string',) * 4
    assert 'secret' not in repr(login)


def test_shapes_keep_keys_not_values():
    rec = recorder.make_record('VM.create', [{
        'name_label': 'x', 'VCPUs_max': 2, 'other_config': {'k': 'v'},
        'tags': ['a', 'b'], 'is_a_template': False}])
    assert rec.param_types == ('map',)
    assert json.loads(rec.param_shapes[0]) == {
        'name_label': 'string', 'VCPUs_max': 'int',
        'other_config': {'k': 'string'}, 'tags': ['string'],
        'is_a_template': 'bool'}


def test_from_conf_reads_options(fake):
    from oslo_config import cfg

    from nova_xen_stubdom import conf as nxs_conf
    conf = cfg.ConfigOpts()
    nxs_conf.register_opts(conf)
    conf([], project='test')
    conf.set_override('connection_url', fake.url, 'xen_stubdom')
    conf.set_override('connection_password', 'secret', 'xen_stubdom')
    conf.set_override('connection_concurrent', 2, 'xen_stubdom')
    conf.set_override('api_max_retries', 7, 'xen_stubdom')
    c = xapi_client.XAPIClient.from_conf(conf)
    try:
        assert c.pool.size == 2
        assert c.max_retries == 7
        assert c.call('VM.get_all')
    finally:
        c.close()
    assert fake.open_sessions == 0


def test_bad_url_scheme_refused():
    with pytest.raises(ValueError):
        xapi_client.XAPIClient('ftp://x', 'root', 'p')
    with pytest.raises(ValueError):
        xapi_client.XAPIClient(None, 'root', 'p')


def test_expiry_of_all_pooled_sessions_needs_one_relogin_per_call(
        fake, make_client):
    c = make_client(fake.url, concurrent=3)
    gate = fake.block('VM.get_all')
    threads = [threading.Thread(target=c.call, args=('VM.get_all',))
               for _ in range(3)]
    for t in threads:
        t.start()
    assert fake.wait_until(lambda: fake.in_flight == 3)
    gate.set()
    for t in threads:
        t.join(10)
    assert c.open_sessions == 3
    fake.expire_sessions()          # e.g. a toolstack restart
    assert c.call('VM.get_all')     # not refused by the next dead session
    assert c.open_sessions == 1 == fake.open_sessions


def test_recorder_is_bounded():
    r = recorder.CallRecorder()
    r.max_distinct = 3
    for i in range(10):
        r.record('VM.add_to_other_config',
                 ['OpaqueRef:a', 'key%d' % i, {'k%d' % i: 'v'}])
        r.record('VM.get_all', [])
    assert len(r.records) <= 4
    assert r.count('VM.get_all') == 10
    assert r.count('VM.add_to_other_config') == 10


def test_insecure_configurations_are_warned_about():
    import logging

    import fixtures
    logger = fixtures.FakeLogger(level=logging.WARNING)
    with logger:
        xapi_client.XAPIClient('https://xapi.example', 'root', 'p',
                               verify_tls=False)
        xapi_client.XAPIClient('http://10.1.2.3', 'root', 'p')
        xapi_client.XAPIClient('http://127.0.0.1:9', 'root', 'p')
    out = logger.output
    assert 'verification is off for https://xapi.example' in out
    assert 'plain http to a remote host' in out
    assert '127.0.0.1:9' not in out


def test_cache_after_close_does_not_log_in(fake, client):
    client.close()
    with pytest.raises(errors.XAPIClosed):
        client.start_cache(classes=('VM',))
    from nova_xen_stubdom.xapi import cache as xcache
    cache = xcache.RecordCache(client, classes=('VM',), poll_timeout=0.2)
    cache.start()
    cache._thread.join(5)
    assert not cache.running          # the watcher gave up at once
    assert fake.logins == 0


def test_none_is_refused_before_sending(fake, client):
    vm = sorted(fake.vms)[0]
    with pytest.raises(TypeError) as info:
        client.call('VM.add_to_other_config', vm, 'k', None)
    assert 'VM.add_to_other_config' in str(info.value)
    with pytest.raises(TypeError):
        client.call('VM.create', {'other_config': {'a': None}})
    assert fake.count('VM.add_to_other_config') == 0
