"""dom0 side of the daemon scenario (tests/realxen/dom0/d1-daemon.sh).

Subcommands, each a fresh process as XAPI and xenopsd would start one:

``plugin FN [k=v ...]``
    One ``host.call_plugin`` (a ``key=`` is first wrapped for a
    ``key_offer`` of the daemon, as the driver does): runs the installed
    XAPI plugin launcher (``/etc/xapi.d/plugins/nova_xen_stubdom``) with the
    XML-RPC call as its
    argument and the stand-in ``XenAPIPlugin`` on its path, exactly as
    ``nova_xen_stubdom.sim.dom0_process.call`` does (XAPI:
    ``ocaml/xapi/xapi_plugins.ml`` ``call_plugin``); prints one JSON line
    ``{"status": ..., "value"|"error": ...}``; exit 0 on Success, 3 on
    Failure.
``dm FN [k=v ...]``
    What the device-model wrapper process asks the daemon
    (``dm_wrapper._launch``/``_stop``: plugin ``nova_xen_stubdom.dm``).
``hv-target STUB GUEST``
    Ask the hypervisor whether STUB already holds a target: Xen 4.17
    ``xen/common/domctl.c`` ``XEN_DOMCTL_set_target`` refuses a second
    target with ``EINVAL`` (``d->target != NULL``), so a second
    ``xc_domain_set_target`` that fails with EINVAL proves the first one
    reached the hypervisor.  Prints ``errno=N``.
``xs-target-bad STUB``
    ``xs_set_target`` towards a domid that does not exist must fail on the
    real xenstored (it looks both domains up): prints ``ok=0 errno=N``.
``pv-callback GUEST VALUE [suspend]``
    Set the HVM guest's ``HVM_PARAM_CALLBACK_IRQ`` to VALUE from dom0
    (``xc_hvm_param_set`` through ``XenBackend.set_hvm_params``), as a
    guest's PV drivers set it when they load -- the boot-sector guests make
    no hypercalls, so dom0 does it for them.  Xen 4.17 lets the toolstack
    do so: ``xen/arch/x86/hvm/hvm.c`` ``hvm_allow_set_param`` lists
    ``HVM_PARAM_CALLBACK_IRQ`` among the parameters even the guest may set
    (the ``XSM_TARGET`` check passes for dom0), and ``hvm_set_param`` hands
    it to ``hvm_set_callback_via`` and stores it.  Prints
    ``value=0x.. readback=0x.. errno=N`` (read back with
    ``xc_hvm_param_get``).  With ``suspend``, then (in the same process:
    each Python start costs seconds under TCG) our suspend path as the
    live migration's switch-over calls it, ``guest_suspend.stop`` with its
    defaults (``toolstack_managed=True``), and a second line
    ``refused=1 pv_reason=0|1`` when it raised ``SuspendError``
    (``pv_reason=1``: for the guest's PV drivers), else ``refused=0
    stopped=HOW`` after undoing the stop with ``guest_suspend.start_again``.
``responder STUB GUEST MODE``
    Plays the stub domain's QEMU in the state-disk protocol
    (:mod:`nova_xen_stubdom.dom0.device_state`): answers ``save`` with the
    dom0 QEMU's real device state (QMP ``xen-save-devices-state``) written
    in the state-disk format into the disk the daemon attached, and
    ``continue`` with ``running``.  MODE ``hold`` never answers ``save``
    (for the kill -9 mid-save step).  Runs until killed.
"""
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import xmlrpc.client

PLUGIN = '/etc/xapi.d/plugins/nova_xen_stubdom'
STAND_IN = '/opt/realxen/xapi'
PKG = '/opt/realxen/pkg'
sys.path.insert(0, PKG)


def _report(result):
    """One JSON line, then ``R_*``/``V_*`` shell assignments for eval (each
    python start costs seconds under TCG: no JSON parsing in the script)."""
    print(json.dumps(result))
    flat = {'status': result.get('status'), 'took': result.get('took')}
    error = result.get('error') or []
    if len(error) > 1:
        flat['code'] = error[1] if error[0] == 'XENAPI_PLUGIN_FAILURE' \
            else error[0]
    for key, value in sorted(flat.items()):
        print('R_%s=%s' % (key, shlex.quote(str(value))))
    try:
        value = json.loads(result.get('value') or '')
    except ValueError:
        value = None
    if isinstance(value, dict):
        # one level of nesting too: migrate_status's stats -> V_stats_rounds
        for key, item in sorted(value.items()):
            items = sorted(item.items()) if isinstance(item, dict) else ()
            for sub, subitem in items:
                if isinstance(subitem, (str, int, float, bool)):
                    print('V_%s_%s=%s' % (key, sub, shlex.quote(str(subitem))))
            if isinstance(item, (str, int, float, bool)) or item is None:
                print('V_%s=%s' % (key, shlex.quote(str(item))))


