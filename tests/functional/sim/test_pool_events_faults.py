"""Pools, events, tasks, fault injection, state dir, VDI transfer."""
import http.client
import threading
import time
import urllib.parse
import xmlrpc.client

import XenAPI
import pytest

from nova_xen_stubdom.sim import fidelity, testing
from tests import waiting


def _fail(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def test_host_is_slave(sim):
    slave = sim.host(1)
    assert slave.url != sim.url and slave.port == sim.host(0).port
    s = XenAPI.Session(slave.url)
    with pytest.raises(XenAPI.Failure) as e:
        s.login_with_password(testing.USERNAME, testing.PASSWORD, '2.0', 't')
    assert e.value.details == ['HOST_IS_SLAVE', '127.0.0.1']
    # the client keeps scheme and port and follows the address
    u = urllib.parse.urlsplit(slave.url)
    master_url = '%s://%s:%d' % (u.scheme, e.value.details[1], u.port)
    assert master_url == sim.url
    testing.login(master_url).xenapi.session.logout()


def test_two_pools_have_separate_databases():
    with testing.running_sim(hosts=3, pools=2) as sim:
        a = testing.login(sim.urls[0]).xenapi
        b = testing.login(sim.urls[1]).xenapi
        assert len(a.host.get_all()) == 2 and len(b.host.get_all()) == 1
        vm = a.VM.create(testing.vm_record('only-in-a'))
        assert _fail(b.VM.get_record, vm) == ['HANDLE_INVALID', 'VM', vm]
        a.VM.destroy(vm)


def test_event_from_sees_other_session(sim, x):
    other = testing.login(sim).xenapi
    first = getattr(x.event, 'from')(['vm'], '', 0.0)
    assert {e['class'] for e in first['events']} == {'vm'}
    assert all(e['operation'] == 'add' for e in first['events'])
    token = first['token']
    got = {}

    def watch():
        got['batch'] = getattr(x.event, 'from')(['VM'], token, 10.0)
    t = threading.Thread(target=watch)
    t.start()
    # no pause needed: events after the token are returned whether the
    # watcher is already blocked in event.from or calls it later
    vm = other.VM.create(testing.vm_record('seen'))
    t.join(10)
    events = got['batch']['events']
    assert [e['ref'] for e in events] == [vm]
    assert events[0]['operation'] == 'add'
    assert events[0]['snapshot']['name_label'] == 'seen'
    assert fidelity.check_record('VM', events[0]['snapshot']) == []
    other.VM.set_name_label(vm, 'renamed')
    batch = getattr(x.event, 'from')(['vm'], got['batch']['token'], 5.0)
    assert [(e['operation'], e['snapshot']['name_label'])
            for e in batch['events']] == [('mod', 'renamed')]
    other.VM.destroy(vm)
    batch = getattr(x.event, 'from')(['vm'], batch['token'], 5.0)
    assert [(e['operation'], e['ref']) for e in batch['events']] == [
        ('del', vm)]
    # a timeout with nothing new answers an empty batch
    quiet = getattr(x.event, 'from')(['vm'], batch['token'], 0.1)
    assert quiet['events'] == []
    assert _fail(getattr(x.event, 'from'), ['vm'], 'garbage', 0.1) == [
        'EVENT_FROM_TOKEN_PARSE_FAILURE', 'garbage']


def test_task_cancel_and_other_operation_in_progress(sim, session, x):
    vm = x.VM.create(testing.vm_record('slow', hvm=False))
    # the injected latency runs inside the task, which checks for cancel
    sim.faults.latency('VM.start', 30.0, count=1)
    task = x.Async.VM.start(vm, False, False)
    x.task.cancel(task)
    rec = testing.wait_task(session, task)
    assert rec['status'] == 'cancelled'
    assert rec['error_info'] == ['TASK_CANCELLED', task]
    assert x.VM.get_power_state(vm) == 'Halted'
    # a lifecycle operation in flight blocks a second one on the same VM
    x.VM.start(vm, False, False)
    other = testing.login(sim).xenapi     # SDK sessions are not threadsafe
    done = threading.Event()
    inside, release = threading.Event(), threading.Event()
    pool = sim.pools[0]

    def gated(orig):
        def destroy_domain(domid):
            inside.set()            # clean_shutdown is in flight ...
            release.wait(10)        # ... until the test lets it finish
            orig(domid)
        return destroy_domain
    for h in pool.hosts:
        h.hypervisor.destroy_domain = gated(h.hypervisor.destroy_domain)
    t = threading.Thread(target=lambda: (other.VM.clean_shutdown(vm),
                                         done.set()))
    t.start()
    assert inside.wait(10)
    details = _fail(x.VM.hard_shutdown, vm)
    release.set()
    assert details[:4] == ['OTHER_OPERATION_IN_PROGRESS', 'VM', vm,
                           'clean_shutdown']
    t.join(10)
    assert done.is_set()
    for h in pool.hosts:
        del h.hypervisor.destroy_domain
    assert x.VM.get_power_state(vm) == 'Halted'
    x.VM.destroy(vm)
    for key, leak in sim.leaks().items():
        if key.startswith('host'):
            assert leak['domains'] == [], key


def test_fault_injection_in_process(sim, x):
    vm = x.VM.get_all()[0]
    sim.faults.fail('VM.get_record', 'INTERNAL_ERROR', ['injected'], count=2)
    for _ in range(2):
        assert _fail(x.VM.get_record, vm) == ['INTERNAL_ERROR', 'injected']
    assert x.VM.get_record(vm)['uuid']
    # dropped connections: xmlrpc.client retries a keep-alive request once
    # after RemoteDisconnected, so drop two in a row
    sim.faults.drop('VM.get_uuid', count=2)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        x.VM.get_uuid(vm)
    assert x.VM.get_uuid(vm)


def test_fault_injection_side_channel(sim, x):
    proxy = xmlrpc.client.ServerProxy(sim.host(1).url)
    assert proxy.sim.fail('VM.get_all', 'HOST_OFFLINE', ['h'], 1, '') == {
        'Status': 'Success', 'Value': ''}
    assert _fail(x.VM.get_all) == ['HOST_OFFLINE', 'h']
    assert x.VM.get_all()
    hosts = proxy.sim.hosts()['Value']
    assert [h['master'] for h in hosts] == [True, False]
    proxy.sim.latency('VM.get_all', 0.1, 1, '')
    assert [r.kind for r in sim.faults.rules] == ['latency']
    x.VM.get_all()
    assert sim.faults.rules == []       # the delay was applied once
    # expire every session: the SDK logs in again by itself
    assert proxy.sim.expire_sessions()['Value'] == '1'
    assert sim.pools[0].sessions.count() == 0
    assert x.VM.get_all()
    assert sim.pools[0].sessions.count() == 1


def test_toolstack_restart(sim, x):
    vm = x.VM.create(testing.vm_record('survivor', hvm=False))
    x.VM.start(vm, False, False)
    domid = int(x.VM.get_domid(vm))
    s = sim.pools[0].sessions
    before = dict(s.live)
    sim.restart_toolstack(sim.host(0))
    assert not (set(before) & set(s.live))
    env = xmlrpc.client.ServerProxy(sim.url).VM.get_all(list(before)[0])
    assert env['ErrorDescription'][0] == 'SESSION_INVALID'
    # the domain survived; the SDK re-logs in transparently
    assert int(x.VM.get_domid(vm)) == domid
    assert domid in sim.host(0).hypervisor.domains or \
        domid in sim.host(1).hypervisor.domains
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_state_dir_restart(tmp_path):
    state = str(tmp_path / 'state')
    with testing.running_sim(hosts=1, state_dir=state) as sim:
        s = testing.login(sim)
        x = s.xenapi
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        vdi = x.VDI.create({'name_label': 'disk', 'name_description': '',
                            'SR': sr, 'virtual_size': str(4 << 20),
                            'type': 'user', 'sharable': False,
                            'read_only': False, 'other_config': {},
                            'xenstore_data': {}, 'sm_config': {},
                            'tags': []})
        _put(sim, s, vdi, b'hello' * 1000)
        vm = x.VM.create(testing.vm_record('kept', hvm=False))
        x.VM.start(vm, False, False)
        host_uuid = sim.host(0).uuid
    with testing.running_sim(hosts=1, state_dir=state) as sim:
        assert sim.host(0).uuid == host_uuid
        s = testing.login(sim)
        x = s.xenapi
        assert x.VM.get_name_label(vm) == 'kept'
        # the domain died with the old process: the VM comes back halted
        assert x.VM.get_power_state(vm) == 'Halted'
        assert _get(sim, s, vdi)[:5000] == b'hello' * 1000
        x.VM.destroy(vm)
        x.VDI.destroy(vdi)


def _put(sim, session, vdi, data):
    u = urllib.parse.urlsplit(sim.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request('PUT', '/import_raw_vdi?vdi=%s&session_id=%s'
                 % (vdi, session.handle), body=data)
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


def _get(sim, session, vdi):
    u = urllib.parse.urlsplit(sim.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request('GET', '/export_raw_vdi?vdi=%s&session_id=%s'
                 % (vdi, session.handle))
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200
    return body


def test_vdi_import_export(sim, session, x):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({'name_label': 'd', 'name_description': '', 'SR': sr,
                        'virtual_size': str(1 << 20), 'type': 'user',
                        'sharable': False, 'read_only': False,
                        'other_config': {}, 'xenstore_data': {},
                        'sm_config': {}, 'tags': []})
    data = bytes(range(256)) * 64
    assert _put(sim, session, vdi, data) == 200
    out = _get(sim, session, vdi)
    assert len(out) == 1 << 20 and out[:len(data)] == data
    assert out[len(data):] == bytes((1 << 20) - len(data))
    assert _put(sim, session, vdi, bytes((1 << 20) + 1)) == 400
    # a task given with task_id reports the transfer
    task = x.task.create('import', '')
    u = urllib.parse.urlsplit(sim.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request('PUT', '/import_raw_vdi?vdi=%s&session_id=%s&task_id=%s'
                 '&format=raw' % (x.VDI.get_uuid(vdi), session.handle, task),
                 body=b'abc')
    assert conn.getresponse().status == 200
    conn.close()
    assert x.task.get_status(task) == 'success'
    x.task.destroy(task)
    assert _get(sim, session, vdi)[:3] == b'abc'
    ro = testing.login(sim, testing.RO_USER, testing.RO_PASSWORD)
    assert _put(sim, ro, vdi, b'x') == 403
    ro.xenapi.session.logout()
    x.VDI.destroy(vdi)
    assert sim.leaks()['pool0']['VDI'] == []


def test_idle_sessions_expire():
    with testing.running_sim(hosts=1, session_timeout=0.2) as sim:
        s = testing.login(sim)
        ref = s.handle
        # what is tested is the idle limit itself: wait until it has passed
        idle_from = time.monotonic()
        waiting.wait_until(lambda: time.monotonic() > idle_from + 0.2,
                           'the 0.2 s idle limit to pass', interval=0.05)
        env = xmlrpc.client.ServerProxy(sim.url).VM.get_all(ref)
        assert env['ErrorDescription'] == ['SESSION_INVALID', ref]
        assert sim.pools[0].sessions.count() == 0


def test_event_from_star_and_jsonrpc(sim, x):
    batch = getattr(x.event, 'from')(['*'], '', 0.0)
    classes = {e['class'] for e in batch['events']}
    assert {'vm', 'host', 'pool', 'sr', 'network'} <= classes
    import json
    import urllib.request
    req = urllib.request.Request(
        sim.url + '/jsonrpc', method='POST',
        data=json.dumps({'jsonrpc': '2.0', 'id': 1,
                         'method': 'session.login_with_password',
                         'params': [testing.USERNAME, testing.PASSWORD,
                                    '2.0', 'json']}).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        session = json.loads(r.read())['result']
    req = urllib.request.Request(
        sim.url + '/jsonrpc', method='POST',
        data=json.dumps({'jsonrpc': '2.0', 'id': 2, 'method': 'VM.start',
                         'params': [session, 'OpaqueRef:nope', False,
                                    False]}).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        err = json.loads(r.read())['error']
    assert err == {'code': 1, 'message': 'HANDLE_INVALID',
                   'data': ['VM', 'OpaqueRef:nope']}


def test_vdi_copy_keeps_contents_and_sparseness(sim, session, x):
    import os
    from nova_xen_stubdom.sim import storage
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({'name_label': 'big', 'name_description': '',
                        'SR': sr, 'virtual_size': str(1 << 30),
                        'type': 'user', 'sharable': False,
                        'read_only': False, 'other_config': {},
                        'xenstore_data': {}, 'sm_config': {}, 'tags': []})
    assert _put(sim, session, vdi, b'boot sector' * 100) == 200
    null = 'OpaqueRef:NULL'
    copy = x.VDI.copy(vdi, sr, null, null)
    path = storage.vdi_path(sim.pools[0], x.VDI.get_uuid(copy))
    assert os.path.getsize(path) == 1 << 30
    assert os.stat(path).st_blocks * 512 < (1 << 20)
    assert _get(sim, session, copy)[:1100] == b'boot sector' * 100
    x.VDI.destroy(copy)
    x.VDI.destroy(vdi)
    assert not os.path.exists(path)


def test_event_from_forgets_old_deletions_without_events_lost(sim, x):
    """xen-api ocaml/database/db_cache_types.ml Table.remove: each table
    keeps its last deletions (cut to 256 at 512); xapi_event.ml from_inner
    (fold_over_deleted) then silently omits older ones -- event.from never
    answers EVENTS_LOST -- and never reports objects created after the
    token."""
    ev = getattr(x.event, 'from')
    token = ev(['network'], '', 0)['token']
    made = [x.network.create({'name_label': 'n%d' % i,
                              'name_description': '', 'MTU': '1500',
                              'other_config': {}, 'bridge': '',
                              'managed': True, 'tags': []})
            for i in range(3)]
    later = ev(['network'], '', 0)['token']
    for ref in made:
        x.network.destroy(ref)
    # created after *token*: their deletion is not reported from it
    dels = [e for e in ev(['network'], token, 0)['events']
            if e['operation'] == 'del']
    assert dels == []
    assert sorted(e['ref'] for e in ev(
        ['network'], later, 0)['events'] if e['operation'] == 'del') == \
        sorted(made)
    # 600 more deletions: only the newest few hundred are remembered
    refs = [x.network.create({'name_label': 'm%d' % i,
                              'name_description': '', 'MTU': '1500',
                              'other_config': {}, 'bridge': '',
                              'managed': True, 'tags': []})
            for i in range(600)]
    mid = ev(['network'], '', 0)['token']
    for ref in refs:
        x.network.destroy(ref)
    dels = [e['ref'] for e in ev(['network'], mid, 0)['events']
            if e['operation'] == 'del']
    assert 256 <= len(dels) < 512
    assert refs[-1] in dels and refs[0] not in dels
