"""dom0 helper of realxen scenarios 3 and 5: a guest's memory digest.

``digest DOMID MEM_MB``
    SHA-256 over the guest's RAM, read through foreign mappings of the
    whole physmap (XenBackend.map_memory, the mapping our save engine reads
    from too, but none of the engine's code): PFNs below MEM_MB MiB that
    Xen has a page for, in order, each page prefixed with its PFN, so a
    page that moved or vanished changes the digest.  The PFNs above
    (hvmloader's/libxl's special pages: ioreq, xenstore, console rings,
    written again by each new domain's toolstack and device model) are
    digested separately and only reported.  Run with the guest paused: its
    vCPU, and the timer interrupt SeaBIOS counts in the BIOS data area,
    change memory while it runs.  Prints ``ram=HEX pages=N holes=N
    special=HEX special_pages=N``.
"""
import hashlib
import struct
import sys

sys.path.insert(0, '/opt/realxen/pkg')

PAGE = 4096


def digest(domid: int, mem_mb: int) -> str:
    from nova_xen_stubdom.dom0 import xen_backend
    be = xen_backend.XenBackend()
    try:
        view = be.map_memory(domid)
        try:
            runs = be.hole_runs(view)
            mem = memoryview(view)
            limit = mem_mb << 8
            ram, special = hashlib.sha256(), hashlib.sha256()
            counts = {'ram': 0, 'special': 0, 'holes': 0}
            pfn = 0
            # the populated runs between the holes, in order
            for start, stop in runs + [(len(mem) // PAGE,) * 2]:
                for p in range(pfn, start):
                    h = ram if p < limit else special
                    h.update(struct.pack('<Q', p))
                    h.update(mem[p * PAGE:(p + 1) * PAGE])
                    counts['ram' if p < limit else 'special'] += 1
                counts['holes'] += max(0, min(stop, limit) - start)
                pfn = stop
            mem.release()
        finally:
            view.release()
        return 'ram=%s pages=%d holes=%d special=%s special_pages=%d' % (
            ram.hexdigest()[:16], counts['ram'], counts['holes'],
            special.hexdigest()[:16], counts['special'])
    finally:
        be.close()


if __name__ == '__main__':
    if sys.argv[1:2] != ['digest'] or len(sys.argv) != 4:
        raise SystemExit('usage: s35_state.py digest DOMID MEM_MB')
    print(digest(int(sys.argv[2]), int(sys.argv[3])))
