"""The migration benchmark's encode-cost figures on a small size (no
timing checks: the figures are ratios printed for a person to read)."""
import pytest

from nova_xen_stubdom.cmd import migration_bench as mb
from nova_xen_stubdom.sim import pki as pki_mod


@pytest.fixture
def pki():
    try:
        p = pki_mod.Pki(name='bench test CA')
    except pki_mod.PkiUnavailable as e:
        pytest.skip(str(e))
    yield p
    p.remove()


def test_encode_cost_measures_every_path_through_real_sockets(pki):
    c = mb.encode_cost(pki, size=4 * mb.MiB, reps=1)
    assert set(c) == {'memcpy', 'stream', 'aead', 'hmac', 'cipher'}
    for name in ('memcpy', 'stream', 'aead', 'hmac'):
        assert c[name] > 0, name
    # TLS 1.3 with an AEAD suite, as the agents negotiate it
    assert c['cipher'].startswith('TLS_') and (
        'GCM' in c['cipher'] or 'CHACHA20' in c['cipher']), c['cipher']


def test_cipher_alone_names_the_suites_aead():
    """The ceiling printed beside the encode figure: openssl speed of the
    negotiated suite's AEAD (None where there is no openssl command)."""
    import shutil
    if shutil.which('openssl') is None:
        pytest.skip('no openssl command: the ceiling is reported as not '
                    'measured')
    for suite in ('TLS_AES_256_GCM_SHA384', 'TLS_AES_128_GCM_SHA256',
                  'TLS_CHACHA20_POLY1305_SHA256',
                  'ECDHE-RSA-AES256-GCM-SHA384'):
        assert mb.cipher_alone(suite) > 0, suite
    assert mb.cipher_alone('AES256-SHA') is None


def test_bench_prints_cpu_per_gb_beside_the_raw_baseline(pki, capsys):
    """A whole (small) run: both hosts' CPU per GB on the wire is printed
    with the bound it puts on the stream/raw-TCP ratio where both ends
    share the machine's cores; the moved guest's memory matches."""
    assert mb.main(['--sizes', '32', '--rates', '0', '--transport', 'tls',
                    '--warmup', '0']) == 0
    out = capsys.readouterr().out
    assert 'CPU-s per GB (sender and receiver)' in out
    line = [x for x in out.splitlines() if x.startswith('CPU per GB')][0]
    assert 'tls 32 MiB source' in line and 'at most' in line, line
