"""``nova-xen-stubdom sim``: serve the embedded XAPI simulator."""
import argparse
import logging
import signal
import sys
import threading
from typing import Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='nova-xen-stubdom sim',
        description='Serve a simulated XAPI (XenServer/XCP-ng) pool on '
                    'loopback. Prints the master URL as the first line.')
    p.add_argument('--hosts', type=int, default=1,
                   help='number of hosts (default %(default)s)')
    p.add_argument('--pools', type=int, default=1,
                   help='number of pools the hosts are split into '
                        '(default %(default)s)')
    p.add_argument('--port', type=int, default=0,
                   help='TCP port every host listens on (on 127.0.0.<n>); '
                        '0 picks a free one (default)')
    p.add_argument('--username', default='root',
                   help='pool-admin user (default %(default)s)')
    p.add_argument('--password', default='password',
                   help='its password (default %(default)s)')
    p.add_argument('--read-only-user', metavar='USER:PASSWORD',
                   help='also create a user with the read-only role')
    p.add_argument('--state-dir', metavar='DIR',
                   help='keep objects and VDI contents here across '
                        'restarts (default: memory only)')
    p.add_argument('--pci', default='none', choices=('none', 'gpu', 'sriov'),
                   help='PCI device set of every host (default %(default)s)')
    p.add_argument('--allow-dom0-device-model', action='store_true',
                   help='let HVM guests without a stub domain run QEMU in '
                        'dom0')
    p.add_argument('--dirty-rate', type=int, default=0, metavar='BYTES/S',
                   help='page-dirtying rate of new domains (default 0)')
    p.add_argument('--session-timeout', type=float, default=24 * 3600,
                   metavar='SECONDS',
                   help='idle sessions expire after this (default one day)')
    p.add_argument('--debug', action='store_true', help='debug logging')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr)
    from nova_xen_stubdom.sim.pool import HostConfig
    from nova_xen_stubdom.sim.server import SimServer
    users = {}
    if args.read_only_user:
        name, _, pw = args.read_only_user.partition(':')
        users[name] = (pw, 'read-only')
    configs = [HostConfig(pci_devices=args.pci,
                          allow_dom0_dm=args.allow_dom0_device_model,
                          dirty_rate=args.dirty_rate)
               for _ in range(args.hosts)]
    try:
        sim = SimServer(hosts=args.hosts, pools=args.pools, port=args.port,
                        username=args.username, password=args.password,
                        users=users, state_dir=args.state_dir,
                        host_configs=configs,
                        session_timeout=args.session_timeout)
        sim.start()
    except (ValueError, OSError) as e:
        print('nova-xen-stubdom sim: %s' % e, file=sys.stderr)
        return 2
    print(sim.url, flush=True)
    for pool in sim.pools:
        for h in pool.hosts:
            role = ' (master)' if h.is_master else ''
            print('# pool %d host %s %s%s' % (pool.index, h.uuid, h.url,
                                              role), flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    sim.stop()
    return 0
