"""PCI pass-through: inventory for Nova, assignment to guests, release.

Inventory.  XAPI's ``PCI`` class lists the host's functions (address in
``pci_id``, names, ``dependencies``) but publishes no numeric ids, NUMA node
or SR-IOV links, so the dom0 agent's ``pci_inventory`` (sysfs) supplies
those; a function has to be in both to be offered.  Each becomes one entry of
``pci_passthrough_devices``: ``type-VF`` (with ``parent_addr``) when sysfs
shows a ``physfn``, ``type-PF`` when it can have VFs, ``type-PCI`` otherwise.

Devices the host itself needs are never offered, whatever ``[pci]
device_spec`` says:

* NICs under a PIF dom0 uses: ``management``, ``disallow_unplug`` (storage
  and other dom0 networks) or with an IP configured -- followed through
  VLANs (``VLAN.tagged_PIF``), bonds (``Bond.slaves``) and SR-IOV logical
  PIFs (``network_sriov.physical_PIF``) down to ``PIF.PCI`` (or, when that
  is unset, to the function whose dom0 netdev has the PIF's device name);
* storage controllers: functions that have a dom0 block device (the agent
  resolves every ``/sys/block/*`` to the PCI function behind it; that covers
  dom0's own disk and every local SR's disk);
* the XAPI ``dependencies`` of an excluded function (they move together),
  and the PF of an excluded VF (the PF's reset takes its VFs with it).

Assignment.  On spawn the driver writes exactly ``instance.pci_devices``
into the guest's ``other_config:nova_xen_stubdom_pci`` (``0/0000:81:00.0,...``)
after checking that each device still exists and that no other VM holds it;
the agent assigns them and grants the stub domain their resources when the
guest's domain is built (see ``agent/pci.py``).  Never ``other_config:pci``:
that is xenopsd's own pass-through, which would assign the devices to the
guest itself a second time (Xen: EBUSY) and fail the start -- see
doc/source/xapi-behaviour.rst.  :meth:`PciOps.release` undoes both and is
safe to call on every exit path.

The stub-domain image.  Pass-through needs QEMU's ``xen-pci-passthrough``
in the stub domain; an image built on the testbed's QEMU has none and its
manifest says ``"lacks": ["xen-pci-passthrough"]`` (the agent's
``stubdom_image`` reads it, ``dom0/image_manifest.py``).  Such a host
offers no devices (:meth:`PciOps.get_pci_passthrough_devices`) and refuses
a guest that has some (:meth:`PciOps.check_image`) before anything exists.
"""
import json
from typing import Dict, Iterable, List, Optional, Tuple

from nova import exception
from nova.i18n import _
from oslo_log import log as logging

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc

LOG = logging.getLogger(__name__)

OC_PCI = dc.OC_PCI
NULL_REF = 'OpaqueRef:NULL'

TYPE_PCI = 'type-PCI'
TYPE_PF = 'type-PF'
TYPE_VF = 'type-VF'

#: XAPI power states in which a VM holds its pass-through devices
_HOLDING_STATES = ('Running', 'Paused')

#: the QEMU -device model that passes a PCI function through
#: (builder.DEVICE_MODELS; the testbed's QEMU lacks it)
PASSTHROUGH_DEVICE_MODEL = 'xen-pci-passthrough'


class PciPassthroughUnavailable(exception.NovaException):
    msg_fmt = _('PCI device %(address)s claimed for instance %(uuid)s '
                'cannot be passed through on host %(host)s: %(reason)s')


class PciImageUnsupported(exception.NovaException):
    msg_fmt = _('instance %(uuid)s has PCI pass-through devices '
                '(%(devices)s) but host %(host)s cannot pass devices '
                'through: %(reason)s; nothing was created')


# -- addresses ----------------------------------------------------------------

def normalize_address(address: str) -> str:
    addr = str(address).strip().lower()
    if addr.count(':') == 1:
        addr = '0000:' + addr
    return addr


