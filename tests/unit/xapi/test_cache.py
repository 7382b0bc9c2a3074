"""The event.from-fed record cache."""
import threading

import XenAPI

from nova_xen_stubdom.xapi import cache as xcache


def _sdk_session(fake):
    s = XenAPI.Session(fake.url)
    s.xenapi.login_with_password('root', 'secret', '2.0', 'test')
    return s


def _collect():
    seen = []
    cond = threading.Condition()

    def cb(ev):
        with cond:
            seen.append(ev)
            cond.notify_all()

    def wait(pred, timeout=10):
        with cond:
            return cond.wait_for(lambda: any(pred(e) for e in seen), timeout)
    return seen, cb, wait


def test_initial_load_and_lookups(fake, client):
    cache = client.start_cache(classes=('VM',), poll_timeout=1)
    assert cache.wait_ready(10)
    assert set(cache.refs('VM')) == set(fake.vms)
    vm = sorted(fake.vms)[0]
    rec = cache.get('VM', vm)
    assert rec['power_state'] == 'Halted'
    rec['power_state'] = 'mutated'          # callers get copies
    assert cache.get('VM', vm)['power_state'] == 'Halted'
    assert cache.get('VM', 'OpaqueRef:none') is None
    # served from memory: no further VM.get_record on the wire
    assert fake.count('VM.get_record') == 0


def test_changes_by_another_session_reach_cache_and_subscribers(
        fake, client):
    seen, cb, wait = _collect()
    cache = client.start_cache(classes=('VM',), poll_timeout=1)
    cache.subscribe(cb)
    assert cache.wait_ready(10)
    vm = sorted(fake.vms)[0]
    other = _sdk_session(fake)
    try:
        other.xenapi.VM.start(vm, False, False)
        rec = cache.wait_for('VM', vm,
                             lambda r: r['power_state'] == 'Running', 10)
        assert rec['power_state'] == 'Running'
        assert wait(lambda e: e.operation == 'mod' and e.ref == vm and
                    e.old['power_state'] == 'Halted' and
                    e.new['power_state'] == 'Running')
        other.xenapi.VM.add_to_other_config(vm, 'nova_uuid', 'abc')
        cache.wait_for('VM', vm, lambda r: r['other_config'].get(
            'nova_uuid') == 'abc', 10)
        ref, rec = cache.find_one('VM', other_config={'nova_uuid': 'abc'})
        assert ref == vm
        assert cache.find('VM', other_config={'nova_uuid': None},
                          power_state='Running') == [(vm, rec)]
        assert cache.find('VM', other_config={'nova_uuid': 'zzz'}) == []
        other.xenapi.VM.destroy(vm)
        cache.wait_for('VM', vm, lambda r: r is None, 10)
        assert wait(lambda e: e.operation == 'del' and e.ref == vm)
    finally:
        other.xenapi.session.logout()


def test_events_lost_triggers_resync(fake, client):
    cache = client.start_cache(classes=('VM',), poll_timeout=0.2)
    assert cache.wait_ready(10)
    assert cache.resyncs == 1
    vm = sorted(fake.vms)[0]
    # make the cache's token too old, then change something
    with fake.lock:
        fake.vms[vm]['name_label'] = 'renamed'
        fake._event('vm', 'mod', vm, fake.vms[vm])
        fake.events = fake.events[-1:]
        fake.vms[vm]['name_label'] = 'renamed2'
        fake._event('vm', 'mod', vm, fake.vms[vm])
        fake.events = fake.events[-1:]
    cache.wait_for('VM', vm, lambda r: r['name_label'] == 'renamed2', 10)
    assert cache.resyncs >= 2


def test_session_expiry_relogs_the_watcher(fake, client):
    cache = client.start_cache(classes=('VM',), poll_timeout=0.2)
    assert cache.wait_ready(10)
    fake.expire_sessions()
    vm = sorted(fake.vms)[0]
    other = _sdk_session(fake)
    try:
        other.xenapi.VM.set_name_label(vm, 'after-expiry')
        cache.wait_for('VM', vm,
                       lambda r: r['name_label'] == 'after-expiry', 10)
    finally:
        other.xenapi.session.logout()
    assert cache.running


def test_subscriber_errors_do_not_kill_the_watcher(fake, client):
    cache = client.start_cache(classes=('VM',), poll_timeout=0.5)

    def bad(ev):
        raise RuntimeError('boom')
    cache.subscribe(bad)
    assert cache.wait_ready(10)
    vm = sorted(fake.vms)[0]
    client.call('VM.set_name_label', vm, 'x')
    cache.wait_for('VM', vm, lambda r: r['name_label'] == 'x', 10)
    assert cache.running


def test_unsubscribe(fake, client):
    seen, cb, wait = _collect()
    cache = client.start_cache(classes=('VM',), poll_timeout=0.5)
    unsubscribe = cache.subscribe(cb)
    assert cache.wait_ready(10)
    n = len(seen)
    assert n == len(fake.vms)       # the initial load is reported as adds
    unsubscribe()
    vm = sorted(fake.vms)[0]
    client.call('VM.set_name_label', vm, 'y')
    cache.wait_for('VM', vm, lambda r: r['name_label'] == 'y', 10)
    assert len(seen) == n


def test_close_stops_cache_and_logs_out_its_session(fake, client):
    cache = client.start_cache(classes=('VM',), poll_timeout=0.5)
    assert cache.wait_ready(10)
    client.call('VM.get_all')
    assert fake.open_sessions == 2        # the pool's and the watcher's
    client.close()
    assert not cache.running
    assert fake.open_sessions == 0
    assert client.open_sessions == 0


def test_unknown_class_lookup_is_clear(fake, client):
    cache = xcache.RecordCache(client, classes=('VM',))
    try:
        cache.get('host', 'OpaqueRef:x')
    except KeyError as exc:
        assert 'not cached' in str(exc)
    else:
        raise AssertionError('KeyError expected')


def test_cache_follows_a_failover(make_client):
    from tests.unit.xapi import fakexapi
    from tests.unit.xapi.test_failover import _pool_of
    a = fakexapi.FakeXAPI()
    b = fakexapi.FakeXAPI(master_address=None)
    try:
        _pool_of(a, b)
        c = make_client(a.url, max_retries=0)
        cache = c.start_cache(classes=('VM',), poll_timeout=0.5)
        assert cache.wait_ready(10)
        assert set(cache.refs('VM')) == set(a.vms)
        a.stop()
        vm = sorted(b.vms)[0]
        b_session = _sdk_session(b)
        try:
            b_session.xenapi.VM.set_name_label(vm, 'on-b')
        finally:
            b_session.xenapi.session.logout()
        cache.wait_for('VM', vm, lambda r: r is not None and
                       r['name_label'] == 'on-b', 15)
        assert set(cache.refs('VM')) == set(b.vms)
        assert c.url == b.url
    finally:
        b.stop()


def test_subscribers_get_copies(fake, client):
    seen, cb, wait = _collect()
    cache = client.start_cache(classes=('VM',), poll_timeout=0.5)
    cache.subscribe(lambda ev: ev.new.update(name_label='scribbled'))
    cache.subscribe(cb)
    assert cache.wait_ready(10)
    vm = sorted(fake.vms)[0]
    assert cache.get('VM', vm)['name_label'] == fake.vms[vm]['name_label']
    assert all(e.new['name_label'] == 'scribbled' for e in seen)
