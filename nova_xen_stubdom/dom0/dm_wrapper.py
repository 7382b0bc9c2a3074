"""The device-model wrapper process: what xenopsd runs instead of QEMU.

xenopsd starts every HVM VM's device model through ONE host-wide program,
``upstream-compat-qemu-dm-wrapper`` in ``/etc/xenopsd.conf`` (stock:
``qemu-wrapper`` found on the search path,
``/usr/lib64/xen/bin/qemu-wrapper`` on XCP-ng 8.3), with the argv
``<domid> --syslog <QEMU arguments>`` (xen-api
``ocaml/xenopsd/xc/device.ml`` ``Dm_Common.prepend_wrapper_args``,
``Dm.__start``; the QEMU arguments from ``Make_qemu_upstream.Dm.qemu_args``).
Registered there, this wrapper:

1. reads the domid from the leading argument (or ``-xen-domid``) and the
   VM's uuid from ``/local/domain/<domid>/vm``
   (:func:`device_model.vm_uuid_of`); an unknown domid is an error (exit
   status 1);
2. hands a VM that is not ours (:func:`device_model.managed_by_us`) to the
   host's stock wrapper with the argv unchanged: ``os.execv`` of
   ``[agent] stock_dm_wrapper`` (default :data:`DEFAULT_STOCK_DM_WRAPPER`),
   nothing forked or left behind; a missing or non-executable stock wrapper
   is an error on stderr and exit status 1;
3. for ours, re-executes itself once with ``qemu-dm-<domid>`` on its
   command line (:func:`_reexec_as_device_model`): xenopsd accepts a device
   model's pid only when ``/proc/<pid>/cmdline`` holds that word
   (``ocaml/xenopsd/xc/service.ml`` ``DaemonMgmt.pid``/``is_cmdline_valid``,
   ``Qemu.expected_cmdline_items``), and without a running device model the
   VM's start fails (``Device.Serial.update_xenstore``);
4. asks the host's dom0 daemon (``dm_launch``; in process when no daemon
   runs) for :func:`device_model.launch`: a guest with a linked stub domain
   gets nothing started in dom0; without one it is refused (exit status 1)
   unless the host allows dom0 device models, in which case the stock
   wrapper is exec'd with the argv unchanged;
5. registers itself as the guest's device model the way QEMU and the stock
   wrapper do (a locked ``-pidfile`` and ``/local/domain/<domid>/qemu-pid``),
   waits for the QEMU inside the stub domain to report ``running``
   (``/local/domain/<stub>/device-model/<guest>/state``), opens xenopsd's
   QMP sockets (step 6) and then mirrors the state to
   ``/local/domain/0/device-model/<guest>/state``, where xenopsd's
   xenstore ``continue`` signal (``Dm_Common.resume``) waits for it;
6. serves xenopsd's QMP sockets (``-qmp unix:/var/run/xen/qmp-libxl-<domid>``
   and ``qmp-event-<domid>``; :mod:`.qmp_endpoint` says what each command
   gets) until ``quit``, SIGTERM (xenopsd's ``Service.Qemu.stop``), or the
   guest domain going away; then undoes the link (``dm_stop``,
   :func:`device_model.stop`) and its registration;
7. meanwhile runs dom0's end of the guest's VNC bridge
   (:mod:`vnc_bridge`: ``/var/run/xen/vnc-<domid>``, where xenopsd tells
   XAPI's console proxy to connect).

A guest that xenopsd restores from its own save image (``-loadvm``) is
refused: its device state would have to come from a dom0 QEMU; Nova's
guests are saved and restored through the dom0 daemon instead.
"""
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

from nova_xen_stubdom.dom0 import daemon_protocol
from nova_xen_stubdom.dom0 import device_model as dm_wrapper
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import logs
from nova_xen_stubdom.dom0 import qmp_endpoint
from nova_xen_stubdom.dom0 import registry
from nova_xen_stubdom.dom0 import stubdom_link as stubdom
from nova_xen_stubdom.dom0 import vnc_bridge

LOG = logging.getLogger(__name__)