def format_other_config(addresses: Iterable[str]) -> str:
    """``0/0000:81:00.0,1/...`` (the form xenopsd's key uses, too)."""
    return ','.join('%d/%s' % (i, normalize_address(a))
                    for i, a in enumerate(addresses))


def parse_other_config(value: Optional[str]) -> List[str]:
    """Addresses in such a value, in slot order."""
    out = []
    for item in (value or '').split(','):
        item = item.strip()
        if not item:
            continue
        _, _, addr = item.rpartition('/')
        out.append(normalize_address(addr))
    return out


def _instance_pci_devices(instance) -> list:
    try:
        devs = instance.pci_devices
    except Exception:   # not loaded / not loadable (e.g. unit objects)
        return []
    return list(devs or [])


def instance_addresses(instance) -> List[str]:
    """The host addresses Nova claimed for *instance*, in a stable order."""
    return sorted(normalize_address(d.address)
                  for d in _instance_pci_devices(instance))


def instance_has_passthrough(instance) -> bool:
    """True when *instance* has or asks for a pass-through device: claimed
    devices, PCI requests (a flavor alias becomes one) or the flavor's
    ``pci_passthrough:alias``.  The one test every refusal uses (live
    migration: ``migrationutils.refuse_pci``; an image without pass-through:
    :meth:`PciOps.check_image`)."""
    if _instance_pci_devices(instance):
        return True
    try:
        reqs = instance.pci_requests
    except Exception:   # not loaded / not loadable
        reqs = None
    if reqs and getattr(reqs, 'requests', None):
        return True
    try:
        specs = instance.flavor.extra_specs or {}
    except Exception:
        specs = {}
    return bool(specs.get('pci_passthrough:alias'))


def describe_passthrough(instance) -> str:
    """The devices of *instance* for a message: addresses once claimed."""
    return ', '.join(instance_addresses(instance)) or _(
        'requested by its flavor')


def image_problem(info: dict) -> Optional[str]:
    """Why the image the agent's ``stubdom_image`` describes (*info*)
    cannot pass PCI devices through, or None."""
    if info.get('error'):
        return _('its stub-domain image manifest is unusable: %s') % (
            info['error'])
    if PASSTHROUGH_DEVICE_MODEL in (info.get('lacks') or []):
        return _('its stub-domain image (manifest %(manifest)s, device '
                 'model %(dm)s) lacks %(what)s (an image built with '
                 'build-stubdom --device-model testbed); install one built '
                 'with the Debian device model') % {
                     'manifest': info.get('manifest'),
                     'dm': info.get('device_model') or _('unknown'),
                     'what': PASSTHROUGH_DEVICE_MODEL}
    return None


# -- inventory ---------------------------------------------------------------

def _host_pifs(pifs: Dict[str, dict], host_ref: str) -> Dict[str, dict]:
    return {r: p for r, p in pifs.items() if p.get('host') == host_ref}


def _dom0_uses_pif(pif: dict) -> Optional[str]:
    if pif.get('management'):
        return 'management interface'
    if pif.get('disallow_unplug'):
        return 'dom0 network (disallow_unplug)'
    if pif.get('ip_configuration_mode', 'None') not in ('None', ''):
        return 'dom0 IP configured'
    if pif.get('ipv6_configuration_mode', 'None') not in ('None', ''):
        return 'dom0 IPv6 configured'
    return None


def _physical_pifs(ref: str, pifs: Dict[str, dict], vlans: Dict[str, dict],
                   bonds: Dict[str, dict], sriovs: Dict[str, dict],
                   seen=None) -> List[str]:
    """The physical PIFs under PIF *ref* (itself when physical)."""
    seen = set() if seen is None else seen
    if ref in seen or ref not in pifs:
        return []
    seen.add(ref)
    pif = pifs[ref]
    out = []
    vlan = pif.get('VLAN_master_of') or NULL_REF
    if vlan != NULL_REF and vlan in vlans:
        out += _physical_pifs(vlans[vlan].get('tagged_PIF'), pifs, vlans,
                              bonds, sriovs, seen)
    for bond in pif.get('bond_master_of') or []:
        for slave in bonds.get(bond, {}).get('slaves', []):
            out += _physical_pifs(slave, pifs, vlans, bonds, sriovs, seen)
    for sriov in pif.get('sriov_logical_PIF_of') or []:
        phys = sriovs.get(sriov, {}).get('physical_PIF')
        if phys:
            out += _physical_pifs(phys, pifs, vlans, bonds, sriovs, seen)
    if pif.get('physical'):
        out.append(ref)
    return out


