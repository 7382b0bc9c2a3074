"""The QEMU the simulator runs inside a stub domain (or in dom0, for a VM the
stock device-model wrapper serves: ``sim/xenopsd_dm.py``).

A running PV domain whose xenstore has ``/local/domain/<stub>/target`` and
``/local/domain/<stub>/dm-argv`` (ESC-separated, libxl's convention) starts
"QEMU": it checks that every disk (``/dev/xvdX``) and NIC (``ethN``) its argv
uses is a PV frontend *of the stub domain*, opens the guest's VNC server
(a loopback TCP port that speaks the RFB handshake) and writes ``running`` to
``/local/domain/<stub>/device-model/<guest>/state`` -- as the stub domain,
so xenstore permissions apply.  A missing device or permission writes
``error`` (when it can) and logs the reason on the stub domain's console.

Save/restore protocol (dom0 agent <-> QEMU, all under
``D = /local/domain/<stub>/device-model/<guest>``):

* dom0 attaches a disk to the stub domain (XAPI VBD plug, or
  ``SimBackend.attach_disk``), writes ``D/state-disk = xvdX`` and then
  ``D/command = save``: QEMU stops emulating, writes its device state to the
  disk in the state-disk format (:mod:`nova_xen_stubdom.stubdom.statedisk`:
  512-byte header ``NXSDSTAT``, version, header size, length, sha256; state
  at 512), sets ``D/state = saved`` and removes ``D/command``.
* ``D/command = restore`` with ``D/state-disk`` set: QEMU reads and verifies
  the disk, adopts the state, ``D/state = running``.
  At start-up, ``/local/domain/<stub>/nova-xen-stubdom/restore-disk = xvdX``
  has the same effect (the stub domain's init does this on a restore boot).
* ``D/command = continue`` after a save: back to ``running``.
* Any failure: ``D/state = error`` and ``D/error = <reason>``.

The stub domain init's own channel (:mod:`nova_xen_stubdom.stubdom.channel`,
``/local/domain/<stub>/nova-xen-stubdom/command`` = ``"<seq> save <vdev>"``
or ``"<seq> cont"``, answered in ``.../result``) is served too.
"""
import hashlib
import logging
import os
import socket
import struct
import threading
from typing import Dict, Optional

from nova_xen_stubdom.sim import qemu_savevm

LOG = logging.getLogger(__name__)
DM_ARGV_SEP = '\x1b'
_MAGIC = b'NXSDSTAT'
_HEADER = '<8sIIQ32s'


def pack_state_image(state: bytes) -> bytes:
    try:
        from nova_xen_stubdom.dom0 import statedisk
        return statedisk.build_image(state)
    except ImportError:
        head = struct.pack(_HEADER, _MAGIC, 1, 512, len(state),
                           hashlib.sha256(state).digest())
        data = head + bytes(512 - len(head)) + state
        return data + bytes(-len(data) % 512)


def unpack_state_image(data: bytes) -> bytes:
    magic, version, hsize, length, digest = struct.unpack_from(_HEADER, data)
    if magic != _MAGIC or version != 1:
        raise ValueError('not a device-state disk (magic %r version %d)'
                         % (magic, version))
    state = data[hsize:hsize + length]
    if len(state) != length:
        raise ValueError('device state truncated: expected %d bytes, got %d'
                         % (length, len(state)))
    if hashlib.sha256(state).digest() != digest:
        raise ValueError('device state checksum mismatch')
    return state


class VncServer:
    """QEMU's VNC server: answers the RFB 3.8 handshake.

    ``-vnc unix:PATH`` (what our stub domains run): QEMU listens on a unix
    socket inside the stub domain, which the stub init bridges over a vchan
    to dom0's ``/var/run/xen/vnc-<guest domid>`` (the path xenopsd reports to
    XAPI's console proxy).  The simulator folds the three into one unix
    listener at that dom0 path (``<host dir>/run/xen/vnc-<domid>``, 0600).
    Any other ``-vnc`` value is a TCP listener: :attr:`tcp` holds the
    address QEMU was asked to bind (``0.0.0.0`` would be the whole network;
    the simulator still binds loopback, and tests check :attr:`tcp`).
    """

    def __init__(self, label: str, spec: str, dom0_path: str):
        self.label = label
        self.spec = spec
        self.tcp: Optional[str] = None
        self.path: Optional[str] = None
        if spec.startswith('unix:'):
            os.makedirs(os.path.dirname(dom0_path), mode=0o700,
                        exist_ok=True)
            if os.path.exists(dom0_path):
                os.unlink(dom0_path)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                self.sock.bind(dom0_path)
            finally:
                os.umask(old)
            self.path = dom0_path
        else:
            self.tcp = spec.split(',')[0].rpartition(':')[0] or '0.0.0.0'
            self.sock = socket.socket()
            self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name='sim-vnc-%s' % label)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                conn.sendall(b'RFB 003.008\n')
            except OSError:
                pass
            finally:
                conn.close()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1] if self.tcp is not None else 0

    @property
    def endpoint(self) -> str:
        if self.path is not None:
            return 'unix:' + self.path
        return '127.0.0.1:%d' % self.port

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def vnc_socket_path(hv, guest_domid: int) -> str:
    """The host's ``/var/run/xen/vnc-<domid>`` (xenopsd device.ml
    ``Dm_Common.vnc_socket_path``) in the simulated host's directory."""
    return os.path.join(hv.mem_dir, 'run', 'xen', 'vnc-%d' % guest_domid)