#: where XCP-ng 8.3 installs xenopsd's stock wrapper (xapi.spec
#: ``--qemu_wrapper_dir=%{_libdir}/xen/bin``; xenopsd's default
#: ``qemu-wrapper`` is found there through ``search-path``)
DEFAULT_STOCK_DM_WRAPPER = '/usr/lib64/xen/bin/qemu-wrapper'
DOM0_STATE_PATH = '/local/domain/0/device-model/%d/state'
#: what xenopsd reads to find a device model's pid (``Service.Qemu``)
QEMU_PID_PATH = '/local/domain/%d/qemu-pid'
#: the word xenopsd wants on a device model's command line
DM_CMDLINE_ITEM = 'qemu-dm-%d'
#: first argument of the re-executed wrapper, followed by DM_CMDLINE_ITEM
REEXEC_FLAG = '--nxs-device-model'
#: kept for callers of the old module layout
QmpFacade = qmp_endpoint.QmpFacade
QMP_COMMANDS = qmp_endpoint.ANSWERED


class DmArgs:
    def __init__(self, domid: int, qmp_paths: List[str],
                 vm_uuid: Optional[str], argv: List[str],
                 pidfile: Optional[str] = None, loadvm: Optional[str] = None):
        self.domid = domid
        self.qmp_paths = qmp_paths
        self.vm_uuid = vm_uuid
        self.argv = argv
        self.pidfile = pidfile
        self.loadvm = loadvm


def _opts(spec: str) -> Dict[str, str]:
    """``socket,id=x,path=/p,server=on`` -> {'': 'socket', 'id': 'x', ...}"""
    out = {}
    for i, part in enumerate(spec.split(',')):
        key, eq, value = part.partition('=')
        if i == 0 and not eq:
            out[''] = part
        else:
            out[key] = value if eq else 'on'
    return out


def parse_argv(argv: List[str]) -> DmArgs:
    """Pick what the wrapper needs out of xenopsd's argv (module doc).

    :raises InvalidArgument: no domid (leading or ``-xen-domid``), or one
        that is not an integer.
    """
    args = list(argv)
    leading = None
    if args and args[0].isdigit():
        leading = int(args.pop(0))
    domid = None
    vm_uuid = pidfile = loadvm = None
    chardevs: Dict[str, str] = {}
    monitors: List[str] = []
    qmp: List[str] = []
    i = 0
    while i < len(args):
        opt = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if opt == '-xen-domid' and value is not None:
            try:
                domid = int(value)
            except ValueError:
                raise errors.InvalidArgument(name='-xen-domid', value=value,
                                             reason='not an integer')
        elif opt == '-uuid' and value is not None:
            vm_uuid = value
        elif opt == '-pidfile' and value is not None:
            pidfile = value
        elif opt == '-loadvm' and value is not None:
            loadvm = value
        elif opt == '-chardev' and value is not None:
            o = _opts(value)
            if o.get('') == 'socket' and o.get('path') and 'id' in o:
                chardevs[o['id']] = o['path']
        elif opt == '-mon' and value is not None:
            o = _opts(value)
            if o.get('mode') == 'control' and o.get('chardev'):
                monitors.append(o['chardev'])
        elif opt == '-qmp' and value is not None:
            target = _opts(value).get('', '')
            if target.startswith('unix:'):
                qmp.append(target[len('unix:'):])
        else:
            i += 1
            continue
        i += 2
    if domid is None:
        domid = leading
    if domid is None:
        raise errors.InvalidArgument(name='-xen-domid', value=None,
                                     reason='missing from the device model '
                                            'command line')
    paths = [chardevs[m] for m in monitors if m in chardevs] + qmp
    return DmArgs(domid, paths, vm_uuid, list(argv), pidfile, loadvm)


# -- VMs that are not ours ----------------------------------------------------
def stock_wrapper(cfg) -> str:
    """The host's stock wrapper, checked runnable.

    :raises AgentError: missing, not a file, not executable, or this
        wrapper itself (xenopsd.conf pointing back at us would loop).
    """
    path = cfg.stock_dm_wrapper or DEFAULT_STOCK_DM_WRAPPER
    hint = ('set [agent] stock_dm_wrapper in agent.conf to the qemu-wrapper '
            'xenopsd ran before this one')
    if not os.path.exists(path):
        raise errors.AgentError('stock device-model wrapper %s does not '
                                'exist (%s)' % (path, hint))
    if not os.path.isfile(path):
        raise errors.AgentError('stock device-model wrapper %s is not a '
                                'file (%s)' % (path, hint))
    if not os.access(path, os.X_OK):
        raise errors.AgentError('stock device-model wrapper %s is not '
                                'executable' % path)
    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if me and os.path.realpath(path) == me:
        raise errors.AgentError(
            'stock device-model wrapper %s is this wrapper itself; '
            '[agent] stock_dm_wrapper must name the host\'s original '
            'qemu-wrapper' % path)
    return path


