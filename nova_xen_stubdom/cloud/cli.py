"""``nova-xen-stubdom cloud up|down|status|rss``: the multi-process test cloud.

``up`` needs the Debian packages mariadb-server and rabbitmq-server, a venv
with nova, placement, uwsgi, PyMySQL and this project installed (by default
the venv this command runs from), a keystone venv (``--keystone-venv``) and
a glance venv (``--glance-venv``).  ``tools/cloud/make-venvs.sh`` builds
those on a fresh machine.
"""
import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs
from nova_xen_stubdom.cloud import services
from nova_xen_stubdom.cloud.configs import DRIVERS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='nova-xen-stubdom cloud',
        description='A multi-process Nova cloud on loopback running the '
                    'xen_stubdom driver against the XAPI simulator.')
    p.add_argument('--dir', default=os.environ.get('NXS_CLOUD_DIR', '.cloud'),
                   help='working directory: configs, data, pid files and '
                        'logs (default: $NXS_CLOUD_DIR or ./.cloud)')
    p.add_argument('--nova-venv', default='',
                   help='venv with nova, placement and uwsgi (default: the '
                        'venv running this command)')
    p.add_argument('--keystone-venv', default='',
                   help='venv with keystone (default: DIR/venv-keystone)')
    p.add_argument('--glance-venv', default='',
                   help='venv with glance (default: DIR/venv-glance)')
    sub = p.add_subparsers(dest='action', required=True)
    u = sub.add_parser('up', help='start everything, fresh databases')
    u.add_argument('--driver', choices=sorted(DRIVERS), default='xen_stubdom',
                   help='compute driver: xen_stubdom (the project) or fake '
                        "(Nova's, to debug the cloud itself)")
    u.add_argument('--no-keystone', action='store_true',
                   help='DEGRADED: no keystone; nova-api runs without '
                        'authtoken (for when keystone cannot be installed)')
    u.add_argument('--glance-standin', action='store_true',
                   help='STAND-IN glance (serves the test image, not a '
                        'real service): for when glance cannot be '
                        'installed')
    u.add_argument('--keep-on-failure', action='store_true',
                   help='leave the processes running when "up" fails')
    sub.add_parser('down', help='stop every process the cloud started')
    sub.add_parser('status', help='processes, memory and listeners')
    t = sub.add_parser('tempest-conf', help='write a tempest.conf for the '
                                            'running cloud')
    t.add_argument('out', help='path of the tempest.conf to write')
    c = sub.add_parser('rest-checks',
                       help="the tempest plugin's scenarios over plain "
                            'REST against a cloud up with --no-keystone')
    c.add_argument('-k', dest='only', default='',
                   help='run only the checks whose name contains this')
    i = sub.add_parser('install-checks',
                       help='in the running cloud, swap host1\'s compute, '
                            'the conductor and an extra nova-api for '
                            'processes of other install layouts (Nova and '
                            'this package in different site directories; '
                            'this package broken) and check each serves')
    i.add_argument('--wheel', default='',
                   help='wheel of this project to pip-install (default: '
                        'the newest in DIR/wheels, from make-venvs.sh)')
    i.add_argument('-k', dest='only', default='',
                   help='run only the checks whose name contains this')
    sub.add_parser('volume-backends',
                   help="what this machine's kernel lacks for Cinder's "
                        'one-machine backends (exit 1: every one blocked)')
    r = sub.add_parser('rss', help='print the total RSS in MiB of the '
                                   'cloud plus the process trees named')
    r.add_argument('--tree', type=int, action='append', default=[],
                   help='also count this PID and its descendants')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    lay = L.Layout.create(args.dir, args.nova_venv, args.keystone_venv,
                          args.glance_venv)
    if args.action == 'rss':
        # sampled every few seconds by the CI tier: imports stay light
        pids = services.all_pids(lay)
        for root in args.tree:
            pids += [root] + procs.children(root)
        print('%.1f' % procs.rss_mib(sorted(set(pids))))
        return 0
    if args.action == 'volume-backends':
        from nova_xen_stubdom.cloud import volume_backends
        found = volume_backends.blockers()
        print(volume_backends.summary(found))
        return 0 if any(not why for why in found.values()) else 1
    from nova_xen_stubdom.cloud import cloud
    from nova_xen_stubdom.cloud import tempest_conf
    progress = cloud.Progress(sys.stdout)
    if args.action == 'up':
        try:
            cloud.up(lay, args.driver, progress,
                     with_keystone=not args.no_keystone,
                     real_glance=not args.glance_standin)
        except (procs.CloudError, OSError, ValueError) as e:
            progress('FAILED: %s' % e)
            for name in ('nova-compute-host1', 'nova-api', 'xapi-sim',
                         'keystone', 'glance-api'):
                tail = cloud._log_tail(lay, name, 8)
                if tail:
                    sys.stdout.write(tail + '\n')
            if not args.keep_on_failure:
                cloud.down(lay, progress)
            return 1
        return 0
    if args.action == 'down':
        return 1 if cloud.down(lay, progress) else 0
    if args.action == 'status':
        return 1 if cloud.status(lay, sys.stdout) else 0
    if args.action == 'rest-checks':
        from nova_xen_stubdom.cloud import rest_checks
        return rest_checks.main(lay, args.only, sys.stdout)
    if args.action == 'install-checks':
        from nova_xen_stubdom.cloud import install_checks
        try:
            return install_checks.main(lay, args.wheel, args.only,
                                       sys.stdout)
        except (procs.CloudError, OSError) as e:
            progress('install-checks FAILED to set up: %s' % e)
            return 1
    if args.action == 'tempest-conf':
        if not lay.state_file.exists():
            progress('the cloud is not up (no %s)' % lay.state_file)
            return 1
        if '"keystone": null' in lay.state_file.read_text():
            progress('the cloud runs without keystone (--no-keystone): '
                     'tempest cannot authenticate against it')
            return 1
        progress('wrote %s' % tempest_conf.write(lay, Path(args.out)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