class Qemu:
    """One device model: the guest it serves and the domain it runs in."""

    def __init__(self, hv, guest_domid: int, dm_domid: int, argv):
        self.hv = hv
        self.guest = guest_domid
        self.domid = dm_domid
        self.argv = list(argv)
        self.vnc: Optional[VncServer] = None
        if '-vnc' in self.argv:
            spec = self.argv[self.argv.index('-vnc') + 1] \
                if self.argv.index('-vnc') + 1 < len(self.argv) else ''
            self.vnc = VncServer('dom%d' % guest_domid, spec,
                                 vnc_socket_path(hv, guest_domid))
        guest = hv.domains.get(guest_domid)
        seed = ('%s/%s' % (guest.vm_uuid if guest else guest_domid,
                           ' '.join(self.argv))).encode()
        # device state: QEMU's xenfv sections (sim/qemu_savevm.py), its
        # registers depending on the guest and the command line
        self.state = qemu_savevm.device_state(seed)

    def close(self):
        if self.vnc:
            self.vnc.close()


class StubQemu:
    """Watches one PV domain's xenstore and plays QEMU when it is a stubdom."""

    def __init__(self, hv, dom):
        self.hv = hv
        self.dom = dom
        self.qemu: Optional[Qemu] = None
        #: (target, argv) QEMU failed to start with: not retried as is
        self.failed = None
        #: sequence number of the last init-channel command answered
        self.last_seq = None
        self.saved = False
        self.lock = threading.RLock()
        self._busy = False
        self.base = '/local/domain/%d' % dom.domid
        self._watch = hv.xenstore.watch(self.base, self._changed)

    def close(self):
        self.hv.xenstore.unwatch(self._watch)
        with self.lock:
            if self.qemu:
                self.qemu.close()
                self.qemu = None

    def guest_gone(self, guest: int) -> None:
        with self.lock:
            if self.qemu is not None and self.qemu.guest == guest:
                self.qemu.close()
                self.qemu = None
                self.failed = None
                self._console('guest domain %d is gone' % guest)

    def _console(self, text):
        self.dom.console.append('[qemu] ' + text)

    def poke(self):
        self._changed(self.base)

    def _changed(self, path: str) -> None:
        if self.dom.paused or self.dom.domid not in self.hv.domains:
            return
        with self.lock:
            if self._busy:      # our own writes fire the watch again
                return
            self._busy = True
            try:
                self._react()
            finally:
                self._busy = False

    def _react(self) -> None:
        xs = self.hv.xenstore
        me = self.dom.domid
        if True:
            if self.qemu is None:
                target = xs.read(self.base + '/target')
                argv = xs.read(self.base + '/dm-argv')
                if not target or not argv or self.failed == (target, argv):
                    return
                args = argv.split(DM_ARGV_SEP)
                if '-xen-domid' in args[:-1] and \
                        args[args.index('-xen-domid') + 1] != target:
                    return      # an argv of an earlier guest domain
                self.failed = (target, argv)
                self._start(int(target), argv.split(DM_ARGV_SEP))
                if self.qemu is not None:
                    self.failed = None
                return
            d = '%s/device-model/%d' % (self.base, self.qemu.guest)
            try:
                cmd = xs.read(d + '/command', caller=me)
            except Exception:
                cmd = None
            if cmd:
                self._command(d, cmd)
            self._init_channel()

    def _init_channel(self) -> None:
        """The stub domain init's protocol (``stubdom.channel``):
        ``~/nova-xen-stubdom/command = "<seq> save <vdev>" | "<seq> cont"``,
        answered in ``~/nova-xen-stubdom/result``."""
        xs = self.hv.xenstore
        me = self.dom.domid
        ns = self.base + '/nova-xen-stubdom'
        try:
            cmd = xs.read(ns + '/command', caller=me)
        except Exception:
            return
        if not cmd or cmd.split(' ', 1)[0] == self.last_seq:
            return
        seq, _, rest = cmd.partition(' ')
        self.last_seq = seq
        words = rest.split()
        try:
            if words[:1] == ['save'] and len(words) == 2:
                path = self._disk(words[1])
                if not path:
                    raise ValueError('no disk %s' % words[1])
                state = self.qemu.state
                image = pack_state_image(state)
                with open(path, 'r+b') as f:
                    f.seek(0, 2)
                    if f.tell() < len(image):
                        raise ValueError('disk %s too small' % words[1])
                    f.seek(0)
                    f.write(image)
                self.saved = True
                answer = 'ok %d %s' % (len(state),
                                       hashlib.sha256(state).hexdigest())
            elif words == ['cont']:
                self.saved = False
                answer = 'ok'
            else:
                raise ValueError('unknown command %r' % rest)
        except (OSError, ValueError) as e:
            answer = 'error %s' % e
        try:
            xs.write(ns + '/result', '%s %s' % (seq, answer), caller=me)
        except Exception as e:
            self._console('cannot answer %r: %s' % (cmd, e))

    def _set_state(self, d, state, error=None):
        xs = self.hv.xenstore
        me = self.dom.domid
        try:
            if error:
                xs.write(d + '/error', error, caller=me)
            xs.write(d + '/state', state, caller=me)
        except Exception as e:
            self._console('cannot write %s/state: %s' % (d, e))

    def _disk(self, name: str) -> Optional[str]:
        for fe in self.hv.frontends_of(self.dom.domid):
            if fe.kind == 'vbd' and fe.devid == name:
                return fe.target
        return None

    def _start(self, guest: int, argv) -> None:
        d = '%s/device-model/%d' % (self.base, guest)
        me = self.dom.domid
        if self.dom.target != guest:
            self._console('target %d not granted by the hypervisor' % guest)
            self._set_state(d, 'error', 'no privilege over domain %d' % guest)
            return
        missing = []
        have = {(f.kind, f.devid) for f in self.hv.frontends_of(me)}
        for arg in argv:
            for part in arg.split(','):
                if part.startswith('file=/dev/xvd'):
                    dev = part[len('file=/dev/'):]
                    if ('vbd', dev) not in have:
                        missing.append('disk ' + dev)
                if part.startswith('ifname=eth'):
                    n = part[len('ifname=eth'):]
                    if ('vif', n) not in have:
                        missing.append('nic eth' + n)
        if missing:
            self._console('missing PV devices: ' + ', '.join(missing))
            self._set_state(d, 'error', 'missing PV devices: '
                            + ', '.join(missing))
            return
        qemu = Qemu(self.hv, guest, me, argv)
        restore = self.hv.xenstore.read(self.base +
                                        '/nova-xen-stubdom/restore-disk')
        if restore:
            try:
                self._load(qemu, restore)
            except (OSError, ValueError) as e:
                qemu.close()
                self._console('restore failed: %s' % e)
                self._set_state(d, 'error', 'restore failed: %s' % e)
                return
        self.qemu = qemu
        with self.hv.lock:
            self.hv.qemus[guest] = qemu
        self._console('device model for domain %d running' % guest)
        if not restore:
            # a restored guest carries on where it was: no second boot
            self._guest_boots(guest, argv)
        self._set_state(d, 'running')

    def _guest_boots(self, guest: int, argv) -> None:
        """What a freshly started guest prints on its serial line: the
        firmware QEMU was given, then a (clearly simulated) OS boot.  Nova's
        get_console_output reads it like xenconsoled's log."""
        dom = self.hv.domains.get(guest)
        if dom is None:
            return
        uefi = any('OVMF' in a for a in argv)
        lines = [
            'UEFI firmware (OVMF), simulated' if uefi else
            'SeaBIOS (simulated)',
            'Booting from Hard Disk...',
            '[    0.000000] Linux version 6.1.0 (simulated guest of the XAPI '
            'simulator)',
            '[    0.000000] Command line: root=/dev/sda1 console=ttyS0',
            '[    0.000000] DMI: Xen HVM domU, device model in domain %d '
            '(stub domain)' % self.dom.domid,
            '[    0.210000] Booting paravirtualized kernel on Xen HVM',
            '[    1.020000] xen_netfront: Initialising Xen virtual ethernet '
            'driver',
            '[    1.300000] EXT4-fs (sda1): mounted filesystem',
            '',
            '%s login:' % (dom.name or 'guest'),
        ]
        with dom.lock:
            if dom.paused:
                # it boots once the toolstack lets it run (Hypervisor.unpause)
                dom.boot_log = lines
                return
        dom.console.extend(lines)

    def _load(self, qemu, disk: str) -> None:
        path = self._disk(disk)
        if not path:
            raise ValueError('no disk %s attached to the stub domain' % disk)
        with open(path, 'rb') as f:
            head = f.read(512)
            length = struct.unpack_from(_HEADER, head)[3] if \
                len(head) == 512 else 0
            data = head + f.read(length)
        qemu.state = unpack_state_image(data)

    def _command(self, d: str, cmd: str) -> None:
        xs = self.hv.xenstore
        me = self.dom.domid
        disk = xs.read(d + '/state-disk', caller=me)
        try:
            if cmd == 'save':
                path = self._disk(disk or '')
                if not path:
                    raise ValueError('no state disk %r attached to stub '
                                     'domain %d' % (disk, me))
                image = pack_state_image(self.qemu.state)
                with open(path, 'r+b') as f:
                    f.seek(0, 2)
                    if f.tell() < len(image):
                        raise ValueError('state disk too small: %d < %d'
                                         % (f.tell(), len(image)))
                    f.seek(0)
                    f.write(image)
                new = 'saved'
            elif cmd == 'restore':
                self._load(self.qemu, disk or '')
                new = 'running'
            elif cmd == 'continue':
                new = 'running'
            else:
                raise ValueError('unknown command %r' % cmd)
        except (OSError, ValueError) as e:
            self._console('%s failed: %s' % (cmd, e))
            xs.rm(d + '/command', caller=me)
            self._set_state(d, 'error', '%s failed: %s' % (cmd, e))
            return
        xs.rm(d + '/command', caller=me)
        self._console('%s done' % cmd)
        self._set_state(d, new)