def host_needed_devices(pci_records: Dict[str, dict],
                        pif_records: Dict[str, dict],
                        details: Dict[str, dict],
                        vlans: Optional[Dict[str, dict]] = None,
                        bonds: Optional[Dict[str, dict]] = None,
                        sriovs: Optional[Dict[str, dict]] = None
                        ) -> Dict[str, str]:
    """``{address: reason}`` of the host's functions dom0 needs.

    *pci_records*/*pif_records*: this host's XAPI records by ref;
    *details*: the agent's inventory by address."""
    vlans, bonds, sriovs = vlans or {}, bonds or {}, sriovs or {}
    addr_of = {ref: normalize_address(rec.get('pci_id', ''))
               for ref, rec in pci_records.items()}
    by_netdev = {}
    for addr, det in details.items():
        for nd in det.get('netdevs') or []:
            by_netdev[nd] = addr
    needed: Dict[str, str] = {}
    for ref, pif in pif_records.items():
        why = _dom0_uses_pif(pif)
        if not why:
            continue
        for phys in _physical_pifs(ref, pif_records, vlans, bonds, sriovs):
            p = pif_records[phys]
            addr = addr_of.get(p.get('PCI') or NULL_REF) or by_netdev.get(
                p.get('device'))
            if addr:
                needed.setdefault(addr, '%s %s (%s)' % (
                    _('NIC of PIF'), p.get('device'), why))
    for addr, det in details.items():
        if det.get('block_devices'):
            needed.setdefault(addr, _('dom0 storage controller (%s)')
                              % ', '.join(det['block_devices']))
    # functions that travel with an excluded one, and PFs of excluded VFs
    by_addr = {addr_of[r]: rec for r, rec in pci_records.items()}
    for addr in list(needed):
        rec = by_addr.get(addr) or {}
        for dep in rec.get('dependencies') or []:
            dep_addr = addr_of.get(dep)
            if dep_addr:
                needed.setdefault(dep_addr, _('depends on %s') % addr)
        pf = (details.get(addr) or {}).get('physfn')
        if pf:
            needed.setdefault(normalize_address(pf),
                              _('parent PF of %s') % addr)
    return needed


def build_devices(pci_records: Dict[str, dict], details: Dict[str, dict],
                  excluded: Dict[str, str]) -> List[dict]:
    """Nova's ``pci_passthrough_devices`` entries (unsorted input, sorted
    output by address)."""
    out = []
    for rec in pci_records.values():
        addr = normalize_address(rec.get('pci_id', ''))
        if addr in excluded:
            LOG.debug('PCI %s not offered: %s', addr, excluded[addr])
            continue
        det = details.get(addr)
        if det is None:
            LOG.warning('PCI %s is in XAPI but the dom0 agent does not see '
                        'it; not offered', addr)
            continue
        if det.get('physfn'):
            dev_type, parent = TYPE_VF, normalize_address(det['physfn'])
        elif det.get('sriov_totalvfs'):
            dev_type, parent = TYPE_PF, None
        else:
            dev_type, parent = TYPE_PCI, None
        out.append({
            'address': addr,
            'vendor_id': det['vendor_id'],
            'product_id': det['product_id'],
            'dev_type': dev_type,
            'parent_addr': parent,
            'numa_node': det.get('numa_node'),
            'label': 'label_%s_%s' % (det['vendor_id'], det['product_id']),
        })
    return sorted(out, key=lambda d: d['address'])


# -- the ops object -----------------------------------------------------------

