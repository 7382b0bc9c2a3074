"""``nova-xen-stubdom bench migration``: live migration on the simulator.

Two simulated hosts, each in its own process (as two dom0s would be), talk
over loopback TCP.  For each guest size and dirty rate the same guest is
moved twice in the same run: by live migration (pre-copy) and by plain
stop-and-copy (the baseline).  Reported per run: total time, downtime
(source pause to destination running, as the source sees it), stream bytes
against the bound of plain pages (4 KiB per non-zero page plus 4 KiB per
page sent again after being re-dirtied; XBZRLE deltas can undercut it),
rounds, and the stream's throughput (stream bytes over the time from the
destination's acknowledging its prepared domain to its "ready": what the
transport moves, without the TLS handshake or the destination building its
domain).  Each simulated host allocates a domain's memory when it creates
it, as Xen does (the tests' sparse memory files made the first touch of
every guest page, tmpfs allocating it, the larger part of the stream's
time on this machine).  The device state moved is QEMU's
xenfv one (6645 bytes, ``sim/qemu_savevm.py``), inside the downtime.  The
destination's memory is checked
against the paused source's after each move.

``--transport`` picks the wire: ``tls`` (what the agents use: TLS with
certificates from a CA made for the run, integrity from TLS's AEAD),
``tcp`` (plain TCP with HMAC-SHA256 tags, the stream before TLS) or
``both``; raw loopback TCP throughput is measured in the same run as the
baseline the stream throughputs are divided by.
"""
import argparse
import hashlib
import multiprocessing
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

from nova_xen_stubdom import emucore
from nova_xen_stubdom.dom0 import hypervisor as hv
from nova_xen_stubdom.dom0 import live_migration as migration
from nova_xen_stubdom.dom0 import migration_target
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import migration_tls
from nova_xen_stubdom.dom0 import saverestore
from nova_xen_stubdom.sim import qemu_savevm

MiB = 1 << 20
MB = 1000 * 1000
PAGE = hv.PAGE_SIZE
BATCH = emucore.format.MAX_BATCH


def _sim_backend(name: str, memory: int):
    """A standalone simulated host (its own hypervisor, shm guest memory)."""
    from nova_xen_stubdom.sim import backend as sim_backend
    backend = sim_backend.SimBackend(memory=memory, cpus=2)
    # RAM allocated when a domain is built, as on Xen: the stream's time
    # is not tmpfs allocating guest pages on their first touch
    backend.hypervisor.preallocate_memory = True
    return backend


def _fill(backend, domid: int, max_pfn: int, fraction: float) -> None:
    """Random bytes in about *fraction* of the pages, the rest zero."""
    view = backend.map_memory(domid, writable=True)
    try:
        mem = memoryview(view).cast('B')
        rng = random.Random(42)
        for pfn in range(max_pfn):
            if rng.random() < fraction:
                mem[pfn * PAGE:(pfn + 1) * PAGE] = rng.randbytes(PAGE)
        del mem
    finally:
        view.release()


def _digest(backend, domid: int) -> str:
    """SHA-256 of the guest's memory but the xenstore ring and ioreq pages:
    the destination zeroes those, as libxc's restore does
    (saverestore.clear_special_pages), and the workload may have written
    them on the source: 1 GiB runs at 50 MB/s read "not ok" about every
    second time, the one differing page the xenstore ring's (PFN 262143),
    zero on the destination)."""
    view = backend.map_memory(domid)
    try:
        mem = bytearray(view)
    finally:
        view.release()
    saverestore.clear_special_pages(mem, backend.get_hvm_params(domid))
    return hashlib.sha256(mem).hexdigest()


