"""host.call_plugin as XAPI runs it: a fresh plugin process per call that
forwards to the host's dom0 daemon, a process of its own; a job outlives
the call that made it, and the daemon dies with the simulator."""
import json
import os

import pytest

from nova_xen_stubdom.dom0 import host as dom0_host
from nova_xen_stubdom.dom0 import keywrap
from nova_xen_stubdom.sim import dom0_process
from nova_xen_stubdom.sim import testing


@pytest.fixture
def sim(monkeypatch):
    monkeypatch.setenv(dom0_process.ENV, '1')
    with testing.running_sim(hosts=1) as s:
        yield s


def _host(sim):
    return sim.pools[0].hosts[0]


def test_plugin_runs_as_a_process_and_jobs_persist(sim):
    x = testing.login(sim)
    try:
        host_ref = x.xenapi.host.get_all()[0]
        call = x.xenapi.host.call_plugin
        host = _host(sim)
        backend = host.agent().backend
        out = json.loads(call(host_ref, 'nova_xen_stubdom', 'stubdom_wiring',
                              {'stubdom_domid': '0'}))
        assert out['stubdom_domid'] == 0
        dom0 = host.dom0_process
        assert os.path.exists(dom0.socket_path)
        # the daemon is a process of its own, alive between calls
        assert dom0.pid not in (None, os.getpid())
        assert dom0.proc.poll() is None
        # it saw the simulator's hypervisor through the channel
        assert 'listening on' in dom0.log()
        # the in-process agent (the simulated wrapper's) locks a guest in
        # the daemon's lock directory: the daemon would wait for it
        lock = os.path.join(dom0.state_dir, 'locks',
                            dom0_host._lock_name('vm-x'))
        with host.agent().lock('vm-x'):
            with pytest.raises(BlockingIOError):
                with dom0_host.file_lock(lock, blocking=False):
                    pass
        with dom0_host.file_lock(lock, blocking=False):
            pass

        domid = backend.sim.create_domain('vm-in', True, 4 << 20)
        # the key goes wrapped for the daemon's offer, never in argv
        offer = json.loads(call(host_ref, 'nova_xen_stubdom', 'key_offer',
                                {}))
        started = json.loads(call(host_ref, 'nova_xen_stubdom',
                                  'migrate_receive', {
                                      'guest_vm_uuid': 'vm-in',
                                      'key_wrap': keywrap.wrap(
                                          offer['offer'], offer['pub'],
                                          b'\x11' * 32),
                                      'listen_address': '127.0.0.1'}))
        # another plugin process finds the job the first one started
        status = json.loads(call(host_ref, 'nova_xen_stubdom',
                                 'migrate_receive_status',
                                 {'id': started['id']}))
        assert status['state'] == 'waiting'
        cancelled = json.loads(call(host_ref, 'nova_xen_stubdom',
                                    'migrate_receive_cancel',
                                    {'id': started['id']}))
        assert cancelled['state'] in ('cancelled', 'failed')
        backend.sim.destroy_domain(domid)

        with pytest.raises(Exception) as exc:
            call(host_ref, 'nova_xen_stubdom', 'no_such_fn', {})
        assert 'UNKNOWN_XENAPI_PLUGIN_FUNCTION' in str(exc.value)
        with pytest.raises(Exception) as exc:
            call(host_ref, 'nova_xen_stubdom', 'dm_state',
                 {'stubdom_domid': 'x'})
        assert 'XENAPI_PLUGIN_FAILURE' in str(exc.value)
        assert 'INVALID_ARGUMENT' in str(exc.value)
    finally:
        x.xenapi.session.logout()
    run_dir, proc = host.dom0_process.run_dir, host.dom0_process.proc
    sim.stop()
    assert not os.path.exists(run_dir)          # daemon stopped, cleaned
    assert proc.returncode == 0                 # SIGTERM: a clean stop


def test_stand_in_xenapiplugin_codes_xmlrpc_as_xmlrpc_client_does():
    """The stand-in decodes the call and encodes the response itself
    (xmlrpc.client's imports would dominate a plugin process); both
    directions agree with xmlrpc.client."""
    import sys
    import xmlrpc.client
    sys.path.insert(0, dom0_process.STAND_IN)
    try:
        import XenAPIPlugin as stand_in
    finally:
        sys.path.remove(dom0_process.STAND_IN)
    calls = [('OpaqueRef:s', {'a': '1', 'b': '<&>"\' \u00e9\n', 'c': ''}),
             ('s', {'n': 3, 'f': 1.5, 't': True, 'z': None,
                    'l': ['x', 2, {'y': []}], 'd': {}}),
             ('s', {})]
    for params in calls:
        data = xmlrpc.client.dumps(params, 'fn', allow_none=True)
        assert stand_in.loads(data) == (params, 'fn')
        reply = {'Status': 'Failure', 'Value': params[1],
                 'ErrorDescription': ['XENAPI_PLUGIN_FAILURE', 'a<b']}
        assert xmlrpc.client.loads(stand_in.dumps_response(reply),
                                   use_builtin_types=True)[0] == (reply,)
    untyped = ("<?xml version='1.0'?><methodCall><methodName>m</methodName>"
               "<params><param><value>abc</value></param></params>"
               "</methodCall>")
    assert stand_in.loads(untyped) == (('abc',), 'm')
    with pytest.raises(ValueError, match='base64'):
        stand_in.loads(xmlrpc.client.dumps((xmlrpc.client.Binary(b'x'),),
                                           'm'))
