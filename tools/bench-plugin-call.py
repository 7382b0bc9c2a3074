#!/usr/bin/env python3
"""What one ``host.call_plugin`` costs as a fresh plugin process.

Starts a dom0 daemon on the in-memory test backend, then runs
``stubdom_wiring`` through the plugin launcher (``devstack/files/
nova_xen_stubdom.xapi-plugin``) with the simulator's stand-in
``XenAPIPlugin`` -- as the simulator does per call -- beside bare
interpreter starts, every variant interleaved so all share the machine's
load.  Prints the median wall time and the median CPU time of the child
(user + system; load distorts it far less than wall time), and each
variant's CPU time over ``python -S -c pass``.

    .venv/bin/python tools/bench-plugin-call.py [--calls 20]
        [--compare-tree DIR]   # also time DIR's launcher + stand-in, e.g.
                               # git archive HEAD~1 | tar -x -C DIR
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nova_xen_stubdom.dom0 import config  # noqa: E402
from nova_xen_stubdom.dom0 import daemon  # noqa: E402
from nova_xen_stubdom.dom0 import hypervisor  # noqa: E402

LAUNCHER = os.path.join('devstack', 'files', 'nova_xen_stubdom.xapi-plugin')
STAND_IN = os.path.join('nova_xen_stubdom', 'sim', 'dom0_host')


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--calls', type=int, default=20)
    parser.add_argument('--compare-tree', metavar='DIR')
    opts = parser.parse_args()
    hypervisor.BACKENDS['fake'] = 'tests.unit.dom0.fakes:FakeBackend'
    run = tempfile.mkdtemp(prefix='nxs-bench-')
    inv = os.path.join(run, 'inventory')
    conf = os.path.join(run, 'agent.conf')
    with open(inv, 'w') as f:
        f.write("INSTALLATION_UUID='bench'\n")
    with open(conf, 'w') as f:
        f.write('[agent]\nbackend = fake\nsocket_path = %s/agent.sock\n'
                'state_dir = %s/state\n' % (run, run))
    d = daemon.build(config.load(conf), inv)
    d.start()
    call = xmlrpc.client.dumps(('OpaqueRef:bench', {'stubdom_domid': '0'}),
                               'stubdom_wiring')
    py = sys.executable

    def env(tree):
        return dict(os.environ, NOVA_XEN_STUBDOM_AGENT_CONF=conf,
                    PYTHONPATH=os.pathsep.join(
                        [os.path.join(tree, STAND_IN), tree]))
    variants = [
        ('python -c pass', [py, '-c', 'pass'], env(ROOT)),
        ('python -S -c pass', [py, '-S', '-c', 'pass'], env(ROOT)),
    ]
    if opts.compare_tree:
        tree = os.path.abspath(opts.compare_tree)
        variants.append(('compare tree: python LAUNCHER',
                         [py, os.path.join(tree, LAUNCHER), call],
                         env(tree)))
    variants += [
        ('python LAUNCHER', [py, os.path.join(ROOT, LAUNCHER), call],
         env(ROOT)),
        ('python -S LAUNCHER (the simulator)',
         [py, '-S', os.path.join(ROOT, LAUNCHER), call], env(ROOT)),
    ]
    wall = {name: [] for name, _, _ in variants}
    cpu = {name: [] for name, _, _ in variants}
    try:
        for _ in range(opts.calls):
            for name, argv, e in variants:
                t, c = time.perf_counter(), _child_cpu()
                out = subprocess.run(argv, env=e, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     universal_newlines=True)
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(_child_cpu() - c)
                if 'LAUNCHER' in name and 'Success' not in out.stdout:
                    sys.stderr.write('%s failed:\n%s%s' % (name, out.stdout,
                                                           out.stderr))
                    return 1
    finally:
        d.stop()
        shutil.rmtree(run, ignore_errors=True)
    base = statistics.median(cpu['python -S -c pass'])
    print('load average %.1f; %d calls per variant'
          % (os.getloadavg()[0], opts.calls))
    for name, _, _ in variants:
        c = statistics.median(cpu[name])
        print('%-36s wall %7.1f ms  cpu %6.1f ms  cpu/bare %4.1fx'
              % (name, statistics.median(wall[name]) * 1e3, c * 1e3,
                 c / base if base else float('nan')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
