"""migration_pump.Pump: one thread owns a (TLS) socket's reads and
writes, so a pipelined sender and receiver never share the SSL object
between threads.  Real sockets (a socketpair, or TLS with certificates from
a CA made for the test) carry real bytes both ways at once; no test waits
on a sleep."""
import hashlib
import os
import socket
import threading

import pytest

from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import migration_pump
from nova_xen_stubdom.dom0 import migration_tls
from nova_xen_stubdom.sim import pki

MiB = 1 << 20


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    try:
        ca = pki.Pki(str(tmp_path_factory.mktemp('pki')))
    except pki.PkiUnavailable as e:
        pytest.skip(str(e))
    return ca


def _tls_pair(ca):
    """Two connected TLS sockets (handshakes done)."""
    a, b = socket.socketpair()
    src = migration_tls.TlsConfig(ca.host('src'), ca.ca)
    dst = migration_tls.TlsConfig(ca.host('dst'), ca.ca)
    out = {}

    def server():
        out['b'] = dst.wrap(b, server=True)
        migration_tls.handshake(out['b'])
    t = threading.Thread(target=server)
    t.start()
    ca_sock = src.wrap_client(a)
    t.join(30)
    return ca_sock, out['b']


@pytest.fixture(params=['tcp', 'tls'])
def pair(request, certs):
    if request.param == 'tcp':
        a, b = socket.socketpair()
    else:
        a, b = _tls_pair(certs)
    pa, pb = migration_pump.Pump(a, out_limit=2 * MiB, in_limit=2 * MiB), \
        migration_pump.Pump(b, out_limit=2 * MiB, in_limit=2 * MiB)
    yield pa, pb
    pa.close(0)
    pb.close(0)


def _read_all(pump, n):
    got = bytearray()
    pump.settimeout(30)
    while len(got) < n:
        chunk = pump.recv(n - len(got))
        assert chunk, 'connection ended after %d of %d bytes' % (len(got), n)
        got += chunk
    return bytes(got)


def test_both_directions_at_once_in_order(pair):
    """32 MiB one way (in pieces of odd sizes, through queues bounded at
    2 MiB) while small messages go the other way: every byte arrives, in
    order, on both sides."""
    pa, pb = pair
    data = os.urandom(32 * MiB)
    acks = b''.join(b'ack %06d\n' % i for i in range(2000))
    sizes = [1, 4095, 4 * MiB, 17, 3 * MiB + 5]

    def send_data():
        pos, k = 0, 0
        while pos < len(data):
            n = sizes[k % len(sizes)]
            pa.sendall(memoryview(data)[pos:pos + n])
            pos, k = pos + n, k + 1

    def send_acks():
        for i in range(0, len(acks), 11):
            pb.sendall(acks[i:i + 11])

    ts = [threading.Thread(target=send_data),
          threading.Thread(target=send_acks)]
    for t in ts:
        t.start()
    got = _read_all(pb, len(data))
    back = _read_all(pa, len(acks))
    for t in ts:
        t.join(30)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert back == acks


def test_sender_waits_while_its_queue_is_full(pair):
    """A producer faster than its reader is held at out_limit (the queue
    never grows past it), then finishes once the reader reads."""
    pa, pb = pair
    done = threading.Event()
    peak = []

    def produce():
        for _ in range(64):
            pa.sendall(b'x' * (256 << 10))
            peak.append(pa._out_bytes)
        done.set()
    t = threading.Thread(target=produce)
    t.start()
    got = _read_all(pb, 64 * (256 << 10))
    t.join(30)
    assert done.is_set() and got == b'x' * len(got)
    assert max(peak) <= 2 * MiB + (256 << 10)


def test_peer_gone_fails_the_waiting_reader(pair):
    pa, pb = pair
    wire.hard_shutdown(pa.sock)
    pb.settimeout(30)
    # the cut is the end of the connection (or an error): never a hang
    try:
        assert pb.recv(10) == b''
    except wire.WireError:
        pass