def _kv(items):
    out = {}
    for item in items:
        key, _, value = item.partition('=')
        out[key] = value
    return out


def _launch(fn, args):
    """One fresh plugin process for *fn*: (XML-RPC response or None, the
    finished process)."""
    request = xmlrpc.client.dumps(('OpaqueRef:realxen', args), fn)
    env = dict(os.environ)
    env['PYTHONPATH'] = STAND_IN + ':' + PKG
    out = subprocess.run([sys.executable, PLUGIN, request], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=600)
    try:
        (response,), _ = xmlrpc.client.loads(out.stdout)
    except Exception:
        return None, out
    return response, out


def _wrap_key(args):
    """A ``key`` goes to the agent wrapped for its ``key_offer``, as the
    driver sends it (the agent refuses a plain key: dom0/keywrap.py)."""
    if 'key' not in args:
        return args
    from nova_xen_stubdom.dom0 import keywrap
    response, _out = _launch('key_offer', {})
    if response is None or response.get('Status') != 'Success':
        raise SystemExit('key_offer failed: %r' % (response,))
    offer = json.loads(response['Value'])
    args = dict(args)
    args['key_wrap'] = keywrap.wrap(offer['offer'], offer['pub'],
                                    bytes.fromhex(args.pop('key')))
    return args


def plugin(fn, args):
    t0 = time.monotonic()
    response, out = _launch(fn, _wrap_key(args))
    took = round(time.monotonic() - t0, 2)
    if response is None:
        _report({'status': 'NoResponse', 'exit': out.returncode,
                 'stderr': out.stderr[-1500:], 'took': took})
        return 4
    if response.get('Status') == 'Success':
        _report({'status': 'Success', 'value': response['Value'],
                 'took': took})
        return 0
    _report({'status': 'Failure', 'error': response.get('ErrorDescription'),
             'took': took})
    return 3


def dm(fn, args):
    from nova_xen_stubdom.dom0 import config, daemon_protocol, errors
    cfg = config.load(os.environ[config.CONF_ENV])
    t0 = time.monotonic()
    try:
        value = daemon_protocol.call(cfg.socket_path, fn, args,
                                     plugin='nova_xen_stubdom.dm')
    except errors.AgentError as exc:
        _report({'status': 'Failure', 'error': [exc.code, str(exc)],
                 'took': round(time.monotonic() - t0, 2)})
        return 3
    _report({'status': 'Success', 'value': value,
             'took': round(time.monotonic() - t0, 2)})
    return 0


def hv_target(stub, guest):
    from nova_xen_stubdom.dom0 import xen_backend
    be = xen_backend.XenBackend()
    try:
        be.set_target(stub, guest)
        print('errno=0')
    except Exception as exc:
        print('errno=%s' % getattr(exc, 'kwargs', {}).get(
            'errno', getattr(exc, 'errno', '?')))
        print(exc, file=sys.stderr)
    finally:
        be.close()
    return 0


def xs_target_bad(stub):
    from nova_xen_stubdom.dom0 import xen_backend
    be = xen_backend.XenBackend()
    try:
        be.xs_set_target(stub, 32000)
        print('ok=1')
    except Exception as exc:
        print('ok=0 errno=%s' % getattr(exc, 'kwargs', {}).get('errno', '?'))
        print(exc, file=sys.stderr)
    finally:
        be.close()
    return 0


def pv_callback(guest, value, then_suspend):
    from nova_xen_stubdom.dom0 import guest_suspend, xen_backend
    param = guest_suspend.HVM_PARAM_CALLBACK_IRQ
    be = xen_backend.XenBackend()
    try:
        try:
            be.set_hvm_params(guest, {param: value})
        except Exception as exc:
            errno = getattr(exc, 'kwargs', {}).get(
                'errno', getattr(exc, 'errno', '?'))
            print('value=%#x errno=%s' % (value, errno))
            print(exc, file=sys.stderr)
            return 0
        print('value=%#x readback=%#x errno=0'
              % (value, be.get_hvm_param(guest, param)))
        if not then_suspend:
            return 0
        try:
            how = guest_suspend.stop(be, guest)
        except guest_suspend.SuspendError as exc:
            print('refused=1 pv_reason=%d' % ('has PV drivers' in str(exc)))
            print(exc, file=sys.stderr)
        else:
            guest_suspend.start_again(be, guest)
            print('refused=0 stopped=%s' % how)
    finally:
        be.close()
    return 0


