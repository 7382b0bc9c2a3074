"""Nova's local node identity file, kept for a driver whose node uuid is
the XAPI host's.

Since 2023.1 nova-compute refuses to start when its service record is new
enough (``NODE_IDENTITY_VERSION``) and no ``compute_id`` file exists
(``nova/compute/manager.py`` ``_ensure_existing_node_identity``, run
right after the driver's ``init_host``).  Nova writes that file only when
it makes up a node uuid itself (``nova/virt/node.py``
``get_local_node_uuid``, called by the resource tracker for a driver that
reports no ``uuid``, and by the default ``get_nodenames_by_uuid``).  This
driver reports the XAPI host uuid instead (``driver.get_nodenames_by_uuid``),
so without this module the first start never wrote the file and every
later start of nova-compute was refused ("No local node identity found,
but this is not our first startup on this host").
"""
from oslo_log import log as logging

from nova.virt import node

LOG = logging.getLogger(__name__)


def ensure(host_uuid: str) -> None:
    """Write *host_uuid* as Nova's node identity unless one exists.

    An existing identity is left alone (Nova refuses to overwrite it, and
    compares only the driver's node uuids with the database's); one that
    is not this host's is only logged.
    """
    current = node.read_local_node_uuid()
    if current is None:
        node.write_local_node_uuid(host_uuid)
    elif current != host_uuid:
        LOG.warning('Nova\'s local node identity (compute_id) is %s, not '
                    'this XAPI host\'s uuid %s: the driver names the '
                    'compute node by the XAPI host uuid; the file is left '
                    'as it is', current, host_uuid)
