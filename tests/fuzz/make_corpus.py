"""Write the seed corpus of fuzz_records.c into tests/fuzz/corpus/.

Seeds are real record bodies cut from streams our writer produces (PAGE_DATA,
ZERO_RUNS, XBZRLE_PAGES), record sequences, XBZRLE encodings and bitmaps,
each prefixed by the harness's two selector bytes.  Re-run after a format
change:  python tests/fuzz/make_corpus.py
The other files in corpus/ (named by libFuzzer's SHA-1) are inputs the
fuzzer found, kept with ``fuzz_records -merge=1 NEW tests/fuzz/corpus
build/fuzz/corpus`` so each CI run starts from their coverage.
"""

import array
import hashlib
import os
import random
import struct

from nova_xen_stubdom import _emucore as ec

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')


def records(blob):
    off = 0
    while off + 8 <= len(blob):
        rtype, length = struct.unpack_from('<II', blob, off)
        yield (
            rtype,
            blob[off: off + 8 + ((length + 7) & ~7)],
            blob[off + 8: off + 8 + length],
        )
        off += 8 + ((length + 7) & ~7)


def main():
    rnd = random.Random(1)
    os.makedirs(HERE, exist_ok=True)
    seeds = []
    mem = bytearray(8 * 4096)
    mem[4096:8192] = rnd.randbytes(4096)
    mem[3 * 4096 + 5] = 1
    cache = ec.XbzrleCache(1 << 16)
    out = bytearray(ec.encode_bound(1024))
    flags = ec.ENC_ZERO | ec.ENC_XBZRLE | ec.ENC_CRC
    n = ec.encode_batch(mem, array.array('Q', range(5)), out, flags, cache)[0]
    mem[4096 + 7] ^= 0xFF
    mem[4096 + 3000: 4096 + 3010] = b'0123456789'
    m = ec.encode_batch(
        mem, array.array('Q', [1, 2, 3]), out[n:], flags, cache
    )[0]
    blob = bytes(out[: n + m])
    selector = {1: 0, 0x80004E01: 1, 0x80004E02: 2}
    for rtype, whole, body in records(blob):
        if rtype in selector:
            seeds.append(bytes([0, selector[rtype]]) + body)
    seeds.append(bytes([4, 0]) + blob)  # record sequence
    seeds.append(bytes([5, 0]) + blob[:200])
    plain = bytearray(ec.encode_bound(1024))
    k = ec.encode_batch(mem, array.array('Q', [0, 2]), plain, 0)[0]
    seeds.append(bytes([4, 0]) + bytes(plain[:k]))
    seeds.append(bytes([8, 0]) + b'\x0a\x03abc\xc8\x01\x01\xff')
    seeds.append(bytes([8, 7]) + b'\x00\x02XY\xfd\x1f\x01Z')
    seeds.append(bytes([12, 3]) + rnd.randbytes(64))
    seeds.append(bytes([13, 0]) + bytes(130))
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()[:16]
        with open(os.path.join(HERE, name), 'wb') as f:
            f.write(s)
    print('%d seeds in %s' % (len(seeds), HERE))


if __name__ == '__main__':
    main()
