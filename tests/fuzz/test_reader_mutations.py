"""Mutated streams through the Python reader: only StreamError/RecordError
(or AuthenticationError) may come out, and a refused buffer stream writes
nothing.  Runs in the native tier, also under the ASan/UBSan build.
"""

import io
import random

from hypothesis import HealthCheck, given, settings, strategies as st

from nova_xen_stubdom import emucore

KEY = b'fuzz-key-0123456789abcdef'
NPAGES = 24


def _stream(mode, key, cache, channel=False):
    rnd = random.Random(7)
    mem = bytearray(NPAGES * 4096)
    for p in range(0, NPAGES, 2):
        mem[p * 4096: (p + 1) * 4096] = rnd.randbytes(4096)
    out = io.BytesIO()
    w = emucore.StreamWriter(
        out,
        mode=mode,
        key=key,
        xbzrle_cache=emucore.XbzrleCache(1 << 16) if cache else None,
        channel_integrity=channel,
    )
    w.write_header()
    w.write_static_data()
    w.write_pages(mem, range(NPAGES))
    w.end_round()
    for p in range(0, NPAGES, 3):
        mem[p * 4096 + 17] ^= 0x44
    w.write_pages(mem, range(0, NPAGES, 3))
    w.end_round()
    w.write_hvm_params([(1, 2)])
    w.write_hvm_context(b'ctx')
    w.end_libxc()
    w.write_emulator_xenstore_data({'k': 'v'} if mode == 'full' else None)
    w.write_emulator_context(b'dm')
    w.close()
    return out.getvalue()


SEEDS = [
    (_stream('compat', None, False), None),
    (_stream('full', None, True), None),
    (_stream('full', KEY, True), KEY),
]


#: a live-migration stream on TLS: segment markers, no HMAC
CHANNEL_SEEDS = [(_stream('full', None, True, channel=True), None)]


@st.composite
def mutated(draw, seeds=SEEDS):
    data, key = draw(st.sampled_from(seeds))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        op = draw(
            st.sampled_from(['flip', 'set32', 'cut', 'insert', 'delete'])
        )
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == 'flip':
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 'set32':
            val = draw(
                st.sampled_from(
                    [
                        0,
                        1,
                        7,
                        8,
                        1023,
                        1024,
                        1025,
                        4096,
                        0x7FFFFFFF,
                        0xFFFFFFFF,
                        0x80004E02,
                        0x80004E11,
                    ]
                )
            )
            buf[pos: pos + 4] = val.to_bytes(4, 'little')
        elif op == 'cut':
            del buf[pos:]
        elif op == 'insert':
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=24))
        else:
            del buf[pos: pos + draw(st.integers(1, 64))]
    return bytes(buf), key, bytes(buf) != data


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated(), st.booleans())
def test_mutated_streams_fail_cleanly(case, as_file):
    data, key, changed = case
    dst = bytearray(NPAGES * 4096)
    src = io.BytesIO(data) if as_file else data
    try:
        emucore.StreamReader(src, key=key).restore(dst)
    except emucore.StreamError as exc:
        assert exc.offset is None or 0 <= exc.offset <= len(data) + 8
        str(exc)
        if not as_file:
            assert not any(dst), 'a refused buffer stream wrote guest memory'
        if key is not None and not as_file:
            assert not any(dst)
    else:
        if key is not None:
            assert not changed or data in [s for s, _ in SEEDS], (
                'a modified authenticated stream was accepted'
            )


def test_seeds_restore():
    for data, key in SEEDS:
        emucore.StreamReader(data, key=key).restore(bytearray(NPAGES * 4096))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated(CHANNEL_SEEDS))
def test_mutated_channel_streams_fail_cleanly(case):
    """What a TLS receiver reads (the channel vouched for the bytes, but a
    buggy or hostile peer holding the key may still send anything)."""
    data, _key, _changed = case
    dst = bytearray(NPAGES * 4096)
    try:
        emucore.StreamReader(io.BytesIO(data), channel_integrity=True
                             ).restore(dst)
    except emucore.StreamError as exc:
        assert exc.offset is None or 0 <= exc.offset <= len(data) + 8
        str(exc)


def test_channel_seed_restores():
    for data, _ in CHANNEL_SEEDS:
        emucore.StreamReader(io.BytesIO(data), channel_integrity=True
                             ).restore(bytearray(NPAGES * 4096))
