"""``nova-xen-stubdom bench NAME``: run one of the project's benchmarks.

Benchmarks print figures together with a baseline measured in the same run
(e.g. memcpy GB/s), never a pass/fail judgement.
"""
import argparse
import importlib
import sys
from typing import Optional, Sequence

BENCHMARKS = {
    'emucore': ('nova_xen_stubdom.emucore.bench',
                'native data plane throughput against memcpy'),
    'migration': ('nova_xen_stubdom.cmd.migration_bench',
                  'live migration on the simulator against stop-and-copy'),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog='nova-xen-stubdom bench',
        description='Run a benchmark; extra arguments go to it '
                    '(nova-xen-stubdom bench NAME --help).')
    parser.add_argument('name', choices=sorted(BENCHMARKS),
                        help='; '.join('%s: %s' % (k, v[1])
                                       for k, v in sorted(BENCHMARKS.items())))
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(BENCHMARKS[args.name][0])
    return module.main(rest) or 0
