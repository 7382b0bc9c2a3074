"""Scenario 4 in dom0: read ``xl save``'s file with our reader, write ours.

usage: s4_interchange.py XL_SAVE_FILE OUT_DIR  -> JSON summary on stdout

From the save file xl wrote it makes two files for ``xl restore``:

* ``ours-rewritten.save``: xl's header (emucore.xlsave) + the stream
  re-emitted record by record by our writer (emucore.rewrite_stream);
* ``ours-from-memory.save``: the guest restored into memory by our reader
  (a sparse file mapping: the HVM memory map reaches 0xfefff), then written
  from that memory by ``StreamWriter.write_pages`` -- the path our save
  engine takes -- so its PAGE_DATA layout is ours, not xl's.

Both get the domain configuration xl saved.  Runs under dom0's Python (the
testbed's python3.11) and on the host (tests/realxen/test_dom0_helpers.py);
stdlib plus our package only.  Exit status 0 when every check held.
"""

import hashlib
import json
import mmap
import os
import struct
import sys
import time
from typing import Any, Dict, List

from nova_xen_stubdom import emucore
from nova_xen_stubdom.emucore import format as fmt
from nova_xen_stubdom.emucore import xlsave

MBR_TEXT = b'HVM-GUEST-MBR-BOOTED'
MBR_GPA = 0x7C00


def data_pfns(stream: Any) -> List[int]:
    """PFNs that carry a page in stream's PAGE_DATA records, in order."""
    out = []
    for rec in emucore.StreamReader(stream).records():
        if rec.layer != 'libxc' or rec.rtype != fmt.REC_TYPE_PAGE_DATA:
            continue
        (count,) = struct.unpack_from('<I', rec.body)
        for word in struct.unpack_from('<%dQ' % count, rec.body, 8):
            if ((word >> 60) & 7) <= 4:
                out.append(word & fmt.PAGE_DATA_PFN_MASK)
    return out


def same_bytes(a: Any, b: Any, chunk: int = 1 << 22) -> bool:
    if len(a) != len(b):
        return False
    return all(
        a[i: i + chunk] == b[i: i + chunk] for i in range(0, len(a), chunk)
    )


def digest(mem: Any, pfns: List[int]) -> str:
    h = hashlib.sha256()
    for p in pfns:
        h.update(mem[p * 4096: (p + 1) * 4096])
    return h.hexdigest()


def sparse_memory(path: str, size: int) -> mmap.mmap:
    """A writable mapping of size bytes backed by a sparse file (unlinked)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.unlink(path)
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def write_from_memory(path: str, header: bytes, info: Any, mem: Any,
                      pfns: List[int]) -> Dict[str, int]:
    with open(path, 'wb') as out:
        out.write(header)
        w = emucore.StreamWriter(
            out, mode='compat', domain_type=info.domain_type,
            xen_version=info.xen_version,
        )
        w.write_header()
        w.write_static_data(
            cpuid_policy=info.cpuid_policy, msr_policy=info.msr_policy
        )
        w.write_pages(mem, pfns)
        w.write_tsc_info(*info.tsc_info)
        w.write_hvm_params(info.hvm_params)
        w.write_hvm_context(info.hvm_context)
        w.end_libxc()
        w.write_emulator_context(info.emulator_context, info.emulator_id)
        w.close()
        return w.stats


def main(src: str, outdir: str, shm: str = '/dev/shm') -> Dict[str, Any]:
    res = {'python': sys.version.split()[0], 'checks': {}}
    checks = res['checks']
    t = time.time()
    with open(src, 'rb') as f:
        saved = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    hdr = xlsave.parse_header(saved)
    stream = memoryview(saved)[hdr.length:]
    res['xl_header'] = dict(
        flags=hdr.mandatory_flags, length=hdr.length,
        name=hdr.config_json()['c_info']['name'],
    )
    info = emucore.StreamReader(stream).verify()
    pfns = data_pfns(stream)
    res['read'] = dict(
        seconds=round(time.time() - t, 2), pages=info.pages,
        xen_version=list(info.xen_version), hvm_params=len(info.hvm_params),
        hvm_context=len(info.hvm_context or b''),
        emulator_context=len(info.emulator_context or b''),
        max_pfn=max(pfns),
    )
    checks['xl_stream_read'] = info.pages == len(pfns) > 0

    # 1. record-by-record re-emission behind xl's header
    t = time.time()
    rewritten = os.path.join(outdir, 'ours-rewritten.save')
    header = xlsave.build_header(hdr.config)
    with open(rewritten, 'wb') as out:
        out.write(header)
        emucore.rewrite_stream(stream, out, mode='compat')
    with open(rewritten, 'rb') as f:
        ours = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    res['rewritten'] = dict(
        seconds=round(time.time() - t, 2), bytes=len(ours),
        identical_to_xl=same_bytes(ours, saved),
    )
    ours.close()

    # 2. restored into memory by our reader, written from memory again
    t = time.time()
    mem = sparse_memory(
        os.path.join(shm, 's4-guest-mem.%d' % os.getpid()),
        (max(pfns) + 1) * 4096,
    )
    emucore.StreamReader(stream).restore(mem)
    mbr = bytes(mem[MBR_GPA: MBR_GPA + 512])
    checks['reader_restored_mbr'] = MBR_TEXT in mbr
    before = digest(mem, pfns)
    from_mem = os.path.join(outdir, 'ours-from-memory.save')
    stats = write_from_memory(from_mem, header, info, mem, sorted(pfns))
    mem.close()
    with open(from_mem, 'rb') as f:
        again = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    hdr2 = xlsave.parse_header(again)
    mem2 = sparse_memory(
        os.path.join(shm, 's4-guest-mem2.%d' % os.getpid()),
        (max(pfns) + 1) * 4096,
    )
    emucore.StreamReader(memoryview(again)[hdr2.length:]).restore(mem2)
    checks['from_memory_digest_equal'] = digest(mem2, pfns) == before
    mem2.close()
    res['from_memory'] = dict(
        seconds=round(time.time() - t, 2), bytes=len(again),
        records_differ_from_xl=len(again) != len(saved),
        pages=stats['pages'], memory_sha256=before,
    )
    again.close()
    stream.release()
    saved.close()
    res['ok'] = all(checks.values())
    return res


if __name__ == '__main__':
    result = main(sys.argv[1], sys.argv[2], *sys.argv[3:4])
    print(json.dumps(result, sort_keys=True))
    sys.exit(0 if result['ok'] else 1)