def _qmp(guest, *cmds):
    """Run QMP commands on the dom0 QEMU of *guest* (libxl's QMP socket);
    the last one's return value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect('/var/run/xen/qmp-libxl-%d' % guest)
    f = sock.makefile('rw')
    f.readline()                                    # greeting
    for cmd in ({'execute': 'qmp_capabilities'},) + cmds:
        f.write(json.dumps(cmd) + '\n')
        f.flush()
        while True:
            reply = json.loads(f.readline())
            if 'event' in reply:
                continue
            if 'error' in reply:
                raise RuntimeError('QMP %s: %s' % (cmd['execute'],
                                                   reply['error']))
            break
    sock.close()
    return reply.get('return')


def _qmp_device_state(guest, path):
    """The dom0 QEMU's device state."""
    _qmp(guest, {'execute': 'xen-save-devices-state',
                 'arguments': {'filename': path, 'live': False}})
    with open(path, 'rb') as g:
        data = g.read()
    os.unlink(path)
    return data


def _fingerprint(state):
    """LENGTH:SHA256-PREFIX of a device state, to compare save and restore."""
    return '%d:%s' % (len(state), hashlib.sha256(state).hexdigest()[:16])


def responder(stub, guest, mode):
    from nova_xen_stubdom.dom0 import device_state, statedisk, xen_backend
    from nova_xen_stubdom.dom0 import xen_devices
    be = xen_backend.XenBackend()
    d = device_state.dm_path(stub, guest)
    while True:
        cmd = be.xs_read(d + '/command')
        if cmd == 'save' and mode != 'hold':
            devid = be.xs_read(d + '/state-disk') or 'xvdz'
            params = be.xs_read('/local/domain/0/backend/vbd/%d/%d/params'
                                % (stub, xen_devices.disk_devnum(devid)))
            try:
                state = _qmp_device_state(guest, '/tmp/d1-qemu-state')
                source = 'qmp'
            except Exception as exc:
                sys.stderr.write('responder: QMP failed: %s\n' % exc)
                state, source = b'realxen stand-in device state', 'stand-in'
            with open(params, 'r+b') as f:
                f.write(statedisk.build_image(state))
            be.xs_write(d + '/state', 'saved')
            be.xs_write(d + '/source', '%s:%s' % (source, _fingerprint(state)))
            be.xs_rm(d + '/command')
        elif cmd == 'restore':
            # The state arrives through the disk and is checked (magic,
            # length, sha256), but is not loaded into the dom0 QEMU: that
            # QEMU was started normally by xl create -p, and QEMU 8.0.3 went
            # away on stop + xen-load-devices-state there; -incoming defer
            # makes libxl time out waiting for the device model's "running"
            # (doc/source/realxen.rst, scenario 3).
            devid = be.xs_read(d + '/state-disk') or 'xvdz'
            params = be.xs_read('/local/domain/0/backend/vbd/%d/%d/params'
                                % (stub, xen_devices.disk_devnum(devid)))
            try:
                with open(params, 'rb') as f:
                    state = statedisk.read_state(f)
                be.xs_write(d + '/source', 'received:%s' % _fingerprint(state))
                be.xs_write(d + '/state', 'running')
            except Exception as exc:
                sys.stderr.write('responder: restore failed: %s\n' % exc)
                be.xs_write(d + '/error', str(exc)[:200])
                be.xs_write(d + '/state', 'error')
            be.xs_rm(d + '/command')
        elif cmd == 'continue':
            be.xs_write(d + '/state', 'running')
            be.xs_rm(d + '/command')
        time.sleep(0.1)     # polling xenstore, as the stub's init does


def main(argv):
    cmd, rest = argv[0], argv[1:]
    if cmd == 'plugin':
        return plugin(rest[0], _kv(rest[1:]))
    if cmd == 'dm':
        return dm(rest[0], _kv(rest[1:]))
    if cmd == 'hv-target':
        return hv_target(int(rest[0]), int(rest[1]))
    if cmd == 'xs-target-bad':
        return xs_target_bad(int(rest[0]))
    if cmd == 'pv-callback':
        return pv_callback(int(rest[0]), int(rest[1], 0),
                           rest[2:] == ['suspend'])
    if cmd == 'responder':
        return responder(int(rest[0]), int(rest[1]), rest[2])
    raise SystemExit('unknown subcommand %s' % cmd)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
