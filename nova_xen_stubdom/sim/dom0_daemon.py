"""A simulated host's dom0 daemon process: the real daemon, tied to the
simulator that started it.

``python -m nova_xen_stubdom.sim.dom0_daemon LIFELINE_FD -- <daemon
arguments>`` runs :func:`nova_xen_stubdom.dom0.daemon.main` unchanged (its
agent.conf names :class:`.hypervisor_channel.RemoteSimBackend`).  What a
real host has and a simulated one needs in its place:

* systemd stops the daemon with the host; here the simulator does
  (``SIGTERM``, :mod:`.dom0_process`), and should the simulator die without
  stopping it (kill -9, a crashed test run) the daemon must not outlive it.
  The lifeline is the read end of a pipe whose only write end the
  simulator holds: the kernel closes it when the simulator exits, however
  it exits, and the read returns EOF.  Not ``PR_SET_PDEATHSIG``: that
  fires when the *thread* that forked exits, and the simulator starts
  daemons from short-lived XML-RPC handler threads.
* its log: stderr (a file in the host's run directory), not the
  machine's syslog -- the simulated host's journal.
"""
import os
import signal
import sys
import threading


def _watch(fd: int) -> None:
    os.set_blocking(fd, True)       # as the simulator's eventlet left it
    while True:
        try:
            if not os.read(fd, 64):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    # the simulator is gone: stop as systemd would (SIGTERM: the daemon's
    # own handler stops it cleanly) and make sure of it a moment later
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Timer(5, os._exit, (1,)).start()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[1] != '--':
        sys.stderr.write('usage: dom0_daemon LIFELINE_FD -- ARGS...\n')
        return 2
    lifeline = int(argv[0])
    threading.Thread(target=_watch, args=(lifeline,), daemon=True,
                     name='sim-lifeline').start()
    from nova_xen_stubdom.dom0 import daemon
    from nova_xen_stubdom.dom0 import logs
    logs.SYSLOG_SOCKET = ''     # no syslog: stderr, the host's log file
    return daemon.main(argv[2:])


if __name__ == '__main__':
    sys.exit(main())