def _sink(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    buf = bytearray(4 << 20)
    while conn.recv_into(buf):
        pass
    conn.close()


def raw_tcp_throughput(total: int = 1 << 30) -> Tuple[float, float]:
    """Bytes per second of plain sendall over loopback to another process
    that only receives: the ceiling a stream could reach on this machine;
    and the CPU seconds both processes spent per byte."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = multiprocessing.get_context('fork').Process(
        target=_sink, args=(listener,), daemon=True)
    proc.start()
    s = socket.create_connection(listener.getsockname())
    chunk = memoryview(bytearray(4 << 20))
    t0 = time.monotonic()
    cpu0 = time.process_time()
    for _ in range(total // len(chunk)):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)                  # the receiver closed: everything arrived
    took = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    s.close()
    listener.close()
    proc.join(30)
    sink = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += (sink.ru_utime - reaped.ru_utime) + \
        (sink.ru_stime - reaped.ru_stime)
    return total / took, cpu / total


def _drain(sock: socket.socket, tls) -> None:
    """The far end of encode_cost's socket: the TLS handshake as the
    destination, then every byte read raw and dropped."""
    if tls is not None:
        sock = tls.wrap(sock, server=True)
        migration_tls.handshake(sock)
    fd = sock.fileno()
    while os.read(fd, 4 << 20):
        pass


def _connected(tls_src, tls_dst):
    """A socket to a draining child process, TLS-wrapped as the source's
    when *tls_src*; returns (socket, process)."""
    a, b = socket.socketpair()
    proc = multiprocessing.get_context('fork').Process(
        target=_drain, args=(b, tls_dst), daemon=True)
    proc.start()
    b.close()
    if tls_src is not None:
        a = tls_src.wrap_client(a)
    return a, proc


class _Drop:
    """A sink that keeps nothing: the stream's own cost alone."""

    def write(self, data) -> None:
        pass


def encode_cost(pki, size: int = 64 * MiB, reps: int = 3) -> dict:
    """On one core: guest pages that all carry data, encoded as the v2
    stream and sent through the agents' TLS socket (the cipher's AEAD:
    encrypted and authenticated) to a process that drops them, against
    memcpy of the same bytes; also the stream alone and the plain-TCP wire
    (HMAC-SHA256 tags).  Bytes of guest memory per second of this thread's
    CPU time (which waiting for a core does not count), best of *reps*."""
    mem = bytearray(os.urandom(size))
    pages = range(size // PAGE)
    copy = bytearray(size)

    def best(run) -> float:
        out = []
        for _ in range(reps):
            t0 = time.thread_time()
            run()
            out.append(time.thread_time() - t0)
        return size / max(min(out), 1e-9)

    def stream(sink, **kw):
        def run():
            # as the live sender: one segment (tag or marker) per batch
            w = emucore.StreamWriter(sink, mode='full', **kw)
            w.write_header()
            for i in range(0, len(pages), BATCH):
                w.write_pages(mem, pages[i:i + BATCH])
                w.end_round()
        return run

    def memcpy():
        copy[:] = mem

    res = dict(memcpy=best(memcpy),
               stream=best(stream(_Drop(), channel_integrity=True)))
    for name, tls, kw in (
            ('aead', (_tls(pki, 'bench-src'), _tls(pki, 'bench-dst')),
             dict(channel_integrity=True)),
            ('hmac', (None, None), dict(key=wire.new_key()))):
        sock, proc = _connected(*tls)
        try:
            res[name] = best(stream(wire.RateLimitedSink(sock), **kw))
            if name == 'aead':
                res['cipher'] = sock.cipher()[0]
        finally:
            sock.close()
            proc.join(30)
    return res


def cipher_alone(cipher: str) -> Optional[float]:
    """Bytes per CPU second of the negotiated suite's AEAD alone on one
    core, from ``openssl speed -evp`` on 16 KiB blocks (TLS's record size):
    the ceiling of the stream + TLS encode figure.  None where the openssl
    command is missing or the suite is not one of TLS's AEADs."""
    name = cipher.upper()
    evp = ('chacha20-poly1305' if 'CHACHA20' in name else
           'aes-256-gcm' if 'AES_256_GCM' in name or 'AES256-GCM' in name
           else 'aes-128-gcm' if 'AES_128_GCM' in name or
           'AES128-GCM' in name else None)
    tool = shutil.which('openssl')
    if evp is None or tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, 'speed', '-seconds', '1', '-bytes', '16384', '-evp', evp],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60,
            check=True).stdout.decode()
        # the last line: "AES-256-GCM  3790800.74k" (1000s of bytes/s)
        return float(out.strip().splitlines()[-1].split()[-1].rstrip('k')) \
            * 1000
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _tls(pki, host: str):
    return None if pki is None else migration_tls.TlsConfig(pki.host(host),
                                                            pki.ca)


def _receiver(conn, key: bytes, memory: int, pki=None) -> None:
    """Destination host: receive one guest, report, then wait for 'quit'."""
    backend = _sim_backend('bench-dst', memory * 2 + 256 * MiB)
    while True:
        cmd = conn.recv()
        if cmd == 'quit':
            backend.close()
            return
        target = migration_target.LiveMigrationTarget(
            backend, key,
            prepare_domain=lambda info: backend.sim.create_domain(
                info['vm_uuid'], True, info['memory_bytes'], info['vcpus']),
            restore_device_state=lambda domid, state, xs: None,
            destroy_domain=backend.sim.destroy_domain, port_min=0,
            port_max=0, tls=_tls(pki, 'bench-dst'))
        _, port = target.start()
        conn.send(port)
        result = target.wait(600)
        digest = _digest(backend, result.domid) \
            if result.state == 'running' else None
        conn.send((result.state, result.error, digest, result.stream_cpu_s))
        if result.domid is not None and result.state == 'running':
            backend.sim.destroy_domain(result.domid)


