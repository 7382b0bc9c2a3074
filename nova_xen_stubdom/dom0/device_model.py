"""The device-model wrapper: what xenopsd runs instead of QEMU in dom0.

XAPI's xenopsd starts an HVM guest's device model by running the wrapper
configured for the host.  Ours never starts QEMU in dom0 for a guest that
has a stub domain: it finishes the stub domain's link to the new guest
domain (:func:`stubdom.attach_target`) and hands back the QMP endpoint that
bridges to the QEMU inside the stub domain (libxl uses
``vchan-socket-proxy`` for the same job).  A guest without a stub domain gets
no device model at all unless the host's policy allows dom0 device models.

xenopsd runs one wrapper for every HVM VM of the host, ours or not:
:func:`managed_by_us` tells them apart from what xenopsd leaves in xenstore
before it starts the device model, so that the wrapper can hand the others,
untouched, to the host's stock wrapper.
"""
import json
import logging
from typing import Dict, Optional

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import registry
from nova_xen_stubdom.dom0 import stubdom_link as stubdom

LOG = logging.getLogger(__name__)

QMP_BRIDGE_PATH = '/var/run/nova-xen-stubdom/qmp-%d.sock'

#: xenstore keys of a guest domain that mark its VM as one of ours even
#: before (or without) a link: the driver's ``platform:stubdom`` (xenopsd's
#: ``Domain.make`` copies the platform map to ``/local/domain/<d>/platform``
#: -- unless XAPI's platform filter, ``Vm_platform.sanity_check``
#: ``filter_out_unknowns``, dropped it) and a ``VM.xenstore_data`` key under
#: ``vm-data`` (``Domain.make`` writes the ``vm-data/`` prefix unfiltered)
MARKER_KEYS = ('/local/domain/%d/platform/stubdom',
               '/local/domain/%d/vm-data/nova_xen_stubdom')


def vm_uuid_of(agent, domid: int) -> str:
    """The XAPI VM uuid of domain *domid*.

    xenopsd's ``Domain.make`` writes ``/local/domain/<d>/vm = /vm/<uuid>``
    (xen-api ``ocaml/xenopsd/xc/domain.ml``); the domain handle holds the
    same uuid and answers when the key is absent.

    :raises DomainNotFound: no such domain on this host.
    """
    info = agent.domain_info(domid)     # DomainNotFound for a bad domid
    path = agent.backend.xs_read('/local/domain/%d/vm' % domid)
    if path and path.startswith('/vm/') and len(path) > len('/vm/'):
        return path[len('/vm/'):]
    return info.vm_uuid


def managed_by_us(agent, domid: int, vm_uuid: str) -> Optional[str]:
    """Why domain *domid* (VM *vm_uuid*) is ours, or None when it is not.

    Ours: the driver linked a stub domain to the VM (``link_stubdom``, made
    before the guest's ``VM.start``), or one of :data:`MARKER_KEYS` is set.
    """
    if stubdom.pending_link(agent, vm_uuid) is not None:
        return 'stub domain link of VM %s' % vm_uuid
    for key in MARKER_KEYS:
        if agent.backend.xs_read(key % domid) is not None:
            return 'xenstore %s' % (key % domid)
    return None


def launch(agent, guest_domid: int, guest_vm_uuid: str) -> Dict[str, object]:
    """Start (or refuse) the device model of *guest_domid*.

    :returns: ``{'mode': 'stubdom', 'stubdom_domid': n, 'qmp': path}`` or,
        only when the host allows it, ``{'mode': 'dom0'}``.
    :raises DeviceModelRefused: no linked stub domain and dom0 device models
        are not allowed.
    :raises StubdomLinkError: the linked stub domain cannot serve the guest.
    """
    with agent.lock(guest_vm_uuid):
        link = stubdom.pending_link(agent, guest_vm_uuid)
        if link is None:
            if not agent.allow_dom0_device_model:
                LOG.warning('refused a dom0 device model for domain %d '
                            '(VM %s)', guest_domid, guest_vm_uuid)
                raise errors.DeviceModelRefused(domid=guest_domid,
                                                vm_uuid=guest_vm_uuid)
            LOG.info('dom0 device model for domain %d (VM %s): allowed by '
                     'host policy', guest_domid, guest_vm_uuid)
            return {'mode': 'dom0'}
        stub = link['stubdom_domid']
        prepare = None
        if link['config'].get('pci'):
            # grants for the guest's pass-through devices go to its stub
            # domain before QEMU starts; on_dm_launch rolls its own work
            # back on failure
            from nova_xen_stubdom.dom0 import pci_grants as pci

            def _pci_grants():
                pci.on_dm_launch(agent, guest_domid, stub, link['config'])
            prepare = _pci_grants
        stubdom.attach_target(agent, stub, guest_domid, link['config'],
                              prepare=prepare)
        LOG.info('domain %d (VM %s): device model in stub domain %d',
                 guest_domid, guest_vm_uuid, stub)
        return {'mode': 'stubdom', 'stubdom_domid': stub,
                'qmp': QMP_BRIDGE_PATH % guest_domid}


def stop(agent, guest_domid: int, guest_vm_uuid: str) -> None:
    """The guest domain is going away: drop what links it (idempotent).

    The pending link stays: a reboot creates a new guest domain that the same
    stub domain serves again.  The stub domain VM itself is XAPI's and the
    driver's to stop.
    """
    backend = agent.backend
    # first, while the domain still exists: why it went (the driver tells
    # a guest's own reboot from its poweroff by this)
    from nova_xen_stubdom.dom0 import guest_exit
    guest_exit.record(agent, guest_domid, guest_vm_uuid)
    try:
        from nova_xen_stubdom.dom0 import pci_grants as pci
    except ImportError:
        pci = None
    if pci is not None:
        pci.on_dm_stop(agent, guest_domid)      # idempotent, best effort
    with agent.lock(guest_vm_uuid):
        link = stubdom.pending_link(agent, guest_vm_uuid)
        backend.xs_rm('/local/domain/%d/image/device-model-domid'
                      % guest_domid)
        if link is None:
            return
        stub_root = '/local/domain/%d' % link['stubdom_domid']
        if backend.xs_read(stub_root + '/target') == str(guest_domid):
            backend.xs_rm(stub_root + '/target')
            backend.xs_rm(stub_root + '/dm-argv')
            backend.xs_rm('%s/device-model/%d' % (stub_root, guest_domid))


# -- the wrapper process asks the daemon (registry plugin DM_PLUGIN, which
# the XAPI plugin does not expose) so that links and PCI grants are made
# and revoked by the one process that owns them
def _domain_args(args: Dict[str, str]):
    try:
        return int(args['guest_domid']), args['guest_vm_uuid']
    except (KeyError, ValueError):
        raise errors.InvalidArgument(name='guest_domid/guest_vm_uuid',
                                     value=args, reason='both required, '
                                     'the domid an integer')


@registry.register('dm_launch', plugin=registry.DM_PLUGIN)
def dm_launch(agent, args: Dict[str, str]) -> str:
    return json.dumps(launch(agent, *_domain_args(args)))


@registry.register('dm_stop', plugin=registry.DM_PLUGIN)
def dm_stop(agent, args: Dict[str, str]) -> str:
    stop(agent, *_domain_args(args))
    return json.dumps({'stopped': True})
