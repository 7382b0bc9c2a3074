"""The device-model wrapper: what xenopsd runs instead of QEMU in dom0.

XAPI's xenopsd starts an HVM guest's device model by running the wrapper
configured for the host.  Ours never starts QEMU in dom0 for a guest that
has a stub domain: it finishes the stub domain's link to the new guest
domain (:func:`stubdom.attach_target`) and hands back the QMP endpoint that
bridges to the QEMU inside the stub domain (libxl uses
``vchan-socket-proxy`` for the same job).  A guest without a stub domain gets
no device model at all unless the host's policy allows dom0 device models.
"""
import json
import logging
from typing import Dict

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import registry
from nova_xen_stubdom.dom0 import stubdom_link as stubdom

LOG = logging.getLogger(__name__)

QMP_BRIDGE_PATH = '/var/run/nova-xen-stubdom/qmp-%d.sock'


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