def _exec_stock(cfg, argv: List[str], execv: Callable, why: str) -> int:
    """Become the stock wrapper with xenopsd's *argv* unchanged."""
    try:
        path = stock_wrapper(cfg)
        LOG.info('%s: handing the device model to %s', why, path)
        execv(path, [path] + list(argv))
    except (errors.AgentError, OSError) as exc:
        sys.stderr.write('nova-xen-stubdom device-model wrapper: cannot run '
                         'the stock wrapper (%s): %s\n' % (why, exc))
        return 1
    return 0        # only reached with a test's execv


# -- our VMs ------------------------------------------------------------------
def _reexec_as_device_model(domid: int, argv: List[str],
                            execv: Callable) -> None:
    """Run this wrapper again with ``qemu-dm-<domid>`` on its command line
    (module doc, step 3).  Same process, nothing to undo: the link is made
    only after."""
    import nova_xen_stubdom
    root = os.path.dirname(os.path.dirname(
        os.path.abspath(nova_xen_stubdom.__file__)))
    code = ('import sys; sys.path.insert(0, %r); '
            'from nova_xen_stubdom.dom0 import dm_wrapper; '
            'sys.exit(dm_wrapper.main())' % root)
    try:
        execv(sys.executable, [sys.executable, '-c', code, REEXEC_FLAG,
                               DM_CMDLINE_ITEM % domid] + list(argv))
    except OSError as exc:
        raise errors.AgentError('cannot re-execute %s as the device model '
                                'of domain %d: %s' % (sys.executable, domid,
                                                      exc))