class PciOps(common.XapiUser):
    """PCI pass-through of one compute host.

    :param ctx: the driver's
        :class:`~nova_xen_stubdom.driver.common.DriverContext`.
    """

    def __init__(self, ctx) -> None:
        self._ctx = ctx
        #: the image warning last logged: the resource tracker asks every
        #: minute, and an unchanged answer is not news
        self._image_warning: Optional[str] = None

    # helpers for other ops (vmstart.VMStarter.dm_config: instance_addresses)
    instance_addresses = staticmethod(instance_addresses)

    # the stub-domain image
    def image_pci_problem(self) -> Optional[str]:
        """Why this host's stub-domain image cannot pass PCI devices
        through (:func:`image_problem`), or None.  Asked each time: the
        image changes with a package update, not with this process."""
        try:
            info = self._ctx.call_plugin('stubdom_image')
        except dexc.AgentCallFailed as exc:
            # an agent older than stubdom_image shipped no manifest: its
            # images predate the testbed device model, so nothing is known
            # to be lacking
            self._warn_image('host %s: the agent cannot say what its '
                             'stub-domain image lacks (%s); assuming PCI '
                             'pass-through works'
                             % (self._ctx.host_name, exc))
            return None
        return image_problem(info or {})

    def _warn_image(self, text: str) -> None:
        if text != self._image_warning:
            LOG.warning('%s', text)
        self._image_warning = text

    def check_image(self, instance) -> None:
        """Refuse *instance* when it has PCI devices and this host's image
        cannot pass them through; called before anything is created.

        :raises PciImageUnsupported: naming the image and what it lacks.
        """
        if not instance_has_passthrough(instance):
            return
        problem = self.image_pci_problem()
        if problem:
            raise PciImageUnsupported(
                uuid=instance.uuid, devices=describe_passthrough(instance),
                host=self._ctx.host_name, reason=problem)

    # inventory
    def _host_pci_records(self) -> Dict[str, dict]:
        recs = self._call('PCI.get_all_records')
        return {r: p for r, p in recs.items()
                if p.get('host') == self._ctx.host_ref}

    def _agent_details(self) -> Dict[str, dict]:
        raw = self._ctx.call_plugin('pci_inventory')
        return {normalize_address(d['address']): d for d in raw or []}

    def host_needed(self, pcis: Dict[str, dict],
                    details: Dict[str, dict]) -> Dict[str, str]:
        pifs = _host_pifs(self._call('PIF.get_all_records'),
                          self._ctx.host_ref)

        def _records(cls: str, field: str) -> Dict[str, dict]:
            refs = set()
            for p in pifs.values():
                v = p.get(field)
                refs.update(v if isinstance(v, list) else
                            [v] if v and v != NULL_REF else [])
            return {r: self._call('%s.get_record' % cls, r)
                    for r in refs}

        return host_needed_devices(
            pcis, pifs, details,
            vlans=_records('VLAN', 'VLAN_master_of'),
            bonds=_records('Bond', 'bond_master_of'),
            sriovs=_records('network_sriov', 'sriov_logical_PIF_of'))

    def get_pci_passthrough_devices(self) -> str:
        """JSON for ``get_available_resource()['pci_passthrough_devices']``:
        none when the host's image cannot pass devices through, so that
        Nova's PCI tracker (and placement) never offer them."""
        pcis = self._host_pci_records()
        if not pcis:
            return json.dumps([])
        problem = self.image_pci_problem()
        if problem:
            self._warn_image('host %s offers none of its %d PCI functions '
                             'for pass-through: %s'
                             % (self._ctx.host_name, len(pcis), problem))
            return json.dumps([])
        self._image_warning = None
        details = self._agent_details()
        excluded = self.host_needed(pcis, details)
        return json.dumps(build_devices(pcis, details, excluded))

    # assignment
    def _holders(self, exclude_ref: str) -> Dict[str, Tuple[str, str]]:
        """``{address: (vm name_label, power_state)}`` held by other VMs
        running or paused on this host: through our key, xenopsd's
        ``other_config:pci`` or XAPI's ``VM.attached_PCIs``."""
        pci_ids = None
        out = {}
        for ref, vm in self._call('VM.get_all_records').items():
            if ref == exclude_ref or vm.get('is_a_template'):
                continue
            if vm.get('power_state') not in _HOLDING_STATES:
                continue
            if vm.get('resident_on') != self._ctx.host_ref:
                continue
            oc = vm.get('other_config') or {}
            addrs = (parse_other_config(oc.get(OC_PCI))
                     + parse_other_config(oc.get(dc.OC_XENOPSD_PCI)))
            if vm.get('attached_PCIs'):
                if pci_ids is None:
                    pci_ids = {r: normalize_address(p.get('pci_id', ''))
                               for r, p in self._host_pci_records().items()}
                addrs += [pci_ids[r] for r in vm['attached_PCIs']
                          if r in pci_ids]
            for addr in addrs:
                out[addr] = (vm.get('name_label', ref),
                             vm.get('power_state'))
        return out

    def assign(self, instance, guest_ref: str) -> List[str]:
        """Write the instance's claimed devices into the guest's
        ``other_config:nova_xen_stubdom_pci`` after checking each exists on
        this host and is free.  Returns the addresses (empty: nothing to do).

        :raises PciPassthroughUnavailable: a device vanished or another VM
            holds it; nothing was changed.
        """
        addrs = instance_addresses(instance)
        if not addrs:
            self._clear_other_config(guest_ref)
            return []
        present = {normalize_address(p.get('pci_id', ''))
                   for p in self._host_pci_records().values()}
        holders = self._holders(guest_ref)
        for addr in addrs:
            if addr not in present:
                raise PciPassthroughUnavailable(
                    address=addr, uuid=instance.uuid,
                    host=self._ctx.host_name,
                    reason=_('the device is no longer present'))
            if addr in holders:
                raise PciPassthroughUnavailable(
                    address=addr, uuid=instance.uuid,
                    host=self._ctx.host_name,
                    reason=_('VM %(vm)s (%(state)s) holds it') % {
                        'vm': holders[addr][0], 'state': holders[addr][1]})
        value = format_other_config(addrs)
        self._clear_other_config(guest_ref)
        self._call('VM.add_to_other_config', guest_ref, OC_PCI, value)
        LOG.info('PCI devices %s assigned (other_config:%s=%s)', addrs,
                 OC_PCI, value, instance=instance)
        return addrs

    def _clear_other_config(self, guest_ref: str) -> None:
        oc = self._call('VM.get_other_config', guest_ref)
        # xenopsd's key on our own guest: what older versions wrote
        for key in (OC_PCI, dc.OC_XENOPSD_PCI):
            if key in oc:
                self._call('VM.remove_from_other_config', guest_ref, key)

    def release(self, instance, guest_ref: Optional[str]) -> None:
        """Drop the guest's devices: revoke any grants its domain still has
        and clear our ``other_config`` key (and xenopsd's, if an older
        version wrote it).  Idempotent, never raises for a VM
        that is already gone (every exit path calls it)."""
        if not guest_ref:
            return
        try:
            rec = self._call('VM.get_record', guest_ref)
        except Exception as exc:
            if 'HANDLE_INVALID' in str(exc):
                return
            raise
        oc = rec.get('other_config') or {}
        addrs = (parse_other_config(oc.get(OC_PCI))
                 + parse_other_config(oc.get(dc.OC_XENOPSD_PCI)))
        if not addrs and not instance_addresses(instance):
            return
        try:
            out = self._ctx.call_plugin('pci_detach',
                                        guest_vm_uuid=rec['uuid'])
            if out.get('errors'):
                LOG.warning('PCI release: the agent could not revoke '
                            '%s', out['errors'], instance=instance)
        except Exception as exc:
            # the stub domain's shutdown still drops its grants in Xen
            LOG.warning('PCI release: revoking grants failed: %s', exc,
                        instance=instance)
        if addrs:
            for key in (OC_PCI, dc.OC_XENOPSD_PCI):
                if key in oc:
                    self._call('VM.remove_from_other_config', guest_ref, key)
            LOG.info('PCI devices %s released', addrs, instance=instance)
