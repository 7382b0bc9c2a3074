"""A simulated HVM guest's PV drivers, as far as suspend concerns them.

Linux's drivers (drivers/xen/platform-pci.c, events_base.c
``xen_set_callback_via``) set HVM_PARAM_CALLBACK_IRQ when they load; that
non-zero parameter is how the toolstack tells a guest with PV drivers from
one without (libxl ``domain_suspend_callback_common`` reads it as
``hvm_pvdrv``).  They watch ``control/shutdown`` (drivers/xen/manage.c
``shutdown_handler``): a request is acknowledged by writing ``""`` to the
node, and for ``suspend`` the guest freezes and makes
``SCHEDOP_shutdown(SHUTDOWN_suspend)`` (``do_suspend`` ->
``xen_suspend`` -> ``HYPERVISOR_suspend``): the domain shuts down with
reason suspend and runs no vCPU.  A guest whose drivers hang (or who ignores
the request) never acknowledges -- ``responds=False``; one whose freeze
hangs after the acknowledgement never shuts down -- ``suspends=False``.
"""
#: xen/include/public/hvm/params.h
HVM_PARAM_CALLBACK_IRQ = 0
#: what Linux sets: "via" type 2 (PCI INTx of the platform device) in bits
#: 56-63 with the device's slot -- any non-zero value marks PV drivers
CALLBACK_VIA_PCI_INTX = (2 << 56) | (2 << 11) | 1


def load(hv, domid: int, responds: bool = True,
         suspends: bool = True) -> None:
    """The guest in *domid* loads its PV drivers."""
    dom = hv.domain(domid)
    base = '/local/domain/%d/control' % domid
    dom.hvm_params[HVM_PARAM_CALLBACK_IRQ] = CALLBACK_VIA_PCI_INTX
    # the toolstack gives the guest write access to control/ (libxl
    # libxl__domain_make; xenopsd Domain.make); the model writes as dom0
    # rather than depend on which toolstack built the domain
    hv.xenstore.write(base + '/feature-suspend', '1')

    def shutdown_handler(path: str) -> None:
        if not responds or path != base + '/shutdown':
            return
        request = hv.xenstore.read(path)
        if not request:
            return
        hv.xenstore.write(path, '')                      # the ack
        if request == 'suspend' and suspends:
            hv.domain_shutdown(domid, 'suspend')

    hv.xenstore.watch(base + '/shutdown', shutdown_handler)
