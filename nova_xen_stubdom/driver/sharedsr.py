"""A shared SR in placement: one sharing resource provider per SR.

Every compute of a pool sees the pool's shared SR (``SR.shared`` true, a
PBD on each host -- XAPI's own test for "properly shared" is
``ocaml/xapi/agility.ml`` ``is_sr_properly_shared``).  Reported as
``DISK_GB`` of each compute node, its space would count once per host.
Nova's convention for shared storage instead (the update_provider_tree
contract in ``nova/virt/driver.py``; Nova's own example:
``nova/tests/functional/test_servers_provider_tree.py``) is a root provider
holding the ``DISK_GB`` inventory, with the ``MISC_SHARES_VIA_AGGREGATE``
trait, in a placement aggregate with every compute node that uses it:
placement then allocates an instance's disk from that provider.

Each compute of the pool writes the same provider (uuid = the SR's XAPI
uuid, so every compute names the same one) and the same inventory, and
adds only its own node to the SR's aggregate.
"""
import uuid
from typing import Dict, Iterable, Optional

import os_resource_classes as orc
import os_traits
from oslo_log import log as logging

from nova import exception

LOG = logging.getLogger(__name__)

#: namespace of the aggregate uuids this driver derives from SR uuids, so
#: that the driver recognises (and removes) only aggregates of its own
AGGREGATE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL,
                                 'https://opendev.org/x/nova-xen-stubdom/'
                                 'shared-sr-aggregate')


def aggregate_uuid(sr_uuid: str) -> str:
    """The placement aggregate of the computes that use SR *sr_uuid*."""
    return str(uuid.uuid5(AGGREGATE_NAMESPACE, sr_uuid))


def provider_name(sr_uuid: str) -> str:
    """The sharing provider's name (unique in placement, as names must be)."""
    return 'xen_stubdom_sr_%s' % sr_uuid


def update(provider_tree, nodename: str, sr_uuid: Optional[str],
           disk_inventory: Optional[dict], known_sr_uuids: Iterable[str],
           allocations: Optional[dict] = None) -> None:
    """Put *disk_inventory* on the SR's sharing provider and the compute
    node into the SR's aggregate; leave the aggregates of every other SR
    this driver knows (*known_sr_uuids*).  ``sr_uuid=None``: the node's
    disk is its own ``DISK_GB`` -- only the leaving is done.

    Aggregates and traits set by others on the compute node are kept.
    Disk allocations follow the inventory (node -> SR provider, or back
    when the node leaves an SR's aggregate): Nova's reshape, which it
    allows at nova-compute start-up only (``ReshapeNeeded``; Nova calls
    again with *allocations*).
    """
    node = provider_tree.data(nodename)
    ours = {aggregate_uuid(u): u for u in known_sr_uuids if u}
    keep = {aggregate_uuid(sr_uuid)} if sr_uuid else set()
    leaving = {agg: u for agg, u in ours.items()
               if agg in node.aggregates and agg not in keep}
    moving_in = sr_uuid is not None and orc.DISK_GB in node.inventory
    if (leaving or moving_in) and allocations is None:
        raise exception.ReshapeNeeded()
    for old_sr in leaving.values():
        _move_disk_allocations(allocations, old_sr, node.uuid, node.uuid)
    if leaving:
        provider_tree.remove_aggregates(nodename, *leaving)
    if sr_uuid is None:
        return
    if moving_in:
        _move_disk_allocations(allocations, node.uuid, sr_uuid, node.uuid)
    agg = aggregate_uuid(sr_uuid)
    if not provider_tree.exists(sr_uuid):
        provider_tree.new_root(provider_name(sr_uuid), sr_uuid)
    provider_tree.update_inventory(sr_uuid, {orc.DISK_GB: disk_inventory})
    provider_tree.add_traits(sr_uuid, os_traits.MISC_SHARES_VIA_AGGREGATE)
    provider_tree.add_aggregates(sr_uuid, agg)
    provider_tree.add_aggregates(nodename, agg)


def _move_disk_allocations(allocations: Dict[str, dict], source: str,
                           target: str, node_uuid: str) -> None:
    """``DISK_GB`` from provider *source* to *target*, for the consumers
    of this compute node only (an SR's provider holds the other computes'
    instances too: those stay)."""
    for consumer, alloc in allocations.items():
        by_rp = alloc['allocations']
        if node_uuid not in by_rp:
            continue
        resources = (by_rp.get(source) or {}).get('resources') or {}
        amount = resources.pop(orc.DISK_GB, None)
        if not amount:
            continue
        dest = by_rp.setdefault(target, {'resources': {}})['resources']
        dest[orc.DISK_GB] = dest.get(orc.DISK_GB, 0) + amount
        if not resources:
            del by_rp[source]
        LOG.info('reshape: %(gb)d GiB DISK_GB of consumer %(c)s moved from '
                 'provider %(src)s to %(dst)s',
                 {'gb': amount, 'c': consumer, 'src': source,
                  'dst': target})
