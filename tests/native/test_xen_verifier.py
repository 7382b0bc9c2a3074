"""Xen's own validator (verify-stream-v2 from Debian's xen-utils-4.17) on
compatible-mode streams of several guests.

tests/xen_verifier.py finds the verifier (Debian's package unpacked by
tools/ci/tier-native.sh, or the copy in ../shared/xen-testbed/verifier);
the tier sets REQUIRE_XEN_VERIFIER=1 when it found one, so in CI a verifier
that vanished is a failure, not a skip.
"""

import io
import random

import pytest

from nova_xen_stubdom import emucore
from tests import xen_verifier


def run_verifier(data, tmp_path, name='stream'):
    path = tmp_path / name
    path.write_bytes(data)
    return xen_verifier.verify(path)


def guest_stream(
    npages, fill, rounds=0, params=None, cpuid=b'', msr=b'', seed=0, pfns=None
):
    rnd = random.Random(seed)
    mem = bytearray(npages * 4096)
    fill(mem, rnd)
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode='compat', xen_version=(4, 17))
    w.write_header()
    w.write_static_data(cpuid_policy=cpuid, msr_policy=msr)
    w.write_pages(mem, range(npages) if pfns is None else pfns)
    for r in range(rounds):
        dirty = sorted(rnd.sample(range(npages), max(1, npages // 10)))
        for p in dirty:
            mem[p * 4096 + rnd.randrange(4096)] ^= 0xFF
        w.write_pages(mem, dirty)
    w.write_tsc_info(mode=0, khz=2400000, nsec=123456789, incarnation=2)
    w.write_hvm_params(
        params
        if params is not None
        else [(2, 0xFEFFC000), (5, 1), (12, 0xFEFF0000), (35, 1)]
    )
    w.write_hvm_context(rnd.randbytes(1024 + 8 * npages % 7))
    w.end_libxc()
    w.write_emulator_xenstore_data()
    w.write_emulator_context(b'QEVM' + rnd.randbytes(3000))
    w.close()
    return out.getvalue()


def _zero(mem, rnd):
    pass


def _random(mem, rnd):
    mem[:] = rnd.randbytes(len(mem))


def _typical(mem, rnd):
    base = rnd.randbytes(4096)
    for p in range(len(mem) // 4096):
        if p % 5 == 0:
            continue
        page = bytearray(base)
        page[rnd.randrange(4000):][:16] = rnd.randbytes(16)
        mem[p * 4096: (p + 1) * 4096] = page


def _text(mem, rnd):
    words = [
        b'xen',
        b'stub',
        b'domain',
        b'nova',
        b'migrate',
        b'page',
        b'the',
        b'of',
    ]
    text = b' '.join(rnd.choice(words) for _ in range(len(mem) // 4))
    mem[:] = text[: len(mem)].ljust(len(mem), b'.')


GUESTS = {
    'empty-16-pages': dict(npages=16, fill=_zero),
    'random-300-pages': dict(npages=300, fill=_random),
    'typical-2048-pages-3-rounds': dict(npages=2048, fill=_typical, rounds=3),
    'text-777-pages': dict(npages=777, fill=_text, params=[]),
    'with-cpuid-msr-policy': dict(
        npages=64, fill=_random, cpuid=bytes(24 * 3), msr=bytes(16 * 2)
    ),
    'sparse-pfns': dict(
        npages=4096, fill=_typical, pfns=list(range(0, 4096, 7))
    ),
}


@pytest.mark.parametrize('name', sorted(GUESTS))
def test_verifier_accepts_compat_stream(name, tmp_path):
    data = guest_stream(**GUESTS[name])
    res = run_verifier(data, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'Libxc Image Header: Version 3' in res.stdout
    assert 'Domain Header: x86 HVM from Xen 4.17' in res.stdout
    assert 'Emulator context' in res.stdout
    # Our own reader agrees on what is in it.
    info = emucore.StreamReader(data).verify()
    assert info.stats['raw_pages'] > 0


def test_verifier_really_checks(tmp_path):
    """Negative controls: the verifier runs and refuses what it should."""
    data = guest_stream(npages=8, fill=_random)
    bad = bytearray(data)
    bad[16 + 8 + 12] = 9  # libxc image header version 9
    res = run_verifier(bytes(bad), tmp_path, 'bad-version')
    assert res.returncode != 0
    assert 'Unknown image version' in res.stderr
    # Full mode's optional records are ours: Xen's Python verifier knows
    # only the types of the spec and refuses them (compat mode exists for it).
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode='full', key=b'k' * 32)
    w.write_header()
    w.write_static_data()
    w.write_pages(bytearray(8 * 4096), range(8))
    w.end_libxc()
    w.write_emulator_xenstore_data()
    w.write_emulator_context(b'x')
    w.close()
    res = run_verifier(out.getvalue(), tmp_path, 'full')
    assert res.returncode != 0 and 'Unrecognised record type' in res.stderr


def test_verifier_xenstore_bug_is_why_compat_writes_it_empty(tmp_path):
    """Xen 4.17's verifier compares bytes with str under Python 3, so any
    non-empty EMULATOR_XENSTORE_DATA fails; the spec-correct writer option
    shows the bug, the default compat record (header only) passes."""
    out = io.BytesIO()
    w = emucore.StreamWriter(out, mode='compat', compat_xenstore='spec')
    w.write_header()
    w.write_static_data()
    w.write_pages(bytearray(4 * 4096), range(4))
    w.end_libxc()
    w.write_emulator_xenstore_data({'physmap/f0000000/size': '800000'})
    w.write_emulator_context(b'x')
    w.close()
    res = run_verifier(out.getvalue(), tmp_path, 'xs')
    assert res.returncode != 0 and 'Data not NUL terminated' in res.stderr
    # Our reader accepts it and returns the pairs.
    info = emucore.StreamReader(out.getvalue()).verify()
    assert info.emulator_xenstore_data == {'physmap/f0000000/size': '800000'}


def test_verifier_accepts_the_agents_export_with_cpu_policy_and_tsc(
        tmp_path):
    """The dom0 agent's compatible-mode export of a simulated guest carries
    the domain's real CPU policy (xc_cpu_policy_serialise's arrays) and TSC
    info; Xen's verifier accepts it and our reader reads them back."""
    pytest.importorskip('dataclasses')      # the simulator (3.7+)
    from nova_xen_stubdom.dom0 import cpu_policy
    from nova_xen_stubdom.dom0 import saverestore
    from nova_xen_stubdom.sim import qemu_savevm
    from tests.unit.dom0 import migration_fixtures as mf
    host = mf.make_host('verify', 64)
    try:
        dom = host.hyp.create_domain('vm-v', True, 4 << 20, 2)
        host.set_tsc_info(dom.domid, 0, 2600000, 10 ** 9, 0)
        out = io.BytesIO()
        saverestore.export_domain(
            host, dom.domid, out,
            device_state=lambda: qemu_savevm.device_state(b'v'))
        policy = host.get_cpu_policy(dom.domid)
    finally:
        host.hyp.shutdown()
    data = out.getvalue()
    res = run_verifier(data, tmp_path, 'export')
    assert res.returncode == 0, res.stdout + res.stderr
    n_leaves = len(policy[0])
    for line in ('Libxc Record: x86 CPUID policy, length %d' % n_leaves,
                 'Libxc Record: x86 MSR policy, length 16',
                 'Mode 0, 2600000 kHz, '):
        assert line in res.stdout, line
    info = emucore.StreamReader(data).verify()
    assert (info.cpuid_policy, info.msr_policy) == policy
    assert 'avx2' in cpu_policy.CpuPolicy.parse(*policy).features()
    assert info.tsc_info[1] == 2600000 and info.tsc_info[3] == 1
