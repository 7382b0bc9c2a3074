"""A process that runs the device-model wrapper's ``main`` for real (so that
its ``os.execv`` replaces the process) against an in-memory host.

``python -m tests.unit.dom0.dm_wrapper_child SPEC.json``; SPEC: ``domains``
(``[domid, vm_uuid, hvm]``), ``xenstore`` (path -> value), ``config``
(AgentConfig fields), ``argv`` (what xenopsd passes the wrapper).
"""
import json
import sys

from nova_xen_stubdom.dom0 import config
from nova_xen_stubdom.dom0 import dm_wrapper
from nova_xen_stubdom.dom0 import host
from nova_xen_stubdom.dom0 import hypervisor
from tests.unit.dom0 import fakes


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    backend = fakes.FakeBackend()
    for domid, vm_uuid, hvm in spec['domains']:
        backend.domains[domid] = hypervisor.DomainInfo(domid, vm_uuid, hvm,
                                                       256, 1, False)
    for path, value in spec['xenstore'].items():
        backend.xs_write(path, value)
    agent = host.HostAgent(backend, 'h',
                           config=config.AgentConfig(**spec['config']))
    return dm_wrapper.main(spec['argv'], agent=agent)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
