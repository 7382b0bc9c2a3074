"""Consoles: VNC and serial through XAPI's console proxy, and the log.

XAPI describes a running VM's consoles as ``console`` records (protocol
``rfb`` or ``vt100``, ``location = https://<host>/console?uuid=<uuid>``,
an empty ``other_config``; xen-api ``ocaml/xapi/xapi_xenops.ml``
``update_vm``) and serves them itself: ``CONNECT /console?uuid=..`` with a
session of role vm-operator or above, on the host the VM runs on, is
proxied to the console's socket in dom0 (``ocaml/xapi/console.ml``
``handler``/``real_proxy``).  Nova's noVNC and serial proxies speak exactly
that when a console carries ``internal_access_path``
(``nova/console/websocketproxy.py``: ``CONNECT <path> HTTP/1.1``, expects
``200``).  So the VNC server of QEMU in the stub domain is never reachable
from the network: it is a unix socket, bridged to dom0, that only XAPI's
authenticated proxy connects to (doc/source/consoles.rst).

The path carries a XAPI session id.  Each console gets a session of its own
(originator :data:`ORIGINATOR`, so XAPI's per-originator session limit
never evicts the driver's own sessions; account ``[xen_stubdom]
console_username`` when set, which needs only the vm-operator role), logged
out once Nova's console token has expired (``[consoleauth] token_ttl``) or
when the driver stops.
"""
import collections
import threading
import time
import urllib.parse
from typing import Deque, Dict, List, Tuple

from oslo_log import log as logging

from nova.console import type as ctype
from nova import exception

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)

#: the originator of the sessions handed to Nova's console proxies
ORIGINATOR = 'nova-xen-stubdom-console'
#: XAPI's console handler path (xen-api Constants.console_uri)
CONSOLE_URI = '/console'
#: seconds a console token lives when [consoleauth] is not registered
DEFAULT_TOKEN_TTL = 600


class ConsoleOps(common.InstanceOps):
    def __init__(self, ctx, vmops) -> None:
        super().__init__(ctx, vmops)
        self._lock = threading.Lock()
        #: (monotonic time, session) handed out, oldest first
        self._sessions: Deque[Tuple[float, object]] = collections.deque()

    # -- console records ----------------------------------------------------
    def _consoles(self, instance, protocol: str) -> List[Dict]:
        """The guest's console records of *protocol* (running guest)."""
        built = self._vmops._require(instance)
        state = self._call('VM.get_power_state', built.guest)
        if state != xc.POWER_STATE_RUNNING:
            raise exception.InstanceNotReady(instance_id=instance.uuid)
        out = []
        for ref in self._call('VM.get_consoles', built.guest):
            try:
                rec = self._call('console.get_record', ref)
            except xapi_errors.HandleInvalid:
                continue        # the VM just restarted: records renewed
            if rec.get('protocol') == protocol:
                out.append(rec)
        return out

    def _port(self) -> int:
        port = self._conf.console_port
        if port:
            return port
        url = urllib.parse.urlsplit(self._ctx.client.url)
        if url.scheme == 'http':
            return url.port or 80
        return 80

    def _access(self, rec: Dict) -> Tuple[str, int, str]:
        """(host, port, CONNECT path) for a console record."""
        loc = urllib.parse.urlsplit(rec.get('location') or '')
        query = dict(urllib.parse.parse_qsl(loc.query))
        if not loc.hostname or loc.path != CONSOLE_URI or \
                not (query.get('uuid') or query.get('ref')):
            raise dexc.XenStubdomDriverError(
                reason='console %s has an unusable location %r'
                       % (rec.get('uuid'), rec.get('location')))
        query['session_id'] = self._new_session()
        return (loc.hostname, self._port(),
                '%s?%s' % (CONSOLE_URI, urllib.parse.urlencode(query)))

    # -- sessions -----------------------------------------------------------
    def _token_ttl(self) -> float:
        try:
            return float(self._ctx.conf.consoleauth.token_ttl)
        except Exception:       # [consoleauth] not registered (tests)
            return float(DEFAULT_TOKEN_TTL)

    def _new_session(self) -> str:
        self.expire()
        sess = self._ctx.client.login(originator=ORIGINATOR,
                                      username=self._conf.console_username,
                                      password=self._conf.console_password)
        with self._lock:
            self._sessions.append((time.monotonic(), sess))
        return sess.ref

    def expire(self, everything: bool = False) -> None:
        """Log out console sessions whose token has expired (all of them
        with *everything*: the driver is stopping)."""
        limit = time.monotonic() - self._token_ttl()
        done = []
        with self._lock:
            while self._sessions and (everything or
                                      self._sessions[0][0] < limit):
                done.append(self._sessions.popleft()[1])
        for sess in done:
            self._ctx.client.logout(sess)

    # -- the driver API -----------------------------------------------------
    def get_vnc_console(self, instance) -> ctype.ConsoleVNC:
        """The guest's display (QEMU's VNC in the stub domain), through
        XAPI's console proxy on the host the guest runs on."""
        found = self._consoles(instance, 'rfb')
        if not found:
            raise exception.ConsoleTypeUnavailable(console_type='vnc')
        host, port, path = self._access(found[0])
        return ctype.ConsoleVNC(host=host, port=port,
                                internal_access_path=path)

    def get_serial_console(self, instance) -> ctype.ConsoleSerial:
        """A ``vt100`` console, if XAPI lists one.

        xenopsd reports ``vt100`` only for a text console it serves itself
        (``tc-port`` of vncterm, ``ocaml/xenopsd/xc/device.ml``
        ``get_tc_port``), never for an HVM guest's emulated serial port:
        for our guests this answers ``ConsoleTypeUnavailable``; the serial
        output is in ``get_console_output``.
        """
        found = self._consoles(instance, 'vt100')
        if not found:
            LOG.info('no vt100 console in XAPI for this guest (HVM guests '
                     'have none): serial console unavailable',
                     instance=instance)
            raise exception.ConsoleTypeUnavailable(console_type='serial')
        host, port, path = self._access(found[0])
        return ctype.ConsoleSerial(host=host, port=port,
                                   internal_access_path=path)

    def get_console_output(self, instance) -> bytes:
        """The guest's console log as dom0 keeps it (``console_log`` of the
        dom0 side, bounded); empty while the guest does not run."""
        built = self._vmops._require(instance)
        domid = int(self._call('VM.get_domid', built.guest))
        if domid < 0:
            return b''
        try:
            out = self._ctx.call_plugin('console_log', domid=domid)
        except dexc.AgentCallFailed as exc:
            LOG.warning('console log of domain %(domid)d: %(exc)s',
                        {'domid': domid, 'exc': exc}, instance=instance)
            raise exception.ConsoleNotAvailable()
        return out.get('log', '').encode('utf-8', 'replace')
