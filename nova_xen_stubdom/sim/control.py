"""The ``sim.*`` side channel: fault injection and inspection over XML-RPC.

Reachable on every host's XAPI port (loopback only, no XAPI session), e.g.
from another process::

    proxy = xmlrpc.client.ServerProxy(url)
    proxy.sim.fail('VM.start', 'INTERNAL_ERROR', ['injected'], 1, '')
    proxy.sim.latency('*', 0.2, 5, '')
    proxy.sim.drop('VM.get_record', 1, '')
    proxy.sim.clear()
    proxy.sim.restart_toolstack(host_uuid)
    proxy.sim.expire_sessions()
    proxy.sim.hosts()         # [{uuid, address, url, pool, master}]
    proxy.sim.domains(host_uuid)
    proxy.sim.set_dirty_rate(host_uuid, domid, bytes_per_s)
    proxy.sim.guest_shutdown(host_uuid, domid, 'reboot')  # or poweroff...
    proxy.sim.leaks()

Every answer uses XAPI's envelope (``Status``/``Value``); ints are sent as
decimal strings like XAPI does.  ``host``/``count`` arguments: ``''`` means
every host, a count of ``0`` or ``''`` means forever.
"""
from nova_xen_stubdom.sim import api, wire
from nova_xen_stubdom.sim import introspect as inspectlib
from nova_xen_stubdom.sim.errors import XapiError


def _count(c):
    if c in ('', None, 0, '0'):
        return None
    return int(c)


def call(sim, method: str, params) -> dict:
    name = method[len('sim.'):]
    try:
        fn = _METHODS[name]
    except KeyError:
        return api.failure(XapiError('MESSAGE_METHOD_UNKNOWN', method))
    try:
        return api.success(wire.encode_any(fn(sim, *params)))
    except (TypeError, ValueError, KeyError) as e:
        return api.failure(XapiError('INTERNAL_ERROR', '%s: %s' % (
            type(e).__name__, e)))


def _fail(sim, method, code, params=(), count=1, host=''):
    sim.faults.fail(method, code, list(params), _count(count), host or None)
    return ''


def _latency(sim, method, seconds, count=0, host=''):
    sim.faults.latency(method, float(seconds), _count(count), host or None)
    return ''


def _drop(sim, method='*', count=1, host=''):
    sim.faults.drop(method, _count(count), host or None)
    return ''


def _clear(sim):
    sim.faults.clear()
    return ''


def _restart(sim, host_uuid):
    sim.restart_toolstack(sim.host_by_uuid(host_uuid))
    return ''


def _expire(sim):
    return sim.expire_sessions()


def _hosts(sim):
    return [{'uuid': h.uuid, 'address': h.address, 'url': h.url,
             'pool': h.pool.index, 'master': h.is_master}
            for h in sim.hosts]


def _domains(sim, host_uuid):
    return inspectlib.domains(sim.host_by_uuid(host_uuid))


def _dirty(sim, host_uuid, domid, rate):
    hv = sim.host_by_uuid(host_uuid).hypervisor
    hv.domain(int(domid)).dirty_rate = int(rate)
    return ''


def _xenstore(sim, host_uuid, path='/'):
    return sim.host_by_uuid(host_uuid).hypervisor.xenstore.dump(path)


def _guest_shutdown(sim, host_uuid, domid, reason):
    from nova_xen_stubdom.sim import guest_actions
    return guest_actions.guest_shutdown(sim.host_by_uuid(host_uuid),
                                        int(domid), reason)


def _leaks(sim):
    return sim.leaks()


_METHODS = {
    'fail': _fail, 'latency': _latency, 'drop': _drop, 'clear': _clear,
    'restart_toolstack': _restart, 'expire_sessions': _expire,
    'hosts': _hosts, 'domains': _domains, 'set_dirty_rate': _dirty,
    'xenstore': _xenstore, 'leaks': _leaks,
    'guest_shutdown': _guest_shutdown,
}