class _Registration:
    """This process as the guest's device model, as xenopsd looks it up:
    the ``-pidfile`` held locked (QEMU's own ``-pidfile`` behaviour; xenopsd
    takes a pidfile it can lock for a dead process) and ``qemu-pid`` in
    the guest's xenstore directory (what the stock wrapper writes)."""

    def __init__(self, backend, domid: int, pidfile: Optional[str]):
        self.backend = backend
        self.domid = domid
        self.pidfile = pidfile
        self._fd = None     # type: Optional[int]

    def __enter__(self) -> '_Registration':
        if self.pidfile:
            fd = os.open(self.pidfile, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise errors.AgentError(
                    'pidfile %s of domain %d is held by another process'
                    % (self.pidfile, self.domid))
            os.ftruncate(fd, 0)
            os.write(fd, ('%d\n' % os.getpid()).encode())
            self._fd = fd
        self.backend.xs_write(QEMU_PID_PATH % self.domid, str(os.getpid()))
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.backend.xs_rm(QEMU_PID_PATH % self.domid)
        finally:
            if self._fd is not None:
                try:
                    os.unlink(self.pidfile)
                except FileNotFoundError:
                    pass
                os.close(self._fd)
                self._fd = None


def wait_running(agent, stub: int, guest: int, timeout: float,
                 poll: float = 0.2,
                 stop_event: Optional[threading.Event] = None) -> str:
    """Wait for the stub domain's QEMU; its final state (``running``,
    ``error``, ``stopped`` when *stop_event* is set first, or the last seen
    state on timeout)."""
    deadline = time.monotonic() + timeout
    stop_event = stop_event or threading.Event()
    while True:
        state = stubdom.dm_state(agent, stub, guest)
        if state in ('running', 'error') or time.monotonic() >= deadline:
            return state or 'absent'
        if stop_event.wait(poll):
            return 'stopped'


def serve(agent, parsed: DmArgs, vm_uuid: str, launched: Dict, *,
          start_timeout: float = 60.0, poll: float = 1.0,
          stop_event: Optional[threading.Event] = None) -> int:
    """Stub domain mode: wait for QEMU, answer QMP, tear down at the end."""
    stub = launched['stubdom_domid']
    guest = parsed.domid
    backend = agent.backend
    facade = qmp_endpoint.QmpFacade(agent, guest, stub, parsed.qmp_paths or
                                    [launched['qmp']])
    stop_event = stop_event or threading.Event()
    bridge = None
    try:
        with _Registration(backend, guest, parsed.pidfile):
            state = wait_running(agent, stub, guest, start_timeout,
                                 stop_event=stop_event)
            if state != 'running':
                sys.stderr.write(
                    'device model of domain %d in stub domain %d did not '
                    'start: state %s\n' % (guest, stub, state))
                return 1
            # the sockets before the state, as QEMU has them (its -qmp and
            # -chardev sockets exist before it writes "running"): libxl
            # connects to qmp-libxl-<domid> as soon as it sees the state
            # (libxl_dm.c device_model_launched; the realxen tier runs the
            # wrapper under libxl: doc/source/realxen.rst); xenopsd takes
            # the sockets as "QEMU is up" (Dm.wait_event_socket) and checks
            # the pid, registered above, at once
            facade.start()
            backend.xs_write(DOM0_STATE_PATH % guest, 'running')
            bridge = vnc_bridge.start(stub, guest)
            LOG.info('domain %d: device model in stub domain %d, QMP on %s',
                     guest, stub, ', '.join(facade.paths))
            while not (facade.quit.is_set() or stop_event.is_set()):
                try:
                    agent.domain_info(guest)
                except errors.DomainNotFound:
                    LOG.info('domain %d is gone', guest)
                    break
                facade.quit.wait(poll)
            return 0
    except errors.AgentError as exc:
        sys.stderr.write('nova-xen-stubdom device-model wrapper: %s\n' % exc)
        return 1
    finally:
        facade.close()
        vnc_bridge.stop(bridge, guest)
        try:
            backend.xs_rm(DOM0_STATE_PATH % guest)
        finally:
            _stop(agent, guest, vm_uuid)


def _daemon_socket(agent) -> Optional[str]:
    """The host daemon's socket when it runs: the daemon, which owns links
    and PCI grants, makes and revokes them; without it (a host set up
    without the daemon, the tests) the wrapper does the work itself."""
    path = agent.config.socket_path
    return path if os.path.exists(path) else None


def _launch(agent, domid: int, vm_uuid: str) -> Dict:
    sock = _daemon_socket(agent)
    if sock is None:
        return dm_wrapper.launch(agent, domid, vm_uuid)
    return json.loads(daemon_protocol.call(
        sock, 'dm_launch', {'guest_domid': str(domid),
                            'guest_vm_uuid': vm_uuid},
        plugin=registry.DM_PLUGIN))


def _stop(agent, domid: int, vm_uuid: str) -> None:
    sock = _daemon_socket(agent)
    if sock is None:
        dm_wrapper.stop(agent, domid, vm_uuid)
        return
    daemon_protocol.call(sock, 'dm_stop', {'guest_domid': str(domid),
                                           'guest_vm_uuid': vm_uuid},
                         plugin=registry.DM_PLUGIN)


def main(argv: Optional[List[str]] = None, *, agent=None,
         execv: Callable = os.execv,
         stop_event: Optional[threading.Event] = None) -> int:
    """Process entry; *agent*, *execv* and *stop_event* are for tests."""
    argv = list(sys.argv[1:] if argv is None else argv)
    reexecuted = argv[:1] == [REEXEC_FLAG]
    if reexecuted:
        argv = argv[2:]         # xenopsd's argv again
    logs.setup('nova-xen-stubdom-dm-wrapper')
    from nova_xen_stubdom.dom0 import xapi_plugin
    try:
        parsed = parse_argv(argv)
        agent = agent or xapi_plugin.make_agent()
        cfg = agent.config
        vm_uuid = parsed.vm_uuid or dm_wrapper.vm_uuid_of(agent,
                                                          parsed.domid)
        why = dm_wrapper.managed_by_us(agent, parsed.domid, vm_uuid)
        if why is None:
            return _exec_stock(cfg, argv, execv,
                               'domain %d (VM %s) is not managed by '
                               'nova-xen-stubdom' % (parsed.domid, vm_uuid))
        if parsed.loadvm:
            raise errors.AgentError(
                'domain %d (VM %s; %s): xenopsd restores it from its own '
                'save image %s, which needs a dom0 QEMU; this guest is '
                'saved and restored through nova-xen-stubdom' % (
                    parsed.domid, vm_uuid, why, parsed.loadvm))
        if not reexecuted:
            _reexec_as_device_model(parsed.domid, argv, execv)
            return 0    # only reached with a test's execv
        if stop_event is None:
            # xenopsd's Service.Qemu.stop may come while the link is made:
            # serve() then unwinds it instead of leaving it behind
            stop_event = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
        launched = _launch(agent, parsed.domid, vm_uuid)
    except errors.AgentError as exc:
        sys.stderr.write('nova-xen-stubdom device-model wrapper: %s\n' % exc)
        return 1
    if launched['mode'] == 'dom0':
        return _exec_stock(cfg, argv, execv,
                           'domain %d (VM %s) has no stub domain; dom0 '
                           'device models are allowed by host policy'
                           % (parsed.domid, vm_uuid))
    return serve(agent, parsed, vm_uuid, launched,
                 start_timeout=cfg.dm_start_timeout,
                 stop_event=stop_event)


if __name__ == '__main__':
    sys.exit(main())