def test_queued_bytes_before_a_cut_are_still_delivered(pair):
    pa, pb = pair
    pa.sendall(b'error: disk full')
    assert pa.flush(30)
    wire.hard_shutdown(pa.sock, socket.SHUT_WR)
    assert _read_all(pb, 16) == b'error: disk full'
    pb.settimeout(30)
    # then the end (or, TLS on Python 3.6 with OpenSSL 3: an error for
    # the missing close_notify), never a hang
    try:
        assert pb.recv(1) == b''
    except wire.WireError:
        pass


def test_bytes_before_an_abrupt_close_are_delivered(pair):
    """The destination's last message ("running") and then its socket
    closed: the reader gets the message before it hears of the end (the
    pump thread publishes what it read before a failed read)."""
    pa, pb = pair
    for _ in range(3):
        pa.sendall(b'running')
        assert _read_all(pb, 7) == b'running'
    pa.sendall(b'last one')
    pa.close(30)
    assert _read_all(pb, 8) == b'last one'


def test_control_channel_over_pumps(pair):
    """The authenticated control messages of a migration, both ways."""
    pa, pb = pair
    key = wire.new_key()
    src = wire.ControlChannel(pa, key, 'src')
    dst = wire.ControlChannel(pb, key, 'dst')
    for i in range(50):
        dst.send({'msg': 'applied', 'tags': i})
    src.send({'msg': 'go'})
    assert [src.recv(30)['tags'] for _ in range(50)] == list(range(50))
    assert dst.recv(30)['msg'] == 'go'
    with pytest.raises(wire.WireError, match='no answer'):
        src.recv(0.01)
    assert not src.pending()


def test_recv_times_out(pair):
    pa, _ = pair
    pa.settimeout(0.01)
    with pytest.raises(socket.timeout):
        pa.recv(1)


def test_the_same_under_eventlet():
    """Nova's functional harness (and the simulator) run the agent code
    monkey-patched by eventlet, where green os.read waits instead of
    raising EAGAIN: the tests above, again, in such a process."""
    pytest.importorskip('eventlet')
    import subprocess
    import sys
    code = ('import eventlet; eventlet.monkey_patch()\n'
            'import sys, pytest\n'
            'sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", '
            '"-k", "not eventlet", %r]))' % __file__)
    proc = subprocess.run([sys.executable, '-c', code], timeout=300,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]


def test_close_does_not_wait_for_a_peer_that_reads_nothing(pair):
    """A destination that stopped reading: close gives up after its flush
    timeout instead of holding the source on output nobody takes."""
    pa, pb = pair
    told = []

    def produce():
        try:
            for _ in range(64):
                pa.sendall(b'y' * MiB)
        except wire.WireError as e:
            told.append(str(e))
    t = threading.Thread(target=produce)
    t.start()
    # the kernel's buffers and the queue full (the producer may not have
    # run yet: flush() of an empty queue is True at once)
    with pa._cond:
        assert pa._cond.wait_for(lambda: pa._out_bytes >= pa._out_limit, 30)
    assert not pa.flush(0.05)
    pa.close(0)
    t.join(30)
    assert not pa._thread.is_alive()
    # the producer blocked on the full queue hears of it
    assert told and 'closed' in told[0]


def test_buffers_are_reused_and_bytes_cross_them_in_order(pair):
    """64 MiB through queues of 2 MiB: each side allocates about what its
    queues hold, not a buffer per megabyte; recv_into reads across the
    pooled buffers, and small writes between large ones keep their place."""
    pa, pb = pair
    total = 64 * MiB
    parts = []
    for i in range(64):
        parts.append(b'%08d' % i)               # a small record header
        parts.append(hashlib.sha256(b'%d' % i).digest() * (MiB // 32 - 1))
    data = b''.join(parts)
    sender = threading.Thread(target=lambda: [pa.sendall(p) for p in parts])
    sender.start()
    got = bytearray(len(data))
    view = memoryview(got)
    at = 0
    pb.settimeout(30)
    while at < len(data):
        n = pb.recv_into(view[at:at + 3 * MiB + 5])   # spans buffers
        assert n, 'connection ended after %d bytes' % at
        at += n
    sender.join(30)
    assert got == data and len(data) > total - MiB
    limit = (2 * MiB + 2 * MiB) // migration_pump.Pump.CHUNK + 2
    assert pa.buffers_made <= limit and pb.buffers_made <= limit, \
        (pa.buffers_made, pb.buffers_made)
