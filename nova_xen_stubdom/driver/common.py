"""State the ops modules share: the XAPI client, the event cache, this host."""
import contextlib
import json
import threading
from typing import Dict, Iterator, List, Optional

from oslo_concurrency import lockutils
from oslo_log import log as logging

from nova_xen_stubdom.dom0 import keywrap
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)


class DriverContext:
    """The connection of one nova-compute to its XAPI host.

    :param client: ``xapi.client.XAPIClient`` (owns sessions and retries).
    :param cache: the client's ``event.from`` record cache.
    :param host_ref: OpaqueRef of the XAPI host this compute manages.
    :param conf: oslo.config object with ``[xen_stubdom]`` registered.
    """

    def __init__(self, client, cache, host_ref: str, conf) -> None:
        self.client = client
        self.cache = cache
        self.host_ref = host_ref
        self.conf = conf
        self.host_record = cache.get('host', host_ref) or client.call(
            'host.get_record', host_ref)
        self.host_uuid = self.host_record['uuid']
        self.host_name = self.host_record['name_label']
        self._local = threading.local()

    # -- XAPI calls, tallied per operation (closing-note figures) ----------
    @contextlib.contextmanager
    def tally(self) -> Iterator[List[str]]:
        """Record the XAPI calls this thread makes inside the block."""
        calls: List[str] = []
        outer = getattr(self._local, 'calls', None)
        self._local.calls = calls
        try:
            yield calls
        finally:
            self._local.calls = outer
            if outer is not None:
                outer.extend(calls)

    def _count(self, method: str) -> None:
        calls = getattr(self._local, 'calls', None)
        if calls is not None:
            calls.append(method)

    def call(self, method: str, *args):
        self._count(method)
        return self.client.call(method, *args)

    def call_async(self, method: str, *args, timeout: Optional[float] = None):
        self._count('Async.' + method)
        return self.client.call_async(method, *args, timeout=timeout)

    def http_put(self, path: str, fileobj, length: int, **query) -> None:
        self._count('HTTP PUT ' + path)
        self.client.http_put(path, fileobj, length, **query)

    def http_get(self, path: str, sink, **query) -> int:
        """Stream an XAPI HTTP handler's answer into *sink*; bytes read."""
        self._count('HTTP GET ' + path)
        return self.client.http_get(path, sink, **query)

    def call_plugin(self, fn: str, **args) -> Dict:
        """Run agent function *fn* on this host; its JSON result, decoded.

        A ``key`` argument (hex) never reaches the plugin as such: XAPI
        puts plugin arguments on the plugin's command line, so the key goes
        wrapped for the agent's ephemeral key offer (one ``key_offer`` call
        first; see ``nova_xen_stubdom/dom0/keywrap.py``).

        :raises AgentCallFailed: the agent refused or failed.
        """
        if 'key' in args:
            offer = self.call_plugin('key_offer')
            args['key_wrap'] = keywrap.wrap(offer['offer'], offer['pub'],
                                            bytes.fromhex(args.pop('key')))
        str_args = {k: v if isinstance(v, str) else json.dumps(v)
                    if isinstance(v, (dict, list)) else str(v)
                    for k, v in args.items()}
        self._count('host.call_plugin')
        try:
            out = self.client.call('host.call_plugin', self.host_ref,
                                   dc.AGENT_PLUGIN, fn, str_args)
        except xapi_errors.XAPIError as exc:
            if exc.matches('XENAPI_PLUGIN_FAILURE'):
                params = list(exc.params) + ['', '', '']
                raise dexc.AgentCallFailed(
                    fn=fn, host=self.host_name,
                    reason='%s: %s' % (params[0], params[2] or params[1]))
            raise
        return json.loads(out) if out else {}

    def lock(self, instance_uuid: str):
        """Serialise driver operations on one instance (both thread modes)."""
        return lockutils.lock('xen-stubdom-instance-%s' % instance_uuid)


class XapiUser:
    """What every ops class reaches through its ``self._ctx`` (a
    :class:`DriverContext`, set by the subclass): XAPI calls and the
    ``[xen_stubdom]`` options."""

    _ctx: DriverContext

    @property
    def _conf(self):
        return self._ctx.conf.xen_stubdom

    def _call(self, method: str, *args):
        return self._ctx.call(method, *args)


class InstanceOps(XapiUser):
    """Base of the ops classes that act on an instance's VMs through the
    :class:`VMOps` hub (its per-instance lock, the instance's objects, and
    the starter and stopper).

    :param ctx: this compute's :class:`DriverContext`.
    :param vmops: the driver's ``vmops.VMOps``.
    """

    def __init__(self, ctx: DriverContext, vmops) -> None:
        self._ctx = ctx
        self._vmops = vmops
