"""A pool member that dies and comes back, as XAPI's pool master sees it.

What XAPI does (xapi-project/xen-api):

* The master marks a member dead when its heartbeats stop:
  ``host_metrics.live`` becomes false (``ocaml/xapi/db_gc.ml``,
  ``check_host_liveness``).  Its domains are gone with it, but the database
  still says its VMs are Running, ``resident_on`` that host: nobody may
  assume they stopped.
* Any call that must run on that member fails with ``HOST_OFFLINE [host]``
  (``ocaml/xapi/message_forwarding.ml``, ``check_live``, before forwarding):
  ``host.call_plugin`` on it, ``VM.start_on`` it, and the lifecycle calls of
  the VMs resident on it (hard_shutdown, clean_shutdown, pause, ...).
* ``VM.power_state_reset`` is the way out (``ocaml/xapi/xapi_vm.ml``,
  ``power_state_reset``; not forwarded, "the whole point is that this can
  be performed when a host is down"): ``CANNOT_RESET_CONTROL_DOMAIN`` for a
  control domain; for a Running/Paused VM resident on another host that is
  still alive, ``HOST_IS_LIVE [host]``; resident on the master with its
  domain still running, ``DOMAIN_EXISTS [vm, domid]``; otherwise the VM is
  forced to Halted (``Xapi_vm_lifecycle.force_state_reset``).
* A member that comes back has rebooted: no domains; its start-up resync
  with xenopsd reports the VMs that were resident on it as Halted.

The simulator's operations :func:`crash` and :func:`come_back` (on
``SimServer``) do these to a non-master host.
"""
from nova_xen_stubdom.sim import devicemodel
from nova_xen_stubdom.sim.api import handler
from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.datamodel.schema import NULL_REF


def is_live(pool, host) -> bool:
    return not host.down


def check_live(host) -> None:
    """HOST_OFFLINE for a call that XAPI would forward to a dead member."""
    if not is_live(host.pool, host):
        raise XapiError('HOST_OFFLINE', host.ref)


def check_resident_live(ctx, vm: str) -> None:
    """HOST_OFFLINE for a lifecycle call on a VM resident on a dead host."""
    host = ctx.pool.host_by_ref(ctx.db.get('VM', vm)['resident_on'])
    if host is not None:
        check_live(host)


def _set_live(pool, host, live: bool) -> None:
    metrics = pool.db.get('host', host.ref)['metrics']
    if pool.db.exists('host_metrics', metrics):
        pool.db.set('host_metrics', metrics, live=live)


def crash(pool, host) -> None:
    """*host* dies: its domains, device models and frontends vanish; the
    database keeps its VMs Running and resident on it; it is not live."""
    if host.is_master:
        raise ValueError('the simulator keeps its master alive: crash a '
                         'member')
    host.down = True
    _set_live(pool, host, False)
    hv = host.hypervisor
    for vm in list(pool.db.get('host', host.ref)['resident_VMs']):
        domid = pool.db.get('VM', vm)['domid']
        if domid > 0 and domid in hv.domains:
            devicemodel.stop_dom0_qemu(hv, domid)
            # frontends, device-model records and PCI grants go with it
            hv.destroy_domain(domid)


def come_back(pool, host) -> None:
    """*host* boots again: live, no domains, its former VMs Halted."""
    host.down = False
    with pool.db.lock:
        for vm in list(pool.db.get('host', host.ref)['resident_VMs']):
            _force_halted(pool.db, vm, host)
    _set_live(pool, host, True)


def _force_halted(db, vm: str, host) -> None:
    rec = db.get('VM', vm)
    rec.update(power_state='Halted', domid=-1, resident_on=NULL_REF)
    db.touch('VM', vm)
    if host is not None:
        db.unlink('host', host.ref, 'resident_VMs', vm)
    for cls in ('VBD', 'VIF'):
        for ref in rec[cls + 's']:
            if db.exists(cls, ref):
                db.set(cls, ref, currently_attached=False)
    for console in list(rec['consoles']):
        db.unlink('VM', vm, 'consoles', console)
        if db.exists('console', console):
            db.destroy('console', console)
    if db.exists('VM_metrics', rec['metrics']):
        db.set('VM_metrics', rec['metrics'], state=[], memory_actual=0)


@handler('VM.power_state_reset')
def power_state_reset(ctx, vm):
    db = ctx.db
    rec = db.get('VM', vm)
    if rec['is_control_domain']:
        raise XapiError('CANNOT_RESET_CONTROL_DOMAIN', vm)
    if rec['power_state'] in ('Running', 'Paused'):
        host = ctx.pool.host_by_ref(rec['resident_on'])
        if host is not None and not host.is_master:
            if is_live(ctx.pool, host):
                raise XapiError('HOST_IS_LIVE', host.ref)
        elif host is not None and rec['domid'] in host.hypervisor.domains:
            # the datamodel's parameters (vm, domid); xapi_vm.ml sends vm
            raise XapiError('DOMAIN_EXISTS', vm, str(rec['domid']))
    with db.lock:
        _force_halted(db, vm, ctx.pool.host_by_ref(rec['resident_on']))
