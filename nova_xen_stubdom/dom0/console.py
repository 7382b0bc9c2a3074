"""Guest console output for Nova's ``get_console_output``."""
import json
from typing import Dict

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import registry as plugin

#: Nova shows the tail of the log; keep the answer of call_plugin bounded
MAX_CONSOLE_BYTES = 100 * 1024


@plugin.register('console_log')
def console_log(agent, args: Dict[str, str]) -> str:
    try:
        domid = int(args['domid'])
    except (KeyError, ValueError):
        raise errors.InvalidArgument(name='domid', value=args.get('domid'),
                                     reason='an integer is required')
    agent.domain_info(domid)        # DomainNotFound when it is gone
    try:
        text = agent.backend.read_console(domid)
    except NotImplementedError as exc:
        raise errors.AgentError('no console access: %s' % exc)
    return json.dumps({'log': text[-MAX_CONSOLE_BYTES:]})
