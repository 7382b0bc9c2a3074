"""xenopsd's own ("unmanaged") PCI pass-through: ``other_config:pci``.

A VM's ``other_config:pci`` (``0/0000:81:00.0,1/...``) is read by XAPI when
it builds the xenopsd VM description (xapi-project/xen-api
``ocaml/xapi/xapi_xenops.ml`` ``MD.pcis_of_vm`` via ``ocaml/xapi/pciops.ml``
``other_pcidevs_of_vm``), and xenopsd plugs every listed device when the VM
starts, after creating its device model (``ocaml/xenopsd/lib/xenops_server.ml``
``atomics_of_operation (VM_start ...)`` -> ``PCI_plug``), in
``ocaml/xenopsd/xc/xenops_server_xen.ml`` ``PCI.plug`` and
``ocaml/xenopsd/xc/device.ml`` ``PCI._pci_add``:

1. bind the device to pciback (``Device.PCI.bind ... Pciback``);
2. quarantine it and ``xc_assign_device`` it to the **guest** -- which Xen
   refuses with ``EBUSY`` when the device is assigned to any domain other
   than dom0/dom_io, the guest itself included (xen-project/xen
   ``xen/drivers/passthrough/pci.c`` ``device_assigned``);
3. grant the **guest** domain every BAR (``iomem``/``ioport`` permission)
   and its IRQ;
4. for an HVM guest, ``device_add xen-pci-passthrough`` over QMP to the
   guest's device model, which must be running (else ``Domain_not_running``);
5. once plugged, XAPI records it: ``PCI.attached_VMs`` (internal) and
   ``VM.attached_PCIs``
   (``xapi_xenops.ml`` ``update_pci``), which is what
   ``VM_HAS_PCI_ATTACHED`` checks (``xapi_vm_lifecycle.ml``).

The driver therefore must not put its devices in that key (xenopsd would
assign them a second time and fail the start); it uses its own key and the
dom0 agent.  This module is what xenopsd does with the key in the
simulator; a failure fails VM.start, as xenopsd's would.
"""
import logging
from typing import List

from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.sim.pci import PAGE_SHIFT, SimPciError

LOG = logging.getLogger(__name__)

OC_PCI = 'pci'


def parse(text: str) -> List[str]:
    """``Pciops.other_pcidevs_of_vm``: ``N/dddd:bb:dd.f`` items, comma
    separated; unparsable items are skipped, as XAPI does."""
    out = []
    for item in (text or '').split(','):
        slot, _, addr = item.strip().partition('/')
        if slot.isdigit() and addr.count(':') == 2:
            out.append(addr.lower())
    return out


def _fail(sbdf: str, why: str) -> XapiError:
    return XapiError('INTERNAL_ERROR',
                     'xenopsd PCI.plug %s: %s' % (sbdf, why))


def plug(ctx, host, vm: str, rec: dict, domid: int, hvm: bool) -> List[str]:
    """Plug the VM's ``other_config:pci`` devices into domain *domid*;
    returns the addresses plugged.  Raises what VM.start would."""
    sbdfs = parse(rec['other_config'].get(OC_PCI, ''))
    if not sbdfs:
        return []
    pci = host.pci
    done = []
    for sbdf in sbdfs:
        dev = pci.devices.get(sbdf)
        if dev is None:
            raise _fail(sbdf, 'no such device')
        dev.driver = 'pciback'
        holder = pci.owner.get(sbdf)
        if holder is not None:
            # Xen: device_assigned() -> -EBUSY, whoever holds it
            raise _fail(sbdf, 'xc_assign_device to domain %d: EBUSY (held '
                              'by domain %d)' % (domid, holder))
        try:
            pci.assign_device(domid, sbdf)
            for bar in dev.bars:
                if bar.kind == 'mem':
                    first = bar.start >> PAGE_SHIFT
                    pci.iomem_permission(
                        domid, first, (bar.end >> PAGE_SHIFT) - first + 1,
                        True)
                else:
                    pci.ioport_permission(domid, bar.start, bar.size, True)
            if dev.irq:
                pci.irq_permission(domid, dev.irq, True)
        except SimPciError as e:
            raise _fail(sbdf, str(e))
        if hvm:
            host.hypervisor.xenopsd_qmp.append(
                (domid, 'device_add', {'driver': 'xen-pci-passthrough',
                                       'hostaddr': sbdf}))
        done.append(sbdf)
    db = ctx.db
    refs = {db.get('PCI', ref)['pci_id']: ref
            for ref in db.find('PCI', host=host.ref)}
    for sbdf in done:
        if sbdf in refs:
            # PCI.attached_VMs is internal-only; VM.attached_PCIs is its
            # published other side (ocaml/idl/datamodel.ml relations)
            db.link('VM', vm, 'attached_PCIs', refs[sbdf])
    return done


def unplugged(ctx, vm: str) -> None:
    """The domain is gone: XAPI's ``update_pci`` sees the devices
    unplugged and drops the attachment (Xen returned them to dom0)."""
    db = ctx.db
    for ref in list(db.get('VM', vm)['attached_PCIs']):
        db.unlink('VM', vm, 'attached_PCIs', ref)
