"""The simulated host's CPU: its HVM maximum policy, each domain's policy
and TSC parameters, as Xen keeps them.

Sources (Xen 4.17):
- a new HVM domain gets the host's default HVM policy
  (xen/arch/x86/cpu-policy.c, init_domain_cpu_policy); here the default is
  the maximum (the simulated host has no features held back by default);
- XEN_DOMCTL_set_cpu_policy (xen/arch/x86/domctl.c,
  update_domain_cpu_policy) refuses with EINVAL what
  ``x86_cpu_policies_are_compatible`` (xen/lib/x86/policy.c) rejects --
  a larger max basic leaf, leaf 7 subleaf or extended leaf, or
  MSR_INTEL_PLATFORM_INFO bits the host lacks -- and otherwise clamps the
  feature words to the maximum policy (recalculate_cpuid_policy): a
  feature the host lacks silently disappears, which is why the toolstack
  checks first;
- TSC (xen/arch/x86/time.c): tsc_get_info reports mode, the guest's
  elapsed ns, its khz and incarnation; tsc_set_info accepts modes 0-3
  (XEN_CPUID_TSC_MODE_*), else EINVAL, and stores incarnation + 1.
"""
import errno
import time
from typing import Sequence, Tuple

from nova_xen_stubdom.dom0 import cpu_policy as cp

#: a Skylake-server-like Intel host (the names of cpufeatureset.h)
DEFAULT_FEATURES = (
    'fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat '
    'pse36 clflush mmx fxsr sse sse2 htt sse3 pclmulqdq ssse3 fma cx16 '
    'pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline aesni xsave avx '
    'f16c rdrand hypervisor syscall nx page1gb rdtscp lm lahf_lm abm '
    '3dnowprefetch fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid '
    'rtm avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw '
    'avx512vl pku md_clear ibrsb stibp l1d_flush arch_caps ssbd').split()
DEFAULT_KHZ = 2600000
TSC_MODES = (0, 1, 2, 3)


def host_policy(features: Sequence[str] = DEFAULT_FEATURES,
                vendor: str = 'GenuineIntel') -> cp.CpuPolicy:
    return cp.build(vendor, features)


class DomainCpu:
    """One domain's CPU policy and TSC state."""

    def __init__(self, host: cp.CpuPolicy, khz: int) -> None:
        cpuid, msrs = host.serialise()
        self.policy = cp.CpuPolicy.parse(cpuid, msrs)
        self.tsc_mode, self.tsc_khz, self.incarnation = 0, khz, 0
        self._offset_ns = time.monotonic_ns()

    def tsc_info(self) -> Tuple[int, int, int, int]:
        return (self.tsc_mode, self.tsc_khz,
                time.monotonic_ns() - self._offset_ns, self.incarnation)

    def set_tsc_info(self, mode: int, khz: int, nsec: int, incarnation: int,
                     host_khz: int) -> None:
        if mode not in TSC_MODES:
            raise OSError(errno.EINVAL, 'tsc_set_info: mode %d' % mode)
        self.tsc_mode, self.tsc_khz = mode, khz or host_khz
        self._offset_ns = time.monotonic_ns() - nsec
        self.incarnation = incarnation + 1

    def set_policy(self, new: cp.CpuPolicy, host: cp.CpuPolicy) -> None:
        for what, g, h in (('leaf 0x0', new.max_leaf, host.max_leaf),
                           ('leaf 0x7', new.max_subleaf_7,
                            host.max_subleaf_7),
                           ('leaf 0x80000000', new.max_extd_leaf,
                            host.max_extd_leaf)):
            if g > h:
                raise OSError(errno.EINVAL, 'set_cpu_policy: %s' % what)
        plat = cp.MSR_INTEL_PLATFORM_INFO
        if new.msrs.get(plat, 0) & ~host.msrs.get(plat, 0):
            raise OSError(errno.EINVAL, 'set_cpu_policy: msr 0x%x' % plat)
        # recalculate_cpuid_policy: feature words clamped to the maximum
        clamped = {}
        for key, regs in new.leaves.items():
            if any(k[:2] == key for k in _FEATURE_REGS):
                hregs = host.regs(*key)
                regs = tuple(r & hregs[i] if key + (i,) in _FEATURE_REGS
                             else r for i, r in enumerate(regs))
            clamped[key] = regs
        new.leaves = clamped
        self.policy = new


_FEATURE_REGS = {(leaf, sub, reg)
                 for leaf, sub, reg, _ in cp.FEATURES.values()}
