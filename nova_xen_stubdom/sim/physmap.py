"""Which PFNs of a simulated domain have a frame behind them (its physmap).

Two layouts:

* ``compact`` (the default, what the simulator always had): PFNs
  0..RAM-1, every one populated, the special pages at the top of RAM.  A
  simplification kept for the many tests that fill and digest whole guests.
* ``xen``: an HVM guest as Xen 4.17's toolstack lays it out, for tests that
  must see the gaps real Xen has (restore into a fresh domain, a live
  migration's first pass):

  - RAM from PFN 0 below the MMIO hole, less the VGA hole 0xA0-0xBF
    (tools/libs/guest/xg_dom_x86.c meminit_hvm: "Allocate memory for HVM
    guest, skipping VGA hole 0xA0000-0xC0000"; libxl__domain_build ->
    libxl__build_hvm sets lowmem_end below the MMIO hole);
  - nothing between the end of RAM and the special pages;
  - the 8 special pages just below X86_HVM_END_SPECIAL_REGION 0xff000
    (xg_dom_x86.c alloc_magic_pages_hvm: special_pfn(x) =
    0xff000 - 8 + x, populated with xc_domain_populate_physmap_exact;
    SPECIALPAGE_XENSTORE 4, SPECIALPAGE_CONSOLE 7), so the guest's highest
    PFN -- what xc_domain_maximum_gpfn reports -- is 0xfefff whatever its
    RAM: a 32 MiB guest spans ~1 M PFNs, nearly all gap.

  Firmware adds frames later: hvmloader's mem_alloc populates pages for
  ACPI tables and its own data below RESERVED_MEMBASE 0xfc000
  (tools/firmware/hvmloader/util.c mem_alloc ->
  XENMEM_populate_physmap); :meth:`Physmap.populate` is that call, and
  a fresh domain does not have those pages (tests/realxen s3 found 28
  populated PFNs above RAM in a saved guest, 16 in a fresh one).
"""
from typing import Iterable, List, Tuple

END_SPECIAL_REGION = 0xff000
NR_SPECIAL_PAGES = 8
#: special_pfn(SPECIALPAGE_XENSTORE), special_pfn(SPECIALPAGE_CONSOLE)
XENSTORE_PFN = END_SPECIAL_REGION - NR_SPECIAL_PAGES + 4
CONSOLE_PFN = END_SPECIAL_REGION - NR_SPECIAL_PAGES + 7
VGA_HOLE = (0xa0, 0xc0)
#: libxl's default MMIO hole starts at 0xf0000000 (libxl_create.c
#: mmio_hole_memkb default): RAM of this layout must fit below it
MMIO_HOLE_START_PFN = 0xf0000

Runs = List[Tuple[int, int]]


class Physmap:
    """[start, stop) runs of PFNs with no frame, below ``max_pfn``."""

    def __init__(self, ram_pages: int, layout: str = 'compact',
                 hvm: bool = True) -> None:
        if layout not in ('compact', 'xen'):
            raise ValueError('unknown physmap layout %r' % layout)
        self.layout = layout if hvm else 'compact'
        self.ram_pages = ram_pages
        self.holes: Runs = []
        if self.layout == 'compact':
            self.max_pfn = ram_pages
            return
        if ram_pages > MMIO_HOLE_START_PFN:
            raise ValueError('the xen layout models RAM below the MMIO '
                             'hole only (%d pages asked)' % ram_pages)
        self.max_pfn = END_SPECIAL_REGION
        gaps = [(ram_pages, END_SPECIAL_REGION - NR_SPECIAL_PAGES)]
        if ram_pages > VGA_HOLE[0]:
            gaps.insert(0, (VGA_HOLE[0], min(VGA_HOLE[1], ram_pages)))
        self.holes = [g for g in gaps if g[0] < g[1]]

    def has_frame(self, pfn: int) -> bool:
        return 0 <= pfn < self.max_pfn and not any(
            a <= pfn < b for a, b in self.holes)

    def pages(self) -> int:
        """Populated frames (what the domain costs the host)."""
        return self.max_pfn - sum(b - a for a, b in self.holes)

    def populate(self, pfns: Iterable[int]) -> List[int]:
        """XENMEM_populate_physmap: give each PFN a frame; returns those
        that had none.  A PFN at or beyond the physmap's end is refused
        (OSError naming it) and nothing is populated."""
        pfns = sorted(set(pfns))
        for pfn in pfns:
            if not 0 <= pfn < self.max_pfn:
                raise OSError(12, 'no frame for PFN %#x: beyond the '
                              'domain\'s physmap (%#x)' % (pfn, self.max_pfn))
        new = [p for p in pfns if not self.has_frame(p)]
        self.holes = _subtract(self.holes, new)
        return new

    def decrease_reservation(self, pfns: Iterable[int]) -> None:
        """XENMEM_decrease_reservation: the frames go (a balloon driver,
        or a test making a domain that lacks pages)."""
        self.holes = _merge(self.holes + [(p, p + 1) for p in set(pfns)
                                          if 0 <= p < self.max_pfn])


def _merge(runs: Runs) -> Runs:
    out: Runs = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(runs: Runs, pfns: List[int]) -> Runs:
    """*runs* less the ascending *pfns*."""
    out: Runs = []
    for a, b in runs:
        cur = a
        for p in pfns:
            if cur <= p < b:
                if cur < p:
                    out.append((cur, p))
                cur = p + 1
        if cur < b:
            out.append((cur, b))
    return out
