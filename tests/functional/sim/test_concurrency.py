"""Concurrent clients and the older event API."""
import threading

import XenAPI

from nova_xen_stubdom.sim import testing
from nova_xen_stubdom.sim.pool import GiB, HostConfig


def test_concurrent_clients_never_overcommit_memory():
    # 1 host with room for exactly 3 VMs of 1 GiB (4 GiB - 1 GiB dom0)
    with testing.running_sim(hosts=1,
                             host_configs=[HostConfig(memory=4 * GiB)]
                             ) as sim:
        admin = testing.login(sim).xenapi
        vms = [admin.VM.create(testing.vm_record('c%d' % i, hvm=False,
                                                 memory=GiB))
               for i in range(6)]
        results = {}

        def start(vm):
            x = testing.login(sim).xenapi   # one session per client
            try:
                x.VM.start(vm, False, False)
                results[vm] = 'ok'
            except XenAPI.Failure as e:
                results[vm] = e.details[0]
            x.session.logout()
        threads = [threading.Thread(target=start, args=(vm,)) for vm in vms]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(results.values()) == \
            ['HOST_NOT_ENOUGH_FREE_MEMORY'] * 3 + ['ok'] * 3
        host = admin.host.get_all()[0]
        assert int(admin.host.compute_free_memory(host)) == 0
        for vm in vms:
            if admin.VM.get_power_state(vm) == 'Running':
                admin.VM.hard_shutdown(vm)
            admin.VM.destroy(vm)
        assert sim.pools[0].sessions.count() == 1


def test_event_register_next(sim, x):
    other = testing.login(sim).xenapi
    x.event.register(['vm'])
    vm = other.VM.create(testing.vm_record('ev', hvm=False))
    events = x.event.next()
    assert [(e['class'], e['operation'], e['ref']) for e in events
            if e['class'] == 'vm'][:1] == [('vm', 'add', vm)]
    x.event.unregister(['vm'])
    other.VM.destroy(vm)
    other.session.logout()
