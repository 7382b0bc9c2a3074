"""The ``nova-xen-stubdom`` console script: one command, several subcommands.

Each subcommand lives in its own module exposing ``main(argv) -> int``; this
module only dispatches, so importing it stays cheap (``--help`` imports
nothing heavy) and each subcommand owns its arguments.
"""
import argparse
import importlib
import sys
from typing import Optional, Sequence

# name -> (module with main(argv), one-line help)
SUBCOMMANDS = {
    'sim': ('nova_xen_stubdom.sim.cli',
            'serve the embedded XAPI simulator'),
    'demo': ('nova_xen_stubdom.cmd.demo',
             'boot, show, stop, start and delete an HVM guest on the '
             'simulator through an in-process Nova'),
    'bench': ('nova_xen_stubdom.cmd.bench',
              'run a benchmark (emucore, migration)'),
    'build-stubdom': ('nova_xen_stubdom.stubdom.cli',
                      'build the Linux stub domain kernel and rootfs'),
    'build-dom0': ('nova_xen_stubdom.cmd.build_dom0',
                   'build the dom0 package (tarball + install.sh, RPM)'),
    'inspect-stream': ('nova_xen_stubdom.emucore.inspect',
                       'list the records of a save image / migration stream'),
    'cloud': ('nova_xen_stubdom.cloud.cli',
              'bring a multi-process test cloud up or down'),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='nova-xen-stubdom',
        description='Nova compute driver for Xen/XAPI with Linux stub-domain '
                    'device models: tools.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (_module, text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        if argv and not argv[0].startswith('-'):
            parser.error('unknown command %r' % argv[0])
        parser.parse_args(argv)
        parser.print_help()
        return 0 if argv else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == '__main__':
    sys.exit(main())
