"""x86 CPU policies as libxc serialises them, and the compatibility check.

A policy travels as the two arrays ``xc_cpu_policy_serialise`` fills
(tools/libs/guest/xg_cpuid_x86.c): ``xen_cpuid_leaf_t`` {leaf, subleaf, a,
b, c, d} and ``xen_msr_entry_t`` {idx, flags, val}
(xen/include/public/arch-x86/xen.h), little endian.  These are the bodies of
the libxc stream's X86_CPUID_POLICY and X86_MSR_POLICY records
(tools/libs/guest/xg_sr_common_x86.c, write_x86_cpu_policy_records).

:func:`incompatibilities` is the destination check: what Xen's
``x86_cpu_policies_are_compatible`` (xen/lib/x86/policy.c) audits -- the
maximum basic leaf, leaf 7 subleaf and extended leaf, and the
MSR_INTEL_PLATFORM_INFO bits -- plus what XAPI's
``Cpuid_helpers.assert_vm_is_compatible`` (ocaml/xapi/cpuid_helpers.ml)
audits: the same vendor and every feature the guest sees present in the
host's HVM maximum policy.  Xen itself would clamp a missing feature away
when the policy is set (recalculate_cpuid_policy), so a guest that already
uses it would fault after the move: the check runs before the source is
touched.
"""
import struct
from typing import Dict, List, Sequence, Tuple

LEAF_FORMAT = '<IIIIII'      # xen_cpuid_leaf_t
MSR_FORMAT = '<IIQ'          # xen_msr_entry_t
LEAF_SIZE = struct.calcsize(LEAF_FORMAT)
MSR_SIZE = struct.calcsize(MSR_FORMAT)
#: xen/include/public/arch-x86/xen.h: a leaf without subleaves
NO_SUBLEAF = 0xffffffff
#: libxc's own bound on the arrays is the policy size Xen reports
#: (xc_cpu_policy_get_size); this is far above it and only stops a hostile
#: record from making us walk unbounded data
MAX_LEAVES = 4096
MAX_MSRS = 1024
MSR_INTEL_PLATFORM_INFO = 0xce

Leaf = Tuple[int, int, int, int, int, int]
Msr = Tuple[int, int, int]

#: feature name -> (leaf, subleaf, register index a=0 b=1 c=2 d=3, bit), the
#: featureset words and names of xen/include/public/arch-x86/cpufeatureset.h
#: (1d, 1c, e1d, e1c, 7b0, 7c0, 7d0), lower case as xen-cpuid prints them
_WORDS = {
    (1, NO_SUBLEAF, 3): (
        'fpu vme de pse tsc msr pae mce cx8 apic - sep mtrr pge mca cmov '
        'pat pse36 - clflush - ds acpi mmx fxsr sse sse2 ss htt tm1 - pbe'),
    (1, NO_SUBLEAF, 2): (
        'sse3 pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 - - '
        'fma cx16 xtpr pdcm - pcid dca sse4_1 sse4_2 x2apic movbe popcnt '
        'tsc_deadline aesni xsave osxsave avx f16c rdrand hypervisor'),
    (0x80000001, NO_SUBLEAF, 3): (
        '- - - - - - - - - - - syscall - - - - - - - - nx - mmxext - - '
        'ffxsr page1gb rdtscp - lm 3dnowext 3dnow'),
    (0x80000001, NO_SUBLEAF, 2): (
        'lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse '
        '3dnowprefetch osvw ibs xop skinit wdt - lwp fma4 - - nodeid_msr - '
        'tbm topoext perfctr_core perfctr_nb - dbext - - monitorx'),
    (7, 0, 1): (
        'fsgsbase tsc_adjust sgx bmi1 hle avx2 fdp_excp_only smep bmi2 erms '
        'invpcid rtm pqm no_fpu_sel mpx pqe avx512f avx512dq rdseed adx '
        'smap avx512_ifma - clflushopt clwb - avx512pf avx512er avx512cd '
        'sha avx512bw avx512vl'),
    (7, 0, 2): (
        'prefetchwt1 avx512_vbmi umip pku ospke - avx512_vbmi2 cet_ss gfni '
        'vaes vpclmulqdq avx512_vnni avx512_bitalg - avx512_vpopcntdq - - '
        '- - - - - rdpid - - cldemote - movdiri movdir64b'),
    (7, 0, 3): (
        '- - avx512_4vnniw avx512_4fmaps fsrm - - - avx512_vp2intersect '
        'srbds_ctrl md_clear - - - serialize - tsxldtrk - - - cet_ibt - - '
        'avx512_fp16 - - ibrsb stibp l1d_flush arch_caps core_caps ssbd'),
}
FEATURES: Dict[str, Tuple[int, int, int, int]] = {
    name: (leaf, sub, reg, bit)
    for (leaf, sub, reg), names in _WORDS.items()
    for bit, name in enumerate(names.split()) if name != '-'}


class PolicyError(ValueError):
    """A serialised policy is malformed."""


