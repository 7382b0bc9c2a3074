"""Consoles through Nova, XAPI's console proxy and the stub domain.

The guest's VNC is QEMU's in the stub domain, on a unix socket bridged to
dom0's ``/var/run/xen/vnc-<domid>`` (the simulator folds socket, vchan and
dom0 end into one listener there); XAPI describes it as an ``rfb`` console
record and proxies ``CONNECT /console?uuid=..&session_id=..``
(``sim/console_proxy.py``, from xen-api ``ocaml/xapi/console.ml``).  The
driver hands Nova's noVNC proxy exactly that CONNECT path.
"""
import os
import socket
import stat
import urllib.parse

from tests.functional import base  # noqa: I100 (first: eventlet decision)

from nova import context as nova_context
from nova import objects


def _connect(host, port, path, read=12):
    """What Nova's websocketproxy does with internal_access_path."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b'CONNECT %s HTTP/1.1\r\n\r\n' % path.encode())
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b'\r\n\r\n')
        status = head.split(b'\r\n')[0]
        while len(rest) < read:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
    return status, rest


class TestConsoles(base.XenStubdomTestBase):
    SIM_USERS = {'console-user': ('console-secret', 'vm-operator')}

    def setUp(self):
        super().setUp()
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        self.server = self._create_server(flavor_id=flavor, networks='none',
                                          host='host1')
        # runs before the leak check (registered earlier, runs later)
        self.addCleanup(lambda: self._delete_server(self.server))
        self.driver = self.computes_by_name['host1'].manager.driver
        self.inst = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), self.server['id'])
        self.host = self.sim_host('host1')

    def test_vnc_through_xapis_console_proxy(self):
        resp = self.api.api_post(
            '/servers/%s/remote-consoles' % self.server['id'],
            {'remote_console': {'protocol': 'vnc', 'type': 'novnc'}})
        self.assertIn('token', resp.body['remote_console']['url'])
        console = self.driver.get_vnc_console(None, self.inst)
        # the host the guest runs on, XAPI's plain-HTTP port
        self.assertEqual(self.host.address, console.host)
        self.assertEqual(self.host.port, console.port)
        status, banner = _connect(console.host, console.port,
                                  console.internal_access_path)
        self.assertIn(b' 200 ', status + b' ')
        self.assertEqual(b'RFB 003.008\n', banner)
        # QEMU in the stub domain listens on no TCP port; dom0's end is a
        # private unix socket where xenopsd reports the guest's VNC
        guest, stub = self.xapi_vms(self.server)
        qemu = self.host.hypervisor.qemus[int(guest['domid'])]
        self.assertEqual(int(stub['domid']), qemu.domid)
        self.assertIsNone(qemu.vnc.tcp)
        self.assertTrue(qemu.vnc.path.endswith(
            '/run/xen/vnc-%s' % guest['domid']))
        self.assertEqual(0o600, stat.S_IMODE(os.stat(qemu.vnc.path).st_mode))
        self.assertEqual(1, qemu.vnc.connections)
        # the record is XAPI's: no private keys
        x = self.xapi()
        recs = [x.console.get_record(c) for c in
                x.VM.get_consoles(guest['ref'])]
        self.assertEqual(['rfb'], [r['protocol'] for r in recs])
        self.assertEqual({}, recs[0]['other_config'])
        self.assertEqual('https://%s/console?uuid=%s' % (
            self.host.address, recs[0]['uuid']), recs[0]['location'])
        # the stub domain (a PV VM) gets no vncterm from xenopsd, so no
        # console records: other_config:disable_pv_vnc
        # (xapi_xenops.ml vncterm; doc/source/xapi-behaviour.rst)
        self.assertIn('disable_pv_vnc', stub['other_config'])
        self.assertEqual([], x.VM.get_consoles(stub['ref']))

    def test_proxy_refuses_without_a_session_or_a_running_vm(self):
        console = self.driver.get_vnc_console(None, self.inst)
        path = console.internal_access_path
        bad = path.split('&session_id=')[0] + '&session_id=OpaqueRef:nope'
        status, _ = _connect(console.host, console.port, bad, read=0)
        self.assertIn(b' 401 ', status + b' ')
        # on another host of the pool: XAPI serves only where the VM runs
        other = self.sim_host('host2')
        status, _ = _connect(other.address, console.port, path, read=0)
        self.assertIn(b' 503 ', status + b' ')
        # a halted guest has no console record: the driver says not ready
        self._stop_server(self.server)
        from nova import exception
        self.assertRaises(exception.InstanceNotReady,
                          self.driver.get_vnc_console, None, self.inst)
        self.assertEqual(b'', self.driver.get_console_output(None,
                                                             self.inst))

    def test_console_sessions_are_logged_out(self):
        self.driver.get_vnc_console(None, self.inst)
        self.driver.get_vnc_console(None, self.inst)
        pool = self.host.pool

        def console_sessions():
            with pool.sessions.lock:
                refs = list(pool.sessions.live)
            return [r for r in refs if pool.db.exists('session', r) and
                    pool.db.get('session', r)['originator'] ==
                    'nova-xen-stubdom-console']
        self.assertEqual(2, len(console_sessions()))
        # the connection account by default
        self.assertEqual({'root'}, {pool.db.get('session', r)[
            'auth_user_name'] for r in console_sessions()})
        # once Nova's console tokens have expired
        self.flags(token_ttl=0, group='consoleauth')
        self.driver._consoleops.expire()
        self.assertEqual([], console_sessions())

    def test_serial_console_is_unavailable_for_hvm_guests(self):
        self.flags(enabled=True, group='serial_console')
        resp = self.api.api_post(
            '/servers/%s/remote-consoles' % self.server['id'],
            {'remote_console': {'protocol': 'serial', 'type': 'serial'}},
            check_response_status=False)
        self.assertEqual(400, resp.status)
        self.assertIn('Unavailable console type serial',
                      resp.body['badRequest']['message'])

    def test_a_vm_operator_account_serves_consoles(self):
        self.flags(console_username='console-user',
                   console_password='console-secret', group='xen_stubdom')
        console = self.driver.get_vnc_console(None, self.inst)
        status, banner = _connect(console.host, console.port,
                                  console.internal_access_path)
        self.assertIn(b' 200 ', status + b' ')
        self.assertEqual(b'RFB 003.008\n', banner)
        ref = urllib.parse.unquote(
            console.internal_access_path.split('session_id=')[1])
        sess = self.host.pool.db.get('session', ref)
        self.assertEqual('console-user', sess['auth_user_name'])