def run_one(size_mib: int, rate_mb: float, args, baseline: bool,
            pki=None) -> dict:
    key = wire.new_key()
    memory = size_mib * MiB
    parent, child = multiprocessing.Pipe()
    ctx = multiprocessing.get_context('fork')
    proc = ctx.Process(target=_receiver, args=(child, key, memory, pki),
                       daemon=True)
    proc.start()
    backend = _sim_backend('bench-src', memory * 2 + 256 * MiB)
    try:
        domid = backend.sim.create_domain('bench-vm', True, memory, 1)
        _fill(backend, domid, memory // PAGE, args.nonzero)
        backend.sim.set_dirty_rate(domid, int(rate_mb * MB))
        backend.unpause(domid)
        time.sleep(args.warmup)
        parent.send('go')
        port = parent.recv()
        src = migration.LiveMigrationSource(
            backend, domid, '127.0.0.1', port, key,
            # QEMU's xenfv device state (6645 bytes, sim/qemu_savevm.py):
            # the downtime includes moving it
            device_state=lambda: qemu_savevm.device_state(b'bench-vm'),
            downtime_ms=args.downtime_ms, max_rounds=args.max_rounds,
            stall_rounds=args.stall_rounds,
            max_mem_factor=args.max_mem_factor,
            bandwidth_bytes=args.bandwidth_mb * MB,
            xbzrle_cache_pages=args.xbzrle_cache_mb * MiB // PAGE,
            stop_and_copy=baseline, tls=_tls(pki, 'bench-src'),
            peer_identity='bench-dst' if pki else None)
        stats = src.run()
        state, error, digest, dst_cpu = parent.recv()
        ok = state == 'running' and digest == _digest(backend, domid)
        parent.send('quit')
        proc.join(30)
        return dict(size=size_mib, rate=rate_mb,
                    mode='stop-and-copy' if baseline else 'live',
                    wire='tls' if pki else 'tcp',
                    ok=ok, error=error, stats=stats, dst_cpu_s=dst_cpu)
    finally:
        if proc.is_alive():
            proc.terminate()
        backend.close()


def cpu_gb(r: dict, side: str) -> float:
    """CPU seconds one side spent per GB the stream carried."""
    s = r['stats']
    cpu = s.stream_cpu_s if side == 'src' else r['dst_cpu_s']
    return cpu / (s.bytes_sent / 1e9) if s.bytes_sent else float('nan')


def _row(r: dict) -> str:
    s = r['stats']
    ratio = s.bytes_sent / s.bound_bytes if s.bound_bytes else float('nan')
    return ('%4s %6d %7g %-13s %8.3f %8.0f %10.1f %9.1f %9.1f %7.4f %6d '
            '%7d %5s  %s'
            % (r['wire'], r['size'], r['rate'], r['mode'], s.total_s,
               s.bytes_sent / MB / s.stream_s if s.stream_s else 0,
               s.downtime_s * 1000, s.bytes_sent / MiB,
               s.bound_bytes / MiB, ratio, s.rounds, s.last_round_pages,
               'yes' if r['ok'] else 'NO', s.reason))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog='nova-xen-stubdom bench migration',
        description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', default='256,1024',
                   help='guest sizes in MiB (comma-separated)')
    p.add_argument('--rates', default='0,50,200',
                   help='dirty rates in MB/s (comma-separated)')
    p.add_argument('--downtime-ms', type=int, default=30,
                   help='live_migration_downtime_ms for the live runs')
    p.add_argument('--max-rounds', type=int, default=30)
    p.add_argument('--stall-rounds', type=int, default=5,
                   help='rounds without the dirty set shrinking before '
                        'pre-copy gives up')
    p.add_argument('--max-mem-factor', type=float, default=3.0)
    p.add_argument('--bandwidth-mb', type=float, default=0,
                   help='bandwidth cap in MB/s (0: none)')
    p.add_argument('--xbzrle-cache-mb', type=int, default=64)
    p.add_argument('--nonzero', type=float, default=0.5,
                   help='fraction of the guest\'s pages holding data')
    p.add_argument('--warmup', type=float, default=0.2,
                   help='seconds the workload runs before the migration')
    p.add_argument('--verbose', action='store_true',
                   help='also print where the downtime goes')
    p.add_argument('--no-baseline', action='store_true',
                   help='skip the stop-and-copy runs')
    p.add_argument('--transport', choices=('tls', 'tcp', 'both'),
                   default='tls',
                   help='tls: what the agents use; tcp: plain TCP with '
                        'HMAC tags (the stream before TLS); both')
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    sizes = [int(x) for x in args.sizes.split(',') if x]
    rates = [float(x) for x in args.rates.split(',') if x]
    print('live migration on the simulator over loopback (source and '
          'destination in separate processes); downtime target %d ms'
          % args.downtime_ms)
    pki = None
    wires = ['tcp', 'tls'] if args.transport == 'both' else [args.transport]
    if 'tls' in wires:
        from nova_xen_stubdom.sim import pki as pki_mod
        pki = pki_mod.Pki(name='bench CA')
    raw, raw_cpu = raw_tcp_throughput()
    print('raw loopback TCP (same run): %.0f MB/s, %.2f CPU-s per GB '
          '(sender and receiver)' % (raw / MB, raw_cpu * 1e9))
    if pki is not None:
        c = encode_cost(pki)
        alone = cipher_alone(c['cipher'])
        print('encode on one core (CPU time, pages all data), same run: '
              'memcpy %.0f MB/s; stream alone %.0f MB/s (%.2fx); stream + '
              'TLS records (%s, authenticated+encrypted) %.0f MB/s '
              '(%.2fx memcpy); stream + HMAC-SHA256 tags %.0f MB/s (%.2fx)'
              % (c['memcpy'] / MB, c['stream'] / MB,
                 c['stream'] / c['memcpy'], c['cipher'], c['aead'] / MB,
                 c['aead'] / c['memcpy'], c['hmac'] / MB,
                 c['hmac'] / c['memcpy']))
        print('the cipher alone, same run (openssl speed -evp, 16 KiB '
              'blocks, CPU time): %s' % (
                  '%.0f MB/s (%.2fx memcpy): the ceiling of the stream + '
                  'TLS figure' % (alone / MB, alone / c['memcpy'])
                  if alone else 'not measured (no openssl command or not '
                  'an AEAD suite it knows)'))
    print('%4s %6s %7s %-13s %8s %8s %10s %9s %9s %7s %6s %7s %5s  %s'
          % ('wire', 'MiB', 'MB/s', 'mode', 'total_s', 'strm_MB/s',
             'downtime', 'sent_MiB', 'bound_MiB', 'ratio', 'rounds',
             'last_pg', 'ok', 'stop reason'))
    results: List[dict] = []
    failed = False
    runs = [(size, rate, baseline, w) for size in sizes for rate in rates
            for baseline in ([False] if args.no_baseline else [False, True])
            for w in wires]
    for size, rate, baseline, wire_ in runs:
        r = run_one(size, rate, args, baseline,
                    pki if wire_ == 'tls' else None)
        results.append(r)
        print(_row(r))
        if not r['ok']:
            print('       NOT OK: %s' % (r['error'] or 'the destination\'s '
                                         'memory differs from the source\'s'))
        if args.verbose:
            print('       switch-over (ms from pause): %s' % ', '.join(
                '%s %.1f' % (k, v * 1000) for k, v in
                r['stats'].switchover.items()))
        sys.stdout.flush()
        failed |= not r['ok']
    if pki is not None:
        pki.remove()
    print('\nstream throughput / raw loopback TCP (stop-and-copy rows): %s'
          % (', '.join('%s %d MiB %.2f' % (
              r['wire'], r['size'],
              r['stats'].bytes_sent / r['stats'].stream_s / raw)
              for r in results if r['mode'] != 'live') or 'none run'))
    # Both ends share this machine's cores: a stream that costs C CPU
    # seconds per GB can move at most (cores / C) GB/s here, whatever the
    # pipeline does; beside raw TCP that bounds the ratio above.
    cores = len(os.sched_getaffinity(0))
    print('CPU per GB on the wire (process CPU over the stream, all '
          'threads; stop-and-copy rows; both ends on these %d cores): %s'
          % (cores, ', '.join(
              '%s %d MiB source %.2f s + destination %.2f s = %.2f s: at '
              'most %.0f MB/s = %.2fx raw TCP' % (
                  r['wire'], r['size'], cpu_gb(r, 'src'), cpu_gb(r, 'dst'),
                  cpu_gb(r, 'src') + cpu_gb(r, 'dst'),
                  cores * 1000 / (cpu_gb(r, 'src') + cpu_gb(r, 'dst')),
                  cores * 1e9 / (cpu_gb(r, 'src') + cpu_gb(r, 'dst')) / raw)
              for r in results if r['mode'] != 'live') or 'none run'))
    live = [r for r in results if r['mode'] == 'live']
    base = {(r['size'], r['rate'], r['wire']): r for r in results
            if r['mode'] != 'live'}
    if base:
        print('\nlive vs stop-and-copy (same guest, same run): downtime '
              'ratio, total-time ratio')
        for r in live:
            b = base.get((r['size'], r['rate'], r['wire']))
            if b:
                print('%4s %6d MiB %7g MB/s  downtime %.3fx  total %.2fx'
                      % (r['wire'], r['size'], r['rate'],
                         r['stats'].downtime_s / b['stats'].downtime_s,
                         r['stats'].total_s / b['stats'].total_s))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