def on_domain(dom, event: str) -> None:
    """Hypervisor listener: give every PV domain a stubdom QEMU watcher."""
    hv = dom.hv
    if event == 'create' and not dom.hvm and dom.domid != 0:
        hv.stub_qemus[dom.domid] = StubQemu(hv, dom)
    elif event == 'unpause' and dom.domid in hv.stub_qemus:
        hv.stub_qemus[dom.domid].poke()
    elif event == 'destroy':
        sq = hv.stub_qemus.pop(dom.domid, None)
        if sq is not None:
            if sq.qemu is not None:
                hv.qemus.pop(sq.qemu.guest, None)
            sq.close()
        q = hv.qemus.pop(dom.domid, None)   # the guest of a dom0/stub QEMU
        if q is not None and q.domid == 0:
            q.close()
        elif q is not None and q.domid in hv.stub_qemus:
            # the guest died: its stub domain's QEMU stops serving it; Xen
            # keeps the dead domain as the stub domain's target, so it
            # cannot serve another (Hypervisor.set_target)
            hv.stub_qemus[q.domid].guest_gone(dom.domid)


def start_dom0_qemu(hv, guest_domid: int, argv) -> None:
    """A device model in dom0: what xenopsd's stock ``qemu-wrapper`` runs
    with xenopsd's *argv* (``sim/xenopsd_dm.py``) -- for a VM that is not
    ours, or one of ours where the host allows dom0 device models."""
    with hv.lock:
        hv.qemus[guest_domid] = Qemu(hv, guest_domid, 0, argv)


def stop_dom0_qemu(hv, guest_domid: int) -> None:
    with hv.lock:
        q = hv.qemus.get(guest_domid)
        if q is not None and q.domid == 0:
            hv.qemus.pop(guest_domid)
            q.close()


def vnc_endpoint(hv, guest_domid: int) -> Optional[str]:
    q = hv.qemus.get(guest_domid)
    return q.vnc.endpoint if q is not None and q.vnc else None


def vnc_socket(hv, guest_domid: int) -> Optional[str]:
    """The dom0 unix socket of the guest's VNC, while its QEMU serves it
    there (what xenopsd's ``VM.stat`` lists as the rfb console)."""
    q = hv.qemus.get(guest_domid)
    if q is None or q.vnc is None:
        return None
    return q.vnc.path


def device_state(hv, guest_domid: int) -> Optional[bytes]:
    q = hv.qemus.get(guest_domid)
    return q.state if q is not None else None


def qemus(hv) -> Dict[int, int]:
    """guest domid -> domid its QEMU runs in."""
    return {g: q.domid for g, q in hv.qemus.items()}