class CpuPolicy:
    """One domain's (or one host's maximum) CPUID leaves and MSRs."""

    def __init__(self, leaves: Sequence[Leaf] = (),
                 msrs: Sequence[Msr] = ()) -> None:
        self.leaves: Dict[Tuple[int, int], Tuple[int, int, int, int]] = {
            (lf[0], lf[1]): tuple(lf[2:6]) for lf in leaves}
        self.msrs: Dict[int, int] = {m[0]: m[2] for m in msrs}

    # -- the libxc wire form --------------------------------------------
    @classmethod
    def parse(cls, cpuid: bytes, msrs: bytes) -> 'CpuPolicy':
        """From X86_CPUID_POLICY / X86_MSR_POLICY bodies (either empty)."""
        for what, blob, size, limit in (('X86_CPUID_POLICY', cpuid,
                                         LEAF_SIZE, MAX_LEAVES),
                                        ('X86_MSR_POLICY', msrs,
                                         MSR_SIZE, MAX_MSRS)):
            if len(blob) % size:
                raise PolicyError('%s length %d is not a multiple of %d'
                                  % (what, len(blob), size))
            if len(blob) // size > limit:
                raise PolicyError('%s has %d entries, more than %d'
                                  % (what, len(blob) // size, limit))
        leaves = list(struct.iter_unpack(LEAF_FORMAT, bytes(cpuid)))
        entries = list(struct.iter_unpack(MSR_FORMAT, bytes(msrs)))
        seen = set()
        for lf in leaves:
            if (lf[0], lf[1]) in seen:
                raise PolicyError('leaf 0x%x subleaf 0x%x appears twice'
                                  % (lf[0], lf[1]))
            seen.add((lf[0], lf[1]))
        if any(m[1] for m in entries):
            raise PolicyError('X86_MSR_POLICY entry with non-zero flags')
        return cls(leaves, entries)

    def serialise(self) -> Tuple[bytes, bytes]:
        """(cpuid, msrs) as xc_cpu_policy_serialise lays them out."""
        cpuid = b''.join(struct.pack(LEAF_FORMAT, leaf, sub, *regs)
                         for (leaf, sub), regs in sorted(self.leaves.items()))
        msrs = b''.join(struct.pack(MSR_FORMAT, idx, 0, val)
                        for idx, val in sorted(self.msrs.items()))
        return cpuid, msrs

    # -- reading it ------------------------------------------------------
    def regs(self, leaf: int, sub: int) -> Tuple[int, int, int, int]:
        regs = self.leaves.get((leaf, sub))
        if regs is None and sub == NO_SUBLEAF:
            regs = self.leaves.get((leaf, 0))
        return regs or (0, 0, 0, 0)

    @property
    def vendor(self) -> str:
        _, b, c, d = self.regs(0, NO_SUBLEAF)
        raw = struct.pack('<III', b, d, c)
        return raw.rstrip(b'\0').decode('ascii', 'replace')

    @property
    def max_leaf(self) -> int:
        return self.regs(0, NO_SUBLEAF)[0]

    @property
    def max_subleaf_7(self) -> int:
        return self.regs(7, 0)[0]

    @property
    def max_extd_leaf(self) -> int:
        return self.regs(0x80000000, NO_SUBLEAF)[0]

    def features(self) -> List[str]:
        return sorted(name for name, (leaf, sub, reg, bit) in FEATURES.items()
                      if self.regs(leaf, sub)[reg] >> bit & 1)


def incompatibilities(guest: CpuPolicy, host: CpuPolicy) -> List[str]:
    """Why *host* (its HVM maximum policy) cannot run a guest that sees
    *guest*; empty when it can."""
    out = []
    if guest.vendor and host.vendor and guest.vendor != host.vendor:
        out.append('CPU vendor %s (the host has %s)' % (guest.vendor,
                                                        host.vendor))
    for what, g, h in (('max basic leaf', guest.max_leaf, host.max_leaf),
                       ('max leaf 7 subleaf', guest.max_subleaf_7,
                        host.max_subleaf_7),
                       ('max extended leaf', guest.max_extd_leaf,
                        host.max_extd_leaf)):
        if g > h:
            out.append('%s 0x%x (the host offers 0x%x)' % (what, g, h))
    have = set(host.features())
    missing = [f for f in guest.features() if f not in have]
    if missing:
        out.append('features %s' % ' '.join(missing))
    extra = guest.msrs.get(MSR_INTEL_PLATFORM_INFO, 0) & \
        ~host.msrs.get(MSR_INTEL_PLATFORM_INFO, 0)
    if extra:
        out.append('MSR_INTEL_PLATFORM_INFO bits 0x%x' % extra)
    return out


def build(vendor: str, features: Sequence[str], max_leaf: int = 0xd,
          max_subleaf_7: int = 0, max_extd_leaf: int = 0x80000008,
          platform_info: int = 0) -> CpuPolicy:
    """A policy with exactly these features (tests and the simulator's
    host model)."""
    raw = vendor.encode('ascii')
    if len(raw) != 12:
        raise ValueError('CPU vendor %r is not 12 characters' % vendor)
    b, d, c = struct.unpack('<III', raw)
    regs: Dict[Tuple[int, int], List[int]] = {
        (0, NO_SUBLEAF): [max_leaf, b, c, d],
        (7, 0): [max_subleaf_7, 0, 0, 0],
        (0x80000000, NO_SUBLEAF): [max_extd_leaf, 0, 0, 0]}
    for name in features:
        if name not in FEATURES:
            raise ValueError('unknown CPU feature %r' % name)
        leaf, sub, reg, bit = FEATURES[name]
        regs.setdefault((leaf, sub), [0, 0, 0, 0])[reg] |= 1 << bit
    return CpuPolicy([(k[0], k[1]) + tuple(v) for k, v in regs.items()],
                     [(MSR_INTEL_PLATFORM_INFO, 0, platform_info)])


class Incompatible(Exception):
    """A host cannot offer the CPU a guest sees."""


def require_compatible(guest: CpuPolicy, host: CpuPolicy,
                       host_name: str = 'this host') -> None:
    """Raise :class:`Incompatible` naming everything *host* lacks."""
    why = incompatibilities(guest, host)
    if why:
        raise Incompatible('%s cannot offer the CPU the guest sees: %s'
                           % (host_name, '; '.join(why)))
