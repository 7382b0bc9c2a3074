"""A read-mostly XAPI client for the tests, on the standard library alone.

The plugin checks what the driver did the way an operator would: through the
pool's XAPI (``xe vm-list`` / XenCenter see the same records).  XAPI speaks
XML-RPC over HTTP; every reply is ``{'Status': 'Success', 'Value': v}`` or
``{'Status': 'Failure', 'ErrorDescription': [code, params...]}``.
"""
import json
import time
import xmlrpc.client
from typing import Any, Callable, Dict, List, Optional, Tuple

ROLE_KEY = 'nova_xen_stubdom_role'
NOVA_UUID_KEY = 'nova_uuid'
STUBDOM_KEY = 'nova_xen_stubdom_stubdom'
TARGET_KEY = 'nova_xen_stubdom_target'
#: on the guest VM: its pass-through devices, "0/<sbdf>,1/<sbdf>" -- our
#: own key: ``other_config:pci`` is xenopsd's unmanaged pass-through
#: (``pcis_of_vm``), which must stay unset on our guests
PCI_KEY = 'nova_xen_stubdom_pci'
XENOPSD_PCI_KEY = 'pci'
PLUGIN = 'nova_xen_stubdom'

Record = Dict[str, Any]


class XAPIFailure(Exception):
    def __init__(self, method: str, description: List[str]) -> None:
        self.code = description[0] if description else 'UNKNOWN'
        self.params = description[1:]
        super().__init__('%s failed: %s' % (method, description))


class XAPIReader:
    """Logs in once; ``close`` logs out (no session is left behind)."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self._proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
        self._session = self._unwrap('session.login_with_password',
                                     self._proxy.session.login_with_password(
                                         username, password, '2.0',
                                         'tempest-nova-xen-stubdom'))

    @staticmethod
    def _unwrap(method: str, reply: Dict[str, Any]) -> Any:
        if reply.get('Status') != 'Success':
            raise XAPIFailure(method, reply.get('ErrorDescription', []))
        return reply.get('Value')

    def call(self, method: str, *args: Any) -> Any:
        fn = self._proxy
        for part in method.split('.'):
            fn = getattr(fn, part)
        return self._unwrap(method, fn(self._session, *args))

    def close(self) -> None:
        if self._session:
            try:
                self.call('session.logout')
            finally:
                self._session = None

    # -- what the tests ask ----------------------------------------------

    def vms_of(self, server_id: str) -> Dict[str, Tuple[str, Record]]:
        """role ('guest'/'stubdom') -> (ref, record) for a Nova server."""
        out = {}
        for ref, rec in self.call('VM.get_all_records').items():
            oc = rec.get('other_config', {})
            if oc.get(NOVA_UUID_KEY) == server_id:
                out[oc.get(ROLE_KEY, 'unknown')] = (ref, rec)
        return out

    def vdis_of(self, server_id: str) -> List[Record]:
        return [rec for rec in self.call('VDI.get_all_records').values()
                if rec.get('other_config', {}).get(NOVA_UUID_KEY)
                == server_id]

    def host_by_name(self, name_label: str) -> str:
        refs = self.call('host.get_by_name_label', name_label)
        if not refs:
            raise LookupError('no XAPI host named %r' % name_label)
        return refs[0]

    def stubdom_wiring(self, host_ref: str, stub_domid: int) -> Dict[str, Any]:
        """The dom0 agent's view of a stub domain's xenstore wiring."""
        return json.loads(self.call('host.call_plugin', host_ref, PLUGIN,
                                    'stubdom_wiring',
                                    {'stubdom_domid': str(stub_domid)}))

    def pci_grants(self, host_ref: str, guest_vm_uuid: str) -> Dict[str, Any]:
        """The dom0 agent's record of what it granted for a guest:
        ``{'guest_domid', 'stub_domid', 'devices': {sbdf: ...}}`` or
        ``{}`` when nothing is granted."""
        return json.loads(self.call('host.call_plugin', host_ref, PLUGIN,
                                    'pci_grants',
                                    {'guest_vm_uuid': guest_vm_uuid}))

    def wait(self, what: str, fetch: Callable[[], Any],
             ok: Callable[[Any], bool], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        value: Optional[Any] = None
        while time.monotonic() < deadline:
            value = fetch()
            if ok(value):
                return value
            time.sleep(0.5)
        raise AssertionError('timed out after %.0f s waiting for %s; last '
                             'seen: %r' % (timeout, what, value))
