"""What xenopsd gives a device-model wrapper and says to it, written down
from its source for the wrapper's tests.

Sources (xapi-project/xen-api at e2ee48d6, xapi-project/ocaml-qmp at
051df743):

- the argv: ``ocaml/xenopsd/xc/device.ml`` ``Dm_Common.prepend_wrapper_args``
  (``<domid> --syslog``), ``Dm.__start`` (vTPM args first), and the QEMU
  arguments of ``Dm_Common.qemu_args`` (display, ``-acpi``, ``-loadvm
  /var/run/xen/qemu-resume.<domid>`` on restore, ``-pidfile
  /var/run/xen/qemu-dm-<domid>.pid``) and ``Make_qemu_upstream.Dm.qemu_args``
  (``-xen-domid``, ``-m``, ``-boot``, ``-smp``, serial, ``-S``, the
  ``Config_qemu_upstream_compat.extra_qemu_args``, the two ``-qmp`` sockets,
  disks, NICs or ``-net none``);
- one QMP command per connection to ``qmp-libxl-<domid>``:
  ``ocaml/xenopsd/xc/device_common.ml`` ``qmp_send_cmd`` /
  ``with_qmp_connection`` / ``qmp_send_cmd_internal`` (ids from
  ``make_qmp_id``: ``qmp-%06d-<domid>``; replies with another id or none are
  skipped), the optional fd sent first as one byte with ``SCM_RIGHTS``;
- the negotiation: ocaml-qmp ``lib/qmp_protocol.ml`` ``negotiate`` (a
  greeting, then ``qmp_capabilities`` without id answered by exactly
  ``{"return": {}}``); lines end ``\\r\\n`` (``write``), read by
  ``input_line``;
- the event socket: ``device.ml`` ``QMP_Event.add`` (negotiate, then
  ``cont`` without id, the connection kept for events), after
  ``Dm.wait_event_socket`` (connect until it succeeds).

``/var/run/xen`` is replaced by a test directory.
"""
import array
import itertools
import json
import socket
from typing import Dict, List, Optional

_ids = itertools.count(1)


def argv(domid: int, run: str, restore: bool = False) -> List[str]:
    """xenopsd's argv to the wrapper for a BIOS HVM guest with one disk,
    VNC, a USB tablet and no NIC (``upstream-compat`` profile)."""
    compat_globals = []
    for dev in ('piix3-ide', 'piix3-ide-xen', 'piix3-usb-uhci', 'rtl8139'):
        for prop in ('subvendor_id=0x5853', 'subsystem_id=0x0001'):
            compat_globals += ['-global', '%s.%s' % (dev, prop)]
    return ([str(domid), '--syslog',
             '-std-vga', '-videoram', '8',
             '-vnc', 'unix:%s/vnc-%d,lock-key-sync=off' % (run, domid),
             '-acpi']
            + (['-loadvm', '%s/qemu-resume.%d' % (run, domid)]
               if restore else [])
            + ['-pidfile', '%s/qemu-dm-%d.pid' % (run, domid),
               '-xen-domid', str(domid), '-m', 'size=512',
               '-boot', 'order=cd', '-usb', '-device', 'usb-tablet,port=2',
               '-smp', '1,maxcpus=1', '-serial', 'pty',
               '-display', 'none', '-nodefaults',
               '-trace', 'enable=xen_platform_log',
               '-sandbox', 'on,obsolete=deny,elevateprivileges=allow,'
                           'spawn=deny,resourcecontrol=deny',
               '-S', '-trad-compat',
               '-global', 'PIIX4_PM.revision_id=0x1',
               '-global', 'ide-hd.ver=0.10.2']
            + compat_globals
            + ['-parallel', 'null',
               '-qmp', 'unix:%s/qmp-libxl-%d,server,nowait' % (run, domid),
               '-qmp', 'unix:%s/qmp-event-%d,server,nowait' % (run, domid),
               '-device', 'xen-platform,addr=3,device-id=0x0001,'
                          'revision=0x2,class-id=0x0100,subvendor_id=0x5853,'
                          'subsystem_id=0x0001',
               '-drive', 'file=/dev/sm/backend/sr/vdi,if=none,id=ide0-hd0,'
                         'auto-read-only=off,format=raw',
               '-device', 'ide-hd,drive=ide0-hd0,bus=ide.0,unit=0',
               '-net', 'none'])


class QmpConnection:
    """One connection as ocaml-qmp's ``Qmp_protocol`` makes it."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.rfile = self.sock.makefile('rb')
        self.greeting = None    # type: Optional[Dict]

    def read(self) -> Dict:
        line = self.rfile.readline()
        if not line:
            raise EOFError('the QMP server closed the connection')
        return json.loads(line.decode())

    def write(self, msg: Dict) -> None:
        self.sock.sendall(json.dumps(msg).encode() + b'\r\n')

    def negotiate(self) -> None:
        """``Qmp_protocol.negotiate``: anything but a greeting and then
        ``Success(None, Unit)`` is a failure."""
        self.greeting = self.read()
        assert set(self.greeting) == {'QMP'}, self.greeting
        version = self.greeting['QMP']['version']
        for part in ('major', 'minor', 'micro'):
            assert isinstance(version['qemu'][part], int)
        assert isinstance(version['package'], str)
        self.write({'execute': 'qmp_capabilities'})
        assert self.read() == {'return': {}}

    def send_fd(self, fd: int) -> None:
        """``Fd_send_recv.send_fd_substring connection " " 0 1 [] fd``."""
        self.sock.sendmsg([b' '], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    array.array('i', [fd]))])

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


def send_cmd(path: str, domid: int, execute: str,
             arguments: Optional[Dict] = None,
             send_fd: Optional[int] = None) -> Dict:
    """``Device_common.qmp_send_cmd``: a fresh connection, negotiation, the
    optional fd, the command with a fresh id, the reply with that id."""
    conn = QmpConnection(path)
    try:
        conn.negotiate()
        if send_fd is not None:
            conn.send_fd(send_fd)
        msg_id = 'qmp-%06d-%d' % (next(_ids), domid)
        cmd = {'execute': execute, 'id': msg_id}     # type: Dict
        if arguments is not None:
            cmd['arguments'] = arguments
        conn.write(cmd)
        while True:
            reply = conn.read()
            if reply.get('id') == msg_id and ('return' in reply
                                              or 'error' in reply):
                return reply
    finally:
        conn.close()


def event_channel(path: str) -> QmpConnection:
    """``QMP_Event.add``: negotiate, ``cont`` without id, keep it open."""
    conn = QmpConnection(path)
    conn.negotiate()
    conn.write({'execute': 'cont'})
    return conn
