"""Logging of the dom0 programs: syslog (the journal on XCP-ng 8.3).

dom0 has no oslo.log.  Each program (daemon, plugin, wrapper) calls
:func:`setup` once with its name; records go to ``/dev/log`` (journald
collects it) and, when stderr is a terminal or the syslog socket is
missing (a test, a container), to stderr as well.
"""
import logging
import logging.handlers
import os
import sys

SYSLOG_SOCKET = '/dev/log'


def setup(program: str, level: int = logging.INFO) -> None:
    """Route the root logger to syslog as *program* (idempotent)."""
    root = logging.getLogger()
    if getattr(root, '_nova_xen_stubdom_program', None) == program:
        return
    root.setLevel(level)
    handlers = []
    if os.path.exists(SYSLOG_SOCKET):
        try:
            syslog = logging.handlers.SysLogHandler(
                address=SYSLOG_SOCKET,
                facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            syslog.setFormatter(logging.Formatter(
                program + '[%(process)d]: %(name)s %(levelname)s '
                '%(message)s'))
            handlers.append(syslog)
        except OSError:
            pass        # no syslog daemon listening: stderr below
    if not handlers or sys.stderr.isatty():
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(
            '%(asctime)s ' + program + ' %(name)s %(levelname)s '
            '%(message)s'))
        handlers.append(stream)
    for handler in handlers:
        root.addHandler(handler)
    root._nova_xen_stubdom_program = program
